using TorchSharp;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// The trained part of an adapted neural collaborative-filtering model, beside a frozen base
/// (<see cref="NeuralCollaborativeFilteringNetwork"/>): a shift of the global mean; the adapted user and item rows of the
/// four embedding tables with their biases (<see cref="AdaptedRows"/>: bias offsets, and by method low-rank or dense
/// offsets of every table; new users and items start from the base's mean row); and adapters on the base's Linear
/// layers (<c>mlp.k</c> and <c>predict</c>) through the method seam's <see cref="LinearAdapter"/>: LoRA
/// (<see cref="LoraLayer"/>, rank <c>min(AdaptationRank, in, out)</c>, scaling 1, A Kaiming-uniform and B zero, saved
/// as <c>mlp.0.lora_A.weight</c>, ...) for <see cref="MatrixFactorizationAdaptation.Lora"/>, a dense offset of the weight
/// and bias (<see cref="DenseLinearOffset"/>) for <see cref="MatrixFactorizationAdaptation.Full"/>, none for
/// <see cref="MatrixFactorizationAdaptation.Bias"/>. The adapters are applied over the layers' frozen weights, never
/// attached to the (shared) layers themselves.
/// <para>
/// The layer adapters are regularised with the rows: each batch's loss adds Lambda times the squared Frobenius norm of
/// every layer's weight (and bias) change, which the ratings share (without it LoRA on the layers over-fitted the
/// 10,000 new ratings of the MovieLens-100K temporal benchmark: RMSE 1.079 against 1.032).
/// </para>
/// <para>
/// Cold start, as in matrix factorisation: new users and items get rows that start from the base's mean row, and an id
/// the adapted model does not know (row 0) takes the adaptation's mean newcomer's bias
/// (<see cref="AdaptedRows.FixUnknownRow"/>). Its interaction stays zero, as in the base: through the MLP the mean
/// newcomer's interaction is not the mean of the newcomers' interactions, and scoring unknown users with it (their mean
/// row's, or the newcomers' mean interaction with each item) cost 0.006 to 0.008 RMSE on the MovieLens-100K temporal
/// benchmark, where 71% of the test ratings are by unknown users.
/// </para>
/// </summary>
internal sealed class NeuralCollaborativeFilteringAdapter : RecommenderAdapter
{
    /// <summary>The frozen base network, out of reach of TorchSharp's registration of module fields (the adapter must never dispose or move it).</summary>
    private sealed record Frozen(NeuralCollaborativeFilteringNetwork Network);

    private readonly Frozen frozen;
    private readonly LinearAdapter?[] layerAdapters;
    private readonly List<NamedParameter> layerParameters = new();

    public NeuralCollaborativeFilteringAdapter(MatrixFactorizationAdaptation method, NeuralCollaborativeFilteringNetwork network, int userCount, int itemCount, int loraRank)
        : base("neural_collaborative_filtering_adapter", method, loraRank, network.GlobalMean,
            new AdaptedRows("user", new[] { (NeuralCollaborativeFilteringNetwork.UserEmbeddingGmfName, network.UserEmbeddingGmf), (NeuralCollaborativeFilteringNetwork.UserEmbeddingMlpName, network.UserEmbeddingMlp) },
                network.UserBias, network.UserCount, userCount, method, loraRank),
            new AdaptedRows("item", new[] { (NeuralCollaborativeFilteringNetwork.ItemEmbeddingGmfName, network.ItemEmbeddingGmf), (NeuralCollaborativeFilteringNetwork.ItemEmbeddingMlpName, network.ItemEmbeddingMlp) },
                network.ItemBias, network.ItemCount, itemCount, method, loraRank))
    {
        frozen = new Frozen(network);
        var device = network.GlobalMean.device;
        var layers = network.Layers;
        layerAdapters = new LinearAdapter?[layers.Count];
        for (int k = 0; k < layers.Count; k++)
        {
            var (name, layer) = layers[k];
            LinearAdapter? adapter = method switch
            {
                MatrixFactorizationAdaptation.Lora => new LoraLayer(layer.InFeatures, layer.OutFeatures, LayerRank(loraRank, layer.InFeatures, layer.OutFeatures), scaling: 1, dropout: 0),
                MatrixFactorizationAdaptation.Full => new DenseLinearOffset(layer.InFeatures, layer.OutFeatures, layer.Bias is not null),
                _ => null,
            };
            if (adapter is null) continue;
            adapter.to(device);
            register_module($"layer_{k}", adapter);
            layerAdapters[k] = adapter;
            layerParameters.AddRange(adapter switch
            {
                LoraLayer lora => new[] { new NamedParameter($"{name}.lora_A.weight", lora.A) { TopLevel = true }, new NamedParameter($"{name}.lora_B.weight", lora.B) { TopLevel = true } },
                DenseLinearOffset dense => dense.NamedParameters(name),
                _ => throw new InvalidOperationException($"No saved names for {adapter.GetType().Name}."),
            });
        }
    }

    /// <summary>The LoRA rank of a layer: the adaptation's, at most the layer's smaller side (1 for <c>predict</c>, whose output is one number).</summary>
    public static int LayerRank(int loraRank, long inFeatures, long outFeatures) => (int)Math.Min(loraRank, Math.Min(inFeatures, outFeatures));

