using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// Neural matrix factorisation (NeuMF, He et al. 2017) with biases:
/// <c>score(u, i) = global_mean + user_bias[u] + item_bias[i] + predict · [gmf(u, i) ; mlp(u, i)]</c>, where the
/// generalised-matrix-factorisation branch <c>gmf(u, i) = user_embedding_gmf[u] ⊙ item_embedding_gmf[i]</c> is the
/// elementwise product of its embeddings and the MLP branch feeds <c>[user_embedding_mlp[u] ; item_embedding_mlp[i]]</c>
/// through Linear + ReLU layers (<c>mlp.0</c>, <c>mlp.1</c>, ...). <c>predict</c> is a Linear layer without bias (the
/// global mean is the bias).
/// </summary>
/// <remarks>
/// Row k of each table is the user or item of vocabulary row k (1-based); row 0 stands for every id not seen in training
/// and stays zero. The interaction term is zero unless both the user and the item are known, so an unknown user scores
/// <c>global_mean + item_bias[i]</c>, an unknown item <c>global_mean + user_bias[u]</c>, as in
/// <see cref="MatrixFactorizationNetwork"/>. Parameters are named (<c>user_embedding_gmf</c>, <c>item_embedding_gmf</c>,
/// <c>user_embedding_mlp</c>, <c>item_embedding_mlp</c>, <c>mlp.0.weight</c>, <c>mlp.0.bias</c>, ...,
/// <c>predict.weight</c>, <c>user_bias</c>, <c>item_bias</c>, <c>global_mean</c>), the keys of the saved tensors, so that
/// adapters (low-rank deltas on the embeddings, adapters on the MLP's <see cref="TunerLinear"/> layers) can address them.
/// </remarks>
internal sealed class NeuralCollaborativeFilteringNetwork : nn.Module<Tensor, Tensor, Tensor>, IRecommenderNetwork
{
    public const string UserEmbeddingGmfName = "user_embedding_gmf";
    public const string ItemEmbeddingGmfName = "item_embedding_gmf";
    public const string UserEmbeddingMlpName = "user_embedding_mlp";
    public const string ItemEmbeddingMlpName = "item_embedding_mlp";
    public const string MlpName = "mlp";
    public const string PredictName = "predict";
    public const string UserBiasName = "user_bias";
    public const string ItemBiasName = "item_bias";
    public const string GlobalMeanName = "global_mean";

    // Field names are the parameter names (TorchSharp's RegisterComponents).
#pragma warning disable IDE1006
    private readonly Parameter user_embedding_gmf;
    private readonly Parameter item_embedding_gmf;
    private readonly Parameter user_embedding_mlp;
    private readonly Parameter item_embedding_mlp;
    private readonly ModuleList<TunerLinear> mlp;
    private readonly TunerLinear predict;
    private readonly Parameter user_bias;
    private readonly Parameter item_bias;
    private readonly Parameter global_mean;
#pragma warning restore IDE1006

    /// <summary>Zero parameters for <paramref name="userCount"/> users and <paramref name="itemCount"/> items (plus the unknown row each).</summary>
    public NeuralCollaborativeFilteringNetwork(int userCount, int itemCount, int rank, IReadOnlyList<int> hiddenLayerSizes) : base("neural_collaborative_filtering")
    {
        if (hiddenLayerSizes.Count == 0) throw new ArgumentException("The MLP needs at least one hidden layer.", nameof(hiddenLayerSizes));
        UserCount = userCount;
        ItemCount = itemCount;
        Rank = rank;
        HiddenLayerSizes = hiddenLayerSizes.ToArray();
        user_embedding_gmf = new Parameter(zeros(userCount + 1, rank));
        item_embedding_gmf = new Parameter(zeros(itemCount + 1, rank));
        user_embedding_mlp = new Parameter(zeros(userCount + 1, rank));
        item_embedding_mlp = new Parameter(zeros(itemCount + 1, rank));
        var shapes = LayerShapes(rank, hiddenLayerSizes);
        mlp = new ModuleList<TunerLinear>();
        foreach (var (input, output) in shapes.SkipLast(1)) mlp.Add(new TunerLinear(input, output));
        predict = new TunerLinear(shapes[^1].In, 1, hasBias: false);
        user_bias = new Parameter(zeros(userCount + 1));
        item_bias = new Parameter(zeros(itemCount + 1));
        global_mean = new Parameter(zeros(1));
        RegisterComponents();
    }

