using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>Row-to-row mapping for <c>PredictionEngine</c>: scores the current row when an output is read.</summary>
internal sealed class ScoringRowMapper : IRowToRowMapper
{
    private readonly PeftTextClassificationTransformer parent;
    private readonly OutputColumns columns;

    public ScoringRowMapper(PeftTextClassificationTransformer parent, DataViewSchema inputSchema)
    {
        this.parent = parent;
        InputSchema = inputSchema;
        columns = parent.Bind(inputSchema);
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema => columns.Schema;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new List<DataViewSchema.Column>();
        foreach (var column in dependingColumns)
        {
            if (columns.IsOutput(column.Index)) result.AddRange(columns.TextColumns);
            else result.Add(InputSchema[column.Index]);
        }
        return result.DistinctBy(c => c.Index).ToList();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) =>
        new Row(this, input, activeColumns.Select(c => c.Index).ToHashSet());

    private sealed class Row : DataViewRow
    {
        private readonly ScoringRowMapper mapper;
        private readonly DataViewRow input;
        private readonly HashSet<int> active;
        private readonly ValueGetter<ReadOnlyMemory<char>>? first;
        private readonly ValueGetter<ReadOnlyMemory<char>>? second;
        private string? cachedFirst, cachedSecond;
        private long cachedPosition = -1;
        private float[] cached = Array.Empty<float>();

        public Row(ScoringRowMapper mapper, DataViewRow input, HashSet<int> active)
        {
            this.mapper = mapper;
            this.input = input;
            this.active = active;
            if (active.Any(mapper.columns.IsOutput))
            {
                var text = mapper.columns.TextColumns;
                first = input.GetGetter<ReadOnlyMemory<char>>(text[0]);
                if (text.Count > 1) second = input.GetGetter<ReadOnlyMemory<char>>(text[1]);
            }
        }

        public override long Position => input.Position;

        public override long Batch => input.Batch;

        public override DataViewSchema Schema => mapper.OutputSchema;

        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!mapper.columns.IsOutput(column.Index)) return input.GetGetter<TValue>(mapper.InputSchema[column.Index]);
            if (first is null) throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            return mapper.columns.Getter<TValue>(column.Index, Probabilities);
        }

        /// <summary>Scores the current row once, whichever output is read first.</summary>
        private float[] Probabilities()
        {
            ReadOnlyMemory<char> value = default;
            first!(ref value);
            var a = value.ToString();
            string? b = null;
            if (second is not null)
            {
                second(ref value);
                b = value.ToString();
            }
            if (cachedPosition != input.Position || a != cachedFirst || b != cachedSecond)
            {
                cached = mapper.parent.Score(new[] { a }, b is null ? null : new[] { b })[0];
                cachedPosition = input.Position;
                cachedFirst = a;
                cachedSecond = b;
            }
            return cached;
        }
    }
}
