using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A Linear layer (<c>y = x W^T + b</c>, parameters <c>weight</c> and <c>bias</c> as in PyTorch) that keeps any number
/// of adapters by name, as Hugging Face PEFT's tuner layers do; one of them is active. The active adapter can be merged
/// into the weight for inference and unmerged exactly (the base weight and bias are kept while merged).
/// </summary>
internal sealed class TunerLinear : nn.Module<Tensor, Tensor>, ITunerLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly Dictionary<string, LinearAdapter> adapters = new(StringComparer.Ordinal);
    private string? activeAdapter;
    private Tensor? unmergedWeight, unmergedBias;

    public TunerLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("linear")
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // Zeros: the base weights are loaded from the pretrained model (no random draw at construction).
        weight = new Parameter(zeros(outFeatures, inFeatures));
        bias = hasBias ? new Parameter(zeros(outFeatures)) : null;
        RegisterComponents();
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    public bool Merged => unmergedWeight is not null;

    /// <summary>The adapter used by <see cref="forward"/>, or null for the plain layer.</summary>
    public string? ActiveAdapter
    {
        get => activeAdapter;
        set
        {
            if (value is not null && !adapters.ContainsKey(value)) throw new ArgumentException($"This layer has no adapter '{value}'.", nameof(value));
            if (Merged) throw new InvalidOperationException("Unmerge before switching adapters.");
            activeAdapter = value;
        }
    }

    public LinearAdapter? Adapter(string name) => adapters.GetValueOrDefault(name);

    /// <inheritdoc/>
    public nn.Module? AdapterModule(string name) => Adapter(name);

    /// <summary>Adds an adapter (registered as a child module named <paramref name="name"/>) and makes it active.</summary>
    public void AddAdapter(string name, LinearAdapter adapter)
    {
        if (adapters.ContainsKey(name)) throw new InvalidOperationException($"This layer already has an adapter '{name}'.");
        if (Merged) throw new InvalidOperationException("Unmerge before adding an adapter.");
        adapters[name] = adapter;
        register_module(name, adapter);
        activeAdapter = name;
    }

    public override Tensor forward(Tensor input)
    {
        if (activeAdapter is null || Merged) return nn.functional.linear(input, weight, bias);
        return adapters[activeAdapter].Forward(input, weight, bias);
    }

    /// <summary>Adds the active adapter's update into the weight and bias. No-op without one or when merged already.</summary>
    public void Merge()
    {
        if (activeAdapter is null || Merged) return;
        using (no_grad())
        {
            unmergedWeight = weight.detach().clone();
            unmergedBias = bias?.detach().clone();
            adapters[activeAdapter].MergeInto(weight, bias);
        }
    }

    /// <summary>Restores the exact base weight and bias that were there before <see cref="Merge"/>.</summary>
    public void Unmerge()
    {
        if (unmergedWeight is null) return;
        using (no_grad())
        {
            weight.copy_(unmergedWeight);
            if (unmergedBias is not null) bias!.copy_(unmergedBias);
        }
        unmergedWeight.Dispose();
        unmergedBias?.Dispose();
        unmergedWeight = unmergedBias = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            unmergedWeight?.Dispose();
            unmergedBias?.Dispose();
        }
        base.Dispose(disposing);
    }
}
