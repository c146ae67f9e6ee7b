using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// What a matrix-factorisation model saves besides its tensors (the metadata entry of the model file): the common
/// recommender settings (<see cref="RecommenderSettings"/>) under its task name. Read back untrusted and checked.
/// </summary>
internal sealed class MatrixFactorizationSettings : RecommenderSettings
{
    public const string TaskName = "recommendation-matrix-factorization";
    public const int MaxRank = 4096;

    protected override string ExpectedTask => TaskName;

    public static MatrixFactorizationSettings Parse(byte[] utf8, string source) => Parse<MatrixFactorizationSettings>(utf8, source);
}

/// <summary>The user and item ids of a model's table rows, saved as the vocabulary entry (JSON) and read back untrusted.</summary>
internal sealed class IdLists
{
    [JsonPropertyName("users")] public List<string> Users { get; set; } = new();
    [JsonPropertyName("items")] public List<string> Items { get; set; } = new();

    public static byte[] ToUtf8(IdVocabulary users, IdVocabulary items) =>
        JsonSerializer.SerializeToUtf8Bytes(new IdLists { Users = users.Ids.ToList(), Items = items.Ids.ToList() });

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
