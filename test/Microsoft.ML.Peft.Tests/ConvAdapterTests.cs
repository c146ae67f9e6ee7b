using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.LinearProbe;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Methods.PromptTuning;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Adapters of convolutions (LoRA's Conv2d, IA3's channel scaling) against a naive convolution written out in loops, and methods on a ResNet.</summary>
[TestFixture]
public class ConvAdapterTests
{
    private Generator draws = null!;

    [SetUp]
    public void SeedDraws() => draws = new Generator(42);

    [TearDown]
    public void DisposeDraws() => draws.Dispose();

    /// <summary>A convolution by its definition: zero padding (top, left) before and (bottom, right) after, then sliding sums.</summary>
    private static float[,,,] NaiveConv(float[,,,] x, float[,,,] w, int stride, int padTop, int padLeft, int padBottom, int padRight)
    {
        int n = x.GetLength(0), cin = x.GetLength(1), h = x.GetLength(2), wd = x.GetLength(3);
        int cout = w.GetLength(0), k = w.GetLength(2);
        int oh = (h + padTop + padBottom - k) / stride + 1, ow = (wd + padLeft + padRight - k) / stride + 1;
        var y = new float[n, cout, oh, ow];
        for (int b = 0; b < n; b++)
            for (int o = 0; o < cout; o++)
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++)
                    {
                        double sum = 0;
                        for (int c = 0; c < cin; c++)
                            for (int u = 0; u < k; u++)
                                for (int v = 0; v < k; v++)
                                {
                                    int r = i * stride + u - padTop, q = j * stride + v - padLeft;
                                    if (r >= 0 && r < h && q >= 0 && q < wd) sum += x[b, c, r, q] * w[o, c, u, v];
                                }
                        y[b, o, i, j] = (float)sum;
                    }
        return y;
    }

    private static float[,,,] ToArray4(Tensor t)
    {
        var s = t.shape;
        var data = t.detach().cpu().contiguous().data<float>().ToArray();
        var result = new float[s[0], s[1], s[2], s[3]];
        Buffer.BlockCopy(data, 0, result, 0, data.Length * sizeof(float));
        return result;
    }

    private static float MaxDifference(float[,,,] a, Tensor b)
    {
        var other = ToArray4(b);
        Assert.That(new[] { other.GetLength(0), other.GetLength(1), other.GetLength(2), other.GetLength(3) },
            Is.EqualTo(new[] { a.GetLength(0), a.GetLength(1), a.GetLength(2), a.GetLength(3) }), "shape");
        float max = 0;
        foreach (var (p, q) in a.Cast<float>().Zip(other.Cast<float>())) max = Math.Max(max, Math.Abs(p - q));
        return max;
    }

    private TunerConv2d RandomConv(int cin, int cout, ConvGeometry geometry)
    {
        var layer = new TunerConv2d(cin, cout, geometry);
        using (no_grad()) layer.Weight.normal_(0, 0.5, draws);
        return layer;
    }

    [TestCase(3, 1, 1, 1, 1, 1, TestName = "Symmetric3x3")]
    [TestCase(3, 2, 1, 1, 0, 0, TestName = "CntkStride2")]
    [TestCase(7, 2, 3, 3, 2, 2, TestName = "CntkStem")]
    public void TunerConvMatchesTheDefinition(int k, int stride, int top, int left, int bottom, int right)
    {
        using var scope = NewDisposeScope();
        using var layer = RandomConv(3, 4, new ConvGeometry(k, stride, top, left, bottom, right));
        // Odd sizes: the asymmetric padding changes the result there.
        var x = randn(new long[] { 2, 3, 11, 9 }, generator: draws);
        var expected = NaiveConv(ToArray4(x), ToArray4(layer.Weight), stride, top, left, bottom, right);
        Assert.That(MaxDifference(expected, layer.forward(x)), Is.LessThan(1e-4f));
    }

    [Test]
    public void LoraConvAddsTheLowRankKernelAndMergesExactly()
    {
        using var scope = NewDisposeScope();
        var geometry = new ConvGeometry(3, 2, 1, 1, 0, 0);
        using var layer = RandomConv(5, 6, geometry);
        var lora = new LoraConv2d(5, 6, 3, rank: 2, scaling: 1.5f, dropout: 0, draws);
        layer.AddAdapter("default", lora);
        Assert.That(lora.A.shape, Is.EqualTo(new long[] { 2, 5, 3, 3 }), "PEFT's lora_A: a k x k convolution to r channels");
        Assert.That(lora.B.shape, Is.EqualTo(new long[] { 6, 2, 1, 1 }), "PEFT's lora_B: a 1 x 1 convolution back");
        Assert.That(lora.B.abs().max().item<float>(), Is.EqualTo(0f), "B starts at zero: the adapted layer equals the base");
        double bound = 1 / Math.Sqrt(5 * 3 * 3);
        Assert.That(lora.A.abs().max().item<float>(), Is.LessThanOrEqualTo(bound).And.GreaterThan(bound * 0.8), "Kaiming-uniform bound 1/sqrt(in k k)");
        using (no_grad()) lora.B.normal_(0, 0.5, draws);

        // The effective kernel by hand: W + scaling * sum_r B[o, r] A[r, c, u, v].
        var w = ToArray4(layer.Weight);
        var a = ToArray4(lora.A);
        var b = ToArray4(lora.B);
        for (int o = 0; o < 6; o++)
            for (int c = 0; c < 5; c++)
                for (int u = 0; u < 3; u++)
                    for (int v = 0; v < 3; v++)
                        for (int r = 0; r < 2; r++)
                            w[o, c, u, v] += 1.5f * b[o, r, 0, 0] * a[r, c, u, v];
        var x = randn(new long[] { 2, 5, 9, 8 }, generator: draws);
        var expected = NaiveConv(ToArray4(x), w, 2, 1, 1, 0, 0);
        Assert.That(MaxDifference(expected, layer.forward(x)), Is.LessThan(1e-4f), "unmerged");
        var original = layer.Weight.detach().clone();
        layer.Merge();
        Assert.That(MaxDifference(expected, layer.forward(x)), Is.LessThan(1e-4f), "merged");
        layer.Unmerge();
        Assert.That(layer.Weight.equal(original).all().item<bool>(), Is.True, "unmerge restores the weight exactly");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void IA3ConvScalesChannelsAndMerges(bool feedforward)
    {
        using var scope = NewDisposeScope();
        var geometry = ConvGeometry.Symmetric(3, 1, 1);
        using var layer = RandomConv(4, 3, geometry);
        var ia3 = new IA3Conv2d(4, 3, feedforward, initialiseToOne: true);
        layer.AddAdapter("default", ia3);
        Assert.That(ia3.Vector.shape, Is.EqualTo(feedforward ? new long[] { 1, 4, 1, 1 } : new long[] { 1, 3, 1, 1 }));
        var l = feedforward ? new[] { 0.5f, 2f, -1f, 1.5f } : new[] { 0.5f, -2f, 3f };
        using (no_grad()) ia3.Vector.copy_(tensor(l).view(ia3.Vector.shape));
        var x = randn(new long[] { 2, 4, 6, 5 }, generator: draws);
        var xs = ToArray4(x);
        var w = ToArray4(layer.Weight);
        if (feedforward)
        {
            for (int n = 0; n < 2; n++) for (int c = 0; c < 4; c++) for (int i = 0; i < 6; i++) for (int j = 0; j < 5; j++) xs[n, c, i, j] *= l[c];
        }
        var expected = NaiveConv(xs, w, 1, 1, 1, 1, 1);
        if (!feedforward)
            for (int n = 0; n < 2; n++) for (int o = 0; o < 3; o++) for (int i = 0; i < 6; i++) for (int j = 0; j < 5; j++) expected[n, o, i, j] *= l[o];
        Assert.That(MaxDifference(expected, layer.forward(x)), Is.LessThan(1e-4f), "unmerged");
        layer.Merge();
        Assert.That(MaxDifference(expected, layer.forward(x)), Is.LessThan(1e-4f), "merged");
    }

    /// <summary>A small ResNet with random weights, as the image tests' base.</summary>
    internal static ResNetBackbone TinyResNet(string block = "basic", int seed = 5)
    {
        var config = new ResNetConfig { Block = block, Layers = new[] { 1, 1, 1, 1 }, Width = 8 };
        var weights = new Dictionary<string, NamedArray>();
        using var generator = new Generator((ulong)seed);
        using (var model = new ResNetModel(config))
        {
            foreach (var (name, t) in model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers()))
            {
                using var values = name.EndsWith("running_var") ? rand(t.shape, generator: generator).add_(0.5) : randn(t.shape, generator: generator).mul_(0.3);
                weights[name] = new NamedArray(t.shape, values.data<float>().ToArray()) { SourceName = name };
            }
        }
        return new ResNetBackbone(config, weights, "tiny ResNet");
    }

    [Test]
    public void MethodsOnAResNet()
    {
        using var scope = NewDisposeScope();
        var backbone = TinyResNet();
        var convs = backbone.Convolutions().ToList();
        Assert.That(convs.Select(c => c.Name), Is.EqualTo(new[]
        {
            "conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
            "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0", "layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
        }), "torchvision's names, each convolution once");
        var x = randn(new long[] { 2, 3, 40, 36 }, generator: draws);
        backbone.Model.eval();
        var before = backbone.Forward(x).detach().clone();

        var lora = new AdaptedBackbone(backbone, new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0, TargetModules = new[] { Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions } }, draws);
        Assert.That(lora.AdaptedModules, Has.Count.EqualTo(convs.Count), "every convolution, the projections included");
        long expected = convs.Sum(c => 2 * c.Module.InFeatures * c.Module.Geometry.Kernel * c.Module.Geometry.Kernel + c.Module.OutFeatures * 2);
        Assert.That(lora.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(expected));
        Assert.That(lora.Parameters().Select(p => p.Key), Does.Contain("resnet.layer1.0.conv1.lora_A.weight"));
        Assert.That(backbone.Forward(x).sub(before).abs().max().item<float>(), Is.LessThan(1e-6f), "B = 0: unchanged at the start");
        using (no_grad()) foreach (var p in lora.Parameters().Where(p => p.Key.Contains("lora_B"))) p.Parameter.normal_(0, 0.1, draws);
        var adapted = backbone.Forward(x).detach().clone();
        Assert.That(adapted.sub(before).abs().max().item<float>(), Is.GreaterThan(1e-3f));
        lora.Merge();
        Assert.That(backbone.Forward(x).sub(adapted).abs().max().item<float>(), Is.LessThan(1e-4f), "merged ResNet equals the unmerged one");
        lora.Unmerge();
        Assert.That(backbone.Forward(x).sub(adapted).abs().max().item<float>(), Is.LessThan(1e-5f));
        backbone.Model.Dispose();
    }

    [Test]
    public void OtherMethodsSelectWhatAppliesToConvolutions()
    {
        using var scope = NewDisposeScope();
        using (var backbone = new DisposableBackbone(TinyResNet()))
        {
            var bitfit = new AdaptedBackbone(backbone.Value, new BitFitOptions(), draws);
            Assert.That(bitfit.Parameters().Select(p => p.Key), Is.All.EndsWith("bias"));
            Assert.That(bitfit.Parameters().Select(p => p.Key), Does.Contain("resnet.bn1.bias").And.Contain("resnet.layer4.0.downsample.1.bias"), "batch normalisation's shifts are the ResNet's biases");
        }
        using (var backbone = new DisposableBackbone(TinyResNet()))
        {
            var probe = new AdaptedBackbone(backbone.Value, new LinearProbeOptions(), draws);
            Assert.That(probe.Parameters(), Is.Empty);
        }
        using (var backbone = new DisposableBackbone(TinyResNet()))
        {
            var full = new AdaptedBackbone(backbone.Value, new FullFineTuningOptions(), draws);
            Assert.That(full.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(backbone.Value.Model.parameters().Sum(p => p.numel())));
        }
        using (var backbone = new DisposableBackbone(TinyResNet()))
        {
            var ia3 = new AdaptedBackbone(backbone.Value, new IA3Options { TargetModules = new[] { "conv2" }, FeedforwardModules = new[] { "conv2" } }, draws);
            Assert.That(ia3.Parameters().Select(p => p.Parameter.shape[1]), Is.EqualTo(new long[] { 8, 16, 32, 64 }), "feed-forward IA3 scales the input channels");
        }
        using (var backbone = new DisposableBackbone(TinyResNet()))
        {
            var dora = Assert.Throws<ArgumentException>(() => new AdaptedBackbone(backbone.Value, new LoraOptions { UseDora = true, TargetModules = new[] { "conv1" } }, draws));
            Assert.That(dora!.Message, Does.Contain("UseDora").And.Contain("convolutions"));
            var prompt = Assert.Throws<ArgumentException>(() => new AdaptedBackbone(backbone.Value, new PromptTuningOptions(), draws));
            Assert.That(prompt!.Message, Does.Contain("text encoders only"));
            var none = Assert.Throws<ArgumentException>(() => new AdaptedBackbone(backbone.Value, new LoraOptions(), draws));
            Assert.That(none!.Message, Does.Contain("match no adaptable layer").And.Contain("conv1"), "LoRA's text defaults (query, value) name the layers there are");
        }
    }

    private sealed class DisposableBackbone(ResNetBackbone value) : IDisposable
    {
        public ResNetBackbone Value { get; } = value;

        public void Dispose() => Value.Model.Dispose();
    }
}
