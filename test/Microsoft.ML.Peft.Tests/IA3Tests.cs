using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.IA3;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>(IA)³: output and input scaling, merging, PEFT's BERT defaults and saved keys.</summary>
[TestFixture]
public class IA3Tests
{
    /// <summary>Every random draw of a test comes from this generator, seeded the same for each test: the global one is left alone.</summary>
    private Generator draws = null!;

    [SetUp]
    public void SeedDraws() => draws = new Generator(42);

    [TearDown]
    public void DisposeDraws() => draws.Dispose();

    private static float MaxDifference(Tensor a, Tensor b) => a.sub(b).abs().max().item<float>();

    private static TunerLinear RandomLinear()
    {
        var layer = new TunerLinear(6, 5);
        using var generator = new Generator(3);
        using (no_grad())
        {
            layer.Weight.normal_(0, 0.5, generator);
            layer.Bias!.normal_(0, 0.5, generator);
        }
        return layer;
    }

    [Test]
    public void AttentionLayersScaleTheWholeOutput()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var ia3 = new IA3Layer(6, 5, feedforward: false, initialiseToOne: true);
        layer.AddAdapter("default", ia3);
        Assert.That(ia3.Vector.shape, Is.EqualTo(new long[] { 5, 1 }));
        var x = randn(4, 6, generator: draws);
        var plain = nn.functional.linear(x, layer.Weight, layer.Bias);
        Assert.That(MaxDifference(layer.forward(x), plain), Is.EqualTo(0f), "ones change nothing");
        var l = new[] { 0.5f, 2f, -1f, 0f, 1.5f };
        using (no_grad()) ia3.Vector.copy_(tensor(l).view(5, 1));
        var output = layer.forward(x).data<float>().ToArray();
        var expected = plain.data<float>().ToArray();
        for (int i = 0; i < output.Length; i++) Assert.That(output[i], Is.EqualTo(expected[i] * l[i % 5]).Within(1e-5f), $"element {i}");
    }

    [Test]
    public void FeedforwardLayersScaleTheInput()
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var ia3 = new IA3Layer(6, 5, feedforward: true, initialiseToOne: true);
        layer.AddAdapter("default", ia3);
        Assert.That(ia3.Vector.shape, Is.EqualTo(new long[] { 1, 6 }));
        var l = new[] { 0.5f, 2f, -1f, 0f, 1.5f, 3f };
        using (no_grad()) ia3.Vector.copy_(tensor(l).view(1, 6));
        var x = randn(4, 6, generator: draws);
        // By hand: y[r, o] = sum_i x[r, i] l[i] W[o, i] + b[o] (the bias is not scaled).
        var xs = x.data<float>().ToArray();
        var w = layer.Weight.data<float>().ToArray();
        var b = layer.Bias!.data<float>().ToArray();
        var output = layer.forward(x).data<float>().ToArray();
        for (int r = 0; r < 4; r++)
            for (int o = 0; o < 5; o++)
            {
                double sum = b[o];
                for (int i = 0; i < 6; i++) sum += xs[r * 6 + i] * l[i] * w[o * 6 + i];
                Assert.That(output[r * 5 + o], Is.EqualTo(sum).Within(1e-5), $"row {r}, output {o}");
            }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void MergeScalesRowsOrColumnsAndUnmergeIsExact(bool feedforward)
    {
        using var scope = NewDisposeScope();
        using var layer = RandomLinear();
        var ia3 = new IA3Layer(6, 5, feedforward, initialiseToOne: false, generator: draws);
        layer.AddAdapter("default", ia3);
        var weight = layer.Weight.detach().clone();
        var bias = layer.Bias!.detach().clone();
        var x = randn(4, 6, generator: draws);
        var unmerged = layer.forward(x);
        layer.Merge();
        // Feed-forward: column i times l[i]; otherwise row o times l[o].
        var expectedWeight = feedforward ? weight.mul(ia3.Vector.flatten().unsqueeze(0)) : weight.mul(ia3.Vector.flatten().unsqueeze(1));
        Assert.That(MaxDifference(layer.Weight, expectedWeight), Is.LessThan(1e-6f));
        Assert.That(MaxDifference(layer.Bias!, feedforward ? bias : bias.mul(ia3.Vector.flatten())), Is.LessThan(1e-6f));
        Assert.That(MaxDifference(layer.forward(x), unmerged), Is.LessThan(1e-5f));
        layer.Unmerge();
        Assert.That(MaxDifference(layer.Weight, weight), Is.LessThanOrEqualTo(1e-6f));
        Assert.That(MaxDifference(layer.Bias!, bias), Is.LessThanOrEqualTo(1e-6f));
    }

    [Test]
    public void BertDefaultsAdaptKeyValueAndBothOutputDenseLayersAsPeftDoes()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var (ids, mask, types) = TinyBert.RandomBatch(2, 7);
        var plain = model.forward(ids, mask, types);
        var adapted = TinyBert.Adapt(model, new IA3Options(), draws);
        model.eval();
        Assert.That(MaxDifference(model.forward(ids, mask, types), plain), Is.EqualTo(0f));
        var c = TinyBert.Config;
        Assert.That(adapted.AdaptedModules, Has.Count.EqualTo(4 * c.NumHiddenLayers));
        Assert.That(adapted.AdaptedModules, Has.All.Match(@"\.(attention\.self\.key|attention\.self\.value|attention\.output\.dense|\d\.output\.dense)$"));
        var shapes = adapted.Parameters().ToDictionary(p => p.Key, p => p.Parameter.shape);
        Assert.That(shapes["bert.encoder.layer.0.attention.self.key.ia3_l"], Is.EqualTo(new long[] { c.HiddenSize, 1 }));
        Assert.That(shapes["bert.encoder.layer.0.attention.output.dense.ia3_l"], Is.EqualTo(new long[] { 1, c.HiddenSize }), "'output.dense' also ends the attention output's name");
        Assert.That(shapes["bert.encoder.layer.1.output.dense.ia3_l"], Is.EqualTo(new long[] { 1, c.IntermediateSize }));
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Has.All.EndWith(".ia3_l"));

        foreach (var (_, layer) in model.Linears())
            if (layer.Adapter(AdaptedBackbone.DefaultAdapter) is IA3Layer ia3) using (no_grad()) ia3.Vector.normal_(1, 0.3, draws);
        var unmerged = model.forward(ids, mask, types);
        var weights = model.Linears().ToDictionary(l => l.Name, l => l.Layer.Weight.detach().clone());
        adapted.Merge();
        Assert.That(MaxDifference(model.forward(ids, mask, types), unmerged), Is.LessThan(1e-4f));
        adapted.Unmerge();
        foreach (var (name, layer) in model.Linears()) Assert.That(MaxDifference(layer.Weight, weights[name]), Is.LessThanOrEqualTo(1e-6f), name);
    }

    [Test]
    public void FeedforwardModulesMustBeTargeted()
    {
        var e = Assert.Throws<ArgumentException>(() => new IA3Options { TargetModules = new[] { "key", "value" }, FeedforwardModules = new[] { "output.dense" } }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(nameof(IA3Options.FeedforwardModules)));
        Assert.That(e.Message, Does.Contain("subset").And.Contain("output.dense"));
        Assert.DoesNotThrow(() => new IA3Options { TargetModules = new[] { "key" }, FeedforwardModules = Array.Empty<string>() }.Validate());
        using var model = TinyBert.CreateModel();
        var none = Assert.Throws<ArgumentException>(() => TinyBert.Adapt(model, new IA3Options { TargetModules = new[] { "k_proj" }, FeedforwardModules = Array.Empty<string>() }, draws));
        Assert.That(none!.Message, Does.Contain("k_proj").And.Contain("query"));
        Assert.That(none.ParamName, Is.EqualTo(nameof(IA3Options.TargetModules)));
        using var other = TinyBert.CreateModel();
        var unmatched = Assert.Throws<ArgumentException>(() => TinyBert.Adapt(other, new IA3Options { TargetModules = new[] { "all-linear" }, FeedforwardModules = new[] { "fc2" } }, draws));
        Assert.That(unmatched!.ParamName, Is.EqualTo(nameof(IA3Options.FeedforwardModules)));
    }

    [Test]
    public void OptionsRoundTripWithPeftFieldNames()
    {
        var json = MethodRegistry.ToJson(new IA3Options { TargetModules = new[] { "query", "intermediate.dense" }, FeedforwardModules = new[] { "intermediate.dense" } });
        Assert.That(json.ToJsonString(), Does.Contain("\"peft_type\":\"IA3\"").And.Contain("\"target_modules\":[\"query\",\"intermediate.dense\"]")
            .And.Contain("\"feedforward_modules\":[\"intermediate.dense\"]").And.Contain("\"init_ia3_weights\":true"));
        var back = (IA3Options)MethodRegistry.FromJson(json, "test");
        Assert.That(back.FeedforwardModules, Is.EqualTo(new[] { "intermediate.dense" }));
        json["feedforward_modules"] = new System.Text.Json.Nodes.JsonArray("output.dense");
        Assert.That(Assert.Throws<InvalidDataException>(() => MethodRegistry.FromJson(json, "test"))!.Message, Does.Contain("FeedforwardModules"));
    }
}
