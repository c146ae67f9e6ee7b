using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The adapted rows of one side (users or items) of a frozen base: the side's embedding tables (one for matrix
/// factorisation, the GMF and MLP embeddings for neural collaborative filtering) and its bias, each with what the
/// adaptation trains: an offset of every row's bias, and by <see cref="MatrixFactorizationAdaptation"/> offsets of the
/// table rows: none (Bias), low-rank (Lora: <c>ΔT = A B</c>, one row of A per id, zero at the start as PEFT's LoRA on
/// embeddings; B shared, random) or dense (Full).
/// <para>
/// Rows 1..BaseCount are the base's ids; rows beyond are ids the base never saw (cold start): their base part is the
/// base's <em>mean</em> row (the mean of its table rows and biases, fixed when the adaptation starts and saved with it),
/// and what the adaptation learns for them is their own offset from it. Row 0 (ids the adapted model does not know)
/// stays the base's unknown row (zero) until <see cref="FixUnknownRow"/> makes it the mean adapted row of the
/// adaptation's newcomers. The base's tensors are read, never changed. Not a module: the adapter that holds it
/// registers its parameters (<see cref="TrainedParameters"/>, <see cref="Constants"/>), and never the base's.
/// </para>
/// </summary>
internal sealed class AdaptedRows
{
    private readonly IReadOnlyList<(string Name, Parameter Table)> tables;
    private readonly Parameter baseBias;
    private readonly List<NamedParameter> trained = new();
    private readonly List<NamedParameter> constants = new();
    private readonly Parameter biasDelta, mean, unknown;
    private readonly Parameter?[] a, b, delta;
    private readonly int width;

    /// <param name="side"><c>user</c> or <c>item</c>: the saved names are <c>{side}_bias_delta</c>, <c>{side}_mean</c>, <c>unknown_{side}</c>.</param>
    /// <param name="tables">The base's tables of this side under their names (saved names: <c>{name}_lora_A</c>, <c>{name}_lora_B</c>, <c>{name}_delta</c>).</param>
    /// <param name="bias">The base's bias of this side.</param>
    /// <param name="baseCount">The base's ids of this side.</param>
    /// <param name="count">The adapted model's ids of this side (the base's first, new ones after).</param>
    /// <param name="method">What the adaptation trains.</param>
    /// <param name="loraRank">Rank of the low-rank offsets (Lora).</param>
    public AdaptedRows(string side, IReadOnlyList<(string Name, Parameter Table)> tables, Parameter bias, int baseCount, int count, MatrixFactorizationAdaptation method, int loraRank)
    {
        this.tables = tables;
        baseBias = bias;
        BaseCount = baseCount;
        Count = count;
        width = tables.Sum(t => (int)t.Table.shape[1]);
        biasDelta = Add(trained, $"{side}_bias_delta", count + 1);
        a = new Parameter?[tables.Count];
        b = new Parameter?[tables.Count];
        delta = new Parameter?[tables.Count];
        for (int t = 0; t < tables.Count; t++)
        {
            var (name, table) = tables[t];
            if (method == MatrixFactorizationAdaptation.Lora)
            {
                a[t] = Add(trained, $"{name}_lora_A", count + 1, loraRank);
                b[t] = Add(trained, $"{name}_lora_B", loraRank, table.shape[1]);
            }
            else if (method == MatrixFactorizationAdaptation.Full)
            {
                delta[t] = Add(trained, $"{name}_delta", count + 1, table.shape[1]);
            }
        }
        // The base's mean row and who an unknown id is taken to be (tables' columns in order, then the bias): not trained, saved.
        mean = Add(constants, $"{side}_mean", width + 1);
        unknown = Add(constants, $"unknown_{side}", width + 1);
    }

    private Parameter Add(List<NamedParameter> list, string name, params long[] shape)
    {
        // Made on the base's device: an adapter is never moved.
        var p = new Parameter(zeros(shape, device: baseBias.device), requires_grad: ReferenceEquals(list, trained));
        list.Add(new NamedParameter(name, p) { TopLevel = true });
        return p;
    }

