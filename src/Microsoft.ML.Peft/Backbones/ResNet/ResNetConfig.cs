using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>
/// The shape of a ResNet (He et al. 2016) as torchvision builds it: a 7 x 7 stride-2 stem with batch normalisation and a
/// 3 x 3 stride-2 max pool, four stages of basic (ResNet-18/34) or bottleneck (ResNet-50/101/152) blocks whose first
/// block downsamples (except stage 1), global average pooling. Also the input the network expects: channel order, pixel
/// scale, per-channel mean and standard deviation. Saved in a model's metadata and checked against the base model.
/// </summary>
internal sealed class ResNetConfig
{
    /// <summary>torchvision's padding: <c>k / 2</c> on every side.</summary>
    public const string SymmetricPadding = "symmetric";

    /// <summary>
    /// CNTK's "same" padding: <c>max(k - s, 0)</c> in all, the larger half before (top, left). Equal to symmetric for
    /// stride 1; for stride 2 it pads one less after, which changes results only on odd-sized inputs.
    /// </summary>
    public const string SameBeginPadding = "same_begin";

    /// <summary>The most blocks a stage may have.</summary>
    public const int MaxBlocksPerStage = 64;

    /// <summary><c>basic</c> (two 3 x 3 convolutions) or <c>bottleneck</c> (1 x 1, 3 x 3, 1 x 1, four times wider out).</summary>
    [JsonPropertyName("block")] public string Block { get; set; } = "basic";

    /// <summary>Blocks per stage: 2,2,2,2 for ResNet-18, 3,4,6,3 for ResNet-34 and -50.</summary>
    [JsonPropertyName("layers")] public int[] Layers { get; set; } = { 2, 2, 2, 2 };

    /// <summary>Channels of the stem and of stage 1's 3 x 3 convolutions (64); each stage doubles it.</summary>
    [JsonPropertyName("width")] public int Width { get; set; } = 64;

    /// <summary><see cref="SymmetricPadding"/> or <see cref="SameBeginPadding"/>.</summary>
    [JsonPropertyName("padding")] public string Padding { get; set; } = SymmetricPadding;

    /// <summary>Batch normalisation's epsilon.</summary>
    [JsonPropertyName("batch_norm_eps")] public double BatchNormEps { get; set; } = 1e-5;

    /// <summary>Whether the network takes its channels in BGR order (CNTK and Caffe models) rather than RGB.</summary>
    [JsonPropertyName("input_bgr")] public bool InputBgr { get; set; }

    /// <summary>Factor from byte pixel values to the network's scale (1/255 for torchvision, 1 for CNTK's 0-255 inputs).</summary>
    [JsonPropertyName("input_scale")] public float InputScale { get; set; } = 1f / 255;

    /// <summary>Per-channel mean subtracted after scaling, in the network's channel order.</summary>
    [JsonPropertyName("input_mean")] public float[] InputMean { get; set; } = { 0.485f, 0.456f, 0.406f };

    /// <summary>Per-channel standard deviation divided by after subtracting the mean, in the network's channel order.</summary>
    [JsonPropertyName("input_std")] public float[] InputStd { get; set; } = { 0.229f, 0.224f, 0.225f };

    /// <summary>Output channels of a block over its 3 x 3 width: 1 for basic blocks, 4 for bottlenecks.</summary>
    [JsonIgnore] public int Expansion => Block == "bottleneck" ? 4 : 1;

    /// <summary>Width of the pooled features.</summary>
    [JsonIgnore] public int FeatureSize => Width * 8 * Expansion;

    /// <summary>The configuration of torchvision's <c>resnet18</c>, <c>resnet34</c>, <c>resnet50</c>, <c>resnet101</c> or <c>resnet152</c>.</summary>
    public static ResNetConfig Torchvision(string architecture) => architecture switch
    {
        "resnet18" => new ResNetConfig { Block = "basic", Layers = new[] { 2, 2, 2, 2 } },
        "resnet34" => new ResNetConfig { Block = "basic", Layers = new[] { 3, 4, 6, 3 } },
        "resnet50" => new ResNetConfig { Block = "bottleneck", Layers = new[] { 3, 4, 6, 3 } },
        "resnet101" => new ResNetConfig { Block = "bottleneck", Layers = new[] { 3, 4, 23, 3 } },
        "resnet152" => new ResNetConfig { Block = "bottleneck", Layers = new[] { 3, 8, 36, 3 } },
        _ => throw new ArgumentException($"'{architecture}' is not a torchvision ResNet: use resnet18, resnet34, resnet50, resnet101 or resnet152.", nameof(architecture)),
    };

    /// <summary>The window of a convolution or pool of kernel <paramref name="kernel"/> and stride <paramref name="stride"/> under this padding.</summary>
    public Methods.ConvGeometry Geometry(int kernel, int stride)
    {
        if (Padding == SymmetricPadding) return Methods.ConvGeometry.Symmetric(kernel, stride, kernel / 2);
        int total = Math.Max(kernel - stride, 0), before = (total + 1) / 2;
        return new Methods.ConvGeometry(kernel, stride, before, before, total - before, total - before);
    }

    /// <summary>Checks every field, naming the one at fault in <paramref name="source"/>.</summary>
    public void Validate(string source)
    {
        if (Block is not ("basic" or "bottleneck")) throw new InvalidDataException($"{source}: ResNet block '{Block}' is not 'basic' or 'bottleneck'.");
        if (Layers is null || Layers.Length != 4 || Layers.Any(l => l < 1 || l > MaxBlocksPerStage)) throw new InvalidDataException($"{source}: ResNet layers must be four block counts from 1 to {MaxBlocksPerStage}.");
        if (Width < 1 || Width > 1024) throw new InvalidDataException($"{source}: ResNet width {Width} is not from 1 to 1024.");
        if (Padding is not (SymmetricPadding or SameBeginPadding)) throw new InvalidDataException($"{source}: ResNet padding '{Padding}' is not known.");
        if (!(BatchNormEps > 0 && BatchNormEps < 1)) throw new InvalidDataException($"{source}: batch_norm_eps {BatchNormEps} is not in (0, 1).");
        if (!(InputScale > 0 && float.IsFinite(InputScale))) throw new InvalidDataException($"{source}: input_scale {InputScale} is not a positive number.");
        if (InputMean is null || InputMean.Length != 3 || InputMean.Any(m => !float.IsFinite(m))) throw new InvalidDataException($"{source}: input_mean must be three finite numbers.");
        if (InputStd is null || InputStd.Length != 3 || InputStd.Any(s => !(s > 0 && float.IsFinite(s)))) throw new InvalidDataException($"{source}: input_std must be three positive numbers.");
    }

    /// <summary>Compact JSON, for comparing configurations.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>A short description: depth (weighted layers with the classifier, as ResNet-18 counts them) and blocks per stage.</summary>
    public override string ToString()
    {
        int depth = Layers.Sum() * (Block == "bottleneck" ? 3 : 2) + 2;
        return $"ResNet-{depth} ({Block} blocks {string.Join("-", Layers)})";
    }
}
