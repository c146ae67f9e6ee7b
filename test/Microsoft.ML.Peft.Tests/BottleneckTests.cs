using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Bottleneck;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Bottleneck adapters (Houlsby, Pfeiffer placements): maths, placement, parameters, training, saving.</summary>
[TestFixture]
public class BottleneckTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    [TestCase("relu", new[] { 8.1f, 8.4f, 1.1f, 2.9f })]
    // gelu(2.5) = 2.48448, gelu(-1.5) = -0.10020 (exact gelu, x·Φ(x)).
    [TestCase("gelu", new[] { 3 + 4.96896f + 0.1f, 1 + 7.45344f - 0.1f, 1 - 0.20040f + 0.1f, 3 - 0.30060f - 0.1f })]
    public void AdapterIsHPlusUpOfActivationOfDownByHand(string activation, float[] expected)
    {
        using var scope = NewDisposeScope();
        using var adapter = new BottleneckAdapter(2, 1, activation, null);
        using (no_grad())
        {
            adapter.Down.Weight.copy_(tensor(new[] { 1f, -1f }).view(1, 2));
            adapter.Down.Bias.copy_(tensor(new[] { 0.5f }));
            adapter.Up.Weight.copy_(tensor(new[] { 2f, 3f }).view(2, 1));
            adapter.Up.Bias.copy_(tensor(new[] { 0.1f, -0.1f }));
        }
        // down: 3 - 1 + 0.5 = 2.5 and 1 - 3 + 0.5 = -1.5; relu: 2.5, 0; up: (5.1, 7.4) and (0.1, -0.1); plus h.
        var output = adapter.forward(tensor(new[] { 3f, 1f, 1f, 3f }).view(2, 2));
        Assert.That(output.data<float>().ToArray(), Is.EqualTo(expected).Within(1e-4f));
    }

    [Test]
    public void AdaptedModelStartsEqualToTheBaseModel()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 9);
        var before = model.forward(ids, mask, types);
        using var generator = new Generator(4);
        TinyBert.Adapt(model, new BottleneckOptions { Placement = BottleneckOptions.Houlsby }, generator);
        model.eval();
        Assert.That(model.forward(ids, mask, types).sub(before).abs().max().item<float>(), Is.EqualTo(0f));
        var down = model.named_parameters().Single(p => p.name == "encoder.layer.0.output.adapter.down.weight").parameter;
        Assert.That(down.abs().max().item<float>(), Is.GreaterThan(0f).And.LessThanOrEqualTo(1 / Math.Sqrt(TinyBert.Config.HiddenSize) + 1e-6));
    }

    [TestCase(BottleneckOptions.Houlsby, 2)]
    [TestCase(BottleneckOptions.Pfeiffer, 1)]
    public void PlacementDecidesTheSitesAndTheParameterCount(string placement, int sitesPerLayer)
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new BottleneckOptions { Placement = placement, ReductionFactor = 8 });
        int hidden = TinyBert.Config.HiddenSize, bottleneck = hidden / 8, layers = TinyBert.Config.NumHiddenLayers;
        Assert.That(adapted.AdaptedModules, Has.Count.EqualTo(layers * sitesPerLayer));
        Assert.That(adapted.AdaptedModules, Does.Contain("encoder.layer.1.output"));
        Assert.That(adapted.AdaptedModules.Contains("encoder.layer.0.attention.output"), Is.EqualTo(sitesPerLayer == 2));
        long perAdapter = 2L * hidden * bottleneck + bottleneck + hidden;
        Assert.That(adapted.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(layers * sitesPerLayer * perAdapter));
        Assert.That(adapted.Parameters().Select(p => p.Key), Does.Contain("bert.encoder.layer.0.output.adapter.down.weight")
            .And.Contain("bert.encoder.layer.1.output.adapter.up.bias"));
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Has.All.Contains(".adapter."));
    }

    [Test]
    public void TargetLayersAndReductionFactorAboveTheHiddenSize()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new BottleneckOptions { TargetLayers = new[] { 1 }, ReductionFactor = 1000 });
        Assert.That(adapted.AdaptedModules, Is.EqualTo(new[] { "encoder.layer.1.output" }));
        Assert.That(model.named_parameters().Single(p => p.name == "encoder.layer.1.output.adapter.down.weight").parameter.shape, Is.EqualTo(new long[] { 1, 32 }));
        using var other = TinyBert.CreateModel();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(other, new BottleneckOptions { TargetLayers = new[] { 0, 2 } }));
        Assert.That(e!.ParamName, Is.EqualTo("TargetLayers"));
        Assert.That(e.Message, Does.Contain("layers 0 to 1"));
    }

    [Test]
    public void InvalidOptionsNameTheOption()
    {
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new BottleneckOptions { ReductionFactor = 0 }.Validate())!.ParamName, Is.EqualTo("ReductionFactor"));
        Assert.That(Assert.Throws<ArgumentException>(() => new BottleneckOptions { Placement = "after" }.Validate())!.ParamName, Is.EqualTo("Placement"));
        Assert.That(Assert.Throws<ArgumentException>(() => new BottleneckOptions { NonLinearity = "swish" }.Validate())!.ParamName, Is.EqualTo("NonLinearity"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new BottleneckOptions { TargetLayers = new[] { -1 } }.Validate())!.ParamName, Is.EqualTo("TargetLayers"));
        Assert.That(Assert.Throws<ArgumentException>(() => new BottleneckOptions { TargetLayers = new[] { 1, 1 } }.Validate())!.ParamName, Is.EqualTo("TargetLayers"));
    }

    [Test]
    public void OptionsRoundTripThroughTheRegistry()
    {
        var json = MethodRegistry.ToJson(new BottleneckOptions { ReductionFactor = 4, Placement = "houlsby", NonLinearity = "gelu", TargetLayers = new[] { 0 } });
        Assert.That(json.ToJsonString(), Does.Contain("\"peft_type\":\"BOTTLENECK\"").And.Contain("\"reduction_factor\":4").And.Contain("\"placement\":\"houlsby\"")
            .And.Contain("\"non_linearity\":\"gelu\"").And.Contain("\"target_layers\":[0]"));
        var back = (BottleneckOptions)MethodRegistry.FromJson(json, "test");
        Assert.That((back.ReductionFactor, back.Placement, back.NonLinearity, back.TargetLayers), Is.EqualTo((4, "houlsby", "gelu", (IReadOnlyList<int>?)new[] { 0 })));
    }

    [Test]
    public void TrainsSavesAndLoadsWithTheSameProbabilities()
    {
        var result = MethodTraining.TrainSaveAndLoad(tinyBert, new BottleneckOptions { Placement = BottleneckOptions.Houlsby, ReductionFactor = 4 });
        var losses = result.History.Select(h => h.TrainingLoss).ToList();
        TestContext.Out.WriteLine($"losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.That(losses[^1], Is.LessThan(losses[0]));
        // up starts at zero: trained, it is not.
        Assert.That(result.Saved["base_model.model.bert.encoder.layer.0.attention.output.adapter.up.weight"].Any(v => v != 0));
        Assert.That(result.Saved.Keys.Count(k => k.Contains(".adapter.")), Is.EqualTo(2 * 2 * 4));
        Assert.That(MethodTraining.MaxDifference(result.Trained, result.Loaded), Is.LessThanOrEqualTo(1e-6));
    }
}
