using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Training;

/// <summary>
/// A transfer set for distillation made from the training rows themselves (Tang et al. 2019, "Distilling task-specific
/// knowledge from BERT into simple neural networks"): each row is followed by <c>copies</c> perturbed copies of its texts
/// (every word dropped with one probability, then with another only an n-gram of the rest kept) whose label is missing,
/// so that the teacher's probabilities alone teach them. Every other column is the row's. Deterministic for a seed: the
/// perturbation of a copy depends on the seed, the row's position and the copy's number only.
/// </summary>
internal sealed class PerturbedCopies : IDataView
{
    private readonly IDataView input;
    private readonly HashSet<int> textColumns;
    private readonly int labelColumn;
    private readonly int copies;
    private readonly int seed;
    private readonly float dropProbability, nGramProbability;
    private readonly int maxNGram;

    /// <summary>The input's rows, each followed by its perturbed copies.</summary>
    public static IDataView WithCopies(IHostEnvironment env, IDataView input, IReadOnlyList<string> textColumns, string labelColumn, DistillationOptions options, int seed)
    {
        var perturbed = new PerturbedCopies(input, textColumns, labelColumn, options, seed);
        return AppendRowsDataView.Create(env, input.Schema, input, perturbed);
    }

    private PerturbedCopies(IDataView input, IReadOnlyList<string> textColumns, string labelColumn, DistillationOptions options, int seed)
    {
        this.input = input;
        this.textColumns = textColumns.Select(c => input.Schema[c].Index).ToHashSet();
        // The label's default is a missing key (the trainers read key-typed labels and refuse others with their own error).
        this.labelColumn = input.Schema[labelColumn].Index;
        copies = options.PerturbedCopies;
        dropProbability = options.WordDropProbability;
        nGramProbability = options.NGramProbability;
        maxNGram = options.MaxNGram;
        this.seed = seed;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema => input.Schema;

    public long? GetRowCount() => input.GetRowCount() * copies;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(this, input.GetRowCursor(columnsNeeded));

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };

    /// <summary>A perturbed copy of <paramref name="text"/>: words dropped, then sometimes an n-gram of the rest kept; never empty when the text was not.</summary>
    internal static string Perturb(string text, Random random, float dropProbability, float nGramProbability, int maxNGram)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0) return text;
        var kept = words.Where(_ => random.NextDouble() >= dropProbability).ToList();
        if (kept.Count == 0) kept.Add(words[random.Next(words.Length)]);
        if (kept.Count > 1 && random.NextDouble() < nGramProbability)
        {
            int n = Math.Min(kept.Count, random.Next(1, maxNGram + 1));
            kept = kept.GetRange(random.Next(kept.Count - n + 1), n);
        }
        return string.Join(' ', kept);
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly PerturbedCopies parent;
        private readonly DataViewRowCursor inner;
        private long position = -1;
        private int copy;

        public Cursor(PerturbedCopies parent, DataViewRowCursor inner)
        {
            this.parent = parent;
            this.inner = inner;
            copy = parent.copies;
        }

        public override long Position => position;

        public override long Batch => 0;

        public override DataViewSchema Schema => inner.Schema;

        public override bool IsColumnActive(DataViewSchema.Column column) => inner.IsColumnActive(column);

        public override bool MoveNext()
        {
            if (copy + 1 < parent.copies)
            {
                copy++;
            }
            else
            {
                if (!inner.MoveNext()) return false;
                copy = 0;
            }
            position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter()
        {
            var id = inner.GetIdGetter();
            return (ref DataViewRowId value) =>
            {
                id(ref value);
                value = value.Combine(new DataViewRowId((ulong)copy + 1, 0));
            };
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index == parent.labelColumn)
                return (ref TValue value) => value = default!;   // a missing key
            var getter = inner.GetGetter<TValue>(column);
            if (!parent.textColumns.Contains(column.Index) || typeof(TValue) != typeof(ReadOnlyMemory<char>)) return getter;
            var text = (ValueGetter<ReadOnlyMemory<char>>)(object)getter;
            ValueGetter<ReadOnlyMemory<char>> perturbed = (ref ReadOnlyMemory<char> value) =>
            {
                text(ref value);
                // One generator per copy and column: the same copy reads the same text whatever else is read.
                var random = new Random(unchecked((int)((((long)parent.seed * 1_000_003 + inner.Position) * 97 + copy) * 31 + column.Index)));
                value = Perturb(value.ToString(), random, parent.dropProbability, parent.nGramProbability, parent.maxNGram).AsMemory();
            };
            return (ValueGetter<TValue>)(object)perturbed;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
