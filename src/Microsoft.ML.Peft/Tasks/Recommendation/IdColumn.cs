using Microsoft.ML.Runtime;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Reads user or item ids from an ML.NET column, as text, whatever the column's type: a key type with key values (what
/// <c>MapValueToKey</c> makes: the id is the key's value, so two key mappings of the same ids agree), a key type without
/// key values (the id is the key number), text, or an integer column. Models match ids by value, never by key number,
/// so a model trained through one key mapping scores data mapped by another, and adapting a model to data with new
/// users or items needs no shared key mapping. A missing id (key 0, empty text) reads as null.
/// </summary>
internal static class IdColumn
{
    /// <summary>Finds the column and checks that ids can be read from it; the message names the column and its option.</summary>
    public static DataViewSchema.Column Find(DataViewSchema schema, string name, string option, string role, string what)
    {
        var column = ColumnChecks.Find(schema, name, option, what);
        if (!IsIdType(column.Type))
            throw new ArgumentException($"The {role} column '{name}' ({option}) of the {what} has type {column.Type}; {role} ids must be a key type (MapValueToKey), text or integers. " +
                (column.Type is NumberDataViewType ? $"Load the ids as text (DataKind.String) or map them with mlContext.Transforms.Conversion.MapValueToKey(\"{name}\")." : ""), option);
        return column;
    }

    /// <summary>
    /// Says on the channel how ids are read from the user and item columns when they are not keys with key values: text and
    /// integers are converted to ids as they are, keys without values by their numbers.
    /// </summary>
    public static void Announce(IChannel ch, DataViewSchema schema, string userColumn, string itemColumn)
    {
        foreach (var (name, role) in new[] { (userColumn, "user"), (itemColumn, "item") })
        {
            if (schema.GetColumnOrNull(name) is not { } column) continue;
            if (column.Type is TextDataViewType || column.Type is NumberDataViewType)
                ch.Info($"The {role} column '{name}' holds {(column.Type is TextDataViewType ? "text" : column.Type.ToString())}: each distinct value is a {role} id, matched by value when scoring (no key mapping needed).");
            else if (column.Type is KeyDataViewType && KeyValues(column) is null)
                ch.Info($"The {role} key column '{name}' has no key values: its key numbers are the {role} ids, so scoring data must use the same key numbering.");
        }
    }

    /// <summary>Whether ids can be read from a column of <paramref name="type"/>.</summary>
    public static bool IsIdType(DataViewType type) =>
        type is KeyDataViewType || type is TextDataViewType || IntegerTypes.Contains(type.RawType) && type is NumberDataViewType;

    /// <summary>Whether ids can be read from a column of this schema shape (for GetOutputSchema).</summary>
    public static bool IsIdType(SchemaShape.Column column) =>
        column.Kind == SchemaShape.Column.VectorKind.Scalar &&
        (column.IsKey || column.ItemType is TextDataViewType || IntegerTypes.Contains(column.ItemType.RawType) && column.ItemType is NumberDataViewType);

    private static readonly HashSet<Type> IntegerTypes = new() { typeof(sbyte), typeof(byte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long), typeof(ulong) };

    /// <summary>A reader of the current row's id (null when missing).</summary>
    public static Func<string?> Reader(DataViewRow row, DataViewSchema.Column column)
    {
        var type = column.Type;
        if (type is KeyDataViewType)
        {
            var key = KeyReader(row, column);
            var names = KeyValues(column);
            return () =>
            {
                ulong k = key();
                if (k == 0) return null;
                if (names is null) return k.ToString(CultureInfo.InvariantCulture);
                return k <= (ulong)names.Length ? names[k - 1] : null;
            };
        }
        if (type is TextDataViewType)
        {
            var getter = row.GetGetter<ReadOnlyMemory<char>>(column);
            ReadOnlyMemory<char> value = default;
            return () =>
            {
                getter(ref value);
                var span = value.Span.Trim();
                return span.IsEmpty ? null : span.ToString();
            };
        }
        return type.RawType switch
        {
            var t when t == typeof(int) => Number<int>(row, column),
            var t when t == typeof(uint) => Number<uint>(row, column),
            var t when t == typeof(long) => Number<long>(row, column),
            var t when t == typeof(ulong) => Number<ulong>(row, column),
            var t when t == typeof(short) => Number<short>(row, column),
            var t when t == typeof(ushort) => Number<ushort>(row, column),
            var t when t == typeof(sbyte) => Number<sbyte>(row, column),
            var t when t == typeof(byte) => Number<byte>(row, column),
            _ => throw new ArgumentException($"The column '{column.Name}' has type {type}; ids must be a key type, text or integers."),
        };
    }

    private static Func<string?> Number<T>(DataViewRow row, DataViewSchema.Column column) where T : IFormattable
    {
        var getter = row.GetGetter<T>(column);
        T value = default!;
        return () =>
        {
            getter(ref value);
            return value.ToString(null, CultureInfo.InvariantCulture);
        };
    }

