using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// One level of the feature pyramid: its stride in input pixels and its grid. Cell (row i, column j) is the location
/// (x, y) = (j * stride + stride / 2, i * stride + stride / 2) of the input, FCOS's locations.
/// </summary>
internal readonly record struct DetectionLevel(int Stride, int Height, int Width)
{
    /// <summary>Locations of the level (Height x Width).</summary>
    public int Count => Height * Width;

    /// <summary>The input x of column <paramref name="column"/>.</summary>
    public float X(int column) => column * Stride + Stride / 2f;

    /// <summary>The input y of row <paramref name="row"/>.</summary>
    public float Y(int row) => row * Stride + Stride / 2f;
}

/// <summary>
/// What the detector computes for a batch, flattened over the pyramid: location n of an image is, level by level (P3,
/// P4, P5) and row by row within a level, the n-th of <see cref="Levels"/>' locations. Owns its tensors.
/// </summary>
internal sealed class DetectionOutputs : IDisposable
{
    public DetectionOutputs(Tensor classLogits, Tensor distances, Tensor centernessLogits, IReadOnlyList<DetectionLevel> levels, int imageHeight, int imageWidth)
    {
        long locations = levels.Sum(l => (long)l.Count);
        if (classLogits.dim() != 3 || classLogits.shape[1] != locations)
            throw new ArgumentException($"Class logits must be [batch, {locations}, classes]; got [{string.Join(", ", classLogits.shape)}].", nameof(classLogits));
        long batch = classLogits.shape[0];
        if (!distances.shape.SequenceEqual(new[] { batch, locations, 4L }))
            throw new ArgumentException($"Distances must be [{batch}, {locations}, 4]; got [{string.Join(", ", distances.shape)}].", nameof(distances));
        if (!centernessLogits.shape.SequenceEqual(new[] { batch, locations }))
            throw new ArgumentException($"Centerness logits must be [{batch}, {locations}]; got [{string.Join(", ", centernessLogits.shape)}].", nameof(centernessLogits));
        ClassLogits = classLogits;
        Distances = distances;
        CenternessLogits = centernessLogits;
        Levels = levels;
        ImageHeight = imageHeight;
        ImageWidth = imageWidth;
    }

    /// <summary>Classification logits [batch, locations, classes] (one sigmoid per class: background is all low).</summary>
    public Tensor ClassLogits { get; }

    /// <summary>Distances [batch, locations, 4] from each location to the left, top, right and bottom sides of its box, in input pixels (positive).</summary>
    public Tensor Distances { get; }

    /// <summary>Centerness logits [batch, locations].</summary>
    public Tensor CenternessLogits { get; }

    /// <summary>The pyramid's levels, finest first.</summary>
    public IReadOnlyList<DetectionLevel> Levels { get; }

    /// <summary>Height of the input images in pixels.</summary>
    public int ImageHeight { get; }

    /// <summary>Width of the input images in pixels.</summary>
    public int ImageWidth { get; }

    public long BatchSize => ClassLogits.shape[0];

    public int ClassCount => (int)ClassLogits.shape[2];

    /// <summary>Every location's (x, y) in input pixels, in the flattened order.</summary>
    public (float X, float Y)[] Locations() => Locate(Levels);

    /// <summary>Every location's (x, y) of <paramref name="levels"/>, in the flattened order.</summary>
    public static (float X, float Y)[] Locate(IReadOnlyList<DetectionLevel> levels)
    {
        var result = new (float, float)[levels.Sum(l => l.Count)];
        int n = 0;
        foreach (var level in levels)
            for (int i = 0; i < level.Height; i++)
                for (int j = 0; j < level.Width; j++)
                    result[n++] = (level.X(j), level.Y(i));
        return result;
    }

    public void Dispose()
    {
        ClassLogits.Dispose();
        Distances.Dispose();
        CenternessLogits.Dispose();
    }
}

