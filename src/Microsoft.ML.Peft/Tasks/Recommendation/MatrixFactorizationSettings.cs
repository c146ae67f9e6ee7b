using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// What a matrix-factorisation model saves besides its tensors (the metadata entry of the model file): the task, its
/// columns, the table sizes and the training ratings' range. Read back untrusted and checked.
/// </summary>
internal sealed class MatrixFactorizationSettings
{
    public const string TaskName = "recommendation-matrix-factorization";
    public const int MaxRank = 4096;

    [JsonPropertyName("task")] public string Task { get; set; } = TaskName;
    [JsonPropertyName("user_column")] public string UserColumnName { get; set; } = "";
    [JsonPropertyName("item_column")] public string ItemColumnName { get; set; } = "";
    [JsonPropertyName("label_column")] public string LabelColumnName { get; set; } = "";
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("user_count")] public int UserCount { get; set; }
    [JsonPropertyName("item_count")] public int ItemCount { get; set; }
    [JsonPropertyName("rank")] public int Rank { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("rating_min")] public float RatingMin { get; set; }
    [JsonPropertyName("rating_max")] public float RatingMax { get; set; }
    [JsonPropertyName("clamp_scores")] public bool ClampScores { get; set; }

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this);

    public static MatrixFactorizationSettings Parse(byte[] utf8, string source)
    {
        MatrixFactorizationSettings? settings;
        try
        {
            settings = JsonSerializer.Deserialize<MatrixFactorizationSettings>(utf8, new JsonSerializerOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the metadata is not valid JSON: {e.Message}", e);
        }
        if (settings is null) throw new InvalidDataException($"{source}: the metadata is empty.");
        settings.Validate(source);
        return settings;
    }

    /// <summary>Checks every value against bounds; the message names <paramref name="source"/>.</summary>
    public void Validate(string source)
    {
        if (Task != TaskName) throw new InvalidDataException($"{source}: the metadata is of task '{Task}', not {TaskName}.");
        foreach (var name in new[] { UserColumnName, ItemColumnName, LabelColumnName, ScoreColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (UserCount <= 0 || (ulong)UserCount > RatingData.MaxKeyCount || ItemCount <= 0 || (ulong)ItemCount > RatingData.MaxKeyCount)
            throw new InvalidDataException($"{source}: the saved user and item counts ({UserCount}, {ItemCount}) are not valid (1 to {RatingData.MaxKeyCount:N0}).");
        if (Rank <= 0 || Rank > MaxRank) throw new InvalidDataException($"{source}: the saved rank {Rank} is not valid (1 to {MaxRank}).");
        if ((long)(UserCount + 1L + ItemCount + 1L) * Rank > 1L << 31)
            throw new InvalidDataException($"{source}: the saved tables ({UserCount} users, {ItemCount} items, rank {Rank}) are too large.");
        if (BatchSize <= 0 || BatchSize > 1 << 20) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid.");
        if (!float.IsFinite(RatingMin) || !float.IsFinite(RatingMax) || RatingMax < RatingMin)
            throw new InvalidDataException($"{source}: the saved rating range [{RatingMin}, {RatingMax}] is not valid.");
    }
}
