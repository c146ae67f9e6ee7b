using Microsoft.ML.Peft.Backbones;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.IA3;

/// <summary>(IA)³ on the Linear layers selected by <see cref="IA3Options.TargetModules"/>; trains one <c>ia3_l</c> vector per layer.</summary>
internal sealed class IA3Method : LinearLayerMethod
{
    private readonly IA3Options options;

    public IA3Method(IA3Options options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(IBackbone backbone, Generator? generator)
    {
        var selected = ModuleMatcher.Select(backbone.TunerLayers(), options.TargetModules, "IA3", nameof(IA3Options.TargetModules));
        var feedforward = options.FeedforwardModules.Count == 0
            ? new HashSet<string>()
            : ModuleMatcher.Select(selected, options.FeedforwardModules, "IA3", nameof(IA3Options.FeedforwardModules)).Select(s => s.Name).ToHashSet();
        foreach (var (name, layer) in selected)
        {
            if (layer is TunerConv2d conv)
                conv.AddAdapter(AdapterName, new IA3Conv2d(conv.InFeatures, conv.OutFeatures, feedforward.Contains(name), options.InitIA3Weights, generator));
            else
                ((TunerLinear)layer).AddAdapter(AdapterName, new IA3Layer(layer.InFeatures, layer.OutFeatures, feedforward.Contains(name), options.InitIA3Weights, generator));
        }
        return selected.Select(s => s.Name).ToList();
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone)
    {
        var result = new List<NamedParameter>();
        foreach (var (name, layer) in backbone.TunerLayers())
        {
            if (layer.AdapterModule(AdapterName) is IA3Layer ia3) result.Add(new NamedParameter($"{name}.ia3_l", ia3.Vector));
            else if (layer.AdapterModule(AdapterName) is IA3Conv2d conv) result.Add(new NamedParameter($"{name}.ia3_l", conv.Vector));
        }
        return result;
    }
}
