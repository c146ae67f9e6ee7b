using System.Text.Json;
using Microsoft.ML.Peft.Methods;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// The trained tensors of a model (method and head) as safetensors under Hugging Face PEFT key names
/// (<c>base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight</c>). Loading checks the header's
/// names, dtypes, shapes and offsets against the model before any tensor is allocated, then every value for NaN.
/// </summary>
internal static class AdapterState
{
    public const string PeftPrefix = "base_model.model.";

    /// <summary>The key a tensor is saved under.</summary>
    public static string FullKey(string key, bool topLevel) => topLevel ? key : PeftPrefix + key;

    /// <summary>Serialises <paramref name="tensors"/> (which stay the caller's).</summary>
    public static byte[] Save(IReadOnlyList<NamedTensor> tensors)
    {
        var state = tensors.ToDictionary(p => FullKey(p.Key, p.TopLevel), p => p.Value.detach().cpu().contiguous());
        try
        {
            using var stream = new MemoryStream();
            Safetensors.SaveStateDict(stream, state, leaveOpen: true);
            return stream.ToArray();
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    public static void Load(byte[] bytes, IReadOnlyList<NamedParameter> parameters, string source)
    {
        var expected = parameters.ToDictionary(p => FullKey(p.Key, p.TopLevel), p => p.Parameter);
        CheckHeader(bytes, expected, source);
        Dictionary<string, Tensor> state;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            state = Safetensors.LoadStateDict(stream, leaveOpen: false, keysToKeep: null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{source}: the adapter weights cannot be read ({e.Message}).", e);
        }
        try
        {
            using (no_grad())
            {
                foreach (var (key, parameter) in expected)
                {
                    var value = state[key];
                    if (!value.isfinite().all().item<bool>()) throw new InvalidDataException($"{source}: '{key}' contains NaN or infinite values.");
                    parameter.copy_(value);
                }
            }
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>Reads the safetensors header alone and checks it describes exactly the expected float32 tensors.</summary>
    private static void CheckHeader(byte[] bytes, IReadOnlyDictionary<string, TorchSharp.Modules.Parameter> expected, string source)
    {
        if (bytes.Length < 8) throw new InvalidDataException($"{source}: the adapter entry is too short to be safetensors.");
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        if (headerLength > (ulong)(bytes.Length - 8) || headerLength > 100_000_000)
            throw new InvalidDataException($"{source}: the adapter's safetensors header claims {headerLength:N0} bytes, more than the entry holds.");
        long dataLength = bytes.Length - 8 - (long)headerLength;
        JsonDocument header;
        try
        {
            header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the adapter's safetensors header is not valid JSON: {e.Message}", e);
        }
        using (header)
        {
            try
            {
                CheckEntries(header, expected, dataLength, source);
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{source}: the adapter's safetensors header is malformed: {e.Message}", e);
            }
        }
    }

    private static void CheckEntries(JsonDocument header, IReadOnlyDictionary<string, TorchSharp.Modules.Parameter> expected, long dataLength, string source)
    {
        {
            var seen = new HashSet<string>();
            foreach (var entry in header.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                if (!expected.TryGetValue(entry.Name, out var parameter))
                    throw new InvalidDataException($"{source}: unexpected adapter tensor '{entry.Name}' (the model has no such parameter).");
                seen.Add(entry.Name);
                var dtype = entry.Value.GetProperty("dtype").GetString();
                if (dtype != "F32") throw new InvalidDataException($"{source}: '{entry.Name}' is {dtype}, expected F32.");
                var shape = entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                if (!shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException($"{source}: '{entry.Name}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", parameter.shape)}].");
                var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] > dataLength || offsets[1] - offsets[0] != parameter.numel() * 4)
                    throw new InvalidDataException($"{source}: '{entry.Name}' has data offsets [{string.Join(", ", offsets)}] that do not fit its shape or the entry.");
            }
            var missing = expected.Keys.Except(seen).ToList();
            if (missing.Count > 0) throw new InvalidDataException($"{source}: the adapter tensor '{missing[0]}' is missing ({missing.Count} in all).");
        }
    }
}
