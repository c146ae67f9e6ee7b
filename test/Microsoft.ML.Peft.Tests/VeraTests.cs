using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Vera;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>VeRA: shared frozen projections, per-layer scaling vectors, merging, saved keys.</summary>
[TestFixture]
public class VeraTests
{
    /// <summary>Every random draw of a test comes from this generator, seeded the same for each test: the global one is left alone.</summary>
    private Generator draws = null!;

    [SetUp]
    public void SeedDraws() => draws = new Generator(42);

    [TearDown]
    public void DisposeDraws() => draws.Dispose();

    private static float MaxDifference(Tensor a, Tensor b) => a.sub(b).abs().max().item<float>();

    private static VeraProjections Projections(AdaptedBackbone adapted) =>
        adapted.Backbone.Module.named_children().Select(c => c.module).OfType<VeraProjections>().Single();

    [Test]
    public void ProjectionsCoverTheLargestLayerAreKaimingUniformAndFollowTheKey()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new VeraOptions { Rank = 16 }, draws);
        var projections = Projections(adapted);
        var c = TinyBert.Config;
        Assert.That(projections.A.shape, Is.EqualTo(new long[] { 16, c.IntermediateSize }), "r x largest input (the FFN output layer reads 64)");
        Assert.That(projections.B.shape, Is.EqualTo(new long[] { c.IntermediateSize, 16 }), "largest output x r");
        Assert.That(projections.A.requires_grad || projections.B.requires_grad, Is.False);
        // PEFT's _kaiming_init: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), fan_in the second dimension.
        double boundA = Math.Sqrt(6.0 / c.IntermediateSize), boundB = Math.Sqrt(6.0 / 16);
        Assert.That(projections.A.abs().max().item<float>(), Is.LessThanOrEqualTo(boundA).And.GreaterThan(0.9 * boundA));
        Assert.That(projections.B.abs().max().item<float>(), Is.LessThanOrEqualTo(boundB).And.GreaterThan(0.9 * boundB));

        using var same = TinyBert.CreateModel();
        var again = Projections(TinyBert.Adapt(same, new VeraOptions { Rank = 16 }, draws));
        Assert.That(again.A.equal(projections.A).all().item<bool>() && again.B.equal(projections.B).all().item<bool>(), "the same key draws the same projections");
        using var other = TinyBert.CreateModel();
        var otherKey = Projections(TinyBert.Adapt(other, new VeraOptions { Rank = 16, ProjectionPrngKey = 5 }, draws));
        Assert.That(otherKey.A.equal(projections.A).all().item<bool>(), Is.False);
        // A is drawn first, then B, from one generator seeded with the key.
        using var generator = new Generator(0);
        var expectedA = empty(16, c.IntermediateSize).uniform_(-boundA, boundA, generator);
        var expectedB = empty(c.IntermediateSize, 16).uniform_(-boundB, boundB, generator);
        Assert.That(MaxDifference(projections.A, expectedA), Is.EqualTo(0f));
        Assert.That(MaxDifference(projections.B, expectedB), Is.EqualTo(0f));
    }

    [Test]
    public void ForwardFollowsThePaperOnSlicedProjections()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new VeraOptions { Rank = 8, TargetModules = new[] { "query", "intermediate.dense" } }, draws);
        var projections = Projections(adapted);
        var (ids, mask, types) = TinyBert.RandomBatch(2, 6);
        model.eval();
        using (var plain = TinyBert.CreateModel())
            Assert.That(MaxDifference(model.forward(ids, mask, types), plain.forward(ids, mask, types)), Is.EqualTo(0f), "lambda_b starts at zero");

        var layer = model.Linears().Single(l => l.Name == "encoder.layer.0.intermediate.dense").Layer; // 32 -> 64
        var vera = (VeraLayer)layer.Adapter(AdaptedBackbone.DefaultAdapter)!;
        Assert.That(vera.LambdaD.data<float>().ToArray(), Has.All.EqualTo(0.1f));
        using (no_grad())
        {
            vera.LambdaB.normal_(0, 1, draws);
            vera.LambdaD.normal_(0, 1, draws);
        }
        var x = randn(3, 32, generator: draws);
        // By hand: A_s = vera_A[:, :32], B_s = vera_B[:64, :]; y = x W^T + b + lambda_b * ((lambda_d * (x A_s^T)) B_s^T).
        var a = projections.A.index(TensorIndex.Colon, TensorIndex.Slice(0, 32));
        var b = projections.B.index(TensorIndex.Slice(0, 64), TensorIndex.Colon);
        var expected = x.matmul(layer.Weight.t()).add(layer.Bias!).add(x.matmul(a.t()).mul(vera.LambdaD).matmul(b.t()).mul(vera.LambdaB));
        Assert.That(MaxDifference(layer.forward(x), expected), Is.LessThan(1e-5f));
        var deltaByHand = diag(vera.LambdaB).matmul(b).matmul(diag(vera.LambdaD)).matmul(a);
        Assert.That(MaxDifference(vera.DeltaWeight(), deltaByHand), Is.LessThan(1e-5f));

        var query = model.Linears().Single(l => l.Name == "encoder.layer.0.attention.self.query").Layer; // 32 -> 32
        var queryVera = (VeraLayer)query.Adapter(AdaptedBackbone.DefaultAdapter)!;
        Assert.That(queryVera.SlicedB().shape, Is.EqualTo(new long[] { 32, 8 }));
        Assert.That(MaxDifference(queryVera.SlicedB(), projections.B.index(TensorIndex.Slice(0, 32), TensorIndex.Colon)), Is.EqualTo(0f));
    }

    [Test]
    public void MergeThenUnmergeRestoresTheWeights()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        TinyBert.Adapt(model, new VeraOptions { Rank = 8 }, draws);
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in model.Linears())
        {
            using (no_grad()) ((VeraLayer)layer.Adapter(AdaptedBackbone.DefaultAdapter)!).LambdaB.normal_(0, 0.5, draws);
            weights[name] = layer.Weight.detach().clone();
        }
        model.eval();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        var unmerged = model.forward(ids, mask, types);
        foreach (var (_, layer) in model.Linears()) layer.Merge();
        Assert.That(model.Linears().Any(l => MaxDifference(l.Layer.Weight, weights[l.Name]) > 1e-3f));
        Assert.That(MaxDifference(model.forward(ids, mask, types), unmerged), Is.LessThan(1e-4f));
        foreach (var (_, layer) in model.Linears()) layer.Unmerge();
        foreach (var (name, layer) in model.Linears())
            Assert.That(MaxDifference(layer.Weight, weights[name]), Is.LessThanOrEqualTo(1e-6f), name);
    }

    [Test]
    public void TrainsOnlyTheVectorsAndSavesTheProjectionsUnderPeftsTopLevelKeys()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new VeraOptions { Rank = 8, TargetModules = new[] { "query", "value" } }, draws);
        var c = TinyBert.Config;
        var keys = adapted.Parameters().Select(p => p.Key).ToList();
        Assert.That(keys, Has.Count.EqualTo(4 * c.NumHiddenLayers));
        Assert.That(keys, Has.All.Match(@"^bert\.encoder\.layer\.\d\.attention\.self\.(query|value)\.vera_lambda_[bd]$"));
        Assert.That(adapted.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(2 * c.NumHiddenLayers * (8 + c.HiddenSize)));
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Has.All.Contains(".vera_lambda_"));
        var frozen = adapted.FrozenState();
        Assert.That(frozen.Select(p => (p.Key, p.TopLevel)), Is.EqualTo(new[] { ("base_model.vera_A", true), ("base_model.vera_B", true) }));
        Assert.That(frozen.All(p => !p.Parameter.requires_grad));
        var saved = adapted.SavedState();
        Assert.That(saved.Select(t => t.Key), Is.EquivalentTo(keys.Append("base_model.vera_A").Append("base_model.vera_B")));
        Assert.That(Microsoft.ML.Peft.Format.AdapterState.FullKey(saved.Single(t => t.Key == "base_model.vera_A").Key, true), Is.EqualTo("base_model.vera_A"));
        foreach (var t in saved) t.Value.Dispose();

        using var unsaved = TinyBert.CreateModel();
        Assert.That(TinyBert.Adapt(unsaved, new VeraOptions { Rank = 8, SaveProjection = false }, draws).FrozenState(), Is.Empty);
    }

    [TestCase(0, nameof(VeraOptions.Rank))]
    [TestCase(5000, nameof(VeraOptions.Rank))]
    public void InvalidRankNamesTheOption(int rank, string option)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new VeraOptions { Rank = rank }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(option));
    }

    [Test]
    public void InvalidOptionsNameTheOption()
    {
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new VeraOptions { Dropout = 1 }.Validate())!.ParamName, Is.EqualTo(nameof(VeraOptions.Dropout)));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new VeraOptions { DInitial = float.NaN }.Validate())!.ParamName, Is.EqualTo(nameof(VeraOptions.DInitial)));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new VeraOptions { ProjectionPrngKey = -1 }.Validate())!.ParamName, Is.EqualTo(nameof(VeraOptions.ProjectionPrngKey)));
        Assert.That(Assert.Throws<ArgumentException>(() => new VeraOptions { TargetModules = Array.Empty<string>() }.Validate())!.ParamName, Is.EqualTo(nameof(VeraOptions.TargetModules)));
        using var model = TinyBert.CreateModel();
        var e = Assert.Throws<ArgumentException>(() => TinyBert.Adapt(model, new VeraOptions { TargetModules = new[] { "q_proj" } }, draws));
        Assert.That(e!.Message, Does.Contain("q_proj").And.Contain("query"));
        Assert.That(e.ParamName, Is.EqualTo(nameof(VeraOptions.TargetModules)));
    }

    [Test]
    public void OptionsRoundTripWithPeftFieldNames()
    {
        var json = MethodRegistry.ToJson(new VeraOptions { Rank = 32, ProjectionPrngKey = 7, SaveProjection = false, Dropout = 0.1f, DInitial = 0.5f });
        var text = json.ToJsonString();
        Assert.That(text, Does.Contain("\"peft_type\":\"VERA\"").And.Contain("\"r\":32").And.Contain("\"projection_prng_key\":7")
            .And.Contain("\"save_projection\":false").And.Contain("\"vera_dropout\":0.1").And.Contain("\"d_initial\":0.5").And.Contain("\"target_modules\""));
        var back = (VeraOptions)MethodRegistry.FromJson(json, "test");
        Assert.That((back.Rank, back.ProjectionPrngKey, back.SaveProjection, back.Dropout, back.DInitial), Is.EqualTo((32, 7L, false, 0.1f, 0.5f)));
        var defaults = new VeraOptions();
        Assert.That((defaults.Rank, defaults.ProjectionPrngKey, defaults.SaveProjection, defaults.Dropout, defaults.DInitial), Is.EqualTo((256, 0L, true, 0f, 0.1f)));
    }
}