/// <summary>
/// A 3 x 3 or 1 x 1 convolution with bias and "same" padding, initialised from the run's generator: normal(0, std)
/// weights, or, with std 0, Kaiming-uniform with a = 1 (<c>c2_xavier_fill</c>, as FCOS's pyramid); the bias constant.
/// </summary>
internal sealed class DetectionConv : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // PyTorch names
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006
    private readonly int padding;

    public DetectionConv(long inChannels, long outChannels, int kernel, double std, double biasValue, Generator? generator) : base("conv")
    {
        weight = new Parameter(empty(outChannels, inChannels, kernel, kernel));
        bias = new Parameter(full(outChannels, biasValue));
        padding = kernel / 2;
        using (no_grad())
        {
            if (std > 0) weight.normal_(0, std, generator);
            else
            {
                double bound = Math.Sqrt(3.0 / (inChannels * kernel * kernel));
                weight.uniform_(-bound, bound, generator);
            }
        }
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public Parameter Bias => bias;

    public override Tensor forward(Tensor input) =>
        nn.functional.conv2d(input, weight, bias, padding: new long[] { padding, padding });
}

/// <summary>Group normalisation with a learnable affine (<c>weight</c>, <c>bias</c>), groups of 8 channels.</summary>
internal sealed class DetectionGroupNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // PyTorch names
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    public DetectionGroupNorm(long channels) : base("norm")
    {
        Groups = channels / 8;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        RegisterComponents();
    }

    public long Groups { get; }

    public override Tensor forward(Tensor input) => nn.functional.group_norm(input, Groups, weight, bias, 1e-5);
}

/// <summary>
/// A light feature pyramid (Lin et al. 2017) over the backbone's C3-C5: a 1 x 1 lateral convolution per level, the
/// top-down sum (nearest upsampling by two), then a 3 x 3 smoothing convolution, giving P3-P5 of one width.
/// </summary>
internal sealed class FeaturePyramid : nn.Module<Tensor[], Tensor[]>
{
    private readonly ModuleList<DetectionConv> lateral = new();
    private readonly ModuleList<DetectionConv> smooth = new();

    public FeaturePyramid(IReadOnlyList<long> inChannels, long channels, Generator? generator) : base("fpn")
    {
        foreach (var c in inChannels)
        {
            lateral.Add(new DetectionConv(c, channels, 1, 0, 0, generator));
            smooth.Add(new DetectionConv(channels, channels, 3, 0, 0, generator));
        }
        register_module("lateral", lateral);
        register_module("smooth", smooth);
    }

    public override Tensor[] forward(Tensor[] features)
    {
        if (features.Length != lateral.Count) throw new ArgumentException($"The pyramid takes {lateral.Count} feature maps; got {features.Length}.", nameof(features));
        using var scope = NewDisposeScope();
        var result = new Tensor[features.Length];
        Tensor? above = null;
        for (int l = features.Length - 1; l >= 0; l--)
        {
            var merged = lateral[l].forward(features[l]);
            if (above is not null)
                merged = merged.add_(nn.functional.interpolate(above, size: new[] { merged.shape[2], merged.shape[3] }, mode: InterpolationMode.Nearest));
            above = merged;
            result[l] = smooth[l].forward(merged);
        }
        foreach (var r in result) r.MoveToOuterDisposeScope();
        return result;
    }
}

/// <summary>A convolution, group normalisation and ReLU: one layer of a head tower.</summary>
internal sealed class TowerLayer : nn.Module<Tensor, Tensor>
{
    private readonly DetectionConv conv;
    private readonly DetectionGroupNorm norm;

    public TowerLayer(long channels, Generator? generator) : base("tower")
    {
        conv = new DetectionConv(channels, channels, 3, 0.01, 0, generator);
        norm = new DetectionGroupNorm(channels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var convolved = conv.forward(input);
        using var normalised = norm.forward(convolved);
        return nn.functional.relu(normalised);
    }
}

/// <summary>
/// FCOS's head (Tian et al. 2019), shared by every level: a classification tower and a regression tower of
/// 3 x 3 convolution + group normalisation + ReLU layers, class logits on the first, ltrb distances (exp of a per-level
/// learnable scale times the output, times the level's stride) and the centerness logit on the second.
/// </summary>
internal sealed class FcosHead : nn.Module<Tensor, int, (Tensor Classes, Tensor Distances, Tensor Centerness)>
{
    /// <summary>The prior probability of an object the classification bias starts at (FCOS's and RetinaNet's 0.01).</summary>
    public const double PriorProbability = 0.01;

