using Microsoft.ML.Peft.Adapters.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Adapters;

/// <summary>
/// A Linear layer (<c>y = x W^T + b</c>, parameters <c>weight</c> and <c>bias</c> as in PyTorch) that can carry a LoRA
/// adapter. The adapter can be merged into the weight for inference and unmerged exactly (the base weight is kept
/// while merged, so unmerging restores it bit for bit).
/// </summary>
internal sealed class PeftLinear : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private LoraLayer? lora;
    private Tensor? unmergedWeight;

    public PeftLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("linear")
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        weight = new Parameter(empty(outFeatures, inFeatures));
        bias = hasBias ? new Parameter(empty(outFeatures)) : null;
        using (no_grad())
        {
            nn.init.kaiming_uniform_(weight, a: Math.Sqrt(5));
            if (bias is not null)
            {
                var bound = 1 / Math.Sqrt(inFeatures);
                nn.init.uniform_(bias, -bound, bound);
            }
        }
        RegisterComponents();
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    public LoraLayer? Lora => lora;

    public bool Merged => unmergedWeight is not null;

    public void AttachLora(LoraLayer layer)
    {
        if (lora is not null) throw new InvalidOperationException("This layer already has a LoRA adapter.");
        lora = layer;
        register_module("lora", layer);
    }

    public override Tensor forward(Tensor input)
    {
        var output = nn.functional.linear(input, weight, bias);
        if (lora is null || Merged) return output;
        using var delta = lora.forward(input);
        return output.add_(delta);
    }

    /// <summary>Adds the adapter's update into the weight. No-op without adapter or when merged already.</summary>
    public void Merge()
    {
        if (lora is null || Merged) return;
        using (no_grad())
        {
            unmergedWeight = weight.detach().clone();
            using var delta = lora.DeltaWeight();
            weight.add_(delta);
        }
    }

    /// <summary>Restores the exact base weight that was there before <see cref="Merge"/>.</summary>
    public void Unmerge()
    {
        if (unmergedWeight is null) return;
        using (no_grad())
        {
            weight.copy_(unmergedWeight);
        }
        unmergedWeight.Dispose();
        unmergedWeight = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) unmergedWeight?.Dispose();
        base.Dispose(disposing);
    }
}
