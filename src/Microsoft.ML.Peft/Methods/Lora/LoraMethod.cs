using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>LoRA on the Linear layers selected by <see cref="LoraOptions.TargetModules"/>; trains only <c>lora_A</c> and <c>lora_B</c>.</summary>
internal sealed class LoraMethod : PeftMethod
{
    private readonly LoraOptions options;

    public LoraMethod(LoraOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    public override bool SupportsSeveralAdapters => true;

    public override IReadOnlyList<string> Attach(IBackbone backbone, TorchSharp.torch.Generator? generator)
    {
        var selected = ModuleMatcher.Select(backbone.Linears(), options.TargetModules, "LoRA", nameof(LoraOptions.TargetModules));
        foreach (var (_, layer) in selected)
        {
            if (options.Rank > Math.Min(layer.InFeatures, layer.OutFeatures))
                throw new ArgumentOutOfRangeException(nameof(LoraOptions.Rank), options.Rank, $"LoRA Rank exceeds the layer's size ({layer.InFeatures} x {layer.OutFeatures}).");
            layer.AddAdapter(AdapterName, new LoraLayer(layer.InFeatures, layer.OutFeatures, options.Rank, options.Scaling, options.Dropout, generator));
        }
        return selected.Select(s => s.Name).ToList();
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone)
    {
        var result = new List<NamedParameter>();
        foreach (var (name, layer) in backbone.Linears())
        {
            if (layer.Adapter(AdapterName) is not LoraLayer lora) continue;
            result.Add(new NamedParameter($"{name}.lora_A.weight", lora.A));
            result.Add(new NamedParameter($"{name}.lora_B.weight", lora.B));
        }
        return result;
    }

    public override void Merge(IBackbone backbone)
    {
        foreach (var (_, layer) in backbone.Linears()) if (layer.ActiveAdapter == AdapterName) layer.Merge();
    }

    public override void Unmerge(IBackbone backbone)
    {
        foreach (var (_, layer) in backbone.Linears()) layer.Unmerge();
    }
}