    public int UserCount { get; }
    public int ItemCount { get; }
    public int Rank { get; }
    public IReadOnlyList<int> HiddenLayerSizes { get; }

    /// <summary>The MLP's Linear layers, in order (adapters attach here).</summary>
    public IReadOnlyList<TunerLinear> MlpLayers => mlp.ToList();

    /// <summary>The Linear layers adapters attach to, under their saved names: <c>mlp.0</c>, <c>mlp.1</c>, ..., <c>predict</c>.</summary>
    public IReadOnlyList<(string Name, TunerLinear Layer)> Layers =>
        mlp.Select((layer, k) => ($"{MlpName}.{k}", layer)).Append((PredictName, predict)).ToList();

    public Parameter UserEmbeddingGmf => user_embedding_gmf;
    public Parameter ItemEmbeddingGmf => item_embedding_gmf;
    public Parameter UserEmbeddingMlp => user_embedding_mlp;
    public Parameter ItemEmbeddingMlp => item_embedding_mlp;
    public Parameter UserBias => user_bias;
    public Parameter ItemBias => item_bias;
    public Parameter GlobalMean => global_mean;

    /// <summary>The parameters under their saved names, in a fixed order.</summary>
    public IReadOnlyList<NamedParameter> NamedParameters()
    {
        var list = new List<NamedParameter>
        {
            new(UserEmbeddingGmfName, user_embedding_gmf) { TopLevel = true },
            new(ItemEmbeddingGmfName, item_embedding_gmf) { TopLevel = true },
            new(UserEmbeddingMlpName, user_embedding_mlp) { TopLevel = true },
            new(ItemEmbeddingMlpName, item_embedding_mlp) { TopLevel = true },
        };
        for (int k = 0; k < mlp.Count; k++)
        {
            list.Add(new NamedParameter($"{MlpName}.{k}.weight", mlp[k].Weight) { TopLevel = true });
            list.Add(new NamedParameter($"{MlpName}.{k}.bias", mlp[k].Bias!) { TopLevel = true });
        }
        list.Add(new NamedParameter($"{PredictName}.weight", predict.Weight) { TopLevel = true });
        list.Add(new NamedParameter(UserBiasName, user_bias) { TopLevel = true });
        list.Add(new NamedParameter(ItemBiasName, item_bias) { TopLevel = true });
        list.Add(new NamedParameter(GlobalMeanName, global_mean) { TopLevel = true });
        return list;
    }

    public long ParameterCount => NamedParameters().Sum(p => p.Parameter.numel());

    public bool Fits(RecommenderSettings settings) =>
        settings is NeuralCollaborativeFilteringSettings s && s.UserCount == UserCount && s.ItemCount == ItemCount && s.Rank == Rank && s.HiddenLayerSizes.SequenceEqual(HiddenLayerSizes);

    /// <summary>The (input, output) sizes of the Linear layers, in the order of <see cref="Layers"/>: the MLP's (with bias), then <c>predict</c> (without).</summary>
    public static IReadOnlyList<(long In, long Out)> LayerShapes(int rank, IReadOnlyList<int> hiddenLayerSizes)
    {
        var shapes = new List<(long In, long Out)>();
        long input = 2L * rank;
        foreach (var size in hiddenLayerSizes)
        {
            shapes.Add((input, size));
            input = size;
        }
        shapes.Add((rank + input, 1));
        return shapes;
    }

    /// <summary>The float32 values of a network of these sizes (to check a file before allocating it).</summary>
    public static long Values(NeuralCollaborativeFilteringSettings settings)
    {
        var shapes = LayerShapes(settings.Rank, settings.HiddenLayerSizes);
        return 2L * (settings.UserCount + 1 + settings.ItemCount + 1) * settings.Rank + (settings.UserCount + 1L) + (settings.ItemCount + 1L) + 1
            + shapes.SkipLast(1).Sum(s => (s.In + 1) * s.Out) + shapes[^1].In;
    }

