using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Torch;

// Layers whose construction draws no random numbers (libtorch's own Linear and Embedding initialise from its global
// generator): their values are loaded from a file or set by the method that creates them, from the run's generator.

/// <summary>A bias-free Linear layer (<c>y = x W^T</c>, parameter <c>weight</c>) created with zeros.</summary>
internal sealed class WeightOnlyLinear : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public WeightOnlyLinear(long inFeatures, long outFeatures) : base("linear")
    {
        weight = new Parameter(zeros(outFeatures, inFeatures));
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor input) => nn.functional.linear(input, weight);
}

/// <summary>An embedding table (parameter <c>weight</c>, one row per id) created with zeros.</summary>
internal sealed class EmbeddingTable : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public EmbeddingTable(long count, long width) : base("embedding")
    {
        weight = new Parameter(zeros(count, width));
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids) => weight.index_select(0, ids.flatten()).view(ids.shape.Append(weight.shape[1]).ToArray());
}
