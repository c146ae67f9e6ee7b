using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>
/// The lazy result of a PEFT classification transformer's <c>Transform</c>: input columns pass through; Score and
/// PredictedLabel come from one forward pass per batch of rows. A second cursor over the input columns that scoring reads runs a
/// batch ahead of the row cursor (both see the rows in the same order), so pass-through columns are never copied.
/// </summary>
internal sealed class ScoringDataView : IDataView
{
    private readonly IRowScorer parent;
    private readonly IDataView input;
    private readonly OutputColumns columns;

    public ScoringDataView(IRowScorer parent, IDataView input)
    {
        this.parent = parent;
        this.input = input;
        columns = parent.Bind(input.Schema);
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema => columns.Schema;

    public long? GetRowCount() => input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.ToList();
        bool scores = needed.Any(c => columns.IsOutput(c.Index));
        var inputColumns = needed.Where(c => !columns.IsOutput(c.Index)).Select(c => input.Schema[c.Index]).ToList();
        var rows = input.GetRowCursor(inputColumns);
        var lookahead = scores ? input.GetRowCursor(columns.InputColumns) : null;
        return new Cursor(this, rows, lookahead, needed.Select(c => c.Index).ToHashSet());
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };

    private sealed class Cursor : DataViewRowCursor
    {
        private const int LookaheadBatches = 8;
        private readonly ScoringDataView view;
        private readonly DataViewRowCursor rows;
        private readonly DataViewRowCursor? lookahead;
        private readonly HashSet<int> active;
        private readonly Func<object>? reader;
        private IReadOnlyList<object> batch = Array.Empty<object>();
        private int batchIndex;

        public Cursor(ScoringDataView view, DataViewRowCursor rows, DataViewRowCursor? lookahead, HashSet<int> active)
        {
            this.view = view;
            this.rows = rows;
            this.lookahead = lookahead;
            this.active = active;
            if (lookahead is not null) reader = view.parent.InputReader(lookahead, view.columns);
        }

        public override long Position => rows.Position;

        public override long Batch => rows.Batch;

        public override DataViewSchema Schema => view.Schema;

        public override bool MoveNext()
        {
            if (!rows.MoveNext()) return false;
            if (lookahead is not null)
            {
                batchIndex++;
                if (batchIndex >= batch.Count) ReadBatch();
            }
            return true;
        }

        private void ReadBatch()
        {
            var inputs = new List<object>();
            // Several batches are read at once: a scorer may sort them (text by length, so less goes to padding).
            while (inputs.Count < view.parent.BatchSize * LookaheadBatches && lookahead!.MoveNext()) inputs.Add(reader!());
            if (inputs.Count == 0) throw new InvalidOperationException("The input data view returned fewer rows to its second cursor than to its first.");
            batch = FiniteOutputs.Check(view.parent.Score(inputs));
            if (batch.Count != inputs.Count) throw new InvalidOperationException($"The scorer returned {batch.Count} outputs for {inputs.Count} rows.");
            batchIndex = 0;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => rows.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!view.columns.IsOutput(column.Index)) return rows.GetGetter<TValue>(view.input.Schema[column.Index]);
            if (!active.Contains(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            return view.columns.Getter<TValue>(column.Index, () => batch[batchIndex]);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                rows.Dispose();
                lookahead?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

/// <summary>A getter of output column <paramref name="index"/> (a <c>ValueGetter</c> of its type) over the current row's scorer output.</summary>
internal delegate Delegate OutputGetterFactory(int index, Func<object> output);

/// <summary>
/// The output schema of a transformer over one input schema, and getters for its new columns: by default a classifier's
/// Score and PredictedLabel over class probabilities (<c>float[]</c>); other tasks give their own getters.
/// </summary>
internal sealed class OutputColumns
{
    private readonly OutputGetterFactory? getters;

    public OutputColumns(DataViewSchema schema, int inputCount, IReadOnlyList<DataViewSchema.Column> inputColumns, OutputGetterFactory? getters = null)
    {
        Schema = schema;
        InputCount = inputCount;
        InputColumns = inputColumns;
        this.getters = getters;
    }

    public DataViewSchema Schema { get; }
    public int InputCount { get; }
    /// <summary>The input columns scoring reads (a classifier's Sentence1 and Sentence2, an image column...).</summary>
    public IReadOnlyList<DataViewSchema.Column> InputColumns { get; }
    public int ScoreIndex => InputCount;
    public int PredictedLabelIndex => InputCount + 1;

    public bool IsOutput(int index) => index >= InputCount;

    /// <summary>The getter of output column <paramref name="index"/> over the current row's scorer output.</summary>
    public ValueGetter<TValue> Getter<TValue>(int index, Func<object> output)
    {
        if (getters is not null)
        {
            return getters(index, output) as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{Schema[index].Name}' is {Schema[index].Type.RawType.Name}, not {typeof(TValue).Name}.");
        }
        return ClassifierGetter<TValue>(index, () => (float[])output());
    }

    /// <summary>Getter for Score (copy of the probabilities) or PredictedLabel (1-based key of the largest).</summary>
    private ValueGetter<TValue> ClassifierGetter<TValue>(int index, Func<float[]> probabilities)
    {
        if (index == ScoreIndex)
        {
            if (typeof(TValue) != typeof(VBuffer<float>)) throw new InvalidOperationException($"Column '{Schema[index].Name}' is VBuffer<Single>, not {typeof(TValue).Name}.");
            ValueGetter<VBuffer<float>> score = (ref VBuffer<float> dst) =>
            {
                var p = probabilities();
                var editor = VBufferEditor.Create(ref dst, p.Length);
                p.CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)score;
        }
        if (typeof(TValue) != typeof(uint)) throw new InvalidOperationException($"Column '{Schema[index].Name}' is a key (UInt32), not {typeof(TValue).Name}.");
        ValueGetter<uint> predicted = (ref uint dst) => dst = (uint)ArgMax(probabilities()) + 1;
        return (ValueGetter<TValue>)(Delegate)predicted;
    }

    /// <summary>The index of the largest value (the first of ties).</summary>
    public static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}

/// <summary>
/// What a classification transformer gives the shared scoring view and row mapper: its output schema over an input
/// schema, a reader of one row's inputs (the columns <see cref="OutputColumns.InputColumns"/> names), and the outputs of a
/// batch of those inputs (class probabilities for a classifier, or what the task's <see cref="OutputGetterFactory"/> reads).
/// </summary>
internal interface IRowScorer
{
    /// <summary>Rows scored per forward pass.</summary>
    int BatchSize { get; }

    /// <summary>The output schema and the input columns scoring reads; errors name a missing or mistyped column.</summary>
    OutputColumns Bind(DataViewSchema input);

    /// <summary>A function reading the current row's inputs from <paramref name="row"/> as one value.</summary>
    Func<object> InputReader(DataViewRow row, OutputColumns columns);

    /// <summary>Whether two values of <see cref="InputReader"/> are the same input (a prediction engine's row is scored once).</summary>
    bool SameInput(object a, object b);

    /// <summary>The output of each input, in order.</summary>
    IReadOnlyList<object> Score(IReadOnlyList<object> inputs);
}
