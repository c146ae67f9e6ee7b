using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A Linear layer (<c>y = x W^T + b</c>, parameters <c>weight</c> and <c>bias</c> as in PyTorch) that keeps any number
/// of adapters by name, as Hugging Face PEFT's tuner layers do; one of them is active. The active adapter can be merged
/// into the weight for inference and unmerged exactly (the base weight and bias are kept while merged).
/// </summary>
/// <remarks>
/// With a <see cref="ComputeType"/> (bfloat16) the layer keeps a copy of its weight in that type, made from the fp32
/// weight whenever that changes (<see cref="RefreshComputeWeight"/>, merging, unmerging), and the base product runs on it:
/// the input is cast, the product cast back to fp32 and the fp32 bias added. A weight that is being trained
/// (<c>requires_grad</c>) always runs in fp32, so its gradient and optimizer state stay fp32 ("master weights").
/// The fp32 weight is kept: saving, merging, exporting and models sharing a base read it unchanged.
/// </remarks>
internal sealed class TunerLinear : TunerLayer<LinearAdapter>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private Tensor? computeWeight;

    public TunerLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("linear", inFeatures, outFeatures)
    {
        // Zeros: the base weights are loaded from the pretrained model (no random draw at construction).
        weight = new Parameter(zeros(outFeatures, inFeatures));
        bias = hasBias ? new Parameter(zeros(outFeatures)) : null;
        RegisterComponents();
    }

    public override Parameter Weight => weight;

    public override Parameter? Bias => bias;

    /// <summary>The type the frozen base product runs in (bfloat16), or null for the weight's own (fp32).</summary>
    public ScalarType? ComputeType { get; private set; }

    /// <summary>The reduced-precision copy of the weight the base product uses now, or null.</summary>
    public Tensor? ComputeWeight => computeWeight;

    /// <summary>Sets <see cref="ComputeType"/> (null: fp32) and makes the weight's copy in it.</summary>
    public void SetComputeType(ScalarType? type)
    {
        ComputeType = type == weight.dtype ? null : type;
        RefreshComputeWeight();
    }

    /// <summary>Makes the reduced-precision copy again from the current fp32 weight (none while the weight is trained).</summary>
    public void RefreshComputeWeight()
    {
        computeWeight?.Dispose();
        computeWeight = null;
        if (ComputeType is not { } type || weight.requires_grad) return;
        using (no_grad()) computeWeight = weight.detach().to(type).DetachFromDisposeScope();
    }

    public override Tensor forward(Tensor input)
    {
        if (Applied is not { } adapter) return BaseForward(input);
        if (input.dtype == weight.dtype) return adapter.Forward(input, this);
        // Adapters compute in fp32 (their parameters are fp32 master weights).
        using var full = input.to(weight.dtype);
        return adapter.Forward(full, this);
    }

    /// <summary>The base layer's output <c>x W^T + b</c> in the weight's type (fp32), through the reduced-precision copy when there is one.</summary>
    public Tensor BaseForward(Tensor input)
    {
        if (computeWeight is null || weight.requires_grad)
        {
            if (input.dtype == weight.dtype) return nn.functional.linear(input, weight, bias);
            using var full = input.to(weight.dtype);
            return nn.functional.linear(full, weight, bias);
        }
        using var scope = NewDisposeScope();
        var output = nn.functional.linear(input.to(computeWeight.dtype), computeWeight).to(weight.dtype);
        if (bias is not null) output = bias.requires_grad ? output.add(bias) : output.add_(bias);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The base product in the compute type, without casting back (for a frozen path that continues in bfloat16); the
    /// bias is added in that type. Only when <see cref="ComputeWeight"/> is set and no adapter applies.
    /// </summary>
    public Tensor? LowPrecisionForward(Tensor input)
    {
        if (computeWeight is null || weight.requires_grad || Applied is not null || (bias?.requires_grad ?? false)) return null;
        using var scope = NewDisposeScope();
        var output = nn.functional.linear(input.to(computeWeight.dtype), computeWeight);
        if (bias is not null) output.add_(bias.to(computeWeight.dtype));
        return output.MoveToOuterDisposeScope();
    }

    protected override void MergeInto(LinearAdapter adapter, Tensor weight, Tensor? bias) => adapter.MergeInto(weight, bias);

    protected override void WeightChanged()
    {
        if (ComputeType is not null) RefreshComputeWeight();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            computeWeight?.Dispose();
            computeWeight = null;
        }
        base.Dispose(disposing);
    }
}
