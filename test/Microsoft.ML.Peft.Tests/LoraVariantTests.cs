using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>rsLoRA, DoRA, LoRA+, Gaussian and PiSSA initialisation: the maths on small tensors against hand computations.</summary>
[TestFixture]
public class LoraVariantTests
{
    /// <summary>Every random draw of a test comes from this generator, seeded the same for each test: the global one is left alone.</summary>
    private Generator draws = null!;

    [SetUp]
    public void SeedDraws() => draws = new Generator(42);

    [TearDown]
    public void DisposeDraws() => draws.Dispose();

    private static float MaxDifference(Tensor a, Tensor b) => a.sub(b).abs().max().item<float>();

    /// <summary>A 6 -> 5 layer with random weight and bias.</summary>
    private static TunerLinear RandomLinear(int seed = 1)
    {
        var layer = new TunerLinear(6, 5);
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        {
            layer.Weight.normal_(0, 0.5, generator);
            layer.Bias!.normal_(0, 0.5, generator);
        }
        return layer;
    }

    [Test]
    public void RsLoraScalesByAlphaOverSquareRootOfRank()
    {
        Assert.That(new LoraOptions { Rank = 4, Alpha = 16 }.Scaling, Is.EqualTo(4f));
        Assert.That(new LoraOptions { Rank = 4, Alpha = 16, UseRslora = true }.Scaling, Is.EqualTo(8f));
        Assert.That(new LoraOptions { Rank = 9, Alpha = 6, UseRslora = true }.Scaling, Is.EqualTo(2f).Within(1e-6f));

        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        TinyBert.Adapt(model, new LoraOptions { Rank = 4, Alpha = 16, UseRslora = true, TargetModules = new[] { "query" } }, draws);
        var layer = model.Linears().First(l => l.Name.EndsWith("query")).Layer;
        var lora = (LoraLayer)layer.Adapter(AdaptedBackbone.DefaultAdapter)!;
        using (no_grad()) lora.B.normal_(0, 1, draws);
        layer.eval();
        var x = randn(3, TinyBert.Config.HiddenSize, generator: draws);
        var expected = x.matmul(layer.Weight.t()).add(layer.Bias!).add(x.matmul(lora.A.t()).matmul(lora.B.t()).mul(8f));
        Assert.That(MaxDifference(layer.forward(x), expected), Is.LessThan(1e-4f));
    }

    [Test]
    public void GaussianInitialisationDrawsAWithStandardDeviationOneOverRank()
    {
        using var layer = new LoraLayer(256, 128, rank: 4, scaling: 1, dropout: 0, initialization: LoraInitialization.Gaussian, generator: draws);
        Assert.That(layer.B.abs().max().item<float>(), Is.EqualTo(0f));
        Assert.That(layer.A.std().item<float>(), Is.EqualTo(0.25f).Within(0.02f));
        Assert.That(layer.A.mean().item<float>(), Is.EqualTo(0f).Within(0.02f));
    }

