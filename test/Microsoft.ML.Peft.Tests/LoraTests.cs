using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>LoRA maths on a tiny BERT: initial identity, merge/unmerge, parameter counts, target matching.</summary>
[TestFixture]
public class LoraTests
{
    [Test]
    public void OutputIsUnchangedAtInitialisation()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        var before = model.forward(ids, mask, types);
        TinyBert.Adapt(model, new LoraOptions { TargetModules = new[] { LoraOptions.AllLinear } });
        model.eval();
        var after = model.forward(ids, mask, types);
        Assert.That(after.sub(before).abs().max().item<float>(), Is.EqualTo(0f));
    }

    [Test]
    public void LoraBIsZeroAndAIsKaimingUniform()
    {
        using var layer = new LoraLayer(64, 32, rank: 8, scaling: 2, dropout: 0);
        Assert.That(layer.B.abs().max().item<float>(), Is.EqualTo(0f));
        // kaiming_uniform_(a = sqrt(5)) draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        var bound = 1 / Math.Sqrt(64);
        Assert.That(layer.A.abs().max().item<float>(), Is.LessThanOrEqualTo(bound + 1e-6));
        Assert.That(layer.A.std().item<float>(), Is.GreaterThan(bound / 3));
    }

    [Test]
    public void DeltaFollowsThePaper()
    {
        using var scope = NewDisposeScope();
        using var layer = new LoraLayer(6, 5, rank: 2, scaling: 16f / 2, dropout: 0);
        using (no_grad()) layer.B.normal_();
        layer.eval();
        var x = randn(4, 6);
        var expected = x.matmul(layer.A.t()).matmul(layer.B.t()).mul(16f / 2);
        Assert.That(layer.Delta(x).sub(expected).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.That(layer.DeltaWeight().sub(layer.B.matmul(layer.A).mul(8f)).abs().max().item<float>(), Is.LessThan(1e-6f));
    }

    [Test]
    public void MergedForwardEqualsUnmergedAndUnmergeIsExact()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        // Its own generator: the same draws whatever ran before (merged and unmerged differ by float rounding only).
        using var generator = new Generator(17);
        TinyBert.Adapt(model, new LoraOptions { Rank = 4, TargetModules = new[] { "query", "value", "dense" } }, generator);
        var originals = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in model.Linears())
        {
            using (no_grad()) (layer.Adapter(AdaptedBackbone.DefaultAdapter) as LoraLayer)?.B.normal_(0, 0.5, generator);
            originals[name] = layer.Weight.detach().clone();
        }
        model.eval();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        var unmerged = model.forward(ids, mask, types);
        foreach (var (_, layer) in model.Linears()) layer.Merge();
        var merged = model.forward(ids, mask, types);
        var difference = merged.sub(unmerged).abs().max().item<float>();
        TestContext.Out.WriteLine($"max |merged - unmerged| = {difference:E3}");
        Assert.That(difference, Is.LessThanOrEqualTo(1e-5f));
        Assert.That(model.Linears().Any(l => l.Layer.Weight.sub(originals[l.Name]).abs().max().item<float>() > 1e-4f), "merging changed no weight");

        foreach (var (_, layer) in model.Linears()) layer.Unmerge();
        foreach (var (name, layer) in model.Linears())
            Assert.That(layer.Weight.data<float>().ToArray(), Is.EqualTo(originals[name].data<float>().ToArray()), name);
        Assert.That(model.forward(ids, mask, types).sub(unmerged).abs().max().item<float>(), Is.EqualTo(0f));
    }

    [Test]
    public void TrainableParametersAreRTimesInPlusOutPerAdaptedLinearPlusHead()
    {
        var config = TinyBert.Config;
        using var model = TinyBert.CreateModel();
        var adapter = TinyBert.Adapt(model, new LoraOptions { Rank = 8, TargetModules = new[] { "query", "value" } });
        using var head = new ClassificationHead(config.HiddenSize, 3, 0);
        var adapted = adapter.AdaptedModules;
        Assert.That(adapted, Has.Count.EqualTo(2 * config.NumHiddenLayers));
        Assert.That(adapted, Has.All.Match(@"\.(query|value)$"));
        long expected = adapted.Count * 8L * (config.HiddenSize + config.HiddenSize) + (config.HiddenSize * 3 + 3);
        long trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) + head.parameters().Sum(p => p.numel());
        Assert.That(trainable, Is.EqualTo(expected));
        Assert.That(adapter.Parameters().Sum(p => p.Parameter.numel()) + 3 * config.HiddenSize + 3, Is.EqualTo(expected));
        Assert.That(adapter.Parameters().Select(p => p.Key), Has.All.Match(@"^bert\.encoder\.layer\.\d\.attention\.self\.(query|value)\.lora_[AB]\.weight$"));
        Assert.That(model.named_parameters().Where(p => !p.name.Contains(".lora_")).All(p => !p.parameter.requires_grad), "base weights must be frozen");
    }

    [Test]
    public void AllLinearSelectsEveryLinearAndRegexesMatchWholeNames()
    {
        using var model = TinyBert.CreateModel();
        var all = TinyBert.Adapt(model, new LoraOptions { TargetModules = new[] { "all-linear" } }).AdaptedModules;
        Assert.That(all, Has.Count.EqualTo(6 * TinyBert.Config.NumHiddenLayers));

        using var other = TinyBert.CreateModel();
        var firstLayer = TinyBert.Adapt(other, new LoraOptions { TargetModules = new[] { @"encoder\.layer\.0\.attention\.self\.(query|key)" } }).AdaptedModules;
        Assert.That(firstLayer, Is.EqualTo(new[] { "encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.key" }));
    }

    [Test]
    public void TargetPatternThatMatchesNothingListsTheModuleNames()
    {
        using var model = TinyBert.CreateModel();
        var e = Assert.Throws<ArgumentException>(() => TinyBert.Adapt(model, new LoraOptions { TargetModules = new[] { "q_proj" } }));
        Assert.That(e!.Message, Does.Contain("q_proj").And.Contain("query").And.Contain("value").And.Contain("dense"));
        Assert.That(e.ParamName, Is.EqualTo("TargetModules"));
    }

    [Test]
    public void FusedInferenceProjectionsGiveTheSameOutput()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        var plain = model.forward(ids, mask, types);
        model.FuseProjections();
        var fused = model.forward(ids, mask, types);
        Assert.That(fused.sub(plain).abs().max().item<float>(), Is.LessThanOrEqualTo(1e-5f));
        model.train();
        model.ClearFusedProjections();
        model.eval();
        Assert.That(model.forward(ids, mask, types).sub(plain).abs().max().item<float>(), Is.EqualTo(0f));
    }

    [Test]
    public void GradientCheckpointingGivesTheSameLossAndGradients()
    {
        // Dropout stays on: the recomputation must replay the same dropout masks.
        Dictionary<string, float[]> Gradients(bool checkpointing, out float loss)
        {
            using var scope = NewDisposeScope();
            using var random = new Microsoft.ML.Peft.Torch.RandomSource(21, CPU);
            using var model = TinyBert.CreateModel();
            var backbone = new BertBackbone(model);
            var adapter = new AdaptedBackbone(backbone, new LoraOptions { Rank = 4, TargetModules = new[] { "query", "value" } }, random.Init);
            using var network = new TextClassificationNetwork(backbone, new ClassificationHead(TinyBert.Config.HiddenSize, 2, 0.1, random.Init));
            // B starts at zero, which makes A's gradient zero; give B values so every gradient is informative.
            foreach (var p in adapter.Parameters().Where(p => p.Key.Contains("lora_B"))) using (no_grad()) p.Parameter.normal_(0, 0.1, random.Init);
            backbone.GradientCheckpointing = checkpointing;
            network.train();
            // The run's generator draws every dropout mask; checkpointing must replay them from it.
            Microsoft.ML.Peft.Torch.RunDropout.Attach(network, random);
            var (ids, mask, types) = TinyBert.RandomBatch(4, 12);
            var value = nn.functional.cross_entropy(network.forward(ids, mask, types), tensor(new long[] { 0, 1, 1, 0 }));
            value.backward();
            loss = value.item<float>();
            return network.named_parameters().Where(p => p.parameter.requires_grad)
                .ToDictionary(p => p.name, p => p.parameter.grad!.data<float>().ToArray());
        }
        var plain = Gradients(false, out var plainLoss);
        var checkpointed = Gradients(true, out var checkpointedLoss);
        Assert.That(checkpointedLoss, Is.EqualTo(plainLoss).Within(1e-6f));
        Assert.That(checkpointed.Keys, Is.EquivalentTo(plain.Keys));
        Assert.That(plain.Keys.Count(k => k.Contains("encoder.layer.0.") && k.Contains("lora_A")), Is.EqualTo(2), "the first layer's adapters get gradients");
        foreach (var (name, gradient) in plain)
        {
            Assert.That(gradient.Any(g => g != 0), $"{name} has no gradient");
            Assert.That(checkpointed[name], Is.EqualTo(gradient).Within(1e-5f), name);
        }
    }

    [TestCase(0, 16f, 0.1f, "Rank")]
    [TestCase(-1, 16f, 0.1f, "Rank")]
    [TestCase(8, 0f, 0.1f, "Alpha")]
    [TestCase(8, 16f, 1f, "Dropout")]
    public void InvalidLoraOptionsNameTheOption(int rank, float alpha, float dropout, string option)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LoraOptions { Rank = rank, Alpha = alpha, Dropout = dropout }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(option));
    }
}
