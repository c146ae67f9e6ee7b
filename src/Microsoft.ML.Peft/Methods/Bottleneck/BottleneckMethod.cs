using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods.Bottleneck;

/// <summary>Inserts a <see cref="BottleneckAdapter"/> at each chosen site; trains only the adapters.</summary>
internal sealed class BottleneckMethod : PeftMethod
{
    /// <summary>The adapter's name in the module tree (and its saved keys): <c>encoder.layer.0.output.adapter.down.weight</c>.</summary>
    public const string ModuleName = "adapter";

    private readonly BottleneckOptions options;
    private readonly List<BottleneckAdapter> adapters = new();

    public BottleneckMethod(BottleneckOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(IBackbone baseModel, TorchSharp.torch.Generator? generator)
    {
        var backbone = TextBackbone.Require(baseModel, "Bottleneck adapters");
        if (adapters.Count > 0) throw new InvalidOperationException("The bottleneck adapters are already attached.");
        var layers = options.TargetLayers ?? Enumerable.Range(0, backbone.LayerCount).ToList();
        var outOfRange = layers.Where(l => l >= backbone.LayerCount).ToList();
        if (outOfRange.Count > 0)
            throw new ArgumentOutOfRangeException(nameof(BottleneckOptions.TargetLayers), outOfRange[0],
                $"Bottleneck TargetLayers names layer {outOfRange[0]}, but the base model has layers 0 to {backbone.LayerCount - 1}.");
        var sites = options.Placement == BottleneckOptions.Houlsby
            ? new[] { AdapterSite.AttentionOutput, AdapterSite.FeedForwardOutput }
            : new[] { AdapterSite.FeedForwardOutput };
        long hidden = backbone.FeatureSize, bottleneck = Math.Max(1, hidden / options.ReductionFactor);
        foreach (var layer in layers.OrderBy(l => l))
        {
            foreach (var site in sites)
            {
                var adapter = new BottleneckAdapter(hidden, bottleneck, options.NonLinearity, generator);
                backbone.InsertAdapter(layer, site, ModuleName, adapter);
                adapters.Add(adapter);
            }
        }
        return Owned(backbone).Select(m => m.Name[..m.Name.LastIndexOf('.')]).ToList();
    }

    /// <summary>The adapters with their full module names, in the backbone's order.</summary>
    private IEnumerable<(string Name, BottleneckAdapter Module)> Owned(IBackbone backbone) =>
        backbone.Module.named_modules()
            .Where(m => m.module is BottleneckAdapter a && adapters.Contains(a))
            .Select(m => (m.name, (BottleneckAdapter)m.module));

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone) =>
        Owned(backbone)
            .SelectMany(m => m.Module.named_parameters().Select(p => new NamedParameter($"{m.Name}.{p.name}", p.parameter)))
            .ToList();
}
