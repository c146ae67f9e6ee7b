using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The trained part of an adapted matrix-factorisation model, beside a frozen base
/// (<see cref="MatrixFactorizationNetwork"/>): a shift of the global mean, offsets of every user's and item's bias, and
/// by <see cref="Method"/> offsets of the factors: none (<see cref="MatrixFactorizationAdaptation.Bias"/>), low-rank
/// (<see cref="MatrixFactorizationAdaptation.Lora"/>: <c>ΔP = A_user B_user</c>, one row of A per user, B shared,
/// A starting at zero as PEFT's LoRA on embeddings does) or a dense offset table (<see cref="MatrixFactorizationAdaptation.Full"/>).
/// <para>
/// Rows 1..BaseUserCount are the base's users; rows beyond are users the base never saw (cold start): their base part
/// is the base's <em>mean</em> user (the mean of its factor rows and biases, stored with the adapter), and what the
/// adaptation learns for them is their own offset from it. Row 0 (ids the adapted model does not know) stays zero, as
/// in the base, until <see cref="FixUnknownRows"/> makes the unknown user the mean of the new users the adaptation
/// trained (the newcomers of the adaptation's period are the best guess of who comes next), and likewise for items.
/// </para>
/// </summary>
internal sealed class MatrixFactorizationAdapter : nn.Module
{
    public const string GlobalMeanDeltaName = "global_mean_delta";
    public const string UserBiasDeltaName = "user_bias_delta";
    public const string ItemBiasDeltaName = "item_bias_delta";
    public const string UserMeanName = "user_mean";
    public const string ItemMeanName = "item_mean";
    public const string UnknownUserName = "unknown_user";
    public const string UnknownItemName = "unknown_item";

    private readonly List<NamedParameter> trained = new();
    private readonly List<NamedParameter> constants = new();
    private readonly Parameter globalMeanDelta, userBiasDelta, itemBiasDelta;
    private readonly Parameter userMean, itemMean, unknownUser, unknownItem;
    private readonly Parameter? userA, userB, itemA, itemB, userDelta, itemDelta;

    public MatrixFactorizationAdapter(MatrixFactorizationAdaptation method, int baseUserCount, int baseItemCount, int userCount, int itemCount, int rank, int loraRank)
        : base("matrix_factorization_adapter")
    {
        Method = method;
        BaseUserCount = baseUserCount;
        BaseItemCount = baseItemCount;
        UserCount = userCount;
        ItemCount = itemCount;
        Rank = rank;
        LoraRank = method == MatrixFactorizationAdaptation.Lora ? loraRank : 0;
        Parameter Trained(string name, params long[] shape)
        {
            var p = new Parameter(zeros(shape));
            trained.Add(new NamedParameter(name, p) { TopLevel = true });
            register_parameter(name, p);
            return p;
        }
        globalMeanDelta = Trained(GlobalMeanDeltaName, 1);
        userBiasDelta = Trained(UserBiasDeltaName, userCount + 1);
        itemBiasDelta = Trained(ItemBiasDeltaName, itemCount + 1);
        if (method == MatrixFactorizationAdaptation.Lora)
        {
            userA = Trained("user_factors_lora_A", userCount + 1, loraRank);
            userB = Trained("user_factors_lora_B", loraRank, rank);
            itemA = Trained("item_factors_lora_A", itemCount + 1, loraRank);
            itemB = Trained("item_factors_lora_B", loraRank, rank);
        }
        else if (method == MatrixFactorizationAdaptation.Full)
        {
            userDelta = Trained("user_factors_delta", userCount + 1, rank);
            itemDelta = Trained("item_factors_delta", itemCount + 1, rank);
        }
        // The base's mean user and item (factors, then bias): fixed when the adaptation starts, saved with it.
        userMean = new Parameter(zeros(rank + 1), requires_grad: false);
        itemMean = new Parameter(zeros(rank + 1), requires_grad: false);
        // Who an id the adapted model does not know is taken to be: the mean of the new users (items) the adaptation saw.
        unknownUser = new Parameter(zeros(rank + 1), requires_grad: false);
        unknownItem = new Parameter(zeros(rank + 1), requires_grad: false);
        foreach (var (name, p) in new[] { (UserMeanName, userMean), (ItemMeanName, itemMean), (UnknownUserName, unknownUser), (UnknownItemName, unknownItem) })
        {
            constants.Add(new NamedParameter(name, p) { TopLevel = true });
            register_parameter(name, p);
        }
    }

    public MatrixFactorizationAdaptation Method { get; }
    public int BaseUserCount { get; }
    public int BaseItemCount { get; }
    public int UserCount { get; }
    public int ItemCount { get; }
    public int Rank { get; }
    public int LoraRank { get; }

    /// <summary>The parameters the adaptation trains.</summary>
    public IReadOnlyList<NamedParameter> TrainedParameters => trained;

    /// <summary>Everything saved: the trained parameters and the base's mean rows.</summary>
    public IReadOnlyList<NamedParameter> SavedParameters => trained.Concat(constants).ToList();

    public long TrainedParameterCount => trained.Sum(p => p.Parameter.numel());