    /// <summary>The number of values an adapter side of these sizes saves (to check a file before allocating it).</summary>
    public static long SavedValues(int count, IReadOnlyList<int> widths, MatrixFactorizationAdaptation method, int loraRank)
    {
        long rows = count + 1L;
        long values = rows + 2L * (widths.Sum() + 1);
        foreach (var w in widths)
        {
            values += method switch
            {
                MatrixFactorizationAdaptation.Lora => rows * loraRank + (long)loraRank * w,
                MatrixFactorizationAdaptation.Full => rows * w,
                _ => 0,
            };
        }
        return values;
    }

    public int BaseCount { get; }
    public int Count { get; }

    /// <summary>The parameters the adaptation trains.</summary>
    public IReadOnlyList<NamedParameter> TrainedParameters => trained;

    /// <summary>The fixed rows saved with them: the base's mean row, the unknown row.</summary>
    public IReadOnlyList<NamedParameter> Constants => constants;

    /// <summary>Fixes the base's mean row and draws the LoRA B matrices from N(0, std²) (A starts at zero: the adapted rows start as the base's).</summary>
    public void Initialise(double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var parts = tables.Select(t => t.Table.detach().narrow(0, 1, BaseCount).mean(new long[] { 0 }))
            .Append(baseBias.detach().narrow(0, 1, BaseCount).mean(new long[] { 0 }).reshape(1));
        mean.copy_(cat(parts.ToArray()));
        foreach (var m in b) m?.copy_(randn(m.shape, generator: generator).mul_(std));
    }

    /// <summary>
    /// Makes the unknown row (row 0) the mean adapted row of the ids the base did not know; without any, it stays the
    /// base's unknown row.
    /// </summary>
    public void FixUnknownRow()
    {
        if (Count == BaseCount) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (rows, bias) = Rows(arange(BaseCount + 1, Count + 1, dtype: ScalarType.Int64, device: unknown.device));
        unknown.copy_(cat(rows.Select(r => r.mean(new long[] { 0 })).Append(bias.mean(new long[] { 0 }).reshape(1)).ToArray()));
    }

    /// <summary>The adapted table rows ([n, width] per table, in order) and biases ([n]) of <paramref name="rows"/> (int64 [n]).</summary>
    public (Tensor[] Tables, Tensor Bias) Rows(Tensor rows)
    {
        using var scope = NewDisposeScope();
        var isNew = rows.gt(BaseCount);
        var baseRows = rows.masked_fill(isNew, 0);
        // New rows start from the base's mean row; row 0 (unknown ids) is the fixed unknown row.
        var start = isNew.to_type(ScalarType.Float32).unsqueeze(1).mul(mean).add(rows.eq(0).to_type(ScalarType.Float32).unsqueeze(1).mul(unknown));
        var result = new Tensor[tables.Count];
        long offset = 0;
        for (int t = 0; t < tables.Count; t++)
        {
            var table = tables[t].Table;
            // The base is frozen: its rows are read without a gradient.
            var values = table.detach().index_select(0, baseRows).add(start.narrow(1, offset, table.shape[1]));
            if (a[t] is { } at && b[t] is { } bt) values = values.add(at.index_select(0, rows).matmul(bt));
            if (delta[t] is { } dt) values = values.add(dt.index_select(0, rows));
            result[t] = values.MoveToOuterDisposeScope();
            offset += table.shape[1];
        }
        var bias = baseBias.detach().index_select(0, baseRows).add(start.select(1, width)).add(biasDelta.index_select(0, rows));
        return (result, bias.MoveToOuterDisposeScope());
    }

    /// <summary>The squared norm of what the adaptation changes for each of <paramref name="rows"/> (row offsets and bias offset): [n].</summary>
    public Tensor Regularisation(Tensor rows)
    {
        using var scope = NewDisposeScope();
        var total = biasDelta.index_select(0, rows).square();
        for (int t = 0; t < tables.Count; t++)
        {
            if (a[t] is { } at && b[t] is { } bt) total = total.add(at.index_select(0, rows).matmul(bt).square().sum(1));
            if (delta[t] is { } dt) total = total.add(dt.index_select(0, rows).square().sum(1));
        }
        return total.MoveToOuterDisposeScope();
    }
}
