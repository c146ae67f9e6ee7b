using Microsoft.ML.Peft.Tasks.Classification;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>What a text classifier saves besides the core metadata: its columns, preprocessing, head and labels.</summary>
internal sealed class TextClassificationSettings
{
    public const string TaskName = "text-classification";

    [JsonPropertyName("sentence1_column")] public string Sentence1ColumnName { get; set; } = "";
    [JsonPropertyName("sentence2_column")] public string? Sentence2ColumnName { get; set; }
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("predicted_label_column")] public string PredictedLabelColumnName { get; set; } = "";
    [JsonPropertyName("max_sequence_length")] public int MaxSequenceLength { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("pooling")] public string Pooling { get; set; } = "mean";
    [JsonPropertyName("num_labels")] public int ClassCount { get; set; }
    [JsonPropertyName("label_value_kind")] public string? LabelValueKind { get; set; }
    [JsonPropertyName("label_values")] public List<string>? LabelValues { get; set; }

    [JsonIgnore] public LabelInfo Label => new(ClassCount, LabelValueKind, LabelValues);

    public JsonObject ToJson() => System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();

    /// <summary>Checks every value against bounds and the base model; the message names <paramref name="source"/>.</summary>
    public void Validate(BertConfig config, string source)
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
        if (MaxSequenceLength < 3 || MaxSequenceLength > config.MaxPositionEmbeddings)
            throw new InvalidDataException($"{source}: the saved MaxSequenceLength {MaxSequenceLength} is not valid for this base model (3 to {config.MaxPositionEmbeddings}).");
        if (BatchSize <= 0 || BatchSize > 65_536) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid (1 to 65536).");
        if (Pooling != "mean") throw new InvalidDataException($"{source}: pooling '{Pooling}' is not known.");
        foreach (var name in new[] { Sentence1ColumnName, ScoreColumnName, PredictedLabelColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        // The second text column is optional (null), but never an empty name.
        if (Sentence2ColumnName is { } second && (second.Length == 0 || second.Length > 1024)) throw new InvalidDataException($"{source}: the saved second text column name is not valid.");
    }
}
