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
/// As in the base, the interaction term of a pair with an unknown user or item (row 0) is zero, unless
/// <see cref="RecommenderAdapter.FixUnknownRows"/> made that side's unknown row the adaptation's mean newcomer: then it
/// is scored as that newcomer (the flags are saved as <c>unknown_rows_interact</c>: user, item).
/// </para>
/// </summary>
internal sealed class NeuralCollaborativeFilteringAdapter : RecommenderAdapter
{
    public const string UnknownRowsInteractName = "unknown_rows_interact";

    /// <summary>The frozen base network, out of reach of TorchSharp's registration of module fields (the adapter must never dispose or move it).</summary>
    private sealed record Frozen(NeuralCollaborativeFilteringNetwork Network);

    private readonly Frozen frozen;
    private readonly LinearAdapter?[] layerAdapters;
    private readonly List<NamedParameter> layerParameters = new();
    private readonly Parameter unknownRowsInteract;

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
        unknownRowsInteract = new Parameter(zeros(2, device: device), requires_grad: false);
        register_parameter(UnknownRowsInteractName, unknownRowsInteract);
    }

    /// <summary>The LoRA rank of a layer: the adaptation's, at most the layer's smaller side (1 for <c>predict</c>, whose output is one number).</summary>
    public static int LayerRank(int loraRank, long inFeatures, long outFeatures) => (int)Math.Min(loraRank, Math.Min(inFeatures, outFeatures));

    protected override IEnumerable<NamedParameter> ExtraTrained => layerParameters;

    protected override IEnumerable<NamedParameter> ExtraConstants => new[] { new NamedParameter(UnknownRowsInteractName, unknownRowsInteract) { TopLevel = true } };

    /// <summary>The number of values an adapter of these settings saves.</summary>
    public static long SavedValues(NeuralCollaborativeFilteringSettings settings)
    {
        var adaptation = settings.Adaptation!;
        long values = SavedValues(settings, new[] { settings.Rank, settings.Rank }) + 2;
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

    protected override void UnknownRowsFixed(bool user, bool item)
    {
        using var noGrad = no_grad();
        unknownRowsInteract[0] = user ? 1f : 0f;
        unknownRowsInteract[1] = item ? 1f : 0f;
    }

    protected override Tensor Interaction(Tensor users, Tensor items, Tensor[] userTables, Tensor[] itemTables)
    {
        using var scope = NewDisposeScope();
        // The frozen layers' weights are read without a gradient; the adapters' parameters are trained.
        var interaction = frozen.Network.Interaction(userTables[0], itemTables[0], userTables[1], itemTables[1], (k, layer, input) =>
            layerAdapters[k] is { } adapter ? adapter.Forward(input, layer.Weight.detach(), layer.Bias?.detach()) : nn.functional.linear(input, layer.Weight.detach(), layer.Bias?.detach()));
        var userKnown = users.gt(0).to_type(interaction.dtype).maximum(unknownRowsInteract[0]);
        var itemKnown = items.gt(0).to_type(interaction.dtype).maximum(unknownRowsInteract[1]);
        return interaction.mul(userKnown).mul(itemKnown).MoveToOuterDisposeScope();
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

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var noGrad = no_grad();
        weight.add_(weight_delta);
        if (bias is not null && bias_delta is not null) bias.add_(bias_delta);
    }
}
