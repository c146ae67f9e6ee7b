using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// What every recommender model saves besides its tensors (the metadata entry of the model file): the task, its
/// columns, the table sizes, the feedback kind, the training ratings' range and, in an adapted model, the adaptation.
/// Each model kind adds its own (<see cref="MatrixFactorizationSettings"/>,
/// <see cref="Neural.NeuralCollaborativeFilteringSettings"/>). Read back untrusted and checked.
/// </summary>
internal abstract class RecommenderSettings
{
    protected RecommenderSettings() => Task = ExpectedTask;

    /// <summary>The task name of this model kind, which the metadata must carry.</summary>
    [JsonIgnore] protected abstract string ExpectedTask { get; }

    [JsonPropertyName("task")] public string Task { get; set; }
    [JsonPropertyName("user_column")] public string UserColumnName { get; set; } = "";
    [JsonPropertyName("item_column")] public string ItemColumnName { get; set; } = "";
    [JsonPropertyName("label_column")] public string LabelColumnName { get; set; } = "";
    [JsonPropertyName("score_column")] public string ScoreColumnName { get; set; } = "";
    [JsonPropertyName("user_count")] public int UserCount { get; set; }
    [JsonPropertyName("item_count")] public int ItemCount { get; set; }
    /// <summary>Width of each embedding table (the factors' rank).</summary>
    [JsonPropertyName("rank")] public int Rank { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("rating_min")] public float RatingMin { get; set; }
    [JsonPropertyName("rating_max")] public float RatingMax { get; set; }
    [JsonPropertyName("clamp_scores")] public bool ClampScores { get; set; }
    /// <summary>Explicit ratings or implicit feedback (files written before this field: explicit). Implicit models never clamp.</summary>
    [JsonPropertyName("feedback"), JsonConverter(typeof(JsonStringEnumConverter))] public RecommendationFeedback Feedback { get; set; } = RecommendationFeedback.Explicit;
    /// <summary>Present in an adapted model: what the adapter changes and which base it adapts.</summary>
    [JsonPropertyName("adaptation")] public AdaptationSettings? Adaptation { get; set; }

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, GetType());

    /// <summary>Reads and checks settings of kind <typeparamref name="T"/>; errors name <paramref name="source"/>.</summary>
    public static T Parse<T>(byte[] utf8, string source) where T : RecommenderSettings
    {
        T? settings;
        try
        {
            settings = JsonSerializer.Deserialize<T>(utf8, new JsonSerializerOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the metadata is not valid JSON: {e.Message}", e);
        }
        if (settings is null) throw new InvalidDataException($"{source}: the metadata is empty.");
        settings.Validate(source);
        return settings;
    }

    /// <summary>An unchecked copy.</summary>
    public T Copy<T>() where T : RecommenderSettings => (T)JsonSerializer.Deserialize(ToUtf8(), GetType())!;

    /// <summary>The settings of the base an adapted model's settings describe (its table sizes, no adaptation).</summary>
    public T BaseSettings<T>() where T : RecommenderSettings
    {
        var adaptation = Adaptation ?? throw new InvalidOperationException("Only an adapted model has a base.");
        var result = Copy<T>();
        result.UserCount = adaptation.BaseUserCount;
        result.ItemCount = adaptation.BaseItemCount;
        result.Adaptation = null;
        return result;
    }

    /// <summary>Whether two embedding tables of these sizes stay within 2^31 values each.</summary>
    public static bool TablesFit(long userCount, long itemCount, long rank) => (userCount + 1 + itemCount + 1) * rank <= 1L << 31;

    /// <summary>Checks every value against bounds; the message names <paramref name="source"/>.</summary>
    public void Validate(string source)
    {
        if (Task != ExpectedTask) throw new InvalidDataException($"{source}: the metadata is of task '{Task}', not {ExpectedTask}.");
        foreach (var name in new[] { UserColumnName, ItemColumnName, LabelColumnName, ScoreColumnName })
            if (string.IsNullOrEmpty(name) || name.Length > 1024) throw new InvalidDataException($"{source}: the saved column names are incomplete.");
        if (UserCount <= 0 || (ulong)UserCount > RatingData.MaxKeyCount || ItemCount <= 0 || (ulong)ItemCount > RatingData.MaxKeyCount)
            throw new InvalidDataException($"{source}: the saved user and item counts ({UserCount}, {ItemCount}) are not valid (1 to {RatingData.MaxKeyCount:N0}).");
        if (Rank <= 0 || Rank > MatrixFactorizationSettings.MaxRank) throw new InvalidDataException($"{source}: the saved rank {Rank} is not valid (1 to {MatrixFactorizationSettings.MaxRank}).");
        if (!TablesFit(UserCount, ItemCount, Rank))
            throw new InvalidDataException($"{source}: the saved tables ({UserCount} users, {ItemCount} items, rank {Rank}) are too large.");
        if (BatchSize <= 0 || BatchSize > 1 << 20) throw new InvalidDataException($"{source}: the saved BatchSize {BatchSize} is not valid.");
        if (!float.IsFinite(RatingMin) || !float.IsFinite(RatingMax) || RatingMax < RatingMin)
            throw new InvalidDataException($"{source}: the saved rating range [{RatingMin}, {RatingMax}] is not valid.");
        if (!Enum.IsDefined(Feedback)) throw new InvalidDataException($"{source}: the saved feedback kind {(int)Feedback} is not known.");
        if (Feedback == RecommendationFeedback.Implicit && ClampScores) throw new InvalidDataException($"{source}: an implicit-feedback model does not clamp its scores.");
        ValidateModel(source);
        if (Adaptation is not null)
        {
            if (Feedback != RecommendationFeedback.Explicit) throw new InvalidDataException($"{source}: an adaptation is of an explicit-feedback model, and this one is {Feedback}.");
            Adaptation.Validate(this, source);
        }
    }

    /// <summary>Checks what this model kind adds.</summary>
    protected virtual void ValidateModel(string source) { }
}

