using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Tasks.Classification;

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

/// <summary>What an image classifier saves besides its tensors: columns, image size, classes, and the base model it adapts.</summary>
internal sealed class ImageClassificationSettings
{
    public const string TaskName = "image-classification";

    [JsonPropertyName("image_column")] public string ImageColumnName { get; set; } = "";
    [JsonPropertyName("image_folder")] public string? ImageFolder { get; set; }
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("predicted_label_column")] public string PredictedLabelColumnName { get; set; } = "";
    [JsonPropertyName("image_size")] public int ImageSize { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("train_batch_norm")] public bool TrainBatchNorm { get; set; }
    [JsonPropertyName("num_labels")] public int ClassCount { get; set; }
    [JsonPropertyName("label_value_kind")] public string? LabelValueKind { get; set; }
    [JsonPropertyName("label_values")] public List<string>? LabelValues { get; set; }
    [JsonPropertyName("base_model_kind")] public ImageBaseModelKind BaseModelKind { get; set; }
    [JsonPropertyName("resnet")] public ResNetConfig Backbone { get; set; } = new();

    [JsonIgnore] public LabelInfo Label => new(ClassCount, LabelValueKind, LabelValues);

    /// <summary>The input normalisation the backbone expects.</summary>
    [JsonIgnore] public ImageNormalization Normalization => new(Backbone.InputBgr, Backbone.InputScale, Backbone.InputMean.ToArray(), Backbone.InputStd.ToArray());

    public JsonObject ToJson() => System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();

    public void Validate(string source)
    {
        if (ClassCount < 2 || ClassCount > 100_000) throw new InvalidDataException($"{source}: {ClassCount} classes is not valid (2 to 100000).");
        try
        {
            _ = Label;
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
        if (ImageSize < PeftImageClassificationTrainer.MinImageSize || ImageSize > PeftImageClassificationTrainer.MaxImageSize)
            throw new InvalidDataException($"{source}: the saved ImageSize {ImageSize} is not valid.");
        if (BatchSize <= 0 || BatchSize > 65_536) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid (1 to 65536).");
        if (!Enum.IsDefined(BaseModelKind)) throw new InvalidDataException($"{source}: image base-model kind {(int)BaseModelKind} is not known.");
        Backbone.Validate($"{source} (saved ResNet configuration)");
        foreach (var name in new[] { ImageColumnName, ScoreColumnName, PredictedLabelColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (ImageFolder is { Length: > 4096 }) throw new InvalidDataException($"{source}: the saved image folder is too long.");
    }
}
