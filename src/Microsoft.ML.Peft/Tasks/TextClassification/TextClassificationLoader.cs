using Microsoft.ML.Peft.Tasks.Classification;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>Rebuilds a <see cref="TextClassificationModel"/> from verified entries of a saved model (format 1 or 2).</summary>
internal static class TextClassificationLoader
{
    private const string Source = "The PEFT text classification model";

    public static TextClassificationModel Load(int version, ModelEntries entries, PeftLoadOptions? options, IChannel ch)
    {
        var metadata = version == 1 ? FromVersion1(entries.MetadataBytes) : ModelMetadata.Parse(entries.MetadataBytes, Source);
        if (metadata.Task != TextClassificationSettings.TaskName)
            throw new InvalidDataException($"{Source} holds a '{metadata.Task}' model, not {TextClassificationSettings.TaskName}.");
        var settings = metadata.Settings<TextClassificationSettings>(Source);
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
        TextClassificationModel model;
        try
        {
            model = new TextClassificationModel(settings, baseModel, method, metadata.BaseModelEmbedded, device, generator);
        }
        catch (ArgumentException e)
        {
            // Saved settings that do not fit this base model (virtual tokens beyond its positions, targets it lacks).
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

    /// <summary>Version 1 metadata (LoRA only, flat fields) as version 2 metadata. Its training device is ignored: models load where the load options say.</summary>
    private static ModelMetadata FromVersion1(byte[] utf8)
    {
        Version1Metadata? v1;
        try
        {
            v1 = JsonSerializer.Deserialize<Version1Metadata>(utf8);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{Source}: the metadata is not valid JSON: {e.Message}", e);
        }
        if (v1 is null) throw new InvalidDataException($"{Source}: the metadata is empty.");
        var lora = new LoraOptions { Rank = v1.Rank, Alpha = v1.Alpha, Dropout = v1.LoraDropout, TargetModules = v1.TargetModules.ToArray() };
        var metadata = new ModelMetadata
        {
            Task = TextClassificationSettings.TaskName,
            BaseModel = v1.BaseModel,
            BaseModelEmbedded = v1.BaseModelEmbedded,
            Config = v1.Config,
            Method = MethodRegistry.ToJson(lora),
            AdaptedModules = v1.AdaptedModules,
            TaskSettings = new TextClassificationSettings
            {
                Sentence1ColumnName = v1.Sentence1ColumnName,
                Sentence2ColumnName = v1.Sentence2ColumnName,
                ScoreColumnName = v1.ScoreColumnName,
                PredictedLabelColumnName = v1.PredictedLabelColumnName,
                MaxSequenceLength = v1.MaxSequenceLength,
                BatchSize = v1.BatchSize,
                ClassCount = v1.ClassCount,
                LabelValueKind = v1.LabelValueKind,
                LabelValues = v1.LabelValues,
            }.ToJson(),
        };
        metadata.Validate(Source);
        return metadata;
    }

    /// <summary>The metadata JSON of format version 1, field for field.</summary>
    private sealed class Version1Metadata
    {
        public BaseModelReference BaseModel { get; set; } = new();
        public bool BaseModelEmbedded { get; set; }
        public BertConfig Config { get; set; } = new();
        public int Rank { get; set; }
        public float Alpha { get; set; }
        public float LoraDropout { get; set; }
        public List<string> TargetModules { get; set; } = new();
        public List<string> AdaptedModules { get; set; } = new();
        public int ClassCount { get; set; }
        public string? LabelValueKind { get; set; }
        public List<string>? LabelValues { get; set; }
        public string Sentence1ColumnName { get; set; } = "";
        public string? Sentence2ColumnName { get; set; }
        public string ScoreColumnName { get; set; } = "";
        public string PredictedLabelColumnName { get; set; } = "";
        public int MaxSequenceLength { get; set; }
        public int BatchSize { get; set; }
        public string Device { get; set; } = "cpu";
    }
}
