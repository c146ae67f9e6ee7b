using System.Reflection;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Ranking;

/// <summary>Reads a column's values as boxed objects of its raw type (text copied out of the cursor's buffers), and serves them back as getters.</summary>
internal static class RawValues
{
    public static Func<object> Reader(DataViewRow row, DataViewSchema.Column column)
    {
        if (column.Type.RawType == typeof(ReadOnlyMemory<char>))
        {
            var getter = row.GetGetter<ReadOnlyMemory<char>>(column);
            ReadOnlyMemory<char> value = default;
            return () =>
            {
                getter(ref value);
                return value.ToString().AsMemory();
            };
        }
        var method = typeof(RawValues).GetMethod(nameof(TypedReader), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(column.Type.RawType);
        return (Func<object>)method.Invoke(null, new object[] { row, column })!;
    }

    private static Func<object> TypedReader<T>(DataViewRow row, DataViewSchema.Column column)
    {
        var getter = row.GetGetter<T>(column);
        return () =>
        {
            T value = default!;
            getter(ref value);
            return value!;
        };
    }

    /// <summary>A <c>ValueGetter</c> of <paramref name="rawType"/> over <paramref name="value"/>.</summary>
    public static Delegate Getter(Type rawType, Func<object> value)
    {
        var method = typeof(RawValues).GetMethod(nameof(TypedGetter), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(rawType);
        return (Delegate)method.Invoke(null, new object[] { value })!;
    }

    private static ValueGetter<T> TypedGetter<T>(Func<object> value) => (ref T dst) => dst = (T)value();
}

/// <summary>
/// An in-memory data view of (user, item) pairs whose two columns copy the name, type and annotations (key values) of
/// given columns, holding values of their raw types: the candidate pairs the ranking evaluator scores with a model.
/// </summary>
internal sealed class PairDataView : IDataView
{
    private readonly object[] users;
    private readonly object[] items;

    public PairDataView(DataViewSchema.Column userColumn, DataViewSchema.Column itemColumn, object[] users, object[] items)
    {
        if (users.Length != items.Length) throw new ArgumentException("The user and item value arrays differ in length.");
        this.users = users;
        this.items = items;
        var builder = new DataViewSchema.Builder();
        builder.AddColumn(userColumn.Name, userColumn.Type, userColumn.Annotations);
        builder.AddColumn(itemColumn.Name, itemColumn.Type, itemColumn.Annotations);
        Schema = builder.ToSchema();
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => users.Length;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(this);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => new[] { GetRowCursor(columnsNeeded, rand) };

    private sealed class Cursor(PairDataView view) : DataViewRowCursor
    {
        private long position = -1;

        public override long Position => position;

        public override long Batch => 0;

        public override DataViewSchema Schema => view.Schema;

        public override bool MoveNext()
        {
            if (position + 1 >= view.users.Length)
            {
                position = view.users.Length;
                return false;
            }
            position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)position, 0);

        public override bool IsColumnActive(DataViewSchema.Column column) => true;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            var values = column.Index == 0 ? view.users : view.items;
            var type = view.Schema[column.Index].Type.RawType;
            if (typeof(TValue) != type) throw new InvalidOperationException($"Column '{column.Name}' is {type.Name}, not {typeof(TValue).Name}.");
            return (ValueGetter<TValue>)RawValues.Getter(type, () => values[position]);
        }
    }
}
