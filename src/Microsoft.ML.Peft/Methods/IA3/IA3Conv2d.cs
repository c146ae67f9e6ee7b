using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.IA3;

/// <summary>
/// IA3 on a convolution, as Hugging Face PEFT's IA3 <c>Conv2d</c>: a learned vector <c>ia3_l</c> of shape (1, out, 1, 1)
/// scaling the output channels, or for a feed-forward module (1, in, 1, 1) scaling the input channels. Initialised to
/// ones (the adapted layer starts equal to the base) or N(0, 1). Merging multiplies the kernel's output (or input)
/// channels, and for output scaling the bias.
/// </summary>
internal sealed class IA3Conv2d : ConvAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly Parameter ia3_l;
#pragma warning restore IDE1006

    public IA3Conv2d(long inChannels, long outChannels, bool feedforward, bool initialiseToOne, Generator? generator = null) : base("ia3")
    {
        Feedforward = feedforward;
        ia3_l = new Parameter(ones(1, feedforward ? inChannels : outChannels, 1, 1));
        if (!initialiseToOne) using (no_grad()) ia3_l.normal_(0, 1, generator);
        RegisterComponents();
    }

    public bool Feedforward { get; }

    public Parameter Vector => ia3_l;

    public override Tensor Adapt(Tensor padded, ConvGeometry geometry, Tensor baseOutput)
    {
        if (Feedforward) throw new InvalidOperationException("A feed-forward IA3 layer scales the input: call Forward.");
        return baseOutput.mul(ia3_l);
    }

    public override Tensor Forward(Tensor padded, ConvGeometry geometry, Tensor weight, Tensor? bias)
    {
        if (!Feedforward) return base.Forward(padded, geometry, weight, bias);
        // Zero padding commutes with the channel scaling.
        using var scaled = padded.mul(ia3_l);
        return geometry.Convolve(scaled, weight, bias);
    }

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        if (Feedforward)
        {
            // (1, in, 1, 1) scales the kernel's input channels.
            weight.mul_(ia3_l);
            return;
        }
        using var rows = ia3_l.view(-1, 1, 1, 1);
        weight.mul_(rows);
        if (bias is not null)
        {
            using var scale = ia3_l.flatten();
            bias.mul_(scale);
        }
    }
}
