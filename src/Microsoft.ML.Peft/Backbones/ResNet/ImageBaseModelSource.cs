using System.Security.Cryptography;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>Where an image model's pretrained weights come from.</summary>
public enum ImageBaseModelKind
{
    /// <summary>The ImageNet ResNet-18 of the NuGet package Microsoft.ML.DnnImageFeaturizer.ResNet18 (an ONNX file copied beside the application).</summary>
    ResNet18Package,

    /// <summary>An ONNX ResNet.</summary>
    Onnx,

    /// <summary>A torchvision ResNet state dict in safetensors format.</summary>
    Torchvision,
}

/// <summary>
/// The pretrained image network to fine-tune: by default the ImageNet ResNet-18 that the NuGet package
/// <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> copies into the application's output
/// (<c>DnnImageModels/ResNet18Onnx/ResNet18.onnx</c>), so nothing is downloaded; or any ResNet-18/34/50/101/152 as an ONNX
/// file or as a torchvision state dict in safetensors.
/// </summary>
public sealed class ImageBaseModelSource
{
    /// <summary>The NuGet package whose ResNet-18 is the default image base model.</summary>
    public const string ResNet18Package = "Microsoft.ML.DnnImageFeaturizer.ResNet18";
    internal const string ResNet18PackageVersion = "0.23.1";
    internal static readonly string ResNet18RelativePath = System.IO.Path.Combine("DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");

    private ImageBaseModelSource(ImageBaseModelKind kind, string name, string path)
    {
        Kind = kind;
        Name = name;
        Path = path;
    }

    /// <summary>Where the weights come from.</summary>
    public ImageBaseModelKind Kind { get; }

    /// <summary>A short name for messages and the saved model.</summary>
    public string Name { get; }

    /// <summary>The weights file.</summary>
    public string Path { get; }

    /// <summary>
    /// The ImageNet ResNet-18 of <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c>, found beside the application
    /// (<see cref="AppContext.BaseDirectory"/>) where the package's build step copies it.
    /// </summary>
    public static ImageBaseModelSource ResNet18() =>
        new(ImageBaseModelKind.ResNet18Package, "ResNet-18 (ImageNet)", System.IO.Path.Combine(AppContext.BaseDirectory, ResNet18RelativePath));

    /// <summary>A ResNet in an ONNX file (its structure is read from the graph).</summary>
    public static ImageBaseModelSource FromOnnx(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("The ONNX model path is empty.", nameof(path));
        var full = System.IO.Path.GetFullPath(path);
        return new(ImageBaseModelKind.Onnx, System.IO.Path.GetFileName(full), full);
    }

    /// <summary>A torchvision ResNet state dict (<c>model.state_dict()</c> written as safetensors; the architecture is read from its names and shapes).</summary>
    public static ImageBaseModelSource FromTorchvision(string safetensorsPath)
    {
        if (string.IsNullOrWhiteSpace(safetensorsPath)) throw new ArgumentException("The safetensors path is empty.", nameof(safetensorsPath));
        var full = System.IO.Path.GetFullPath(safetensorsPath);
        return new(ImageBaseModelKind.Torchvision, System.IO.Path.GetFileName(full), full);
    }

    /// <summary>An ONNX file or, for a <c>.safetensors</c> path, a torchvision state dict.</summary>
    public static ImageBaseModelSource FromPath(string path) =>
        path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? FromTorchvision(path) : FromOnnx(path);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Path})";

    internal static ImageBaseModelSource Restore(ImageBaseModelKind kind, string name, string path) => new(kind, name, path);

    internal byte[] ReadFile()
    {
        if (File.Exists(Path)) return File.ReadAllBytes(Path);
        if (Kind == ImageBaseModelKind.ResNet18Package)
            throw new FileNotFoundException(
                $"The default image base model {ResNet18RelativePath} is not beside the application ({AppContext.BaseDirectory}). It comes from the NuGet package " +
                $"'{ResNet18Package}': add it (dotnet add package {ResNet18Package} --version {ResNet18PackageVersion}) or set the trainer's BaseModel option to an ONNX or safetensors ResNet.", Path);
        throw new FileNotFoundException($"The image base model file '{Path}' does not exist.", Path);
    }

    internal LoadedImageBaseModel Load() => LoadedImageBaseModel.Parse(this, ReadFile());
}

/// <summary>An image base model read into memory: its configuration, named weights, file bytes and hash.</summary>
internal sealed class LoadedImageBaseModel
{
    private LoadedImageBaseModel(ImageBaseModelSource source, ResNetConfig config, Dictionary<string, NamedArray> weights, byte[] file)
    {
        Source = source;
        Config = config;
        Weights = weights;
        File = file;
        Sha256 = Convert.ToHexString(SHA256.HashData(file)).ToLowerInvariant();
    }

    public ImageBaseModelSource Source { get; }
    public ResNetConfig Config { get; }
    public Dictionary<string, NamedArray> Weights { get; }
    public byte[] File { get; }
    public string Sha256 { get; }

    public ResNetBackbone CreateBackbone() => new(Config, Weights, Source.ToString());

    public static LoadedImageBaseModel Parse(ImageBaseModelSource source, byte[] file)
    {
        if (source.Kind != ImageBaseModelKind.Torchvision)
        {
            var (config, weights) = OnnxResNetImporter.Import(file, source.ToString());
            return new LoadedImageBaseModel(source, config, weights, file);
        }
        var tensors = ReadSafetensors(file, source.ToString());
        return new LoadedImageBaseModel(source, TorchvisionConfig(tensors, source.ToString()), tensors, file);
    }

    private static Dictionary<string, NamedArray> ReadSafetensors(byte[] bytes, string source)
    {
        var result = SafetensorsArrays.Read(bytes, $"{source}: the safetensors file", (key, isFloat) =>
        {
            // The classifier of the original task and batch counters are not part of the backbone.
            if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal) || key.StartsWith("fc.", StringComparison.Ordinal)) return null;
            return isFloat ? key : throw new InvalidDataException($"{source}: '{key}' is not a floating-point tensor.");
        });
        foreach (var (key, array) in result)
            if (array.Data.Any(v => !float.IsFinite(v))) throw new InvalidDataException($"{source}: '{key}' holds values that are not finite.");
        return result;
    }

    /// <summary>The torchvision architecture that the names and shapes of <paramref name="weights"/> describe.</summary>
    private static ResNetConfig TorchvisionConfig(Dictionary<string, NamedArray> weights, string source)
    {
        if (!weights.TryGetValue("conv1.weight", out var stem) || stem.Shape.Length != 4 || stem.Shape[1] != 3 || stem.Shape[2] != 7)
            throw new InvalidDataException($"{source}: no torchvision ResNet stem 'conv1.weight' [width, 3, 7, 7] was found.");
        var layers = new int[4];
        for (int s = 0; s < 4; s++)
        {
            var prefix = $"layer{s + 1}.";
            layers[s] = weights.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
                .Select(k => int.TryParse(k[prefix.Length..].Split('.')[0], out var i) ? i + 1 : 0).DefaultIfEmpty(0).Max();
            if (layers[s] == 0) throw new InvalidDataException($"{source}: stage 'layer{s + 1}' of a torchvision ResNet is missing.");
        }
        var config = new ResNetConfig
        {
            Block = weights.ContainsKey("layer1.0.conv3.weight") ? "bottleneck" : "basic",
            Layers = layers,
            Width = checked((int)stem.Shape[0]),
        };
        config.Validate(source);
        return config;
    }
}