    protected override IEnumerable<NamedParameter> ExtraTrained => layerParameters;

    /// <summary>The number of values an adapter of these settings saves.</summary>
    public static long SavedValues(NeuralCollaborativeFilteringSettings settings)
    {
        var adaptation = settings.Adaptation!;
        long values = SavedValues(settings, new[] { settings.Rank, settings.Rank });
        var shapes = NeuralCollaborativeFilteringNetwork.LayerShapes(settings.Rank, settings.HiddenLayerSizes);
        for (int k = 0; k < shapes.Count; k++)
        {
            var (input, output) = shapes[k];
            values += adaptation.Method switch
            {
                MatrixFactorizationAdaptation.Lora => LayerRank(adaptation.LoraRank, input, output) * (input + output),
                // The MLP's layers have a bias, predict (the last) has none.
                MatrixFactorizationAdaptation.Full => input * output + (k < shapes.Count - 1 ? output : 0),
                _ => 0,
            };
        }
        return values;
    }

    /// <summary>LoRA's A matrices drawn Kaiming-uniform (U(±1/√in), as <see cref="LoraLayer"/> does) from the adaptation's generator; B stays zero.</summary>
    protected override void InitialiseExtra(Generator generator)
    {
        using var noGrad = no_grad();
        foreach (var lora in layerAdapters.OfType<LoraLayer>())
        {
            double bound = 1 / Math.Sqrt(lora.A.shape[1]);
            lora.A.uniform_(-bound, bound, generator);
        }
    }

    /// <summary>The squared Frobenius norms of the layers' weight (and bias) changes: <c>scaling B A</c> for LoRA, the dense offsets for Full.</summary>
    protected override Tensor? SharedRegularisation()
    {
        Tensor? total = null;
        foreach (var adapter in layerAdapters)
        {
            var norm = adapter switch
            {
                LoraLayer lora => lora.DeltaWeight().square().sum(),
                DenseLinearOffset dense => dense.SquaredNorm(),
                _ => null,
            };
            if (norm is not null) total = total is null ? norm : total.add(norm);
        }
        return total;
    }

    /// <summary>The network's interaction of adapted rows, through the frozen layers and their adapters.</summary>
    private Tensor LayerInteraction(Tensor[] userTables, Tensor[] itemTables) =>
        // The frozen layers' weights are read without a gradient; the adapters' parameters are trained.
        frozen.Network.Interaction(userTables[0], itemTables[0], userTables[1], itemTables[1], (k, layer, input) =>
            layerAdapters[k] is { } adapter ? adapter.Forward(input, layer.Weight.detach(), layer.Bias?.detach()) : nn.functional.linear(input, layer.Weight.detach(), layer.Bias?.detach()));

    /// <summary>The interaction of known rows (new ones included); none for an unknown id (row 0), as in the base.</summary>
    protected override Tensor Interaction(Tensor users, Tensor items, Tensor[] userTables, Tensor[] itemTables)
    {
        using var scope = NewDisposeScope();
        var interaction = LayerInteraction(userTables, itemTables);
        return interaction.mul(users.gt(0).logical_and(items.gt(0)).to_type(interaction.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A dense offset of a Linear layer's weight and bias (full fine-tuning of the layer, kept apart from the frozen base):
/// <c>y = x (W + ΔW)^T + b + Δb</c>, both offsets starting at zero; saved as <c>{layer}.weight_delta</c> and
/// <c>{layer}.bias_delta</c>.
/// </summary>
internal sealed class DenseLinearOffset : LinearAdapter
{
#pragma warning disable IDE1006 // Field names are the parameter names (TorchSharp's RegisterComponents).
    private readonly Parameter weight_delta;
    private readonly Parameter? bias_delta;
#pragma warning restore IDE1006

    public DenseLinearOffset(long inFeatures, long outFeatures, bool hasBias) : base("dense_offset")
    {
        weight_delta = new Parameter(zeros(outFeatures, inFeatures));
        bias_delta = hasBias ? new Parameter(zeros(outFeatures)) : null;
        RegisterComponents();
    }

    public IReadOnlyList<NamedParameter> NamedParameters(string layer)
    {
        var list = new List<NamedParameter> { new($"{layer}.weight_delta", weight_delta) { TopLevel = true } };
        if (bias_delta is not null) list.Add(new NamedParameter($"{layer}.bias_delta", bias_delta) { TopLevel = true });
        return list;
    }

    public override Tensor Adapt(Tensor input, Tensor baseOutput)
    {
        using var scope = NewDisposeScope();
        return baseOutput.add(nn.functional.linear(input, weight_delta, bias_delta)).MoveToOuterDisposeScope();
    }

    /// <summary>The squared Frobenius norm of the offsets.</summary>
    public Tensor SquaredNorm() => bias_delta is null ? weight_delta.square().sum() : weight_delta.square().sum().add(bias_delta.square().sum());

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var noGrad = no_grad();
        weight.add_(weight_delta);
        if (bias is not null && bias_delta is not null) bias.add_(bias_delta);
    }
}
