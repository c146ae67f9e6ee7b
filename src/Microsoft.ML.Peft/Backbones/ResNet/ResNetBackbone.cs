using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>A backbone over images: features are pooled over the spatial positions.</summary>
internal interface IImageBackbone : IBackbone
{
    /// <summary>The network's configuration, including the input normalisation it expects.</summary>
    ResNetConfig Config { get; }

    /// <summary>Pooled features [batch, <see cref="IBackbone.FeatureSize"/>] of normalised images [batch, 3, height, width].</summary>
    Tensor Forward(Tensor images);

    /// <summary>Every batch normalisation with its full name (their affine parameters may be trained).</summary>
    IEnumerable<(string Name, FrozenBatchNorm2d Module)> BatchNorms();
}

/// <summary>A ResNet as a backbone: its convolutions are what methods adapt; it has no Linear layers (the head is the task's).</summary>
internal sealed class ResNetBackbone : IImageBackbone
{
    public ResNetBackbone(ResNetConfig config, IReadOnlyDictionary<string, NamedArray> weights, string source)
    {
        CheckSize(config, weights, source);
        Model = new ResNetModel(config);
        try
        {
            ResNetWeights.Load(Model, weights, source);
        }
        catch
        {
            Model.Dispose();
            throw;
        }
        SourceNames = weights.Where(w => w.Value.SourceName is not null).ToDictionary(w => w.Key, w => (w.Value.SourceName!, false));
    }

    /// <summary>
    /// Refuses a configuration that needs more weights than <paramref name="weights"/> hold, before a network of that size
    /// is allocated (a damaged file could name 64 blocks per stage of width 1,024 and hold a few kilobytes).
    /// </summary>
    private static void CheckSize(ResNetConfig config, IReadOnlyDictionary<string, NamedArray> weights, string source)
    {
        // Every block has at least one 3 x 3 convolution of its stage's width (planes) in and out.
        double needed = 3.0 * 49 * config.Width;
        for (int stage = 0; stage < config.Layers.Length; stage++)
        {
            double planes = (double)config.Width * (1 << stage);
            needed += config.Layers[stage] * 9 * planes * planes;
        }
        double held = weights.Values.Sum(w => (double)w.Data.LongLength);
        if (needed > held)
            throw new InvalidDataException($"{source}: a {config} of width {config.Width} needs at least {needed:N0} weights, but the file holds {held:N0}.");
    }

    public ResNetModel Model { get; }

    public ResNetConfig Config => Model.Config;

    public nn.Module Module => Model;

    public string Name => "resnet";

    public long FeatureSize => Model.Config.FeatureSize;

    public IReadOnlyDictionary<string, (string Name, bool Transposed)> SourceNames { get; }

    public bool GradientCheckpointing
    {
        get => false;
        set
        {
            if (value) throw new NotSupportedException("Gradient checkpointing is implemented for text encoders; a ResNet trains without it (lower BatchSize or ImageSize to save memory).");
        }
    }

    public IEnumerable<(string Name, TunerLinear Module)> Linears() => Array.Empty<(string, TunerLinear)>();

    public IEnumerable<(string Name, TunerConv2d Module)> Convolutions() => Model.Convolutions();

    public IEnumerable<(string Name, FrozenBatchNorm2d Module)> BatchNorms() => Model.BatchNorms();

    public Tensor Forward(Tensor images) => Model.forward(images);

    public void PrepareInference() { }

    public void EndInference() { }
}

/// <summary>Copies named weights into a ResNet's parameters and batch-normalisation buffers, checking names and shapes.</summary>
internal static class ResNetWeights
{
    public static void Load(ResNetModel model, IReadOnlyDictionary<string, NamedArray> weights, string source)
    {
        var missing = new List<string>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        using (no_grad())
        {
            foreach (var (name, target) in model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers()))
            {
                if (!weights.TryGetValue(name, out var array))
                {
                    missing.Add(name);
                    continue;
                }
                if (!array.Shape.SequenceEqual(target.shape))
                    throw new InvalidDataException($"{source}: '{name}' has shape [{string.Join(", ", array.Shape)}], the {model.Config} expects [{string.Join(", ", target.shape)}].");
                using var values = tensor(array.Data, array.Shape);
                target.copy_(values);
                used.Add(name);
            }
        }
        if (missing.Count > 0)
            throw new InvalidDataException($"{source}: {missing.Count} weights of the {model.Config} are missing, for example {string.Join(", ", missing.Take(5))}.");
        var unknown = weights.Keys.Where(k => !used.Contains(k)).ToList();
        if (unknown.Count > 0)
            throw new InvalidDataException($"{source}: {unknown.Count} weights do not belong to a {model.Config}, for example {string.Join(", ", unknown.Take(5))}.");
    }
}
