using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Lora;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Several named adapters on one frozen base: switching, disabling, merging, weighted combinations.</summary>
[TestFixture]
public class MultiAdapterTests
{
    /// <summary>A tiny BERT with LoRA adapters "a" (r=2) and "b" (r=3) whose B matrices are random (not the zero start).</summary>
    private static (BertModel Model, AdaptedBackbone Adapted) TwoAdapters()
    {
        var model = TinyBert.CreateModel();
        using var generator = new Generator(11);
        var adapted = TinyBert.Adapt(model, new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0 }, generator);
        adapted.AddAdapter("b", new LoraOptions { Rank = 3, Alpha = 3, Dropout = 0, TargetModules = new[] { "query", "value", "dense" } }, generator);
        using (no_grad())
        {
            foreach (var (_, layer) in adapted.Backbone.Linears())
                foreach (var name in new[] { AdaptedBackbone.DefaultAdapter, "b" })
                    if (layer.Adapter(name) is LoraLayer lora) lora.B.normal_(0, 0.3, generator);
        }
        return (model, adapted);
    }

    private static Tensor Run(BertModel model)
    {
        var (ids, mask, types) = TinyBert.RandomBatch(3, 9);
        return model.forward(ids, mask, types);
    }

    [Test]
    public void AdaptersAreSwitchedDisabledAndOnlyTheActiveOneTrains()
    {
        using var scope = NewDisposeScope();
        var (model, adapted) = TwoAdapters();
        using var plainModel = TinyBert.CreateModel();
        var plain = Run(plainModel);
        Assert.That(adapted.ActiveAdapter, Is.EqualTo("b"));
        var withB = Run(model);
        Assert.That(adapted.Parameters().Select(p => p.Key), Has.All.Contain(".lora_").And.All.Not.Contain("key."), "b targets no key projection");
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Has.All.Contain(".b."));

        adapted.SetActiveAdapter(AdaptedBackbone.DefaultAdapter);
        var withDefault = Run(model);
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Has.All.Contain(".default."));
        Assert.That(withDefault.allclose(withB, 1e-4, 1e-4), Is.False);

        using (adapted.DisableAdapters())
        {
            Assert.That(Run(model).allclose(plain, 0, 0), Is.True, "disabled adapters: the plain base, bit for bit");
            Assert.Throws<InvalidOperationException>(() => adapted.DisableAdapters());
        }
        Assert.That(Run(model).allclose(withDefault, 0, 0), Is.True, "enabled again: the active adapter is back");
        Assert.Throws<ArgumentException>(() => adapted.SetActiveAdapter("missing"));
    }

    [Test]
    public void MergeAndUnmergeOfTheActiveAdapterAreExact()
    {
        using var scope = NewDisposeScope();
        var (model, adapted) = TwoAdapters();
        var weights = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var unmerged = Run(model);
        adapted.Merge();
        Assert.That(Run(model).allclose(unmerged, 1e-5, 1e-5), Is.True, "merged output equals the unmerged one");
        Assert.Throws<InvalidOperationException>(() => adapted.SetActiveAdapter(AdaptedBackbone.DefaultAdapter));
        adapted.Unmerge();
        foreach (var (name, parameter) in model.named_parameters())
            Assert.That((parameter - weights[name]).abs().max().item<float>(), Is.LessThanOrEqualTo(1e-6f), name);
        adapted.SetActiveAdapter(AdaptedBackbone.DefaultAdapter);
        Assert.That(Run(model).allclose(unmerged, 1e-4, 1e-4), Is.False);
    }

    [Test]
    public void CatCombinationIsExactlyTheWeightedSumOfTheUpdates()
    {
        using var scope = NewDisposeScope();
        var (_, adapted) = TwoAdapters();
        adapted.AddWeightedLoraAdapter("mix", new[] { (AdaptedBackbone.DefaultAdapter, 0.7), ("b", -1.5) }, LoraCombination.Cat);
        Assert.That(adapted.ActiveAdapter, Is.EqualTo("mix"));
        foreach (var (name, layer) in adapted.Backbone.Linears())
        {
            var mix = (LoraLayer)layer.Adapter("mix")!;
            var expected = zeros_like(layer.Weight);
            if (layer.Adapter(AdaptedBackbone.DefaultAdapter) is LoraLayer a) expected.add_(a.DeltaWeight().mul(0.7));
            if (layer.Adapter("b") is LoraLayer b) expected.add_(b.DeltaWeight().mul(-1.5));
            Assert.That(mix.Rank, Is.EqualTo(5));
            Assert.That((mix.DeltaWeight() - expected).abs().max().item<float>(), Is.LessThan(1e-6f), name);
        }
    }

    [Test]
    public void LinearCombinationAddsSquareRootWeightedFactors()
    {
        using var scope = NewDisposeScope();
        var model = TinyBert.CreateModel();
        using var generator = new Generator(3);
        var adapted = TinyBert.Adapt(model, new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0, TargetModules = new[] { "query" } }, generator);
        adapted.AddAdapter("b", new LoraOptions { Rank = 2, Alpha = 2, Dropout = 0, TargetModules = new[] { "query" } }, generator);
        Assert.Throws<ArgumentOutOfRangeException>(() => adapted.AddWeightedLoraAdapter("bad", new[] { ("b", -1.0) }, LoraCombination.Linear));
        adapted.AddWeightedLoraAdapter("mix", new[] { (AdaptedBackbone.DefaultAdapter, 0.5), ("b", 2.0) }, LoraCombination.Linear);
        var (_, layer) = adapted.Backbone.Linears().First(l => l.Name.EndsWith("query"));
        var a = (LoraLayer)layer.Adapter(AdaptedBackbone.DefaultAdapter)!;
        var b = (LoraLayer)layer.Adapter("b")!;
        var mix = (LoraLayer)layer.Adapter("mix")!;
        // sqrt(w * s): sqrt(0.5 * 2) = 1 for the default adapter (scaling 4/2), sqrt(2 * 1) for b (scaling 2/2).
        Assert.That(mix.Scaling, Is.EqualTo(1f));
        Assert.That((mix.A - (a.A * 1.0 + b.A * Math.Sqrt(2))).abs().max().item<float>(), Is.LessThan(1e-6f));
        Assert.That((mix.B - (a.B * 1.0 + b.B * Math.Sqrt(2))).abs().max().item<float>(), Is.LessThan(1e-6f));
        adapted.AddAdapter("r3", new LoraOptions { Rank = 3, TargetModules = new[] { "query" } }, generator);
        var e = Assert.Throws<ArgumentException>(() => adapted.AddWeightedLoraAdapter("ranks", new[] { ("b", 1.0), ("r3", 1.0) }, LoraCombination.Linear));
        Assert.That(e!.Message, Does.Contain("ranks 2, 3"));
        Assert.Throws<ArgumentException>(() => adapted.AddWeightedLoraAdapter("none", new[] { ("nope", 1.0) }, LoraCombination.Cat));
    }

    [Test]
    public void MethodsThatChangeTheBaseCannotShareIt()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new LoraOptions());
        var e = Assert.Throws<NotSupportedException>(() => adapted.AddAdapter("biases", new BitFitOptions(), null));
        Assert.That(e!.Message, Does.Contain("BITFIT"));
        var bitfit = TinyBert.Adapt(TinyBert.CreateModel(), new BitFitOptions());
        Assert.Throws<NotSupportedException>(() => bitfit.DisableAdapters());
    }
}