/// <summary>The adaptation part of an adapted model's metadata: method, sizes and the identity of its base.</summary>
internal sealed class AdaptationSettings
{
    [JsonPropertyName("method"), JsonConverter(typeof(JsonStringEnumConverter))] public MatrixFactorizationAdaptation Method { get; set; }
    [JsonPropertyName("lora_rank")] public int LoraRank { get; set; }
    [JsonPropertyName("base_user_count")] public int BaseUserCount { get; set; }
    [JsonPropertyName("base_item_count")] public int BaseItemCount { get; set; }
    /// <summary>SHA-256 of the base's tensors (their safetensors serialisation).</summary>
    [JsonPropertyName("base_sha256")] public string BaseSha256 { get; set; } = "";
    /// <summary>Where the base model file was when the adaptation was trained (absent when the base is embedded).</summary>
    [JsonPropertyName("base_path")] public string? BasePath { get; set; }

    public void Validate(RecommenderSettings settings, string source)
    {
        if (!Enum.IsDefined(Method)) throw new InvalidDataException($"{source}: adaptation method {(int)Method} is not known.");
        if (Method == MatrixFactorizationAdaptation.Lora ? LoraRank <= 0 || LoraRank > MatrixFactorizationSettings.MaxRank : LoraRank != 0)
            throw new InvalidDataException($"{source}: the saved adaptation rank {LoraRank} does not fit method {Method}.");
        if (BaseUserCount <= 0 || BaseUserCount > settings.UserCount || BaseItemCount <= 0 || BaseItemCount > settings.ItemCount)
            throw new InvalidDataException($"{source}: the saved base sizes ({BaseUserCount} users, {BaseItemCount} items) do not fit the model's ({settings.UserCount}, {settings.ItemCount}).");
        if (BaseSha256.Length != 64 || !BaseSha256.All(Uri.IsHexDigit)) throw new InvalidDataException($"{source}: the saved base hash is not a SHA-256 hex string.");
        if ((BasePath?.Length ?? 0) > 4096) throw new InvalidDataException($"{source}: the saved base path is too long.");
        if ((long)(settings.UserCount + 1L + settings.ItemCount + 1L) * Math.Max(LoraRank, Method == MatrixFactorizationAdaptation.Full ? settings.Rank : 0) > 1L << 31)
            throw new InvalidDataException($"{source}: the saved adapter tables ({settings.UserCount} users, {settings.ItemCount} items) are too large.");
    }
}