    /// <summary>
    /// Starts the adaptation: the base's mean user and item rows, the LoRA B matrices drawn from N(0, std²) (A starts at
    /// zero, so the adapted model starts as the base).
    /// </summary>
    public void Initialise(MatrixFactorizationNetwork network, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        static Tensor Mean(Tensor factors, Tensor bias, int count) =>
            cat(new[] { factors.narrow(0, 1, count).mean(new long[] { 0 }), bias.narrow(0, 1, count).mean(new long[] { 0 }).reshape(1) });
        userMean.copy_(Mean(network.UserFactors, network.UserBias, BaseUserCount));
        itemMean.copy_(Mean(network.ItemFactors, network.ItemBias, BaseItemCount));
        foreach (var b in new[] { userB, itemB })
            b?.copy_(randn(b.shape, generator: generator).mul_(std));
    }

    /// <summary>
    /// Fixes who unknown ids are (cold start at scoring time): the mean adapted row of the new users, and of the new items,
    /// that the adaptation trained, since the ids that come next resemble the newcomers of the adaptation's period more
    /// than the base's average. Without new users (items) the unknown user (item) stays the base's: zero offsets.
    /// </summary>
    public void FixUnknownRows(MatrixFactorizationNetwork network)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (unknown, baseCount, count, users) in new[] { (unknownUser, BaseUserCount, UserCount, true), (unknownItem, BaseItemCount, ItemCount, false) })
        {
            if (count == baseCount) continue;
            var rows = arange(baseCount + 1, count + 1, dtype: ScalarType.Int64, device: unknown.device);
            var (factors, bias) = users
                ? Rows(rows, network.UserFactors, network.UserBias, userMean, unknownUser, BaseUserCount, userBiasDelta, userA, userB, userDelta)
                : Rows(rows, network.ItemFactors, network.ItemBias, itemMean, unknownItem, BaseItemCount, itemBiasDelta, itemA, itemB, itemDelta);
            unknown.copy_(cat(new[] { factors.mean(new long[] { 0 }), bias.mean(new long[] { 0 }).reshape(1) }));
        }
    }

    /// <summary>The adapted factors and bias of table rows <paramref name="rows"/> (int64 [n]): [n, rank] and [n].</summary>
    private (Tensor Factors, Tensor Bias) Rows(Tensor rows, Parameter baseFactors, Parameter baseBias, Parameter mean, Parameter unknown, int baseCount,
        Parameter biasDelta, Parameter? a, Parameter? b, Parameter? delta)
    {
        var isNew = rows.gt(baseCount);
        var baseRows = rows.masked_fill(isNew, 0);
        // New rows start from the base's mean row; row 0 (unknown ids) is the fixed unknown row.
        var start = isNew.to_type(ScalarType.Float32).unsqueeze(1).mul(mean).add(rows.eq(0).to_type(ScalarType.Float32).unsqueeze(1).mul(unknown));
        // The base is frozen: its rows are read without a gradient.
        var factors = baseFactors.detach().index_select(0, baseRows).add(start.narrow(1, 0, Rank));
        var bias = baseBias.detach().index_select(0, baseRows).add(start.select(1, Rank)).add(biasDelta.index_select(0, rows));
        if (a is not null && b is not null) factors = factors.add(a.index_select(0, rows).matmul(b));
        if (delta is not null) factors = factors.add(delta.index_select(0, rows));
        return (factors, bias);
    }

    /// <summary>The adapted model's scores of table rows (0 for unknown ids).</summary>
    public Tensor Forward(MatrixFactorizationNetwork network, Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var (p, bu) = Rows(users, network.UserFactors, network.UserBias, userMean, unknownUser, BaseUserCount, userBiasDelta, userA, userB, userDelta);
        var (q, bi) = Rows(items, network.ItemFactors, network.ItemBias, itemMean, unknownItem, BaseItemCount, itemBiasDelta, itemA, itemB, itemDelta);
        return p.mul(q).sum(1).add(bu).add(bi).add(network.GlobalMean.detach()).add(globalMeanDelta).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The regularisation of a batch: the mean over its ratings of the squared norms of what the adaptation changes for
    /// the rated user and item (factor offsets and bias offsets), so an adaptation stays near the base unless the new
    /// ratings pull it away. The global mean's shift is not regularised.
    /// </summary>
    public Tensor Regularisation(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var total = userBiasDelta.index_select(0, users).square().add(itemBiasDelta.index_select(0, items).square());
        if (userA is not null && userB is not null && itemA is not null && itemB is not null)
        {
            total = total.add(userA.index_select(0, users).matmul(userB).square().sum(1));
            total = total.add(itemA.index_select(0, items).matmul(itemB).square().sum(1));
        }
        if (userDelta is not null && itemDelta is not null)
        {
            total = total.add(userDelta.index_select(0, users).square().sum(1));
            total = total.add(itemDelta.index_select(0, items).square().sum(1));
        }
        return total.mean().MoveToOuterDisposeScope();
    }
}

/// <summary>What an adaptation of a trained matrix-factorisation model changes (the base stays frozen and shared).</summary>
public enum MatrixFactorizationAdaptation
{
    /// <summary>
    /// Low-rank offsets of the user and item factors (<c>ΔP = A B</c>: each user gets <c>AdaptationRank</c> numbers,
    /// B is shared) plus re-fitted biases and global mean. The default.
    /// </summary>
    Lora,

    /// <summary>Re-fits the biases and the global mean only; the factors stay the base's.</summary>
    Bias,

    /// <summary>Dense offsets of every factor row plus re-fitted biases: as many trained numbers as the base (full fine-tuning, the reference).</summary>
    Full,
}
