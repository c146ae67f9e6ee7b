using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Bottleneck;

/// <summary>A Linear layer with bias (<c>y = x W^T + b</c>, parameters <c>weight</c> and <c>bias</c>) created with zeros.</summary>
internal sealed class DenseLayer : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter bias;

    public DenseLayer(long inFeatures, long outFeatures) : base("dense")
    {
        weight = new Parameter(zeros(outFeatures, inFeatures));
        bias = new Parameter(zeros(outFeatures));
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public Parameter Bias => bias;

    /// <summary>Draws weight and bias as PyTorch's <c>nn.Linear</c> does (U(-1/sqrt(in), 1/sqrt(in))), from <paramref name="generator"/>.</summary>
    public DenseLayer InitialiseAsTorch(Generator? generator)
    {
        var bound = 1 / Math.Sqrt(weight.shape[1]);
        using (no_grad())
        {
            weight.uniform_(-bound, bound, generator);
            bias.uniform_(-bound, bound, generator);
        }
        return this;
    }

    public override Tensor forward(Tensor input) => nn.functional.linear(input, weight, bias);
}

/// <summary>
/// One bottleneck adapter: <c>h + up(f(down(h)))</c>. <c>down</c> ([bottleneck, hidden]) is drawn as LoRA's A is
/// (Kaiming-uniform, U(-1/sqrt(hidden), 1/sqrt(hidden))) with a zero bias; <c>up</c> starts at zero, so the adapter
/// starts as the identity.
/// </summary>
internal sealed class BottleneckAdapter : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // saved names
    private readonly DenseLayer down;
    private readonly DenseLayer up;
#pragma warning restore IDE1006
    private readonly string activation;

    public BottleneckAdapter(long hidden, long bottleneck, string activation, Generator? generator) : base("adapter")
    {
        down = new DenseLayer(hidden, bottleneck);
        up = new DenseLayer(bottleneck, hidden);
        this.activation = activation;
        var bound = 1 / Math.Sqrt(hidden);
        using (no_grad()) down.Weight.uniform_(-bound, bound, generator);
        RegisterComponents();
    }

    public DenseLayer Down => down;

    public DenseLayer Up => up;

    /// <summary>The activation between the projections: <c>relu</c> or <c>gelu</c> (exact).</summary>
    public string Activation => activation;

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var reduced = down.forward(hidden);
        var activated = activation == "gelu" ? nn.functional.gelu(reduced) : nn.functional.relu(reduced);
        return hidden.add(up.forward(activated)).MoveToOuterDisposeScope();
    }
}