    // Distances are at most e^MaxLogDistance strides: no overflow to infinity early in training.
    private const double MaxLogDistance = 10;

#pragma warning disable IDE1006 // PyTorch names
    private readonly ModuleList<TowerLayer> cls_tower = new();
    private readonly ModuleList<TowerLayer> bbox_tower = new();
    private readonly DetectionConv cls_logits;
    private readonly DetectionConv bbox_pred;
    private readonly DetectionConv centerness;
    private readonly Parameter scales;
#pragma warning restore IDE1006
    private readonly int[] strides;

    public FcosHead(long channels, int classCount, int towerDepth, IReadOnlyList<int> strides, Generator? generator) : base("head")
    {
        this.strides = strides.ToArray();
        for (int i = 0; i < towerDepth; i++)
        {
            cls_tower.Add(new TowerLayer(channels, generator));
            bbox_tower.Add(new TowerLayer(channels, generator));
        }
        cls_logits = new DetectionConv(channels, classCount, 3, 0.01, -Math.Log((1 - PriorProbability) / PriorProbability), generator);
        bbox_pred = new DetectionConv(channels, 4, 3, 0.01, 0, generator);
        centerness = new DetectionConv(channels, 1, 3, 0.01, 0, generator);
        scales = new Parameter(ones(strides.Count));
        RegisterComponents();
    }

    /// <summary>The bias of the class logits (set to the prior probability's logit at creation).</summary>
    public Parameter ClassBias => cls_logits.Bias;

    /// <summary>Class logits [batch, classes, h, w], distances [batch, 4, h, w] in input pixels and centerness logits [batch, 1, h, w] of level <paramref name="level"/>'s features.</summary>
    public override (Tensor Classes, Tensor Distances, Tensor Centerness) forward(Tensor features, int level)
    {
        using var scope = NewDisposeScope();
        var c = features;
        foreach (var layer in cls_tower) c = layer.forward(c);
        var b = features;
        foreach (var layer in bbox_tower) b = layer.forward(b);
        var classes = cls_logits.forward(c);
        var distances = bbox_pred.forward(b).mul(scales[level]).clamp_max(MaxLogDistance).exp().mul(strides[level]);
        var center = centerness.forward(b);
        return (classes.MoveToOuterDisposeScope(), distances.MoveToOuterDisposeScope(), center.MoveToOuterDisposeScope());
    }
}

/// <summary>
/// The detector: the ResNet backbone (named <c>resnet</c>, whatever its method leaves trainable) gives C3-C5 (strides 8,
/// 16, 32), a feature pyramid (<c>fpn</c>) makes P3-P5, and FCOS's anchor-free head (<c>head</c>) predicts, at every
/// location of every level, class logits, ltrb distances and centerness. The pyramid and the head are trained in full and
/// saved with the adapters. Inputs: normalised images [batch, 3, height, width] whose sides are multiples of 32.
/// </summary>
internal sealed class DetectionNetwork : nn.Module<Tensor, DetectionOutputs>
{
    /// <summary>Strides of P3, P4 and P5.</summary>
    public static readonly IReadOnlyList<int> Strides = new[] { 8, 16, 32 };

    /// <summary>The default width of the pyramid and the head.</summary>
    public const int DefaultChannels = 64;

    /// <summary>The default number of layers in each head tower.</summary>
    public const int DefaultTowerDepth = 2;

    private readonly ResNetBackbone backbone;
    private readonly FeaturePyramid fpn;
    private readonly FcosHead head;

