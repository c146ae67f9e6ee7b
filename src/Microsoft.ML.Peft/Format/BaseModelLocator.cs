using System.Security.Cryptography;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// Finds the base model of a saved model: embedded in the file, at the location given in the load options, at the
/// stored path, or in the MiniLM package; and checks its size and SHA-256 before parsing it. A stored path is trusted
/// no further than this: it must be a local regular file (or a Hugging Face directory whose <c>model.safetensors</c> is
/// one) of exactly the recorded size, so devices, FIFOs and network paths are never opened; from a Hugging Face
/// directory only <c>model.safetensors</c> and <c>config.json</c> are read (the vocabulary comes from the model file).
/// </summary>
internal static class BaseModelLocator
{
    private const long MaxConfigBytes = 1 << 20;

    public static LoadedBaseModel Resolve(ModelMetadata metadata, byte[] vocab, byte[]? embedded, string? givenLocation, string source)
    {
        var reference = metadata.BaseModel;
        if (embedded is not null) return Parse(reference, metadata, embedded, null, vocab, "the model file itself", named: true);

        if (givenLocation is not null)
        {
            var (weights, config) = ReadLocation(reference, givenLocation, named: true);
            return Parse(reference, metadata, weights, config, vocab, givenLocation, named: true);
        }

        if (reference.Path is not null && IsLocalPath(reference.Path) && (File.Exists(reference.Path) || Directory.Exists(reference.Path)))
        {
            var (weights, config) = ReadLocation(reference, reference.Path, named: false);
            return Parse(reference, metadata, weights, config, vocab, reference.Path, named: false);
        }

        if (reference.Kind == BaseModelKind.EmbeddedMiniLM)
            return Parse(reference, metadata, BaseModelSource.MiniLM().ReadFiles().Weights, null, vocab, $"package {BaseModelSource.MiniLMPackage}", named: false);

        throw new FileNotFoundException(
            $"{source}: the base model {reference.Name} ({reference.Size:N0} bytes, SHA-256 {reference.Sha256}) is not at its stored location '{reference.Path}'. Pass its location with " +
            "mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out schema), or train with EmbedBaseModel = true for a self-contained file.");
    }

    /// <summary>A rooted path on this machine: not a UNC or device path (\\server\share, //server, \\.\, \\?\).</summary>
    private static bool IsLocalPath(string path) =>
        Path.IsPathFullyQualified(path) && !path.StartsWith(@"\\", StringComparison.Ordinal) && !path.StartsWith("//", StringComparison.Ordinal);

    private static (byte[] Weights, string? ConfigJson) ReadLocation(BaseModelReference reference, string location, bool named)
    {
        var what = named ? $"'{location}'" : $"the stored base-model location '{location}'";
        if (!IsLocalPath(Path.GetFullPath(location))) throw new InvalidDataException($"The base model location {what} is not a local path.");
        if (Directory.Exists(location))
        {
            var weights = ReadRegularFile(Path.Combine(location, "model.safetensors"), reference.Size, "base model weights");
            var configPath = Path.Combine(location, "config.json");
            var config = reference.Kind == BaseModelKind.HuggingFace && File.Exists(configPath)
                ? System.Text.Encoding.UTF8.GetString(ReadRegularFile(configPath, null, "config.json"))
                : null;
            if (reference.Kind == BaseModelKind.HuggingFace && config is null)
                throw new FileNotFoundException($"The Hugging Face base model directory {what} has no config.json.", configPath);
            return (weights, config);
        }
        if (reference.Kind == BaseModelKind.HuggingFace)
            throw new InvalidDataException($"The base model was a Hugging Face directory, but {what} is not a directory.");
        return (ReadRegularFile(location, reference.Size, "base model file"), null);
    }

    /// <summary>
    /// Reads a file that must be a regular file of <paramref name="size"/> bytes (or, for a config, at most 1 MB).
    /// Devices, FIFOs and /proc files report no size, so the size check refuses them before they are opened.
    /// </summary>
    private static byte[] ReadRegularFile(string path, long? size, string what)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"The {what} '{path}' does not exist or is not a regular file.", path);
        if (info.Attributes.HasFlag(FileAttributes.Device)) throw new InvalidDataException($"The {what} '{path}' is a device, not a regular file.");
        if (size is long expected && info.Length != expected)
            throw new InvalidDataException($"The {what} '{path}' has {info.Length:N0} bytes; the model was trained on a base model of {expected:N0} bytes.");
        if (size is null && (info.Length <= 0 || info.Length > MaxConfigBytes))
            throw new InvalidDataException($"The {what} '{path}' has {info.Length:N0} bytes; a regular file of at most {MaxConfigBytes:N0} is expected.");
        long length = info.Length;
        var bytes = new byte[length];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        int total = 0;
        while (total < length)
        {
            int read = stream.Read(bytes, total, (int)Math.Min(length - total, 1 << 20));
            if (read <= 0) throw new InvalidDataException($"The {what} '{path}' ended after {total:N0} of {length:N0} bytes.");
            total += read;
        }
        if (stream.ReadByte() != -1) throw new InvalidDataException($"The {what} '{path}' grew while it was read.");
        return bytes;
    }

    private static LoadedBaseModel Parse(BaseModelReference reference, ModelMetadata metadata, byte[] weights, string? configJson, byte[] vocab, string where, bool named)
    {
        var hash = Convert.ToHexString(SHA256.HashData(weights)).ToLowerInvariant();
        if (hash != reference.Sha256.ToLowerInvariant())
            throw new InvalidDataException(
                $"The base model found at {where} ({weights.LongLength:N0} bytes{(named ? $", SHA-256 {hash}" : "")}) is not the one this model was trained on: " +
                $"{reference.Name}, {reference.Size:N0} bytes, SHA-256 {reference.Sha256}. Supply the original base model file.");
        var source = reference.Kind switch
        {
            BaseModelKind.HuggingFace => BaseModelSource.FromHuggingFaceUnchecked(reference.Path ?? where, reference.LowerCase),
            BaseModelKind.Onnx => BaseModelSource.FromOnnx(reference.Path ?? where, reference.VocabPath, reference.LowerCase),
            _ => BaseModelSource.MiniLM(),
        };
        if (reference.Layers is int layers) source = source.WithLayers(layers);
        // An embedded Hugging Face model has no config.json of its own: the saved one describes it, and its tensors are checked against it.
        var saved = metadata.Config ?? throw new InvalidDataException($"{where}: the saved model has no backbone configuration.");
        LoadedBaseModel loaded;
        try
        {
            loaded = LoadedBaseModel.Parse(source, (weights, vocab, configJson ?? saved.ToJson()));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The base model at {where} does not fit the saved model: {e.Message}", e);
        }
        if (loaded.Config.ToJson() != saved.ToJson())
            throw new InvalidDataException($"The base model at {where} has configuration {loaded.Config.ToJson()}, the saved model expects {saved.ToJson()}.");
        return loaded;
    }
}
