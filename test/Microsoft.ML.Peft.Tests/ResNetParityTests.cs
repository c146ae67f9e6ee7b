using System.IO.Compression;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Backbones.ResNet;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Our TorchSharp ResNet-18, imported from the ONNX file of Microsoft.ML.DnnImageFeaturizer.ResNet18, against ONNX Runtime running that file.</summary>
[TestFixture]
public class ResNetParityTests
{
    /// <summary>The first <paramref name="count"/> Fashion-MNIST test images, 28 x 28 grey bytes.</summary>
    internal static byte[][] FashionMnistImages(int count)
    {
        const string path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
        if (!File.Exists(path)) Assert.Fail($"{path} is missing: apt-get install dataset-fashion-mnist");
        using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        var header = new byte[16];
        gzip.ReadExactly(header);
        var images = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            images[i] = new byte[28 * 28];
            gzip.ReadExactly(images[i]);
        }
        return images;
    }

    [Test]
    public void ResNet18FeaturesMatchOnnxRuntime()
    {
        var loaded = ImageBaseModelSource.ResNet18().Load();
        var config = loaded.Config;
        TestContext.Out.WriteLine(config.ToJson());
        // The package's "ResNet18" has a third block in its last stage (22 convolutions, 110 initializers), read from its graph.
        Assert.That(config.Layers, Is.EqualTo(new[] { 2, 2, 2, 3 }));
        Assert.That(config.ToString(), Is.EqualTo("ResNet-20 (basic blocks 2-2-2-3)"));
        Assert.That(config.Padding, Is.EqualTo(ResNetConfig.SameBeginPadding), "CNTK pads strided convolutions asymmetrically");
        Assert.That(config.InputBgr, Is.True);
        Assert.That(loaded.Weights, Has.Count.EqualTo(22 * 5), "22 convolutions (3 of them projections) and 22 batch norms of 4 tensors: every initializer");
        Assert.That(loaded.Weights["layer2.0.downsample.0.weight"].SourceName, Does.StartWith("Parameter"), "each weight remembers its ONNX initializer");

        // Real images: Fashion-MNIST, upscaled 8x to 224 x 224, grey in all three channels, less the mean (CNTK's 0-255 scale).
        const int count = 4, size = 224;
        var pixels = FashionMnistImages(count);
        var input = new float[count * 3 * size * size];
        for (int n = 0; n < count; n++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < size; y++)
                    for (int x = 0; x < size; x++)
                        input[((n * 3 + c) * size + y) * size + x] = pixels[n][(y / 8) * 28 + x / 8] - config.InputMean[c];

        using var backbone = new DisposableBackbone(loaded.CreateBackbone());
        float[] ours;
        using (no_grad())
        {
            backbone.Value.Model.eval();
            using var features = backbone.Value.Forward(tensor(input, new long[] { count, 3, size, size }));
            Assert.That(features.shape, Is.EqualTo(new long[] { count, 512 }));
            ours = features.data<float>().ToArray();
        }

        using var session = new InferenceSession(loaded.File);
        var inputName = session.InputMetadata.Keys.Single();
        double maxDiff = 0, maxValue = 0;
        for (int n = 0; n < count; n++)
        {
            var one = new DenseTensor<float>(input.AsMemory(n * 3 * size * size, 3 * size * size), new[] { 1, 3, size, size });
            using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(inputName, one) });
            var reference = results.Single().AsTensor<float>().ToArray();
            Assert.That(reference, Has.Length.EqualTo(512));
            for (int i = 0; i < 512; i++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(ours[n * 512 + i] - reference[i]));
                maxValue = Math.Max(maxValue, Math.Abs(reference[i]));
            }
        }
        TestContext.Out.WriteLine($"max |ours - onnxruntime| over {count} Fashion-MNIST images' 512 pooled features: {maxDiff:E3} (largest feature {maxValue:F3})");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(1e-3));
    }

    /// <summary>Disposes a backbone's module.</summary>
    private sealed class DisposableBackbone(ResNetBackbone value) : IDisposable
    {
        public ResNetBackbone Value { get; } = value;

        public void Dispose() => Value.Model.Dispose();
    }

    /// <summary>The torchvision path: a state dict of torchvision's own <c>resnet18()</c> / <c>resnet50()</c> (random weights, randomised batch norms), read from safetensors, against torchvision's outputs.</summary>
    [TestCase("resnet18", "ResNet-18 (basic blocks 2-2-2-2)")]
    [TestCase("resnet50", "ResNet-50 (bottleneck blocks 3-4-6-3)")]
    public void TorchvisionResNetMatchesTorchvision(string arch, string description)
    {
        using var reference = TorchvisionReference.Generate(arch, classes: 10, seed: 7);
        var loaded = ImageBaseModelSource.FromTorchvision(reference.ModelPath).Load();
        Assert.That(loaded.Config.ToString(), Is.EqualTo(description), "the architecture is read from the names and shapes");
        Assert.That(loaded.Config.Padding, Is.EqualTo(ResNetConfig.SymmetricPadding));
        using var backbone = new DisposableBackbone(loaded.CreateBackbone());
        backbone.Value.Model.eval();
        double worst = 0;
        foreach (var batch in reference.Batches)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var features = backbone.Value.Forward(batch.InputTensor());
            var expected = batch.FeaturesTensor();
            Assert.That(features.shape, Is.EqualTo(expected.shape), $"input [{string.Join(", ", batch.InputShape)}]");
            double diff = features.sub(expected).abs().max().item<float>();
            double size = expected.abs().max().item<float>(), spread = expected.std().item<float>();
            TestContext.Out.WriteLine($"{arch} input [{string.Join(", ", batch.InputShape)}]: max |ours - torchvision| {diff:E3} (largest feature {size:F3}, spread {spread:F3})");
            Assert.That(spread, Is.GreaterThan(1e-2), "the reference features vary: a dead network would match anything");
            worst = Math.Max(worst, diff);
        }
        Assert.That(worst, Is.LessThanOrEqualTo(1e-4));
    }
}