    /// <param name="backbone">The ResNet, with its method already applied (or to be applied: the head does not depend on it).</param>
    /// <param name="classCount">Object classes (background is not a class).</param>
    /// <param name="channels">Width of the pyramid and the head: a multiple of 8 (group normalisation's groups are 8 channels).</param>
    /// <param name="towerDepth">Convolution layers in each head tower (FCOS has 4; 2 or 3 is enough for a few classes).</param>
    /// <param name="generator">The run's generator for the pyramid's and head's initial weights.</param>
    public DetectionNetwork(ResNetBackbone backbone, int classCount, int channels = DefaultChannels, int towerDepth = DefaultTowerDepth, Generator? generator = null)
        : base("object_detection")
    {
        if (classCount < 1) throw new ArgumentOutOfRangeException(nameof(classCount), classCount, "A detector needs at least one object class.");
        if (channels < 8 || channels % 8 != 0) throw new ArgumentOutOfRangeException(nameof(channels), channels, "The detector's channels must be a positive multiple of 8.");
        if (towerDepth < 1 || towerDepth > 8) throw new ArgumentOutOfRangeException(nameof(towerDepth), towerDepth, "The head's tower depth must be from 1 to 8.");
        this.backbone = backbone;
        ClassCount = classCount;
        Channels = channels;
        fpn = new FeaturePyramid(backbone.Model.MultiScaleChannels, channels, generator);
        head = new FcosHead(channels, classCount, towerDepth, Strides, generator);
        register_module(backbone.Name, backbone.Module);
        register_module("fpn", fpn);
        register_module("head", head);
    }

    public ResNetBackbone Backbone => backbone;

    public FcosHead Head => head;

    public int ClassCount { get; }

    public int Channels { get; }

    /// <summary>The pyramid's and head's parameters under their saved keys (<c>fpn.lateral.0.weight</c>, <c>head.cls_logits.bias</c>...): trained in full.</summary>
    public IReadOnlyList<NamedParameter> HeadParameters() =>
        fpn.named_parameters().Select(p => new NamedParameter("fpn." + p.name, p.parameter))
            .Concat(head.named_parameters().Select(p => new NamedParameter("head." + p.name, p.parameter))).ToList();

    /// <summary>The levels an input of <paramref name="height"/> x <paramref name="width"/> pixels gives.</summary>
    public static IReadOnlyList<DetectionLevel> LevelsOf(int height, int width) =>
        Strides.Select(s => new DetectionLevel(s, height / s, width / s)).ToList();

    public override DetectionOutputs forward(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new ArgumentException($"The detector takes images [batch, 3, height, width]; got [{string.Join(", ", images.shape)}].", nameof(images));
        int height = (int)images.shape[2], width = (int)images.shape[3];
        if (height < 32 || width < 32 || height % 32 != 0 || width % 32 != 0)
            throw new ArgumentException($"The detector takes images whose sides are multiples of 32 (the coarsest level's stride); got {height} x {width}.", nameof(images));
        using var scope = NewDisposeScope();
        var pyramid = fpn.forward(backbone.Model.MultiScaleFeatures(images));
        long batch = images.shape[0];
        var classes = new List<Tensor>();
        var distances = new List<Tensor>();
        var centers = new List<Tensor>();
        for (int l = 0; l < pyramid.Length; l++)
        {
            var (c, d, z) = head.forward(pyramid[l], l);
            // [batch, k, h, w] -> [batch, h * w, k]: row by row, as DetectionOutputs orders locations.
            classes.Add(c.permute(0, 2, 3, 1).reshape(batch, -1, ClassCount));
            distances.Add(d.permute(0, 2, 3, 1).reshape(batch, -1, 4));
            centers.Add(z.reshape(batch, -1));
        }
        var result = new DetectionOutputs(cat(classes, 1), cat(distances, 1), cat(centers, 1), LevelsOf(height, width), height, width);
        result.ClassLogits.MoveToOuterDisposeScope();
        result.Distances.MoveToOuterDisposeScope();
        result.CenternessLogits.MoveToOuterDisposeScope();
        return result;
    }
}
