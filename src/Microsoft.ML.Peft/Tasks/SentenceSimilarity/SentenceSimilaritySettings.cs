using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// What a sentence-similarity model saves besides the core metadata: its columns, preprocessing, architecture and the
/// training labels' statistics that map the network's output to a score.
/// </summary>
internal sealed class SentenceSimilaritySettings
{
    public const string TaskName = "sentence-similarity";
    private const string CrossEncoderName = "cross-encoder";
    private const string BiEncoderName = "bi-encoder";

    [JsonPropertyName("sentence1_column")] public string Sentence1ColumnName { get; set; } = "";
    [JsonPropertyName("sentence2_column")] public string Sentence2ColumnName { get; set; } = "";
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("max_sequence_length")] public int MaxSequenceLength { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("pooling")] public string Pooling { get; set; } = "mean";
    [JsonPropertyName("architecture")] public string ArchitectureName { get; set; } = CrossEncoderName;
    /// <summary>Mean of the training labels (cross-encoder standardisation).</summary>
    [JsonPropertyName("label_mean")] public double LabelMean { get; set; }
    /// <summary>Population standard deviation of the training labels (cross-encoder standardisation).</summary>
    [JsonPropertyName("label_std")] public double LabelStd { get; set; }
    /// <summary>Smallest training label (bi-encoder: cosine 0 maps to it).</summary>
    [JsonPropertyName("label_min")] public double LabelMin { get; set; }
    /// <summary>Largest training label (bi-encoder: cosine 1 maps to it).</summary>
    [JsonPropertyName("label_max")] public double LabelMax { get; set; }

    /// <summary>Cross-encoder: trained on each pair in both orders, and scoring averages both orders.</summary>
    [JsonPropertyName("both_orders")] public bool BothOrders { get; set; }

    [JsonIgnore]
    public SimilarityArchitecture Architecture
    {
        get => ArchitectureName switch
        {
            CrossEncoderName => SimilarityArchitecture.CrossEncoder,
            BiEncoderName => SimilarityArchitecture.BiEncoder,
            _ => throw new InvalidDataException($"The architecture '{ArchitectureName}' is not known (expected {CrossEncoderName} or {BiEncoderName})."),
        };
        set => ArchitectureName = value == SimilarityArchitecture.BiEncoder ? BiEncoderName : CrossEncoderName;
    }

    /// <summary>What the network is trained to output for <paramref name="label"/>: the standardised label (cross-encoder) or the label mapped to [0, 1] (bi-encoder).</summary>
    public float Target(float label) => Architecture == SimilarityArchitecture.CrossEncoder
        ? (float)((label - LabelMean) / LabelStd)
        : (float)((label - LabelMin) / (LabelMax - LabelMin));

    /// <summary>The score of a network output: the inverse of <see cref="Target"/>; not clamped to the training range.</summary>
    public float Score(float output) => Architecture == SimilarityArchitecture.CrossEncoder
        ? (float)(LabelMean + output * LabelStd)
        : (float)(LabelMin + output * (LabelMax - LabelMin));

    public JsonObject ToJson() => System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();

    /// <summary>Checks every value against bounds and the base model; the message names <paramref name="source"/>.</summary>
    public void Validate(BertConfig config, string source)
    {
        try
        {
            _ = Architecture;
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
        if (MaxSequenceLength < 3 || MaxSequenceLength > config.MaxPositionEmbeddings)
            throw new InvalidDataException($"{source}: the saved MaxSequenceLength {MaxSequenceLength} is not valid for this base model (3 to {config.MaxPositionEmbeddings}).");
        if (BatchSize <= 0 || BatchSize > 65_536) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid (1 to 65536).");
        if (Pooling != "mean") throw new InvalidDataException($"{source}: pooling '{Pooling}' is not known.");
        foreach (var name in new[] { Sentence1ColumnName, Sentence2ColumnName, ScoreColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (!double.IsFinite(LabelMean) || !double.IsFinite(LabelStd) || !double.IsFinite(LabelMin) || !double.IsFinite(LabelMax)
            || !(LabelStd > 0) || !(LabelMax > LabelMin) || LabelMean < LabelMin || LabelMean > LabelMax)
            throw new InvalidDataException($"{source}: the saved label statistics (mean {LabelMean}, std {LabelStd}, min {LabelMin}, max {LabelMax}) are not valid.");
    }
}
