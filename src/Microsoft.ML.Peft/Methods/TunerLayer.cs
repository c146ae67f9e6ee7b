using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// What every adaptable base layer shares, as Hugging Face PEFT's tuner layers: adapters kept by name (registered as
/// sub-modules under that name), one active, and an exact merge of the active one into the weight (the base weight and
/// bias are kept while merged, and restored by <see cref="Unmerge"/>). The layer's own parameters and forward pass are the
/// subclass's (<see cref="TunerLinear"/>, <see cref="TunerConv2d"/>).
/// </summary>
internal abstract class TunerLayer<TAdapter> : nn.Module<Tensor, Tensor>, ITunerLayer where TAdapter : nn.Module
{
    private readonly Dictionary<string, TAdapter> adapters = new(StringComparer.Ordinal);
    private string? activeAdapter;
    private Tensor? unmergedWeight, unmergedBias;
    private bool merged;

    protected TunerLayer(string name, long inFeatures, long outFeatures) : base(name)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public abstract Parameter Weight { get; }

    public abstract Parameter? Bias { get; }

    public bool Merged => merged;

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

    /// <summary>The adapter the forward pass applies: null when none is active or the active one is merged.</summary>
    protected TAdapter? Applied => activeAdapter is null || Merged ? null : adapters[activeAdapter];

    public TAdapter? Adapter(string name) => adapters.GetValueOrDefault(name);

    public nn.Module? AdapterModule(string name) => Adapter(name);

    public void AddAdapter(string name, TAdapter adapter)
    {
        if (adapters.ContainsKey(name)) throw new InvalidOperationException($"This layer already has an adapter '{name}'.");
        if (Merged) throw new InvalidOperationException("Unmerge before adding an adapter.");
        adapters[name] = adapter;
        register_module(name, adapter);
        activeAdapter = name;
    }

    /// <summary>Folds <paramref name="adapter"/> into the base weight and bias, in place.</summary>
    protected abstract void MergeInto(TAdapter adapter, Tensor weight, Tensor? bias);

    public void Merge() => Merge(keepBase: true);

    /// <summary>
    /// Folds the active adapter into the weight. With <paramref name="keepBase"/> false no copy of the base weight is
    /// kept (half the memory of a merged layer) and the layer can no longer be unmerged: for a model that only scores.
    /// </summary>
    public void Merge(bool keepBase)
    {
        if (activeAdapter is null || Merged) return;
        using (no_grad())
        {
            if (keepBase)
            {
                unmergedWeight = Weight.detach().clone();
                unmergedBias = Bias?.detach().clone();
            }
            MergeInto(adapters[activeAdapter], Weight, Bias);
        }
        merged = true;
        WeightChanged();
    }

    public void Unmerge()
    {
        if (!merged) return;
        if (unmergedWeight is null)
            throw new InvalidOperationException("This layer was merged for scoring only, without keeping its base weight: it cannot be unmerged.");
        merged = false;
        using (no_grad())
        {
            Weight.copy_(unmergedWeight);
            if (unmergedBias is not null) Bias!.copy_(unmergedBias);
        }
        unmergedWeight.Dispose();
        unmergedBias?.Dispose();
        unmergedWeight = unmergedBias = null;
        WeightChanged();
    }

    /// <summary>Called after merging or unmerging changed the weight in place (to refresh copies derived from it).</summary>
    protected virtual void WeightChanged() { }

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
