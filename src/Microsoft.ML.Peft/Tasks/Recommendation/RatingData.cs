using Microsoft.ML.Runtime;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The (user, item, rating) triples of an ML.NET data view with user and item id columns (keys, text or integers; see
/// <see cref="IdColumn"/>) and a Single rating, with users and items numbered as table rows: the ids of a given
/// vocabulary (a base model's) keep their rows, ids first seen here get the next rows in order of appearance.
/// Rows with a missing user or item or a missing (NaN) or infinite rating are skipped and counted.
/// </summary>
internal sealed class RatingData
{
    /// <summary>The largest number of users or items accepted (the tables hold one row per id).</summary>
    public const ulong MaxKeyCount = 50_000_000;

    /// <summary>Table rows of the users (1-based).</summary>
    public required int[] Users { get; init; }
    /// <summary>Table rows of the items (1-based).</summary>
    public required int[] Items { get; init; }
    public required float[] Ratings { get; init; }
    /// <summary>Every user id with a row: the given vocabulary's, then the new ones.</summary>
    public required IdVocabulary UserIds { get; init; }
    /// <summary>Every item id with a row: the given vocabulary's, then the new ones.</summary>
    public required IdVocabulary ItemIds { get; init; }
    /// <summary>Rows of the given user vocabulary (0 when none was given); rows beyond are new users.</summary>
    public int KnownUserCount { get; init; }
    /// <summary>Rows of the given item vocabulary (0 when none was given); rows beyond are new items.</summary>
    public int KnownItemCount { get; init; }
    public long MissingRatingRows { get; init; }
    public long MissingKeyRows { get; init; }
    public long InfiniteRatingRows { get; init; }

    public int Count => Ratings.Length;
    public int UserCount => UserIds.Count;
    public int ItemCount => ItemIds.Count;

    /// <summary>Refuses data with no usable rating (saying why) and warns of skipped rows on <paramref name="ch"/>.</summary>
    public void CheckUsable(IChannel ch, string labelColumn, string what)
    {
        var skipped = MissingRatingRows + MissingKeyRows + InfiniteRatingRows;
        if (Count == 0)
            throw new ArgumentException($"The {what} has no row with a rating in column '{labelColumn}' and a user and an item" +
                (skipped > 0 ? $" ({MissingRatingRows} rows have a missing (NaN) rating, {InfiniteRatingRows} an infinite one, {MissingKeyRows} a missing user or item)." : ": it is empty."), "input");
        if (MissingRatingRows > 0) ch.Warning($"{MissingRatingRows} rows of the {what} with a missing (NaN) rating in '{labelColumn}' were skipped.");
        if (InfiniteRatingRows > 0) ch.Warning($"{InfiniteRatingRows} rows of the {what} with an infinite rating in '{labelColumn}' were skipped.");
        if (MissingKeyRows > 0) ch.Warning($"{MissingKeyRows} rows of the {what} with a missing user or item (key 0 or empty) were skipped.");
    }

    public static RatingData Read(IDataView data, string userColumn, string itemColumn, string labelColumn, string what,
        IdVocabulary? knownUsers = null, IdVocabulary? knownItems = null)
    {
        var user = IdColumn.Find(data.Schema, userColumn, "MatrixColumnIndexColumnName", "user", what);
        var item = IdColumn.Find(data.Schema, itemColumn, "MatrixRowIndexColumnName", "item", what);
        var label = ColumnChecks.Find(data.Schema, labelColumn, "LabelColumnName", what);
        if (label.Type != NumberDataViewType.Single)
            throw new ArgumentException($"The rating column '{labelColumn}' (LabelColumnName) of the {what} has type {label.Type}; a Single column is needed.", "LabelColumnName");
        var userRows = new Numbering(knownUsers, "user", userColumn);
        var itemRows = new Numbering(knownItems, "item", itemColumn);
        var users = new List<int>();
        var items = new List<int>();
        var ratings = new List<float>();
        long missingRating = 0, missingKey = 0, infinite = 0;
        using (var cursor = data.GetRowCursor(new[] { user, item, label }))
        {
            var userGetter = IdColumn.Reader(cursor, user);
            var itemGetter = IdColumn.Reader(cursor, item);
            var labelGetter = cursor.GetGetter<float>(label);
            float rating = 0;
            while (cursor.MoveNext())
            {
                labelGetter(ref rating);
                string? u = userGetter(), i = itemGetter();
                if (float.IsNaN(rating))
                {
                    missingRating++;
                    continue;
                }
                if (float.IsInfinity(rating))
                {
                    infinite++;
                    continue;
                }
                if (u is null || i is null)
                {
                    missingKey++;
                    continue;
                }
                users.Add(userRows.RowOf(u));
                items.Add(itemRows.RowOf(i));
                ratings.Add(rating);
            }
        }
        return new RatingData
        {
            Users = users.ToArray(),
            Items = items.ToArray(),
            Ratings = ratings.ToArray(),
            UserIds = userRows.Vocabulary(what),
            ItemIds = itemRows.Vocabulary(what),
            KnownUserCount = knownUsers?.Count ?? 0,
            KnownItemCount = knownItems?.Count ?? 0,
            MissingRatingRows = missingRating,
            MissingKeyRows = missingKey,
            InfiniteRatingRows = infinite,
        };
    }

    /// <summary>Gives rows to ids: a known vocabulary's first, new ids after, in order of appearance.</summary>
    internal sealed class Numbering(IdVocabulary? known, string role, string column)
    {
        private readonly Dictionary<string, int> added = new(StringComparer.Ordinal);
        private readonly List<string> ids = known?.Ids.ToList() ?? new List<string>();

        public int RowOf(string id)
        {
            int row = known?.RowOf(id) ?? 0;
            if (row > 0) return row;
            if (added.TryGetValue(id, out row)) return row;
            if (id.Length > IdVocabulary.MaxIdLength)
                throw new ArgumentException($"A {role} id in column '{column}' is {id.Length:N0} characters long; ids of at most {IdVocabulary.MaxIdLength} are supported.");
            if ((ulong)ids.Count >= MaxKeyCount) throw new ArgumentException($"The {role} column '{column}' has more than {MaxKeyCount:N0} distinct ids.");
            ids.Add(id);
            added[id] = ids.Count;
            return ids.Count;
        }

        public IdVocabulary Vocabulary(string what) => new(ids, $"The {role} ids of the {what}");
    }
}
