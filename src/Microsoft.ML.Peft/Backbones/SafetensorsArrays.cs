using Microsoft.ML.Peft.Backbones.Bert;
using TorchSharp.PyBridge;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>Reads a safetensors file into float32 arrays under the names a backbone gives them.</summary>
internal static class SafetensorsArrays
{
    /// <summary>
    /// The tensors of <paramref name="bytes"/> as float32 arrays: <paramref name="name"/> maps each key (and whether the
    /// tensor is floating-point) to the name to keep it under, or null to skip it; each array remembers its key as its
    /// source name. An unreadable file is an <see cref="InvalidDataException"/> that starts with <paramref name="what"/>.
    /// </summary>
    public static Dictionary<string, NamedArray> Read(byte[] bytes, string what, Func<string, bool, string?> name)
    {
        Dictionary<string, TorchSharp.torch.Tensor> tensors;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            tensors = Safetensors.LoadStateDict(stream, leaveOpen: false, keysToKeep: null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{what} could not be read: {e.Message}", e);
        }
        var result = new Dictionary<string, NamedArray>();
        try
        {
            foreach (var (key, tensor) in tensors)
            {
                if (name(key, tensor.is_floating_point()) is not string kept) continue;
                using var asFloat = tensor.to_type(TorchSharp.torch.ScalarType.Float32).contiguous();
                result[kept] = new NamedArray(asFloat.shape, asFloat.data<float>().ToArray()) { SourceName = key };
            }
        }
        finally
        {
            foreach (var tensor in tensors.Values) tensor.Dispose();
        }
        return result;
    }
}
