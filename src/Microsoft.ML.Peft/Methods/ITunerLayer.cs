using TorchSharp.Modules;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A base layer that methods adapt (a Linear layer or a convolution): its frozen weight, the adapters it keeps by name,
/// the active one, and an exact merge into the weight and back.
/// </summary>
internal interface ITunerLayer
{
    /// <summary>Input features (channels for a convolution).</summary>
    long InFeatures { get; }

    /// <summary>Output features (channels for a convolution).</summary>
    long OutFeatures { get; }

    /// <summary>The base weight.</summary>
    Parameter Weight { get; }

    /// <summary>The base bias, when the layer has one.</summary>
    Parameter? Bias { get; }

    /// <summary>The adapter the forward pass applies (null: the base layer alone).</summary>
    string? ActiveAdapter { get; set; }

    /// <summary>Whether the active adapter is folded into the weight.</summary>
    bool Merged { get; }

    /// <summary>The adapter module named <paramref name="name"/>, or null.</summary>
    TorchSharp.torch.nn.Module? AdapterModule(string name);

    /// <summary>Folds the active adapter into the weight (keeping the base weight to unmerge).</summary>
    void Merge();

    /// <summary>Folds the active adapter into the weight; without <paramref name="keepBase"/> the layer cannot be unmerged (no copy is kept).</summary>
    void Merge(bool keepBase);

    /// <summary>Restores the base weight.</summary>
    void Unmerge();
}