    /// <summary>The key values of a key column as text (index k - 1 for key k), or null when it has none.</summary>
    public static string[]? KeyValues(DataViewSchema.Column column)
    {
        var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues);
        if (annotation is not { Type: VectorDataViewType vector }) return null;
        string[]? Read<T>(Func<T, string> format)
        {
            VBuffer<T> values = default;
            column.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref values);
            var dense = values.DenseValues().Select(format).ToArray();
            return dense.Length == 0 ? null : dense;
        }
        return vector.ItemType.RawType switch
        {
            var t when t == typeof(ReadOnlyMemory<char>) => Read<ReadOnlyMemory<char>>(v => v.Span.Trim().ToString()),
            var t when t == typeof(float) => Read<float>(v => v.ToString("R", CultureInfo.InvariantCulture)),
            var t when t == typeof(double) => Read<double>(v => v.ToString("R", CultureInfo.InvariantCulture)),
            var t when t == typeof(int) => Read<int>(v => v.ToString(CultureInfo.InvariantCulture)),
            var t when t == typeof(uint) => Read<uint>(v => v.ToString(CultureInfo.InvariantCulture)),
            var t when t == typeof(long) => Read<long>(v => v.ToString(CultureInfo.InvariantCulture)),
            var t when t == typeof(ulong) => Read<ulong>(v => v.ToString(CultureInfo.InvariantCulture)),
            var t when t == typeof(bool) => Read<bool>(v => v ? "true" : "false"),
            _ => null,
        };
    }

    /// <summary>A reader of a key column of any raw type (byte, ushort, uint, ulong) as ulong.</summary>
    private static Func<ulong> KeyReader(DataViewRow row, DataViewSchema.Column column)
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

/// <summary>
/// The ids a model has table rows for: row k (1-based) is <see cref="Ids"/>[k - 1]; row 0 is every id not in the list.
/// Saved in the model file and read back untrusted (unique, non-empty ids of bounded length).
/// </summary>
internal sealed class IdVocabulary
{
    public const int MaxIdLength = 1024;
    private readonly Dictionary<string, int> rows;

    public IdVocabulary(IReadOnlyList<string> ids, string source)
    {
        if (ids.Count > (int)RatingData.MaxKeyCount) throw new InvalidDataException($"{source}: {ids.Count:N0} ids are more than the {RatingData.MaxKeyCount:N0} allowed.");
        rows = new Dictionary<string, int>(ids.Count, StringComparer.Ordinal);
        for (int k = 0; k < ids.Count; k++)
        {
            var id = ids[k];
            if (string.IsNullOrEmpty(id) || id.Length > MaxIdLength) throw new InvalidDataException($"{source}: id {k + 1} is empty or longer than {MaxIdLength} characters.");
            if (!rows.TryAdd(id, k + 1)) throw new InvalidDataException($"{source}: the id '{id}' appears twice.");
        }
        Ids = ids;
    }

    public IReadOnlyList<string> Ids { get; }
    public int Count => Ids.Count;

    /// <summary>The row of an id: 1..Count, or 0 when unknown or missing.</summary>
    public int RowOf(string? id) => id is not null && rows.TryGetValue(id, out var row) ? row : 0;

    /// <summary>A reader of the current row's table row for the id column (0 for unknown); key columns are mapped once, up front.</summary>
    public Func<int> RowReader(DataViewRow row, DataViewSchema.Column column)
    {
        var read = IdColumn.Reader(row, column);
        return () => RowOf(read());
    }
}

/// <summary>The input columns a recommender reads and the score column it adds, as ML.NET's GetOutputSchema checks them.</summary>
internal static class RecommenderSchema
{
    /// <summary>
    /// Checks that the user and item columns hold ids and the rating column (when <paramref name="label"/> is given:
    /// explicit feedback) is a Single scalar, naming the column and its option; returns the input with the score column.
    /// </summary>
    public static SchemaShape OutputShape(SchemaShape inputSchema, string user, string item, string? label, string score)
    {
        void Require(string name, string option, Func<SchemaShape.Column, bool> ok, string needed)
        {
            if (!inputSchema.TryFindColumn(name, out var col))
                throw new ArgumentOutOfRangeException(option, $"The input has no column '{name}' ({option}).");
            if (col.Kind != SchemaShape.Column.VectorKind.Scalar || !ok(col))
                throw new ArgumentException($"The column '{name}' ({option}) must be {needed}, found {col.ItemType}.", option);
        }
        Require(user, "MatrixColumnIndexColumnName", IdColumn.IsIdType, "a key, text or integer scalar");
        Require(item, "MatrixRowIndexColumnName", IdColumn.IsIdType, "a key, text or integer scalar");
        if (label is not null) Require(label, "LabelColumnName", c => c.ItemType == NumberDataViewType.Single && !c.IsKey, "a Single scalar");
        return SentenceSimilarity.SimilaritySchema.OutputShape(inputSchema, score);
    }
}
