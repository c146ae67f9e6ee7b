using Microsoft.ML.Peft.Format;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>Rebuilds a <see cref="SentenceSimilarityModel"/> from verified entries of a saved model.</summary>
internal static class SentenceSimilarityLoader
{
    private const string Source = "The PEFT sentence similarity model";

    public static SentenceSimilarityModel Load(int version, ModelEntries entries, PeftLoadOptions? options, IChannel ch)
    {
        if (version < 2) throw new InvalidDataException($"{Source} has format version {version}; sentence similarity models start at version 2.");
        return TextTaskLoader.Load<SentenceSimilaritySettings, SentenceSimilarityModel>(Source, SentenceSimilaritySettings.TaskName,
            ModelMetadata.Parse(entries.MetadataBytes, Source), entries, options, ch,
            (settings, config) => settings.Validate(config, Source),
            (settings, baseModel, method, embed, device, generator) => new SentenceSimilarityModel(settings, baseModel, method, embed, device, generator));
    }
}
