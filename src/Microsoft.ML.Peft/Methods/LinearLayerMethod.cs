using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A method whose adapters live in the backbone's <see cref="TunerLinear"/>s and <see cref="TunerConv2d"/>s (the LoRA family, VeRA, IA3): each layer
/// keeps them by name beside other adapters, merges the active one into its weight and unmerges it exactly.
/// </summary>
internal abstract class LinearLayerMethod : PeftMethod
{
    protected LinearLayerMethod(string adapterName) : base(adapterName) { }

    public sealed override bool SupportsSeveralAdapters => true;

    public sealed override void Merge(IBackbone backbone, bool keepBase = true)
    {
        foreach (var (_, layer) in backbone.TunerLayers()) if (layer.ActiveAdapter == AdapterName) layer.Merge(keepBase);
    }

    public sealed override void Unmerge(IBackbone backbone)
    {
        foreach (var (_, layer) in backbone.TunerLayers()) layer.Unmerge();
    }
}
