using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>
/// Batch normalisation with frozen statistics: it always normalises with the pretrained running mean and variance
/// (buffers <c>running_mean</c>, <c>running_var</c>), in training too, so small fine-tuning batches do not disturb them.
/// Its affine <c>weight</c> and <c>bias</c> are parameters, which a method (BitFit) or the trainer's option may train.
/// </summary>
internal sealed class FrozenBatchNorm2d : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // PyTorch names
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly Tensor running_mean;
    private readonly Tensor running_var;
#pragma warning restore IDE1006

    public FrozenBatchNorm2d(long channels, double eps) : base("batch_norm")
    {
        Eps = eps;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        running_mean = zeros(channels);
        running_var = ones(channels);
        RegisterComponents();
    }

    public double Eps { get; }

    public Parameter Weight => weight;

    public Parameter Bias => bias;

    /// <summary>The frozen running mean (buffer <c>running_mean</c>).</summary>
    public Tensor RunningMean => running_mean;

    /// <summary>The frozen running variance (buffer <c>running_var</c>).</summary>
    public Tensor RunningVar => running_var;

    public override Tensor forward(Tensor input) =>
        nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training: false, eps: Eps);
}

/// <summary>A block's shortcut projection (1 x 1 convolution and batch normalisation), named <c>0</c> and <c>1</c> as torchvision's <c>downsample</c>.</summary>
internal sealed class Downsample : nn.Module<Tensor, Tensor>
{
    // A tuple, not Module fields: TorchSharp would register fields under their own names beside "0" and "1".
    private readonly (TunerConv2d Conv, FrozenBatchNorm2d Norm) parts;

    public Downsample(TunerConv2d conv, FrozenBatchNorm2d norm) : base("downsample")
    {
        parts = (conv, norm);
        register_module("0", conv);
        register_module("1", norm);
    }

    /// <summary>The projection's convolution and batch normalisation.</summary>
    public (TunerConv2d Conv, FrozenBatchNorm2d Norm) Parts => parts;

    public override Tensor forward(Tensor input)
    {
        using var projected = parts.Conv.forward(input);
        return parts.Norm.forward(projected);
    }
}

/// <summary>A residual block: basic (two 3 x 3 convolutions) or bottleneck (1 x 1, 3 x 3 carrying the stride, 1 x 1), as torchvision's.</summary>
internal sealed class ResidualBlock : nn.Module<Tensor, Tensor>
{
    private readonly List<(TunerConv2d Conv, FrozenBatchNorm2d Norm)> path = new();
    private readonly Downsample? downsample;

    public ResidualBlock(ResNetConfig config, long inChannels, long width, int stride) : base("block")
    {
        long outChannels = width * config.Expansion;
        if (config.Block == "bottleneck")
        {
            Add(1, new TunerConv2d(inChannels, width, config.Geometry(1, 1)), config);
            Add(2, new TunerConv2d(width, width, config.Geometry(3, stride)), config);
            Add(3, new TunerConv2d(width, outChannels, config.Geometry(1, 1)), config);
        }
        else
        {
            Add(1, new TunerConv2d(inChannels, width, config.Geometry(3, stride)), config);
            Add(2, new TunerConv2d(width, width, config.Geometry(3, 1)), config);
        }
        if (stride != 1 || inChannels != outChannels)
        {
            downsample = new Downsample(new TunerConv2d(inChannels, outChannels, config.Geometry(1, stride)), new FrozenBatchNorm2d(outChannels, config.BatchNormEps));
            register_module("downsample", downsample);
        }
    }

    /// <summary>The main path's convolutions with their batch normalisations, in order (a ReLU between each, not after the last).</summary>
    public IReadOnlyList<(TunerConv2d Conv, FrozenBatchNorm2d Norm)> MainPath => path;

    /// <summary>The shortcut's projection, or null when the shortcut is the identity.</summary>
    public Downsample? Shortcut => downsample;

