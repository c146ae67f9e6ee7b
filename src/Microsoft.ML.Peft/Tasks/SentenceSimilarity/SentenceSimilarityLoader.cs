using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>Rebuilds a <see cref="SentenceSimilarityModel"/> from verified entries of a saved model.</summary>
internal static class SentenceSimilarityLoader
{
    private const string Source = "The PEFT sentence similarity model";

    public static SentenceSimilarityModel Load(int version, ModelEntries entries, PeftLoadOptions? options, IChannel ch)
    {
        if (version < 2) throw new InvalidDataException($"{Source} has format version {version}; sentence similarity models start at version 2.");
        var metadata = ModelMetadata.Parse(entries.MetadataBytes, Source);
        if (metadata.Task != SentenceSimilaritySettings.TaskName)
            throw new InvalidDataException($"{Source} holds a '{metadata.Task}' model, not {SentenceSimilaritySettings.TaskName}.");
        var settings = metadata.Settings<SentenceSimilaritySettings>(Source);
        if (metadata.Config is null) throw new InvalidDataException($"{Source}: the metadata has no backbone configuration.");
        settings.Validate(metadata.Config, Source);
        var method = MethodRegistry.FromJson(metadata.Method, Source);
        if (metadata.BaseModelEmbedded && entries.BaseModelBytes is null)
            throw new InvalidDataException($"{Source} says it embeds its base model, but has no '{ModelEntries.BaseModel}' entry.");

        var baseModel = BaseModelLocator.Resolve(metadata, entries.VocabBytes, metadata.BaseModelEmbedded ? entries.BaseModelBytes : null,
            options?.BaseModelPath, Source);
        var device = TorchBackend.LoadDevice(options?.Device, ch);
        // New parameters are overwritten by the saved ones; a local generator keeps libtorch's global one untouched.
        using var generator = new TorchSharp.torch.Generator(0);
        SentenceSimilarityModel model;
        try
        {
            model = new SentenceSimilarityModel(settings, baseModel, method, metadata.BaseModelEmbedded, device, generator);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{Source}: the saved method and settings do not fit the base model: {e.Message}", e);
        }
        try
        {
            if (metadata.AdaptedModules.Count > 0 && !model.Adapted.AdaptedModules.SequenceEqual(metadata.AdaptedModules))
                throw new InvalidDataException($"{Source}: the adapter was trained on modules [{string.Join(", ", metadata.AdaptedModules.Take(8))}] " +
                    $"but its options select [{string.Join(", ", model.Adapted.AdaptedModules.Take(8))}] on this base model.");
            AdapterState.Load(entries.AdapterBytes, model.LoadedParameters(), Source);
            if (options?.ShareBaseModel ?? true) model.ShareBaseWeights(baseModel.Sha256);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