    [Test]
    public void DoraMagnitudeStartsAtTheRowNormsAndTheLayerStartsUnchanged()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var lora = new LoraLayer(6, 5, 2, 2f, 0, draws, useDora: true, baseWeight: layer.Weight);
        layer.AddAdapter("default", lora);
        var w = layer.Weight.data<float>().ToArray();
        var m = lora.Magnitude!.data<float>().ToArray();
        for (int row = 0; row < 5; row++)
        {
            double norm = Math.Sqrt(Enumerable.Range(0, 6).Sum(c => (double)w[row * 6 + c] * w[row * 6 + c]));
            Assert.That(m[row], Is.EqualTo(norm).Within(1e-5), $"row {row}");
        }
        layer.eval();
        var x = randn(4, 6, generator: draws);
        Assert.That(MaxDifference(layer.forward(x), nn.functional.linear(x, layer.Weight, layer.Bias)), Is.LessThan(1e-5f));
    }

    [Test]
    public void DoraForwardIsTheMagnitudeTimesTheNormalisedDirection()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var lora = new LoraLayer(6, 5, 2, 2f, 0, draws, useDora: true, baseWeight: layer.Weight);
        layer.AddAdapter("default", lora);
        using (no_grad())
        {
            lora.B.normal_(0, 0.5, draws);
            lora.Magnitude!.mul_(tensor(new[] { 0.5f, 1.5f, 1f, 2f, 0.8f }));
        }
        layer.eval();
        // The paper's W' = m (W + s B A) / ||W + s B A|| (row norms), built element by element.
        var w = layer.Weight.data<float>().ToArray();
        var delta = lora.B.matmul(lora.A).mul(2f).data<float>().ToArray();
        var m = lora.Magnitude!.data<float>().ToArray();
        var merged = new float[30];
        for (int row = 0; row < 5; row++)
        {
            double norm = Math.Sqrt(Enumerable.Range(0, 6).Sum(c => Math.Pow(w[row * 6 + c] + delta[row * 6 + c], 2)));
            for (int c = 0; c < 6; c++) merged[row * 6 + c] = (float)(m[row] * (w[row * 6 + c] + delta[row * 6 + c]) / norm);
        }
        var x = randn(4, 6, generator: draws);
        var expected = nn.functional.linear(x, tensor(merged, new long[] { 5, 6 }), layer.Bias);
        Assert.That(MaxDifference(layer.forward(x), expected), Is.LessThan(1e-5f));
    }

    [Test]
    public void DoraTreatsTheNormAsAConstantInTheBackwardPass()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var lora = new LoraLayer(6, 5, 2, 2f, 0, draws, useDora: true, baseWeight: layer.Weight);
        layer.AddAdapter("default", lora);
        using (no_grad()) lora.B.normal_(0, 0.5, draws);
        layer.train();
        var x = randn(4, 6, generator: draws);
        var r = randn(4, 5, generator: draws);
        layer.forward(x).mul(r).sum().backward();
        var gradA = lora.A.grad!.clone();
        var gradM = lora.Magnitude!.grad!.clone();
        lora.A.grad!.zero_();
        lora.Magnitude.grad!.zero_();
        // By hand: y = x W^T + b + (g - 1) x W^T + g s B A x with g = m / ||W + s B A|| and the norm detached.
        Tensor norm;
        using (no_grad()) norm = layer.Weight.add(lora.B.matmul(lora.A).mul(2f)).pow(2).sum(1).sqrt();
        var g = lora.Magnitude.div(norm);
        var plain = x.matmul(layer.Weight.t());
        var hand = plain.add(layer.Bias!).add(plain.mul(g.sub(1))).add(x.matmul(lora.A.t()).matmul(lora.B.t()).mul(2f).mul(g));
        hand.mul(r).sum().backward();
        Assert.That(MaxDifference(gradA, lora.A.grad!), Is.LessThan(1e-5f));
        Assert.That(MaxDifference(gradM, lora.Magnitude.grad!), Is.LessThan(1e-5f));
        Assert.That(gradA.abs().max().item<float>(), Is.GreaterThan(1e-3f));
    }

    [Test]
    public void DoraMergeMatchesTheForwardAndUnmergeIsExact()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var lora = new LoraLayer(6, 5, 2, 2f, 0, draws, useDora: true, baseWeight: layer.Weight);
        layer.AddAdapter("default", lora);
        using (no_grad())
        {
            lora.B.normal_(0, 0.5, draws);
            lora.Magnitude!.add_(0.3);
        }
        layer.eval();
        var weight = layer.Weight.detach().clone();
        var bias = layer.Bias!.detach().clone();
        var x = randn(4, 6, generator: draws);
        var unmerged = layer.forward(x);
        layer.Merge();
        Assert.That(MaxDifference(layer.Weight, weight), Is.GreaterThan(1e-3f));
        Assert.That(MaxDifference(layer.Bias!, bias), Is.EqualTo(0f), "DoRA leaves the bias alone");
        Assert.That(MaxDifference(layer.forward(x), unmerged), Is.LessThan(1e-5f));
        layer.Unmerge();
        Assert.That(MaxDifference(layer.Weight, weight), Is.LessThanOrEqualTo(1e-6f));
        Assert.That(MaxDifference(layer.forward(x), unmerged), Is.LessThanOrEqualTo(1e-6f));
    }

    [Test]
    public void DoraSavesTheMagnitudeUnderPeftsKey()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new LoraOptions { Rank = 2, UseDora = true, TargetModules = new[] { "query", "intermediate.dense" } }, draws);
        var keys = adapted.Parameters().ToDictionary(p => p.Key, p => p.Parameter.shape);
        Assert.That(keys["bert.encoder.layer.0.attention.self.query.lora_magnitude_vector"], Is.EqualTo(new long[] { TinyBert.Config.HiddenSize }));
        Assert.That(keys["bert.encoder.layer.1.intermediate.dense.lora_magnitude_vector"], Is.EqualTo(new long[] { TinyBert.Config.IntermediateSize }));
        Assert.That(keys.Keys.Count(k => k.EndsWith(".lora_magnitude_vector")), Is.EqualTo(2 * TinyBert.Config.NumHiddenLayers));
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name),
            Has.All.Match(@"\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$"));
    }

    [Test]
    public void LoraPlusPutsBAndOneDimensionalParametersInAFasterGroup()
    {
        using var model = TinyBert.CreateModel();
        var plain = TinyBert.Adapt(model, new LoraOptions { Rank = 2, TargetModules = new[] { "query" } }, draws);
        var single = plain.Method.ParameterGroups(plain.Method.Parameters(plain.Backbone));
        Assert.That(single, Has.Count.EqualTo(1));
        Assert.That(single[0].LearningRateScale, Is.EqualTo(1.0));

        using var other = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(other, new LoraOptions { Rank = 2, UseDora = true, LoraPlusLearningRateRatio = 16, TargetModules = new[] { "query", "value" } }, draws);
        var parameters = adapted.Method.Parameters(adapted.Backbone);
        var groups = adapted.Method.ParameterGroups(parameters);
        Assert.That(groups.Select(g => g.LearningRateScale), Is.EqualTo(new[] { 1.0, 16.0 }));
        var handles = parameters.ToDictionary(p => p.Parameter.Handle, p => p.Key);
        var slow = groups[0].Parameters.Select(p => handles[p.Handle]).ToList();
        var fast = groups[1].Parameters.Select(p => handles[p.Handle]).ToList();
        Assert.That(slow, Has.Count.EqualTo(4).And.All.EndWith(".lora_A.weight"));
        Assert.That(fast, Has.Count.EqualTo(8).And.All.Match(@"\.(lora_B\.weight|lora_magnitude_vector)$"));
        Assert.That(slow.Concat(fast), Is.EquivalentTo(parameters.Select(p => p.Key)), "every parameter is in exactly one group");
    }

    [TestCase(0.5f)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NaN)]
    public void LoraPlusRatioBelowOneIsRejected(float ratio)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LoraOptions { LoraPlusLearningRateRatio = ratio }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(nameof(LoraOptions.LoraPlusLearningRateRatio)));
    }

    [Test]
    public void VariantOptionsRoundTripWithPeftFieldNames()
    {
        var options = new LoraOptions { Rank = 4, UseRslora = true, UseDora = true, LoraPlusLearningRateRatio = 16, InitLoraWeights = LoraInitialization.Gaussian };
        var json = MethodRegistry.ToJson(options);
        var text = json.ToJsonString();
        Assert.That(text, Does.Contain("\"use_rslora\":true").And.Contain("\"use_dora\":true").And.Contain("\"loraplus_lr_ratio\":16").And.Contain("\"init_lora_weights\":\"gaussian\""));
        var back = (LoraOptions)MethodRegistry.FromJson(json, "test");
        Assert.That((back.UseRslora, back.UseDora, back.LoraPlusLearningRateRatio, back.InitLoraWeights), Is.EqualTo((true, true, (float?)16f, LoraInitialization.Gaussian)));

        var defaults = MethodRegistry.ToJson(new LoraOptions()).ToJsonString();
        Assert.That(defaults, Does.Contain("\"init_lora_weights\":true").And.Not.Contain("loraplus_lr_ratio"));
        json["init_lora_weights"] = "pissa";
        json["use_dora"] = false;
        Assert.That(((LoraOptions)MethodRegistry.FromJson(json, "test")).InitLoraWeights, Is.EqualTo(LoraInitialization.Pissa));
        json["init_lora_weights"] = true;
        Assert.That(((LoraOptions)MethodRegistry.FromJson(json, "test")).InitLoraWeights, Is.EqualTo(LoraInitialization.KaimingUniform));
        json["init_lora_weights"] = false;
        Assert.That(Assert.Throws<InvalidDataException>(() => MethodRegistry.FromJson(json, "test"))!.Message, Does.Contain("init_lora_weights"));
        json["init_lora_weights"] = "olora";
        Assert.That(Assert.Throws<InvalidDataException>(() => MethodRegistry.FromJson(json, "test"))!.Message, Does.Contain("olora"));
        // A file without the new fields (format 2 before the variants) reads as plain LoRA.
        var old = JsonNode.Parse("{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"lora_dropout\":0,\"target_modules\":[\"query\"]}")!.AsObject();
        var plain = (LoraOptions)MethodRegistry.FromJson(old, "test");
        Assert.That((plain.UseRslora, plain.UseDora, plain.LoraPlusLearningRateRatio, plain.InitLoraWeights), Is.EqualTo((false, false, (float?)null, LoraInitialization.KaimingUniform)));
    }

    [Test]
    public void PissaStartsFromThePrincipalSingularTripletsAndKeepsTheLayer()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var original = layer.Weight.detach().clone();
        float scaling = 4f / 2;
        var lora = new LoraLayer(6, 5, 2, scaling, 0, initialization: LoraInitialization.Pissa, baseWeight: layer.Weight);
        using (no_grad()) layer.Weight.sub_(lora.DeltaWeight());
        layer.AddAdapter("default", lora);
        layer.eval();
        var (_, s, _) = linalg.svd(original, fullMatrices: false);
        var singular = s.data<float>().ToArray();
        // A A^T = B^T B = diag(S_r / scaling): orthogonal rows of A, orthogonal columns of B.
        var expectedGram = diag(tensor(new[] { singular[0] / scaling, singular[1] / scaling }));
        Assert.That(MaxDifference(lora.A.matmul(lora.A.t()), expectedGram), Is.LessThan(1e-4f));
        Assert.That(MaxDifference(lora.B.t().matmul(lora.B), expectedGram), Is.LessThan(1e-4f));
        // The residual keeps the other singular values: its largest is W's third.
        var (_, residualS, _) = linalg.svd(layer.Weight.detach(), fullMatrices: false);
        var residual = residualS.data<float>().ToArray();
        Assert.That(residual[0], Is.EqualTo(singular[2]).Within(1e-4f));
        Assert.That(MaxDifference(layer.Weight.add(lora.DeltaWeight()), original), Is.LessThan(1e-5f));
        var x = randn(4, 6, generator: draws);
        Assert.That(MaxDifference(layer.forward(x), nn.functional.linear(x, original, layer.Bias)), Is.LessThan(1e-5f));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void PissaIsSavedAsTheEquivalentLoraOnTheOriginalWeights(bool rslora)
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var original = model.Linears().ToDictionary(l => l.Name, l => l.Layer.Weight.detach().clone());
        var options = new LoraOptions { Rank = 3, Alpha = 6, Dropout = 0, UseRslora = rslora, InitLoraWeights = LoraInitialization.Pissa, TargetModules = new[] { "query", "output.dense" } };
        var adapted = TinyBert.Adapt(model, options, draws);
        var (ids, mask, types) = TinyBert.RandomBatch(3, 9);
        model.eval();
        var before = model.forward(ids, mask, types);
        using (var plain = TinyBert.CreateModel())
            Assert.That(MaxDifference(before, plain.forward(ids, mask, types)), Is.LessThan(1e-4f), "PiSSA starts equal to the base model");
        // Training-like changes.
        using (no_grad())
            foreach (var p in adapted.Parameters()) p.Parameter.add_(randn(p.Parameter.shape, generator: draws).mul(0.05));
        var trained = model.forward(ids, mask, types);
        Assert.That(MaxDifference(trained, before), Is.GreaterThan(1e-3f));

        var saved = (LoraOptions)adapted.Method.SavedOptions;
        Assert.That((saved.Rank, saved.InitLoraWeights, saved.UseRslora), Is.EqualTo((6, LoraInitialization.KaimingUniform, rslora)));
        Assert.That(saved.Alpha, Is.EqualTo(rslora ? 6 * MathF.Sqrt(2) : 12f).Within(1e-5f));
        Assert.That(saved.Scaling, Is.EqualTo(options.Scaling).Within(1e-6f), "the saved form keeps the scaling");

        // The saved tensors applied as a plain LoRA to the original weights give the same layers and the same model.
        var state = adapted.SavedState().ToDictionary(t => t.Key, t => t.Value);
        Assert.That(state.Keys, Is.EquivalentTo(adapted.Parameters().Select(p => p.Key)));
        foreach (var (name, layer) in model.Linears())
        {
            if (layer.Adapter(AdaptedBackbone.DefaultAdapter) is not LoraLayer pissa) continue;
            var a = state[$"bert.{name}.lora_A.weight"];
            var b = state[$"bert.{name}.lora_B.weight"];
            Assert.That(a.shape, Is.EqualTo(new long[] { 6, layer.InFeatures }));
            Assert.That(b.shape, Is.EqualTo(new long[] { layer.OutFeatures, 6 }));
            var x = randn(4, layer.InFeatures, generator: draws);
            var onResidual = layer.forward(x);
            var onOriginal = nn.functional.linear(x, original[name], layer.Bias).add(x.matmul(a.t()).matmul(b.t()).mul(saved.Scaling));
            Assert.That(MaxDifference(onResidual, onOriginal), Is.LessThan(1e-5f), name);
        }
        using var reloaded = TinyBert.CreateModel();
        var reloadedAdapter = TinyBert.Adapt(reloaded, saved, draws);
        using (no_grad())
            foreach (var p in reloadedAdapter.Parameters()) p.Parameter.copy_(state[p.Key]);
        reloaded.eval();
        var difference = MaxDifference(reloaded.forward(ids, mask, types), trained);
        TestContext.Out.WriteLine($"max |LoRA on W - PiSSA on the residual| = {difference:E2}");
        Assert.That(difference, Is.LessThan(1e-5f));
    }

    [Test]
    public void PissaWithDoraAndOversizedRanksAreRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => new LoraOptions { UseDora = true, InitLoraWeights = LoraInitialization.Pissa }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(nameof(LoraOptions.InitLoraWeights)));
        Assert.That(e.Message, Does.Contain("UseDora"));
        using var model = TinyBert.CreateModel();
        // Saved as rank 2r: 2 x 17 exceeds the 32-wide layers.
        var tooLarge = Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(model, new LoraOptions { Rank = 17, InitLoraWeights = LoraInitialization.Pissa, TargetModules = new[] { "query" } }, draws));
        Assert.That(tooLarge!.ParamName, Is.EqualTo(nameof(LoraOptions.Rank)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraOptions { Rank = 3000, InitLoraWeights = LoraInitialization.Pissa }.Validate());
    }

    [TestCase(LoraInitialization.KaimingUniform, false)]
    [TestCase(LoraInitialization.Gaussian, true)]
    [TestCase(LoraInitialization.Pissa, false)]
    public void MergeThenUnmergeRestoresTheWeights(LoraInitialization initialization, bool dora)
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        TinyBert.Adapt(model, new LoraOptions { Rank = 4, UseDora = dora, UseRslora = true, InitLoraWeights = initialization }, draws);
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in model.Linears())
        {
            var lora = (LoraLayer)layer.Adapter(AdaptedBackbone.DefaultAdapter)!;
            using (no_grad()) lora.B.add_(randn(lora.B.shape, generator: draws).mul(0.2));
            weights[name] = layer.Weight.detach().clone();
        }
        model.eval();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        var unmerged = model.forward(ids, mask, types);
        foreach (var (_, layer) in model.Linears()) layer.Merge();
        Assert.That(MaxDifference(model.forward(ids, mask, types), unmerged), Is.LessThan(1e-4f));
        foreach (var (_, layer) in model.Linears()) layer.Unmerge();
        foreach (var (name, layer) in model.Linears())
            Assert.That(MaxDifference(layer.Weight, weights[name]), Is.LessThanOrEqualTo(1e-6f), name);
    }
}
