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
    /// <summary>Explicit ratings or implicit feedback (files written before this field: explicit). Implicit models never clamp.</summary>
    [JsonPropertyName("feedback"), JsonConverter(typeof(JsonStringEnumConverter))] public RecommendationFeedback Feedback { get; set; } = RecommendationFeedback.Explicit;
    /// <summary>Present in an adapted model: what the adapter changes and which base it adapts.</summary>
    [JsonPropertyName("adaptation")] public AdaptationSettings? Adaptation { get; set; }

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
        if (!Enum.IsDefined(Feedback) || Feedback == RecommendationFeedback.Implicit && ClampScores)
            throw new InvalidDataException($"{source}: the saved feedback kind {Feedback} is not valid{(ClampScores ? " with clamped scores" : "")}.");
        Adaptation?.Validate(this, source);
    }
}

/// <summary>The adaptation part of an adapted model's metadata: method, sizes and the identity of its base.</summary>
internal sealed class AdaptationSettings
{
    [JsonPropertyName("method"), JsonConverter(typeof(JsonStringEnumConverter))] public MatrixFactorizationAdaptation Method { get; set; }
    [JsonPropertyName("lora_rank")] public int LoraRank { get; set; }
    [JsonPropertyName("base_user_count")] public int BaseUserCount { get; set; }
    [JsonPropertyName("base_item_count")] public int BaseItemCount { get; set; }
    /// <summary>SHA-256 of the base's tables (their safetensors serialisation).</summary>
    [JsonPropertyName("base_sha256")] public string BaseSha256 { get; set; } = "";
    /// <summary>Where the base model file was when the adaptation was trained (absent when the base is embedded).</summary>
    [JsonPropertyName("base_path")] public string? BasePath { get; set; }

    public void Validate(MatrixFactorizationSettings settings, string source)
    {
        if (!Enum.IsDefined(Method)) throw new InvalidDataException($"{source}: adaptation method {(int)Method} is not known.");
        if (Method == MatrixFactorizationAdaptation.Lora ? LoraRank <= 0 || LoraRank > MatrixFactorizationSettings.MaxRank : LoraRank != 0)
            throw new InvalidDataException($"{source}: the saved adaptation rank {LoraRank} does not fit method {Method}.");
        if (BaseUserCount <= 0 || BaseUserCount > settings.UserCount || BaseItemCount <= 0 || BaseItemCount > settings.ItemCount)
            throw new InvalidDataException($"{source}: the saved base sizes ({BaseUserCount} users, {BaseItemCount} items) do not fit the model's ({settings.UserCount}, {settings.ItemCount}).");
        if (BaseSha256.Length != 64 || !BaseSha256.All(Uri.IsHexDigit)) throw new InvalidDataException($"{source}: the saved base hash is not a SHA-256 hex string.");
        if ((BasePath?.Length ?? 0) > 4096) throw new InvalidDataException($"{source}: the saved base path is too long.");
    }
}

/// <summary>The user and item ids of a model's table rows, saved as the vocabulary entry (JSON) and read back untrusted.</summary>
internal sealed class IdLists
{
    [JsonPropertyName("users")] public List<string> Users { get; set; } = new();
    [JsonPropertyName("items")] public List<string> Items { get; set; } = new();

    public static byte[] ToUtf8(IdVocabulary users, IdVocabulary items) =>
        JsonSerializer.SerializeToUtf8Bytes(new IdLists { Users = users.Ids.ToList(), Items = items.Ids.ToList() });

    public static (IdVocabulary Users, IdVocabulary Items) Parse(byte[] utf8, MatrixFactorizationSettings settings, string source) =>
        Parse(utf8, settings.UserCount, settings.ItemCount, source);

    /// <summary>The id lists, checked against the model's table sizes.</summary>
    public static (IdVocabulary Users, IdVocabulary Items) Parse(byte[] utf8, int userCount, int itemCount, string source)
    {
        if (utf8.Length == 0) throw new InvalidDataException($"{source} has no id lists (a preview's file); train it again.");
        IdLists? lists;
        try
        {
            lists = JsonSerializer.Deserialize<IdLists>(utf8, new JsonSerializerOptions { MaxDepth = 4 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the id lists are not valid JSON: {e.Message}", e);
        }
        if (lists?.Users is null || lists.Items is null) throw new InvalidDataException($"{source}: the id lists are missing.");
        if (lists.Users.Count != userCount || lists.Items.Count != itemCount)
            throw new InvalidDataException($"{source}: the id lists ({lists.Users.Count} users, {lists.Items.Count} items) do not match the tables ({userCount}, {itemCount}).");
        return (new IdVocabulary(lists.Users, source + " (user ids)"), new IdVocabulary(lists.Items, source + " (item ids)"));
    }
}
