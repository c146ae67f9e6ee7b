using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>What a named-entity recognizer saves besides the core metadata: columns, windows, tags and head inputs.</summary>
internal sealed class NerSettings
{
    public const string TaskName = "named-entity-recognition";
    public const string ConstrainedDecoding = "bio-viterbi";

    [JsonPropertyName("sentence_column")] public string SentenceColumnName { get; set; } = "";
    [JsonPropertyName("prediction_column")] public string PredictionColumnName { get; set; } = "";
    [JsonPropertyName("max_sequence_length")] public int MaxSequenceLength { get; set; }
    [JsonPropertyName("window_overlap")] public int WindowOverlap { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("tags")] public List<string> Tags { get; set; } = new();
    [JsonPropertyName("case_features")] public bool CaseFeatures { get; set; }
    [JsonPropertyName("decoding")] public string Decoding { get; set; } = ConstrainedDecoding;

    public JsonObject ToJson() => System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();

    /// <summary>Checks every value against bounds and the base model; the message names <paramref name="source"/>.</summary>
    public void Validate(BertConfig config, string source)
    {
        if (Tags.Count < 2 || Tags.Count > 10_000) throw new InvalidDataException($"{source}: {Tags.Count} tags is not valid (2 to 10000).");
        try
        {
            BioTags.Validate(Tags, source);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
        if (Tags.Distinct(StringComparer.Ordinal).Count() != Tags.Count) throw new InvalidDataException($"{source}: the tags repeat.");
        if (MaxSequenceLength < 3 || MaxSequenceLength > config.MaxPositionEmbeddings)
            throw new InvalidDataException($"{source}: the saved MaxSequenceLength {MaxSequenceLength} is not valid for this base model (3 to {config.MaxPositionEmbeddings}).");
        if (WindowOverlap < 0 || WindowOverlap > (MaxSequenceLength - 2) / 2)
            throw new InvalidDataException($"{source}: the saved WindowOverlap {WindowOverlap} is not valid (0 to half the window, {(MaxSequenceLength - 2) / 2}).");
        if (BatchSize <= 0 || BatchSize > 65_536) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid (1 to 65536).");
        if (Decoding != ConstrainedDecoding) throw new InvalidDataException($"{source}: decoding '{Decoding}' is not known.");
        foreach (var name in new[] { SentenceColumnName, PredictionColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
    }
}
