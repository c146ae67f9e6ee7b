using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// What a neural collaborative-filtering model saves besides its tensors (the metadata entry of the model file): the
/// task, its columns, the table and layer sizes, the feedback kind and the training ratings' range. Read back untrusted
/// and checked.
/// </summary>
internal sealed class NeuralCollaborativeFilteringSettings
{
    public const string TaskName = "recommendation-neural-collaborative-filtering";
    public const int MaxHiddenLayers = 8;
    public const int MaxLayerSize = 4096;

    [JsonPropertyName("task")] public string Task { get; set; } = TaskName;
    [JsonPropertyName("user_column")] public string UserColumnName { get; set; } = "";
    [JsonPropertyName("item_column")] public string ItemColumnName { get; set; } = "";
    [JsonPropertyName("label_column")] public string LabelColumnName { get; set; } = "";
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("user_count")] public int UserCount { get; set; }
    [JsonPropertyName("item_count")] public int ItemCount { get; set; }
    /// <summary>Size of each of the four embeddings (both branches).</summary>
    [JsonPropertyName("rank")] public int Rank { get; set; }
    [JsonPropertyName("hidden_layers")] public int[] HiddenLayerSizes { get; set; } = Array.Empty<int>();
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("feedback"), JsonConverter(typeof(JsonStringEnumConverter))] public RecommendationFeedback Feedback { get; set; }
    [JsonPropertyName("rating_min")] public float RatingMin { get; set; }
    [JsonPropertyName("rating_max")] public float RatingMax { get; set; }
    [JsonPropertyName("clamp_scores")] public bool ClampScores { get; set; }

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this);

    public static NeuralCollaborativeFilteringSettings Parse(byte[] utf8, string source)
    {
        NeuralCollaborativeFilteringSettings? settings;
        try
        {
            settings = JsonSerializer.Deserialize<NeuralCollaborativeFilteringSettings>(utf8, new JsonSerializerOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the metadata is not valid JSON: {e.Message}", e);
        }
        if (settings is null) throw new InvalidDataException($"{source}: the metadata is empty.");
        settings.Validate(source);
        return settings;
    }

    /// <summary>Whether the tables of these sizes stay within 2^31 values each.</summary>
    public static bool TablesFit(long userCount, long itemCount, long rank) => (userCount + 1 + itemCount + 1) * rank <= 1L << 31;

    /// <summary>Checks every value against bounds; the message names <paramref name="source"/>.</summary>
    public void Validate(string source)
    {
        if (Task != TaskName) throw new InvalidDataException($"{source}: the metadata is of task '{Task}', not {TaskName}.");
        foreach (var name in new[] { UserColumnName, ItemColumnName, LabelColumnName, ScoreColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (UserCount <= 0 || (ulong)UserCount > RatingData.MaxKeyCount || ItemCount <= 0 || (ulong)ItemCount > RatingData.MaxKeyCount)
            throw new InvalidDataException($"{source}: the saved user and item counts ({UserCount}, {ItemCount}) are not valid (1 to {RatingData.MaxKeyCount:N0}).");
        if (Rank <= 0 || Rank > MatrixFactorizationSettings.MaxRank) throw new InvalidDataException($"{source}: the saved rank {Rank} is not valid (1 to {MatrixFactorizationSettings.MaxRank}).");
        if (!TablesFit(UserCount, ItemCount, Rank))
            throw new InvalidDataException($"{source}: the saved tables ({UserCount} users, {ItemCount} items, rank {Rank}) are too large.");
        if (HiddenLayerSizes is null || HiddenLayerSizes.Length == 0 || HiddenLayerSizes.Length > MaxHiddenLayers || HiddenLayerSizes.Any(s => s <= 0 || s > MaxLayerSize))
            throw new InvalidDataException($"{source}: the saved hidden layer sizes are not valid (1 to {MaxHiddenLayers} layers of 1 to {MaxLayerSize}).");
        if (BatchSize <= 0 || BatchSize > 1 << 20) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid.");
        if (!Enum.IsDefined(Feedback)) throw new InvalidDataException($"{source}: the saved feedback kind {(int)Feedback} is not known.");
        if (!float.IsFinite(RatingMin) || !float.IsFinite(RatingMax) || RatingMax < RatingMin)
            throw new InvalidDataException($"{source}: the saved rating range [{RatingMin}, {RatingMax}] is not valid.");
        if (Feedback == RecommendationFeedback.Implicit && ClampScores) throw new InvalidDataException($"{source}: an implicit-feedback model does not clamp its scores.");
    }
}
