using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Biased matrix factorisation: <c>score(u, i) = global_mean + user_bias[u] + item_bias[i] + user_factors[u] · item_factors[i]</c>.
/// Users and items are ML.NET keys: row k of each table is key k (1-based); row 0 stands for every user or item not seen
/// in training (a missing key, or a key beyond the training key count) and stays zero, so an unknown user scores
/// <c>global_mean + item_bias[i]</c>, an unknown item <c>global_mean + user_bias[u]</c>, and both unknown the global mean.
/// The parameters are named (<c>user_factors</c>, <c>item_factors</c>, <c>user_bias</c>, <c>item_bias</c>,
/// <c>global_mean</c>), and those names are the keys of the saved tensors, so that adapters (low-rank deltas on the
/// tables, re-fitted biases) can address them.
/// </summary>
internal sealed class MatrixFactorizationNetwork : nn.Module<Tensor, Tensor, Tensor>, IRecommenderNetwork
{
    public const string UserFactorsName = "user_factors";
    public const string ItemFactorsName = "item_factors";
    public const string UserBiasName = "user_bias";
    public const string ItemBiasName = "item_bias";
    public const string GlobalMeanName = "global_mean";

    // Field names are the parameter names (TorchSharp's RegisterComponents).
#pragma warning disable IDE1006
    private readonly Parameter user_factors;
    private readonly Parameter item_factors;
    private readonly Parameter user_bias;
    private readonly Parameter item_bias;
    private readonly Parameter global_mean;
#pragma warning restore IDE1006

    /// <summary>Zero tables for <paramref name="userCount"/> user keys and <paramref name="itemCount"/> item keys (plus the unknown row each).</summary>
    public MatrixFactorizationNetwork(int userCount, int itemCount, int rank) : base("matrix_factorization")
    {
        UserCount = userCount;
        ItemCount = itemCount;
        Rank = rank;
        user_factors = new Parameter(zeros(userCount + 1, rank));
        item_factors = new Parameter(zeros(itemCount + 1, rank));
        user_bias = new Parameter(zeros(userCount + 1));
        item_bias = new Parameter(zeros(itemCount + 1));
        global_mean = new Parameter(zeros(1));
        RegisterComponents();
    }

    public int UserCount { get; }
    public int ItemCount { get; }
    public int Rank { get; }

    public Parameter UserFactors => user_factors;
    public Parameter ItemFactors => item_factors;
    public Parameter UserBias => user_bias;
    public Parameter ItemBias => item_bias;
    public Parameter GlobalMean => global_mean;

    /// <summary>The parameters under their saved names, in a fixed order.</summary>
    public IReadOnlyList<NamedParameter> NamedParameters() => new[]
    {
        new NamedParameter(UserFactorsName, user_factors) { TopLevel = true },
        new NamedParameter(ItemFactorsName, item_factors) { TopLevel = true },
        new NamedParameter(UserBiasName, user_bias) { TopLevel = true },
        new NamedParameter(ItemBiasName, item_bias) { TopLevel = true },
        new NamedParameter(GlobalMeanName, global_mean) { TopLevel = true },
    };

    public long ParameterCount => NamedParameters().Sum(p => p.Parameter.numel());

    public bool Fits(RecommenderSettings settings) => settings.UserCount == UserCount && settings.ItemCount == ItemCount && settings.Rank == Rank;

    /// <summary>
    /// Draws the factors from N(0, <paramref name="std"/>²) with <paramref name="generator"/> (rows 0 stay zero), zeroes the
    /// biases and sets the global mean.
    /// </summary>
    public void Initialise(double globalMean, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            foreach (var table in new[] { user_factors, item_factors })
            {
                var values = randn(table.shape, generator: generator).mul_(std);
                values[0].zero_();
                table.copy_(values);
            }
            user_bias.zero_();
            item_bias.zero_();
            global_mean.fill_(globalMean);
        }
    }

    /// <summary>Predicted ratings of row indices (already mapped: 0 for unknown) <paramref name="users"/> and <paramref name="items"/>, int64 [n].</summary>
    public override Tensor forward(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var p = user_factors.index_select(0, users);
        var q = item_factors.index_select(0, items);
        var dot = p.mul(q).sum(1);
        return dot.add(user_bias.index_select(0, users)).add(item_bias.index_select(0, items)).add(global_mean).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The regularisation term of a batch, as in stochastic-gradient matrix factorisation: the mean over the batch's rows of
    /// the squared norms of their user and item factors and biases (a user or item is regularised in proportion to how
    /// often it is rated).
    /// </summary>
    public Tensor Regularisation(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var p = user_factors.index_select(0, users).square().sum(1);
        var q = item_factors.index_select(0, items).square().sum(1);
        var b = user_bias.index_select(0, users).square().add(item_bias.index_select(0, items).square());
        return p.add(q).add(b).mean().MoveToOuterDisposeScope();
    }
}
