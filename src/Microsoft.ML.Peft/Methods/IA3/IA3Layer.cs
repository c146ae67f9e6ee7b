using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.IA3;

/// <summary>
/// (IA)³ on one Linear layer, as Hugging Face PEFT's <c>IA3Layer</c>: a learned vector <c>ia3_l</c> of shape (out, 1)
/// that multiplies the whole output (bias included), or for a feed-forward layer of shape (1, in) that multiplies the
/// input: <c>y = (x * l) W^T + b</c>. Merging scales the weight's rows (and the bias) or its columns.
/// </summary>
internal sealed class IA3Layer : LinearAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly Parameter ia3_l;
#pragma warning restore IDE1006

    public IA3Layer(long inFeatures, long outFeatures, bool feedforward, bool initialiseToOne, Generator? generator = null) : base("ia3")
    {
        Feedforward = feedforward;
        ia3_l = new Parameter(feedforward ? ones(1, inFeatures) : ones(outFeatures, 1));
        if (!initialiseToOne) using (no_grad()) ia3_l.normal_(0, 1, generator);
        RegisterComponents();
    }

    /// <summary>Whether the vector scales the input (feed-forward layer) rather than the output.</summary>
    public bool Feedforward { get; }

    public Parameter Vector => ia3_l;

    public override Tensor Adapt(Tensor input, Tensor baseOutput)
    {
        if (Feedforward) throw new InvalidOperationException("A feed-forward IA3 layer scales the input: call Forward.");
        using var scale = ia3_l.flatten();
        return baseOutput.mul(scale);
    }

    public override Tensor Forward(Tensor input, Tensor weight, Tensor? bias)
    {
        if (!Feedforward) return base.Forward(input, weight, bias);
        using var scale = ia3_l.flatten();
        using var scaled = input.mul(scale);
        return nn.functional.linear(scaled, weight, bias);
    }

    public override Tensor Forward(Tensor input, TunerLinear layer)
    {
        if (!Feedforward) return base.Forward(input, layer);
        using var scale = ia3_l.flatten();
        using var scaled = input.mul(scale);
        return layer.BaseForward(scaled);
    }

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        // (out, 1) scales rows, (1, in) scales columns.
        weight.mul_(ia3_l);
        if (!Feedforward && bias is not null)
        {
            using var scale = ia3_l.flatten();
            bias.mul_(scale);
        }
    }
}
