using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The (user, item, rating) triples of an ML.NET data view with key-typed user and item columns and a Single rating.
/// Rows with a missing user or item (key 0) or a missing (NaN) rating are skipped and counted.
/// </summary>
internal sealed class RatingData
{
    /// <summary>The largest key count accepted for users or items (the tables hold one row per key).</summary>
    public const ulong MaxKeyCount = 50_000_000;

    public required int[] Users { get; init; }
    public required int[] Items { get; init; }
    public required float[] Ratings { get; init; }
    /// <summary>The user key type's count: keys 1..UserCount.</summary>
    public required int UserCount { get; init; }
    /// <summary>The item key type's count: keys 1..ItemCount.</summary>
    public required int ItemCount { get; init; }
    public long MissingRatingRows { get; init; }
    public long MissingKeyRows { get; init; }
    public long InfiniteRatingRows { get; init; }

    public int Count => Ratings.Length;

    public static RatingData Read(IDataView data, string userColumn, string itemColumn, string labelColumn, string what)
    {
        var user = KeyColumn(data.Schema, userColumn, "MatrixColumnIndexColumnName", "user", what);
        var item = KeyColumn(data.Schema, itemColumn, "MatrixRowIndexColumnName", "item", what);
        var label = ColumnChecks.Find(data.Schema, labelColumn, "LabelColumnName", what);
        if (label.Type != NumberDataViewType.Single)
            throw new ArgumentException($"The rating column '{labelColumn}' (LabelColumnName) of the {what} has type {label.Type}; a Single column is needed.", "LabelColumnName");
        var users = new List<int>();
        var items = new List<int>();
        var ratings = new List<float>();
        long missingRating = 0, missingKey = 0, infinite = 0;
        using (var cursor = data.GetRowCursor(new[] { user, item, label }))
        {
            var userGetter = KeyReader(cursor, user);
            var itemGetter = KeyReader(cursor, item);
            var labelGetter = cursor.GetGetter<float>(label);
            float rating = 0;
            while (cursor.MoveNext())
            {
                labelGetter(ref rating);
                ulong u = userGetter(), i = itemGetter();
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
                if (u == 0 || i == 0)
                {
                    missingKey++;
                    continue;
                }
                users.Add((int)u);
                items.Add((int)i);
                ratings.Add(rating);
            }
        }
        return new RatingData
        {
            Users = users.ToArray(),
            Items = items.ToArray(),
            Ratings = ratings.ToArray(),
            UserCount = (int)user.Type.GetKeyCount(),
            ItemCount = (int)item.Type.GetKeyCount(),
            MissingRatingRows = missingRating,
            MissingKeyRows = missingKey,
            InfiniteRatingRows = infinite,
        };
    }

    /// <summary>Finds a key-typed column; any other type is refused with the way to make keys.</summary>
    public static DataViewSchema.Column KeyColumn(DataViewSchema schema, string name, string option, string role, string what)
    {
        var column = ColumnChecks.Find(schema, name, option, what);
        if (column.Type is not KeyDataViewType key)
            throw new ArgumentException($"The {role} column '{name}' ({option}) of the {what} has type {column.Type}; a key type is needed. " +
                $"Map the {role} ids to keys first, for example mlContext.Transforms.Conversion.MapValueToKey(\"{name}\"), and keep that transform in the pipeline so that scoring maps ids the same way.", option);
        if (key.Count == 0 || key.Count > MaxKeyCount)
            throw new ArgumentException($"The {role} column '{name}' ({option}) of the {what} is a key type with {(key.Count == 0 ? "no known count" : $"{key.Count:N0} values")}; " +
                $"keys with a known count of 1 to {MaxKeyCount:N0} are needed (MapValueToKey gives one).", option);
        return column;
    }

    /// <summary>A reader of a key column of any raw type (byte, ushort, uint, ulong) as ulong.</summary>
    public static Func<ulong> KeyReader(DataViewRow row, DataViewSchema.Column column)
    {
        var raw = column.Type.RawType;
        if (raw == typeof(uint))
        {
            var getter = row.GetGetter<uint>(column);
            uint v = 0;
            return () => { getter(ref v); return v; };
        }
        if (raw == typeof(ulong))
        {
            var getter = row.GetGetter<ulong>(column);
            ulong v = 0;
            return () => { getter(ref v); return v; };
        }
        if (raw == typeof(ushort))
        {
            var getter = row.GetGetter<ushort>(column);
            ushort v = 0;
            return () => { getter(ref v); return v; };
        }
        if (raw == typeof(byte))
        {
            var getter = row.GetGetter<byte>(column);
            byte v = 0;
            return () => { getter(ref v); return v; };
        }
        throw new ArgumentException($"The key column '{column.Name}' has raw type {raw.Name}, which is not a key's.");
    }
}
