using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Tasks.Classification;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>What an object detector saves besides its tensors: columns, canvas size, decoding thresholds, head shape, classes and the base model.</summary>
internal sealed class ObjectDetectionSettings
{
    public const string TaskName = "object-detection";

    [JsonPropertyName("image_column")] public string ImageColumnName { get; set; } = "";
    [JsonPropertyName("image_folder")] public string? ImageFolder { get; set; }
    [JsonPropertyName("predicted_label_column")] public string PredictedLabelColumnName { get; set; } = "";
    [JsonPropertyName("predicted_boxes_column")] public string PredictedBoundingBoxColumnName { get; set; } = "";
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("image_size")] public int ImageSize { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("score_threshold")] public float ScoreThreshold { get; set; }
    [JsonPropertyName("iou_threshold")] public float IouThreshold { get; set; }
    [JsonPropertyName("max_detections")] public int MaxDetections { get; set; }
    [JsonPropertyName("channels")] public int Channels { get; set; } = DetectionNetwork.DefaultChannels;
    [JsonPropertyName("tower_depth")] public int TowerDepth { get; set; } = DetectionNetwork.DefaultTowerDepth;
    [JsonPropertyName("num_labels")] public int ClassCount { get; set; }
    [JsonPropertyName("label_value_kind")] public string? LabelValueKind { get; set; }
    [JsonPropertyName("label_values")] public List<string>? LabelValues { get; set; }
    [JsonPropertyName("base_model_kind")] public ImageBaseModelKind BaseModelKind { get; set; }
    [JsonPropertyName("resnet")] public ResNetConfig Backbone { get; set; } = new();

    [JsonIgnore] public LabelInfo Label => new(ClassCount, LabelValueKind, LabelValues, minClassCount: 1);

    /// <summary>The input normalisation the backbone expects.</summary>
    [JsonIgnore] public ImageNormalization Normalization => new(Backbone.InputBgr, Backbone.InputScale, Backbone.InputMean.ToArray(), Backbone.InputStd.ToArray());

    public JsonObject ToJson() => System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();

    public void Validate(string source)
    {
        if (ClassCount < 1 || ClassCount > 100_000) throw new InvalidDataException($"{source}: {ClassCount} object classes is not valid (1 to 100000).");
        try
        {
            _ = Label;
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
        if (ImageSize < PeftObjectDetectionTrainer.MinImageSize || ImageSize > PeftObjectDetectionTrainer.MaxImageSize || ImageSize % 32 != 0)
            throw new InvalidDataException($"{source}: the saved ImageSize {ImageSize} is not valid (a multiple of 32 from {PeftObjectDetectionTrainer.MinImageSize} to {PeftObjectDetectionTrainer.MaxImageSize}).");
        if (BatchSize <= 0 || BatchSize > 65_536) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid (1 to 65536).");
        if (!(ScoreThreshold >= 0 && ScoreThreshold < 1)) throw new InvalidDataException($"{source}: the saved ScoreThreshold {ScoreThreshold} is not in [0, 1).");
        if (!(IouThreshold > 0 && IouThreshold <= 1)) throw new InvalidDataException($"{source}: the saved IOUThreshold {IouThreshold} is not in (0, 1].");
        if (MaxDetections < 1 || MaxDetections > 100_000) throw new InvalidDataException($"{source}: the saved MaxDetections {MaxDetections} is not valid (1 to 100000).");
        if (Channels < 8 || Channels > 4096 || Channels % 8 != 0) throw new InvalidDataException($"{source}: the saved head width {Channels} is not a multiple of 8 from 8 to 4096.");
        if (TowerDepth < 1 || TowerDepth > 8) throw new InvalidDataException($"{source}: the saved tower depth {TowerDepth} is not from 1 to 8.");
        if (!Enum.IsDefined(BaseModelKind)) throw new InvalidDataException($"{source}: image base-model kind {(int)BaseModelKind} is not known.");
        if (Backbone is null) throw new InvalidDataException($"{source}: the saved ResNet configuration is missing.");
        Backbone.Validate($"{source} (saved ResNet configuration)");
        foreach (var name in new[] { ImageColumnName, PredictedLabelColumnName, PredictedBoundingBoxColumnName, ScoreColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (ImageFolder is { Length: > 4096 }) throw new InvalidDataException($"{source}: the saved image folder is too long.");
    }
}
