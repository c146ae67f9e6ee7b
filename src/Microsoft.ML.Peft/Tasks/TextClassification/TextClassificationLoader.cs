using Microsoft.ML.Peft.Tasks.Classification;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>Rebuilds a <see cref="TextClassificationModel"/> from verified entries of a saved model (format 1 or 2).</summary>
internal static class TextClassificationLoader
{
    private const string Source = "The PEFT text classification model";

    public static TextClassificationModel Load(int version, ModelEntries entries, PeftLoadOptions? options, IChannel ch) =>
        TextTaskLoader.Load<TextClassificationSettings, TextClassificationModel>(Source, TextClassificationSettings.TaskName,
            version == 1 ? FromVersion1(entries.MetadataBytes) : ModelMetadata.Parse(entries.MetadataBytes, Source), entries, options, ch,
            (settings, config) => settings.Validate(config, Source),
            (settings, baseModel, method, embed, device, generator) => new TextClassificationModel(settings, baseModel, method, embed, device, generator));

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
