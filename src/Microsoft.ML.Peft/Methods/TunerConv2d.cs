using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// The shape of a 2-D convolution's sliding window: square kernel, stride, and zero padding before (top, left) and after
/// (bottom, right), which may differ (CNTK's exports pad strided convolutions asymmetrically).
/// </summary>
internal sealed record ConvGeometry(int Kernel, int Stride, int PadTop, int PadLeft, int PadBottom, int PadRight)
{
    /// <summary>Symmetric padding: what torchvision's convolutions use.</summary>
    public static ConvGeometry Symmetric(int kernel, int stride, int padding) => new(kernel, stride, padding, padding, padding, padding);

    /// <summary>Whether the padding is the same on every side (then the convolution pads by itself).</summary>
    public bool IsSymmetric => PadTop == PadLeft && PadTop == PadBottom && PadTop == PadRight;

    /// <summary>The input padded for a convolution with <see cref="ConvPadding"/>: unchanged when symmetric.</summary>
    public Tensor Pad(Tensor input, double value = 0) =>
        IsSymmetric ? input.alias() : nn.functional.pad(input, new long[] { PadLeft, PadRight, PadTop, PadBottom }, value: value);

    /// <summary>The padding the convolution itself applies after <see cref="Pad"/>.</summary>
    public long ConvPadding => IsSymmetric ? PadTop : 0;

    /// <summary>A convolution of the (already <see cref="Pad"/>ded) input with this window.</summary>
    public Tensor Convolve(Tensor padded, Tensor weight, Tensor? bias) =>
        nn.functional.conv2d(padded, weight, bias, strides: new long[] { Stride, Stride }, padding: new long[] { ConvPadding, ConvPadding });
}

/// <summary>An adapter of a convolution, kept by name in a <see cref="TunerConv2d"/>.</summary>
internal abstract class ConvAdapter : nn.Module
{
    protected ConvAdapter(string name) : base(name) { }

    /// <summary>
    /// The adapted output from the padded input (as <see cref="ConvGeometry.Pad"/> gives it), the base weight and bias:
    /// by default the base convolution followed by <see cref="Adapt"/>.
    /// </summary>
    public virtual Tensor Forward(Tensor padded, ConvGeometry geometry, Tensor weight, Tensor? bias)
    {
        using var output = geometry.Convolve(padded, weight, bias);
        return Adapt(padded, geometry, output);
    }

    /// <summary>The adapted output given the padded input and the base layer's output.</summary>
    public abstract Tensor Adapt(Tensor padded, ConvGeometry geometry, Tensor baseOutput);

    /// <summary>Folds the adapter into the base weight [out, in, k, k] and bias, in place.</summary>
    public abstract void MergeInto(Tensor weight, Tensor? bias);
}

/// <summary>
/// A 2-D convolution (square kernel, no groups or dilation) whose frozen weight methods adapt: it keeps adapters by
/// name, applies the active one, and merges it into the weight and back exactly, as <see cref="TunerLinear"/> does for
/// Linear layers. Parameters are <c>weight</c> [out, in, k, k] and optional <c>bias</c>, as torchvision names them.
/// </summary>
internal sealed class TunerConv2d : TunerLayer<ConvAdapter>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public TunerConv2d(long inChannels, long outChannels, ConvGeometry geometry, bool hasBias = false) : base("conv2d", inChannels, outChannels)
    {
        Geometry = geometry;
        // Zeros: the base weights are loaded from the pretrained model.
        weight = new Parameter(zeros(outChannels, inChannels, geometry.Kernel, geometry.Kernel));
        bias = hasBias ? new Parameter(zeros(outChannels)) : null;
        RegisterComponents();
    }

    public ConvGeometry Geometry { get; }

    public override Parameter Weight => weight;

    public override Parameter? Bias => bias;

    public override Tensor forward(Tensor input)
    {
        using var padded = Geometry.Pad(input);
        return Applied is { } adapter ? adapter.Forward(padded, Geometry, weight, bias) : Geometry.Convolve(padded, weight, bias);
    }

    protected override void MergeInto(ConvAdapter adapter, Tensor weight, Tensor? bias) => adapter.MergeInto(weight, bias);
}
