using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>Row-to-row mapping for <c>PredictionEngine</c>: scores the current row when an output is read.</summary>
internal sealed class ScoringRowMapper : IRowToRowMapper
{
    private readonly IRowScorer parent;
    private readonly OutputColumns columns;

    public ScoringRowMapper(IRowScorer parent, DataViewSchema inputSchema)
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
            if (columns.IsOutput(column.Index)) result.AddRange(columns.InputColumns);
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
        private readonly Func<object>? reader;
        private object? cachedInput;
        private long cachedPosition = -1;
        private object cached = Array.Empty<float>();

        public Row(ScoringRowMapper mapper, DataViewRow input, HashSet<int> active)
        {
            this.mapper = mapper;
            this.input = input;
            this.active = active;
            if (active.Any(mapper.columns.IsOutput)) reader = mapper.parent.InputReader(input, mapper.columns);
        }

        public override long Position => input.Position;

        public override long Batch => input.Batch;

        public override DataViewSchema Schema => mapper.OutputSchema;

        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!mapper.columns.IsOutput(column.Index)) return input.GetGetter<TValue>(mapper.InputSchema[column.Index]);
            if (reader is null) throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            return mapper.columns.Getter<TValue>(column.Index, Output);
        }

        /// <summary>Scores the current row once, whichever output is read first.</summary>
        private object Output()
        {
            var value = reader!();
            if (cachedPosition != input.Position || cachedInput is null || !mapper.parent.SameInput(value, cachedInput))
            {
                cached = FiniteOutputs.Check(mapper.parent.Score(new[] { value }))[0];
                cachedPosition = input.Position;
                cachedInput = value;
            }
            return cached;
        }
    }
}