    private void Add(int index, TunerConv2d conv, ResNetConfig config)
    {
        var norm = new FrozenBatchNorm2d(conv.OutFeatures, config.BatchNormEps);
        register_module($"conv{index}", conv);
        register_module($"bn{index}", norm);
        path.Add((conv, norm));
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input;
        for (int i = 0; i < path.Count; i++)
        {
            x = path[i].Norm.forward(path[i].Conv.forward(x));
            if (i < path.Count - 1) x = nn.functional.relu(x);
        }
        var shortcut = downsample is null ? input : downsample.forward(input);
        return nn.functional.relu(x.add_(shortcut)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A ResNet over TorchSharp whose parameter and buffer names are torchvision's (<c>conv1.weight</c>, <c>bn1.running_mean</c>,
/// <c>layer1.0.conv1.weight</c>, <c>layer2.0.downsample.0.weight</c>...), without the final <c>fc</c>: the forward pass
/// gives the globally average-pooled features [batch, <see cref="ResNetConfig.FeatureSize"/>] of normalised images
/// [batch, 3, height, width] of any size of at least 32 x 32.
/// </summary>
internal sealed class ResNetModel : nn.Module<Tensor, Tensor>
{
    private readonly TunerConv2d conv1;
    private readonly FrozenBatchNorm2d bn1;
    private readonly List<ModuleList<ResidualBlock>> stages = new();
    private readonly ConvGeometry pool;

    public ResNetModel(ResNetConfig config) : base("resnet")
    {
        config.Validate("ResNet configuration");
        Config = config;
        conv1 = new TunerConv2d(3, config.Width, config.Geometry(7, 2));
        bn1 = new FrozenBatchNorm2d(config.Width, config.BatchNormEps);
        pool = config.Geometry(3, 2);
        register_module("conv1", conv1);
        register_module("bn1", bn1);
        long channels = config.Width;
        for (int s = 0; s < 4; s++)
        {
            long width = (long)config.Width << s;
            var blocks = new ModuleList<ResidualBlock>();
            for (int b = 0; b < config.Layers[s]; b++)
            {
                blocks.Add(new ResidualBlock(config, channels, width, b == 0 && s > 0 ? 2 : 1));
                channels = width * config.Expansion;
            }
            stages.Add(blocks);
            register_module($"layer{s + 1}", blocks);
        }
    }

    public ResNetConfig Config { get; }

    /// <summary>The stem's 7 x 7 convolution and its batch normalisation (then ReLU).</summary>
    public (TunerConv2d Conv, FrozenBatchNorm2d Norm) Stem => (conv1, bn1);

    /// <summary>The stem's 3 x 3 stride-2 max pool window.</summary>
    public ConvGeometry MaxPool => pool;

    /// <summary>Every residual block with its full name (<c>layer1.0</c>...), in forward order.</summary>
    public IEnumerable<(string Name, ResidualBlock Block)> Blocks() =>
        stages.SelectMany((stage, s) => stage.Select((block, b) => ($"layer{s + 1}.{b}", block)));

    /// <summary>Every convolution with its full name, in forward order.</summary>
    public IEnumerable<(string Name, TunerConv2d Module)> Convolutions() =>
        named_modules().Where(m => m.module is TunerConv2d).Select(m => (m.name, (TunerConv2d)m.module));

    /// <summary>Every batch normalisation with its full name.</summary>
    public IEnumerable<(string Name, FrozenBatchNorm2d Module)> BatchNorms() =>
        named_modules().Where(m => m.module is FrozenBatchNorm2d).Select(m => (m.name, (FrozenBatchNorm2d)m.module));

    public override Tensor forward(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new ArgumentException($"The ResNet takes images [batch, 3, height, width]; got [{string.Join(", ", images.shape)}].", nameof(images));
        using var scope = NewDisposeScope();
        var x = nn.functional.relu(bn1.forward(conv1.forward(images)));
        // Max pooling pads with -infinity so padding never wins.
        x = nn.functional.max_pool2d(pool.Pad(x, double.NegativeInfinity), kernel_size: 3, stride: 2, padding: pool.ConvPadding);
        foreach (var stage in stages)
            foreach (var block in stage)
                x = block.forward(x);
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).MoveToOuterDisposeScope();
    }

    /// <summary>Channels of the outputs of layer2, layer3 and layer4 (what <see cref="MultiScaleFeatures"/> returns).</summary>
    public long[] MultiScaleChannels => new long[] { Config.Width * 2L * Config.Expansion, Config.Width * 4L * Config.Expansion, Config.Width * 8L * Config.Expansion };

    /// <summary>
    /// The outputs of layer2, layer3 and layer4 (strides 8, 16 and 32) of normalised images [batch, 3, height, width], for
    /// dense tasks such as detection; the same network as <see cref="forward"/>, without the pooling.
    /// </summary>
    public Tensor[] MultiScaleFeatures(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new ArgumentException($"The ResNet takes images [batch, 3, height, width]; got [{string.Join(", ", images.shape)}].", nameof(images));
        using var scope = NewDisposeScope();
        var x = nn.functional.relu(bn1.forward(conv1.forward(images)));
        x = nn.functional.max_pool2d(pool.Pad(x, double.NegativeInfinity), kernel_size: 3, stride: 2, padding: pool.ConvPadding);
        var features = new Tensor[3];
        for (int s = 0; s < stages.Count; s++)
        {
            foreach (var block in stages[s])
                x = block.forward(x);
            if (s > 0) features[s - 1] = x.MoveToOuterDisposeScope();
        }
        return features;
    }
}
