using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Ranking;

/// <summary>
/// The leave-last-out split of interactions (He et al. 2017): each user's latest interaction (greatest timestamp; of
/// rows with the same timestamp, the last in the data's order) goes to the test set, the others to the training set.
/// Users with a single interaction stay in the training set whole; rows with a missing user go to the training set
/// (trainers skip them). Both sets are views of the data (its rows in their order, its columns and types), not copies.
/// </summary>
internal static class LeaveLastOutSplit
{
    public static (IDataView Train, IDataView Test) Split(IDataView data, string userColumn, string timestampColumn)
    {
        if (data is null) throw new ArgumentNullException(nameof(data));
        var user = IdColumn.Find(data.Schema, userColumn, "userColumnName", "user", "data");
        var time = ColumnChecks.Find(data.Schema, timestampColumn, "timestampColumnName", "data");
        var latest = new Dictionary<string, (long Row, double Time, int Count)>(StringComparer.Ordinal);
        long rows = 0;
        using (var cursor = data.GetRowCursor(new[] { user, time }))
        {
            var userOf = IdColumn.Reader(cursor, user);
            var timeOf = TimeReader(cursor, time);
            while (cursor.MoveNext())
            {
                long row = rows++;
                var u = userOf();
                double t = timeOf();
                if (double.IsNaN(t)) throw new ArgumentException($"Row {row + 1} of the data has a missing timestamp in column '{timestampColumn}'.", "timestampColumnName");
                if (u is null) continue;
                latest[u] = latest.TryGetValue(u, out var last)
                    ? (t >= last.Time ? (row, t, last.Count + 1) : (last.Row, last.Time, last.Count + 1))
                    : (row, t, 1);
            }
        }
        var test = new bool[rows];
        foreach (var (_, last) in latest)
            if (last.Count > 1) test[last.Row] = true;
        return (new RowSubsetDataView(data, test, false), new RowSubsetDataView(data, test, true));
    }

    /// <summary>A reader of the timestamp as a number (NaN when missing): any numeric column, DateTime (ticks) or DateTimeOffset (UTC ticks).</summary>
    private static Func<double> TimeReader(DataViewRow row, DataViewSchema.Column column)
    {
        var raw = column.Type.RawType;
        if (column.Type is KeyDataViewType || column.Type is not (NumberDataViewType or DateTimeDataViewType or DateTimeOffsetDataViewType))
            throw new ArgumentException($"The timestamp column '{column.Name}' has type {column.Type}; a number, DateTime or DateTimeOffset column is needed.", "timestampColumnName");
        if (raw == typeof(DateTime))
        {
            var getter = row.GetGetter<DateTime>(column);
            DateTime v = default;
            return () => { getter(ref v); return v.Ticks; };
        }
        if (raw == typeof(DateTimeOffset))
        {
            var getter = row.GetGetter<DateTimeOffset>(column);
            DateTimeOffset v = default;
            return () => { getter(ref v); return v.UtcTicks; };
        }
        var read = Ranking.RawValues.Reader(row, column);
        return () => Convert.ToDouble(read(), CultureInfo.InvariantCulture);
    }
}

/// <summary>The rows of a data view whose positions are (or are not) marked, in order, with all its columns.</summary>
internal sealed class RowSubsetDataView : IDataView
{
    private readonly IDataView input;
    private readonly bool[] marked;
    private readonly bool keepMarked;
    private readonly long count;

    public RowSubsetDataView(IDataView input, bool[] marked, bool keepMarked)
    {
        this.input = input;
        this.marked = marked;
        this.keepMarked = keepMarked;
        count = marked.LongCount(m => m == keepMarked);
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema => input.Schema;

    public long? GetRowCount() => count;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(this, input.GetRowCursor(columnsNeeded));

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => new[] { GetRowCursor(columnsNeeded, rand) };

    private sealed class Cursor(RowSubsetDataView view, DataViewRowCursor rows) : DataViewRowCursor
    {
        private long inputRow = -1;
        private long position = -1;

        public override long Position => position;

        public override long Batch => rows.Batch;

        public override DataViewSchema Schema => view.Schema;

        public override bool MoveNext()
        {
            while (rows.MoveNext())
            {
                inputRow++;
                if (inputRow >= view.marked.Length)
                    throw new InvalidOperationException($"The data has more rows than the {view.marked.Length} it had when it was split; split it again.");
                if (view.marked[inputRow] != view.keepMarked) continue;
                position++;
                return true;
            }
            return false;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => rows.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => rows.IsColumnActive(column);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => rows.GetGetter<TValue>(column);

        protected override void Dispose(bool disposing)
        {
            if (disposing) rows.Dispose();
            base.Dispose(disposing);
        }
    }
}
