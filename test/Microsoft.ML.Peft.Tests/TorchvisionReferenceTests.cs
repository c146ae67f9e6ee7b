using NUnit.Framework;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The torchvision ResNet reference (<see cref="TorchvisionReference"/>) read from C#: model.safetensors loads with
/// TorchSharp under torchvision's names and shapes, batch norm is not the identity, and fc applied here to the
/// reference features gives the reference logits, so the files agree with each other before a backbone is compared
/// with them.
/// </summary>
[TestFixture]
[NonParallelizable]
public class TorchvisionReferenceTests
{
    [TestCase("resnet18", 10, true, 512, 122)]
    [TestCase("resnet50", 7, false, 2048, 267)]
    public void FilesAgreeWithEachOther(string arch, int classes, bool numBatchesTracked, int featureDimension, int tensorCount)
    {
        using var reference = TorchvisionReference.Generate(arch, classes, seed: 3, numBatchesTracked);
        Assert.That(reference.Arch, Is.EqualTo(arch));
        Assert.That(reference.Classes, Is.EqualTo(classes));
        Assert.That(reference.FeatureDimension, Is.EqualTo(featureDimension));
        Assert.That(reference.HasNumBatchesTracked, Is.EqualTo(numBatchesTracked));
        Assert.That(reference.TensorCount, Is.EqualTo(tensorCount));
        Assert.That(reference.Batches.Select(b => b.InputShape), Is.EqualTo(new[] { new[] { 2, 3, 64, 64 }, new[] { 1, 3, 224, 224 }, new[] { 1, 3, 97, 75 } }));

        var state = Safetensors.LoadStateDict(reference.ModelPath);
        try
        {
            Assert.That(state, Has.Count.EqualTo(reference.TensorCount));
            Assert.That(state["conv1.weight"].shape, Is.EqualTo(new long[] { 64, 3, 7, 7 }));
            Assert.That(state["fc.weight"].shape, Is.EqualTo(new long[] { classes, featureDimension }));
            Assert.That(state["layer4.0.downsample.1.running_var"].shape, Is.EqualTo(new long[] { featureDimension }));
            var tracked = state.Where(p => p.Key.EndsWith("num_batches_tracked", StringComparison.Ordinal)).ToList();
            if (numBatchesTracked)
            {
                Assert.That(tracked, Is.Not.Empty);
                Assert.That(tracked.Select(p => p.Value.dtype).Distinct(), Is.EqualTo(new[] { ScalarType.Int64 }));
                Assert.That(tracked.Select(p => p.Value.shape.Length).Distinct(), Is.EqualTo(new[] { 0 }));
            }
            else Assert.That(tracked, Is.Empty);
            foreach (var (name, value) in state.Where(p => p.Key.EndsWith("running_var", StringComparison.Ordinal)))
                Assert.That((value - 1).abs().max().item<float>(), Is.GreaterThan(0.05f), $"{name}: eval-mode batch norm is not the identity");
            foreach (var (name, value) in state.Where(p => p.Key.EndsWith("running_mean", StringComparison.Ordinal)))
                Assert.That(value.abs().max().item<float>(), Is.GreaterThan(0.01f), $"{name}: running mean is not zero");

            foreach (var batch in reference.Batches)
            {
                int n = batch.InputShape[0];
                Assert.That(batch.FeaturesShape, Is.EqualTo(new[] { n, featureDimension }));
                Assert.That(batch.LogitsShape, Is.EqualTo(new[] { n, classes }));
                using var scope = NewDisposeScope();
                var features = batch.FeaturesTensor();
                // avgpool follows a ReLU: the features are non-negative and not all zero.
                Assert.That(features.min().item<float>(), Is.GreaterThanOrEqualTo(0f));
                Assert.That(features.max().item<float>(), Is.GreaterThan(0.1f));
                var logits = nn.functional.linear(features, state["fc.weight"], state["fc.bias"]);
                var difference = (logits - batch.LogitsTensor()).abs().max().item<float>();
                TestContext.Out.WriteLine($"{arch} [{string.Join('x', batch.InputShape)}]: max |fc(features) - logits| = {difference:E2}");
                Assert.That(difference, Is.LessThan(1e-4f));
                Assert.That(batch.LogitsTensor().std().item<float>(), Is.GreaterThan(0.1f), "logits spread, so a comparison means something");
            }
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    [Test]
    public void SameSeedSameFilesOtherSeedOtherWeights()
    {
        using var a = TorchvisionReference.Generate(seed: 1);
        using var b = TorchvisionReference.Generate(seed: 1);
        using var c = TorchvisionReference.Generate(seed: 2);
        Assert.That(File.ReadAllBytes(a.ModelPath), Is.EqualTo(File.ReadAllBytes(b.ModelPath)));
        Assert.That(a.Batches.Select(x => x.Logits), Is.EqualTo(b.Batches.Select(x => x.Logits)));
        Assert.That(a.Batches[1].Logits, Is.Not.EqualTo(c.Batches[1].Logits));
    }

    [Test]
    public void ReadFloatsNamesTheFileWhenTheSizeIsWrong()
    {
        var path = Path.Combine(Path.GetTempPath(), $"torchvision-reference-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, new byte[12]);
        try
        {
            Assert.That(TorchvisionReference.ReadFloats(path, new[] { 3 }), Is.EqualTo(new float[3]));
            var e = Assert.Throws<InvalidDataException>(() => TorchvisionReference.ReadFloats(path, new[] { 2, 2 }));
            Assert.That(e!.Message, Does.Contain(path).And.Contain("[2, 2]"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
