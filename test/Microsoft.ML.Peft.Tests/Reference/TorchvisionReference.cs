using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// torchvision's ResNet as an independent reference (test/Reference/torchvision_resnet.py, Debian's python3-torch and
/// python3-torchvision): seeded random weights with non-trivial batch-norm statistics, written as a torchvision-named
/// model.safetensors, and a few input batches (2x3x64x64, 1x3x224x224, 1x3x97x75) with the pooled features and logits
/// torchvision computes for them in eval mode. <see cref="Generate"/> runs the script into a temporary folder, which
/// <see cref="Dispose"/> deletes. Skipped without torch/torchvision, failed instead when PEFT_REQUIRE_TORCH_REFERENCE=1.
/// </summary>
internal sealed class TorchvisionReference : IDisposable
{
    private static string Script => Path.Combine(PythonReference.ScriptFolder, "torchvision_resnet.py");

    private TorchvisionReference(string directory, string arch, int classes, int seed, int featureDimension, bool hasNumBatchesTracked,
        int tensorCount, IReadOnlyList<TorchvisionReferenceBatch> batches)
    {
        Directory = directory;
        Arch = arch;
        Classes = classes;
        Seed = seed;
        FeatureDimension = featureDimension;
        HasNumBatchesTracked = hasNumBatchesTracked;
        TensorCount = tensorCount;
        Batches = batches;
    }

    /// <summary>The temporary folder holding the script's files.</summary>
    public string Directory { get; }

    /// <summary>model.safetensors: torchvision's state_dict (F32; num_batches_tracked as I64 scalars unless left out).</summary>
    public string ModelPath => Path.Combine(Directory, "model.safetensors");

    /// <summary>resnet18, resnet34 or resnet50.</summary>
    public string Arch { get; }

    /// <summary>Outputs of fc.</summary>
    public int Classes { get; }

    /// <summary>The seed the weights were drawn with.</summary>
    public int Seed { get; }

    /// <summary>Size of avgpool's flattened output: 512 (resnet18/34) or 2048 (resnet50).</summary>
    public int FeatureDimension { get; }

    /// <summary>Whether model.safetensors holds each batch norm's num_batches_tracked (I64, shape []).</summary>
    public bool HasNumBatchesTracked { get; }

    /// <summary>Number of tensors in model.safetensors.</summary>
    public int TensorCount { get; }

    /// <summary>The input batches with torchvision's features and logits for them.</summary>
    public IReadOnlyList<TorchvisionReferenceBatch> Batches { get; }

    /// <summary>
    /// Runs torchvision_resnet.py (with --check: the script reloads its files and compares) into a new temporary folder
    /// and reads what it wrote. Skips the calling test when torch or torchvision cannot be imported (fails it under
    /// PEFT_REQUIRE_TORCH_REFERENCE=1).
    /// </summary>
    public static TorchvisionReference Generate(string arch = "resnet18", int classes = 10, int seed = 0, bool numBatchesTracked = true)
    {
        PythonReference.Require("python3-torch python3-torchvision libopenblas0-pthread", "torch", "torchvision");
        var directory = Path.Combine(Path.GetTempPath(), "torchvision-reference-" + Guid.NewGuid().ToString("N"));
        var arguments = new List<string>
        {
            Script, directory, "--arch", arch,
            "--classes", classes.ToString(CultureInfo.InvariantCulture), "--seed", seed.ToString(CultureInfo.InvariantCulture), "--check",
        };
        if (!numBatchesTracked) arguments.Add("--no-num-batches-tracked");
        try
        {
            var (exit, stdout, stderr) = PythonReference.Run(TimeSpan.FromMinutes(5), arguments.ToArray());
            Assert.That(exit, Is.EqualTo(0), $"torchvision_resnet.py failed:\n{stdout}\n{stderr}");
            return Read(directory);
        }
        catch
        {
            if (System.IO.Directory.Exists(directory)) System.IO.Directory.Delete(directory, recursive: true);
            throw;
        }
    }

    /// <summary>Reads a folder written by torchvision_resnet.py (expected.json and the .bin files it names).</summary>
    public static TorchvisionReference Read(string directory)
    {
        var expectedPath = Path.Combine(directory, "expected.json");
        using var json = JsonDocument.Parse(File.ReadAllText(expectedPath));
        var root = json.RootElement;
        var batches = root.GetProperty("batches").EnumerateArray().Select(b =>
        {
            (int[] Shape, float[] Values) Load(string key)
            {
                var shape = b.GetProperty(key + "Shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
                return (shape, ReadFloats(Path.Combine(directory, b.GetProperty(key).GetString()!), shape));
            }
            var input = Load("input");
            var features = Load("features");
            var logits = Load("logits");
            return new TorchvisionReferenceBatch(input.Shape, input.Values, features.Shape, features.Values, logits.Shape, logits.Values);
        }).ToList();
        return new TorchvisionReference(directory,
            root.GetProperty("arch").GetString()!,
            root.GetProperty("classes").GetInt32(),
            root.GetProperty("seed").GetInt32(),
            root.GetProperty("featureDimension").GetInt32(),
            root.GetProperty("numBatchesTracked").GetString() == "I64",
            root.GetProperty("tensorCount").GetInt32(),
            batches);
    }

    /// <summary>A raw little-endian float32 file of the given shape.</summary>
    public static float[] ReadFloats(string path, IReadOnlyList<int> shape)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("The reference files are little-endian float32.");
        var bytes = File.ReadAllBytes(path);
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (bytes.Length != count * sizeof(float))
            throw new InvalidDataException($"{path} has {bytes.Length} bytes; shape [{string.Join(", ", shape)}] needs {count * sizeof(float)}.");
        return MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }

    /// <summary>Deletes <see cref="Directory"/>.</summary>
    public void Dispose()
    {
        if (System.IO.Directory.Exists(Directory)) System.IO.Directory.Delete(Directory, recursive: true);
    }
}

/// <summary>One input batch (float32 NCHW, values ~ N(0, 1)) with torchvision's eval-mode outputs for it.</summary>
/// <param name="InputShape">N, 3, H, W.</param>
/// <param name="Input">The batch, row-major.</param>
/// <param name="FeaturesShape">N, feature dimension: avgpool's output flattened.</param>
/// <param name="Features">The pooled features, row-major.</param>
/// <param name="LogitsShape">N, classes.</param>
/// <param name="Logits">fc's output, row-major.</param>
internal sealed record TorchvisionReferenceBatch(int[] InputShape, float[] Input, int[] FeaturesShape, float[] Features, int[] LogitsShape, float[] Logits)
{
    /// <summary>The input as a new CPU tensor (N, 3, H, W); the caller disposes it.</summary>
    public Tensor InputTensor() => tensor(Input, InputShape.Select(d => (long)d).ToArray());

    /// <summary>The features as a new CPU tensor (N, D); the caller disposes it.</summary>
    public Tensor FeaturesTensor() => tensor(Features, FeaturesShape.Select(d => (long)d).ToArray());

    /// <summary>The logits as a new CPU tensor (N, classes); the caller disposes it.</summary>
    public Tensor LogitsTensor() => tensor(Logits, LogitsShape.Select(d => (long)d).ToArray());
}
