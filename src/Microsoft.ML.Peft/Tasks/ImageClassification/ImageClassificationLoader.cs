using System.Security.Cryptography;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

/// <summary>Rebuilds a saved image classifier: settings, the base model (found again and hash-checked), the method, and the saved tensors.</summary>
internal static class ImageClassificationLoader
{
    public const string Source = "The PEFT image classification model";

    public static ImageClassificationModel Load(int version, ModelEntries entries, PeftLoadOptions? options, IChannel ch)
    {
        var metadata = ModelMetadata.Parse(entries.MetadataBytes, Source);
        if (metadata.Task != ImageClassificationSettings.TaskName)
            throw new InvalidDataException($"{Source} holds a '{metadata.Task}' model, not {ImageClassificationSettings.TaskName}.");
        var settings = metadata.Settings<ImageClassificationSettings>(Source);
        settings.Validate(Source);
        var method = MethodRegistry.FromJson(metadata.Method, Source);
        if (metadata.BaseModelEmbedded && entries.BaseModelBytes is null)
            throw new InvalidDataException($"{Source} says it embeds its base model, but has no '{ModelEntries.BaseModel}' entry.");

        var baseModel = ResolveBaseModel(metadata, settings, metadata.BaseModelEmbedded ? entries.BaseModelBytes : null, options?.BaseModelPath);
        if (baseModel.Config.ToJson() != settings.Backbone.ToJson())
            throw new InvalidDataException($"{Source}: the base model {baseModel.Source} is a {baseModel.Config}, the saved model expects {settings.Backbone} ({settings.Backbone.ToJson()}).");
        var device = TorchBackend.LoadDevice(options?.Device, ch);
        using var generator = new TorchSharp.torch.Generator(0);
        return ImageTaskModels.Restore(() => new ImageClassificationModel(settings, baseModel, method, metadata.BaseModelEmbedded, device, generator), metadata, entries, options, Source);
    }

    /// <summary>
    /// The saved model's base model: embedded bytes; else <paramref name="overridePath"/>; else the saved path; else, for
    /// the package's ResNet-18, the copy beside this application. Its SHA-256 must be the saved one.
    /// </summary>
    private static LoadedImageBaseModel ResolveBaseModel(ModelMetadata metadata, ImageClassificationSettings settings, byte[]? embedded, string? overridePath) =>
        ResolveBaseModel(metadata, settings.BaseModelKind, embedded, overridePath, Source);

    /// <summary>The saved model's base model (see the overload above), for any image task; messages start with <paramref name="Source"/>.</summary>
    internal static LoadedImageBaseModel ResolveBaseModel(ModelMetadata metadata, ImageBaseModelKind baseModelKind, byte[]? embedded, string? overridePath, string Source)
    {
        var reference = metadata.BaseModel;
        var candidates = new List<ImageBaseModelSource>();
        if (overridePath is not null) candidates.Add(ImageBaseModelSource.Restore(baseModelKind == ImageBaseModelKind.ResNet18Package ? ImageBaseModelKind.Onnx : baseModelKind, Path.GetFileName(overridePath), Path.GetFullPath(overridePath)));
        if (reference.Path is not null) candidates.Add(ImageBaseModelSource.Restore(baseModelKind, reference.Name, reference.Path));
        if (baseModelKind == ImageBaseModelKind.ResNet18Package) candidates.Add(ImageBaseModelSource.ResNet18());
        if (embedded is not null)
        {
            Check(embedded, reference, "the embedded base model", Source);
            var source = ImageBaseModelSource.Restore(baseModelKind, reference.Name, reference.Path ?? reference.Name);
            return LoadedImageBaseModel.Parse(source, embedded);
        }
        var tried = new List<string>();
        foreach (var candidate in candidates.DistinctBy(c => c.Path))
        {
            if (!File.Exists(candidate.Path))
            {
                tried.Add($"{candidate.Path} (missing)");
                continue;
            }
            var bytes = File.ReadAllBytes(candidate.Path);
            if (bytes.LongLength != reference.Size || Hash(bytes) != reference.Sha256)
            {
                tried.Add($"{candidate.Path} (a different file)");
                continue;
            }
            return LoadedImageBaseModel.Parse(candidate, bytes);
        }
        throw new FileNotFoundException($"{Source} needs its base model {reference.Name} ({reference.Size:N0} bytes, SHA-256 {reference.Sha256}); tried: {string.Join("; ", tried)}. " +
            (baseModelKind == ImageBaseModelKind.ResNet18Package
                ? $"Reference the NuGet package {ImageBaseModelSource.ResNet18Package} {ImageBaseModelSource.ResNet18PackageVersion} or set PeftLoadOptions.BaseModelPath."
                : "Set PeftLoadOptions.BaseModelPath to the original file."));
    }

    private static void Check(byte[] bytes, Backbones.BaseModelReference reference, string what, string Source)
    {
        if (bytes.LongLength != reference.Size || Hash(bytes) != reference.Sha256)
            throw new InvalidDataException($"{Source}: {what} does not match the saved hash of {reference.Name}.");
    }

    private static string Hash(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
}
