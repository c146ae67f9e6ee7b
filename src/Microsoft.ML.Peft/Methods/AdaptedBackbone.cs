using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods.Lora;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>How <see cref="AdaptedBackbone.AddWeightedLoraAdapter"/> combines LoRA adapters (Hugging Face PEFT's <c>combination_type</c>).</summary>
internal enum LoraCombination
{
    /// <summary>
    /// <c>A = Σ sqrt(w_i s_i) A_i</c>, <c>B = Σ sqrt(w_i s_i) B_i</c> at the common rank (scaling 1): cheap, but not the
    /// weighted sum of the updates (cross terms); every adapter must have the same rank and a positive weight.
    /// </summary>
    Linear,

    /// <summary>
    /// The ranks are concatenated: <c>A = [w_1 s_1 A_1; w_2 s_2 A_2; ...]</c>, <c>B = [B_1, B_2, ...]</c> (scaling 1), so
    /// the update is exactly <c>Σ w_i s_i B_i A_i</c>; the rank is the sum of the ranks.
    /// </summary>
    Cat,
}

/// <summary>
/// A backbone with one or more methods applied under adapter names, one of them active: everything of the backbone is
/// frozen except what the active method trains. Several adapters can live on one frozen base when their method allows
/// it (the Linear-layer methods: LoRA and its variants, IA3, VeRA); they can be switched, disabled (plain base
/// behaviour), merged and unmerged exactly, and LoRA adapters combined with weights. Tasks put a head beside it;
/// training, saving and merging go through the active adapter.
/// </summary>
internal sealed class AdaptedBackbone
{
    private readonly Dictionary<string, (PeftMethod Method, IReadOnlyList<string> Modules)> adapters = new(StringComparer.Ordinal);
    private string active;
    private bool disabled, merged;

    public AdaptedBackbone(IBackbone backbone, PeftMethodOptions options, Generator? generator, string adapterName = DefaultAdapter)
    {
        Backbone = backbone;
        active = adapterName;
        AddAdapter(adapterName, options, generator);
    }

    /// <summary>The adapter name Hugging Face PEFT uses when none is given (and leaves out of saved keys).</summary>
    public const string DefaultAdapter = "default";

    public IBackbone Backbone { get; }

    /// <summary>The active adapter's method.</summary>
    public PeftMethod Method => adapters[active].Method;

    /// <summary>The name of the active adapter.</summary>
    public string ActiveAdapter => active;

    /// <summary>The adapters' names, in the order they were added.</summary>
    public IReadOnlyList<string> AdapterNames => adapters.Keys.ToList();

    /// <summary>The modules the active method adapted, by full name.</summary>
    public IReadOnlyList<string> AdaptedModules => adapters[active].Modules;

    /// <summary>Adds an adapter with its own method options and makes it the active one.</summary>
    public void AddAdapter(string name, PeftMethodOptions options, Generator? generator)
    {
        options.Validate();
        if (adapters.ContainsKey(name)) throw new ArgumentException($"There is already an adapter named '{name}'.", nameof(name));
        if (merged) throw new InvalidOperationException("Unmerge before adding an adapter.");
        var method = options.Create(name);
        if (adapters.Count > 0)
        {
            var other = adapters.Values.First().Method;
            if (!method.SupportsSeveralAdapters || !other.SupportsSeveralAdapters)
                throw new NotSupportedException(
                    $"{options.PeftType} and {other.Options.PeftType} cannot share one base model: only Linear-layer methods (LoRA and its variants, IA3, VeRA) " +
                    "keep several adapters side by side.");
        }
        adapters[name] = (method, method.Attach(Backbone, generator));
        SetActiveAdapter(name);
    }

    /// <summary>Makes <paramref name="name"/> the adapter that runs and trains; the others stay, inactive and frozen.</summary>
    public void SetActiveAdapter(string name)
    {
        if (!adapters.ContainsKey(name)) throw new ArgumentException($"There is no adapter named '{name}' (there are: {string.Join(", ", adapters.Keys)}).", nameof(name));
        if (merged) throw new InvalidOperationException("Unmerge before switching adapters.");
        active = name;
        disabled = false;
        foreach (var (_, layer) in Backbone.TunerLayers()) layer.ActiveAdapter = layer.AdapterModule(name) is null ? null : name;
        foreach (var parameter in Backbone.Module.parameters()) parameter.requires_grad = false;
        foreach (var p in Method.Parameters(Backbone)) p.Parameter.requires_grad = true;
    }

    /// <summary>
    /// Runs the plain base model until the returned object is disposed (Hugging Face PEFT's <c>disable_adapter()</c>).
    /// For the Linear-layer methods only; others are refused with a clear error.
    /// </summary>
    public IDisposable DisableAdapters()
    {
        if (!Method.SupportsSeveralAdapters)
            throw new NotSupportedException($"{Method.Options.PeftType} changes the base model itself or its inputs and cannot be switched off.");
        if (merged) throw new InvalidOperationException("Unmerge before disabling adapters.");
        if (disabled) throw new InvalidOperationException("Adapters are disabled already.");
        foreach (var (_, layer) in Backbone.TunerLayers()) layer.ActiveAdapter = null;
        disabled = true;
        return new Restore(this, active);
    }

    /// <summary>
    /// Adds the adapter <paramref name="name"/>: LoRA adapters combined with weights (Hugging Face PEFT's
    /// <c>add_weighted_adapter</c> with <c>combination_type</c> <c>linear</c> or <c>cat</c>), on the union of their modules.
    /// It becomes the active adapter.
    /// </summary>
    public void AddWeightedLoraAdapter(string name, IReadOnlyList<(string Adapter, double Weight)> sources, LoraCombination combination)
    {
        if (sources.Count == 0) throw new ArgumentException("Name at least one adapter to combine.", nameof(sources));
        var loras = new List<(LoraOptions Options, double Weight, string Name)>();
        foreach (var (adapter, weight) in sources)
        {
            if (!adapters.TryGetValue(adapter, out var entry)) throw new ArgumentException($"There is no adapter named '{adapter}'.", nameof(sources));
            if (entry.Method.Options is not LoraOptions lora || lora.UseDora || lora.InitLoraWeights == LoraInitialization.Pissa)
                throw new NotSupportedException($"Adapter '{adapter}' is {Describe(entry.Method.Options)}: only plain LoRA adapters (rsLoRA included; not DoRA or PiSSA) can be combined.");
            if (!double.IsFinite(weight)) throw new ArgumentOutOfRangeException(nameof(sources), weight, $"The weight of '{adapter}' must be finite.");
            if (combination == LoraCombination.Linear && !(weight > 0))
                throw new ArgumentOutOfRangeException(nameof(sources), weight, $"A linear combination needs positive weights ('{adapter}' has {weight}); use Cat for negative ones.");
            loras.Add((lora, weight, adapter));
        }
        if (combination == LoraCombination.Linear && loras.Select(l => l.Options.Rank).Distinct().Count() > 1)
            throw new ArgumentException($"A linear combination needs adapters of one rank; these have ranks {string.Join(", ", loras.Select(l => l.Options.Rank))}. Use Cat.", nameof(sources));
        int rank = combination == LoraCombination.Cat ? loras.Sum(l => l.Options.Rank) : loras[0].Options.Rank;
        var modules = loras.SelectMany(l => adapters[l.Name].Modules).Distinct().ToList();
        var options = new LoraOptions { Rank = rank, Alpha = rank, Dropout = 0, TargetModules = modules.Select(m => System.Text.RegularExpressions.Regex.Escape(m)).ToArray() };
        using var generator = new Generator(0);
        AddAdapter(name, options, generator);
        using var noGrad = no_grad();
        foreach (var (_, layer) in Backbone.Linears())
        {
            if (layer.Adapter(name) is not LoraLayer target) continue;
            var parts = loras.Select(l => (l.Weight, Lora: layer.Adapter(l.Name) as LoraLayer)).Where(p => p.Lora is not null).ToList();
            using var scope = NewDisposeScope();
            if (combination == LoraCombination.Cat)
            {
                var a = cat(parts.Select(p => p.Lora!.A.mul((float)(p.Weight * p.Lora.Scaling))).ToArray(), 0);
                var b = cat(parts.Select(p => (Tensor)p.Lora!.B).ToArray(), 1);
                target.A.zero_();
                target.B.zero_();
                target.A[..(int)a.shape[0], ..].copy_(a);
                target.B[.., ..(int)b.shape[1]].copy_(b);
            }
            else
            {
                target.A.zero_();
                target.B.zero_();
                foreach (var (weight, lora) in parts)
                {
                    var factor = Math.Sqrt(weight * lora!.Scaling);
                    target.A.add_(lora.A.mul(factor));
                    target.B.add_(lora.B.mul(factor));
                }
            }
        }
    }

    /// <summary>The active method's trainable parameters, keyed by their name in the task network (<c>bert.encoder...lora_A.weight</c>).</summary>
    public IReadOnlyList<NamedParameter> Parameters() =>
        Method.Parameters(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>The method's frozen tensors that are saved and loaded (VeRA's projections), keyed as <see cref="Parameters"/> are.</summary>
    public IReadOnlyList<NamedParameter> FrozenState() =>
        Method.FrozenState(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>The tensors to save (the caller disposes them), keyed as <see cref="Parameters"/> are.</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Method.SavedState(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>
    /// Folds the active adapter into the weights and prepares the backbone for inference. Without
    /// <paramref name="keepBase"/> (a model that only scores from now on) no copy of the base weights is kept and
    /// <see cref="Unmerge"/> is refused.
    /// </summary>
    public void Merge(bool keepBase = true)
    {
        if (disabled) throw new InvalidOperationException("Adapters are disabled: enable them before merging.");
        Method.Merge(Backbone, keepBase);
        merged = true;
        Backbone.PrepareInference();
    }

    /// <summary>Undoes <see cref="Merge"/> exactly.</summary>
    public void Unmerge()
    {
        Backbone.EndInference();
        Method.Unmerge(Backbone);
        merged = false;
    }

    private static string Describe(PeftMethodOptions options) => options switch
    {
        LoraOptions { UseDora: true } => "DoRA",
        LoraOptions { InitLoraWeights: LoraInitialization.Pissa } => "PiSSA",
        _ => options.PeftType,
    };

    private sealed class Restore : IDisposable
    {
        private readonly AdaptedBackbone owner;
        private readonly string adapter;
        private bool done;

        public Restore(AdaptedBackbone owner, string adapter) => (this.owner, this.adapter) = (owner, adapter);

        public void Dispose()
        {
            if (done) return;
            done = true;
            owner.SetActiveAdapter(adapter);
        }
    }
}
