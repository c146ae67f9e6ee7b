using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The (user, item) interactions of an ML.NET data view for implicit-feedback training: user and item id columns (keys,
/// text or integers; see <see cref="IdColumn"/>) and no label. Users and items are numbered as table rows (1-based) in
/// order of appearance. Rows with a missing user or item are skipped and counted.
/// </summary>
internal sealed class InteractionData
{
    /// <summary>Table rows of the users (1-based).</summary>
    public required int[] Users { get; init; }
    /// <summary>Table rows of the items (1-based).</summary>
    public required int[] Items { get; init; }
    public required IdVocabulary UserIds { get; init; }
    public required IdVocabulary ItemIds { get; init; }
    public long MissingKeyRows { get; init; }

    public int Count => Users.Length;
    public int UserCount => UserIds.Count;
    public int ItemCount => ItemIds.Count;

    public static InteractionData Read(IDataView data, string userColumn, string itemColumn, string what)
    {
        var user = IdColumn.Find(data.Schema, userColumn, "MatrixColumnIndexColumnName", "user", what);
        var item = IdColumn.Find(data.Schema, itemColumn, "MatrixRowIndexColumnName", "item", what);
        var userRows = new RatingData.Numbering(null, "user", userColumn);
        var itemRows = new RatingData.Numbering(null, "item", itemColumn);
        var users = new List<int>();
        var items = new List<int>();
        long missing = 0;
        using (var cursor = data.GetRowCursor(new[] { user, item }))
        {
            var userGetter = IdColumn.Reader(cursor, user);
            var itemGetter = IdColumn.Reader(cursor, item);
            while (cursor.MoveNext())
            {
                string? u = userGetter(), i = itemGetter();
                if (u is null || i is null)
                {
                    missing++;
                    continue;
                }
                users.Add(userRows.RowOf(u));
                items.Add(itemRows.RowOf(i));
            }
        }
        return new InteractionData
        {
            Users = users.ToArray(),
            Items = items.ToArray(),
            UserIds = userRows.Vocabulary(what),
            ItemIds = itemRows.Vocabulary(what),
            MissingKeyRows = missing,
        };
    }

    /// <summary>Refuses data with no interaction, and data where every item was seen by every user (no negative exists); warns of skipped rows.</summary>
    public void CheckUsable(IChannel ch, string userColumn, string itemColumn, string what)
    {
        if (Count == 0)
            throw new ArgumentException($"The {what} has no row with a user in '{userColumn}' and an item in '{itemColumn}'" +
                (MissingKeyRows > 0 ? $" ({MissingKeyRows} rows have a missing user or item)." : ": it is empty."), "input");
        if (MissingKeyRows > 0) ch.Warning($"{MissingKeyRows} rows of the {what} with a missing user or item (key 0 or empty) were skipped.");
        if (ItemCount < 2)
            throw new ArgumentException($"The {what} names a single item ('{ItemIds.Ids[0]}' in '{itemColumn}'): implicit feedback needs other items to sample as negatives.", "input");
    }
}
