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