    /// <summary>
    /// Draws the embeddings from N(0, <paramref name="std"/>²) (rows 0 stay zero) and the MLP's weights and biases as
    /// PyTorch's Linear does (uniform in ±1/√fan-in), with <paramref name="generator"/>; sets <c>predict</c> to zero (so the
    /// network starts as its bias model), the biases to the given ones (zero when null) and the global mean.
    /// </summary>
    public void Initialise(double globalMean, float[]? userBias, float[]? itemBias, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            foreach (var table in new[] { user_embedding_gmf, item_embedding_gmf, user_embedding_mlp, item_embedding_mlp })
            {
                var values = randn(table.shape, generator: generator).mul_(std);
                values[0].zero_();
                table.copy_(values);
            }
            foreach (var layer in mlp)
            {
                double bound = 1 / Math.Sqrt(layer.InFeatures);
                layer.Weight.copy_(rand(layer.Weight.shape, generator: generator).mul_(2 * bound).sub_(bound));
                layer.Bias!.copy_(rand(layer.Bias.shape, generator: generator).mul_(2 * bound).sub_(bound));
            }
            predict.Weight.zero_();
            Set(user_bias, userBias, UserCount);
            Set(item_bias, itemBias, ItemCount);
            global_mean.fill_(globalMean);
        }
    }

    private static void Set(Parameter bias, float[]? values, int count)
    {
        if (values is null)
        {
            bias.zero_();
            return;
        }
        if (values.Length != count + 1) throw new ArgumentException($"Expected {count + 1} bias values, got {values.Length}.");
        bias.copy_(tensor(values));
    }

    /// <summary>Scores of row indices (already mapped: 0 for unknown) <paramref name="users"/> and <paramref name="items"/>, int64 [n].</summary>
    public override Tensor forward(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var interaction = Interaction(user_embedding_gmf.index_select(0, users), item_embedding_gmf.index_select(0, items),
            user_embedding_mlp.index_select(0, users), item_embedding_mlp.index_select(0, items), null);
        var known = users.gt(0).logical_and(items.gt(0)).to_type(interaction.dtype);
        return interaction.mul(known).add(user_bias.index_select(0, users)).add(item_bias.index_select(0, items)).add(global_mean).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The interaction term <c>predict · [gmf ; mlp]</c> ([n]) of embedding rows ([n, rank] each). Each Linear layer
    /// <c>k</c> of <see cref="Layers"/> is applied by <paramref name="linear"/>(k, layer, input) when given (an adapter's
    /// forward over the frozen layer), and else by the layer itself.
    /// </summary>
    public Tensor Interaction(Tensor userGmf, Tensor itemGmf, Tensor userMlp, Tensor itemMlp, Func<int, TunerLinear, Tensor, Tensor>? linear)
    {
        using var scope = NewDisposeScope();
        Tensor Apply(int k, TunerLinear layer, Tensor input) => linear is null ? layer.forward(input) : linear(k, layer, input);
        var gmf = userGmf.mul(itemGmf);
        var hidden = cat(new[] { userMlp, itemMlp }, 1);
        for (int k = 0; k < mlp.Count; k++) hidden = nn.functional.relu(Apply(k, mlp[k], hidden));
        return Apply(mlp.Count, predict, cat(new[] { gmf, hidden }, 1)).squeeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The regularisation term of a batch: the mean over its rows of the squared norms of the row's user and item embeddings
    /// (both branches) and biases (a user or item is regularised in proportion to how often it is scored). The MLP and
    /// <c>predict</c> are not regularised.
    /// </summary>
    public Tensor Regularisation(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var sum = user_embedding_gmf.index_select(0, users).square().sum(1)
            .add(item_embedding_gmf.index_select(0, items).square().sum(1))
            .add(user_embedding_mlp.index_select(0, users).square().sum(1))
            .add(item_embedding_mlp.index_select(0, items).square().sum(1))
            .add(user_bias.index_select(0, users).square())
            .add(item_bias.index_select(0, items).square());
        return sum.mean().MoveToOuterDisposeScope();
    }
}
