using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The method seam: BitFit and full fine-tuning next to LoRA, adapters by name, insertion points, the registry.</summary>
[TestFixture]
public class MethodSeamTests
{
    [Test]
    public void BitFitTrainsExactlyTheBiasTerms()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new BitFitOptions());
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        var biases = model.named_parameters().Where(p => p.name.EndsWith(".bias")).Select(p => p.name).ToList();
        Assert.That(trainable, Is.EquivalentTo(biases));
        // Per layer: q, k, v, attention output dense, its LayerNorm, intermediate, output dense, its LayerNorm; plus the embeddings' LayerNorm.
        var c = TinyBert.Config;
        long expected = c.NumHiddenLayers * (3L * c.HiddenSize + c.HiddenSize + c.HiddenSize + c.IntermediateSize + c.HiddenSize + c.HiddenSize) + c.HiddenSize;
        Assert.That(adapted.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(expected));
        Assert.That(adapted.Parameters().Select(p => p.Key), Has.All.StartWith("bert.").And.All.EndWith(".bias"));
    }

    [Test]
    public void BitFitStepChangesBiasesAndLeavesWeightsBitForBit()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new BitFitOptions());
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        model.train();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        using var optimizer = optim.SGD(adapted.Parameters().Select(p => p.Parameter), 0.1);
        var output = model.forward(ids, mask, types);
        output.mul(randn_like(output)).sum().backward();
        optimizer.step();
        foreach (var (name, parameter) in model.named_parameters())
        {
            bool changed = !parameter.equal(before[name]).all().item<bool>();
            // The key bias adds the same amount to every score of a query, which softmax ignores: its gradient is ~0.
            if (name.EndsWith(".bias") && !name.EndsWith("key.bias")) Assert.That(changed, Is.True, name);
            if (!name.EndsWith(".bias")) Assert.That(changed, Is.False, name);
        }
    }

    [Test]
    public void FullFineTuningTrainsEveryParameter()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new FullFineTuningOptions());
        Assert.That(model.parameters().All(p => p.requires_grad));
        Assert.That(adapted.Parameters().Sum(p => p.Parameter.numel()), Is.EqualTo(model.parameters().Sum(p => p.numel())));
        Assert.That(adapted.Parameters().Select(p => p.Key), Does.Contain("bert.embeddings.word_embeddings.weight"));
    }

    [Test]
    public void TwoLoraAdaptersOnOneLayerAreKeptByNameAndSwitched()
    {
        using var scope = NewDisposeScope();
        using var layer = new TunerLinear(6, 5);
        layer.AddAdapter("first", new LoraLayer(6, 5, 2, 1, 0));
        layer.AddAdapter("second", new LoraLayer(6, 5, 2, 3, 0));
        using (no_grad())
        {
            ((LoraLayer)layer.Adapter("first")!).B.fill_(0.5);
            ((LoraLayer)layer.Adapter("second")!).B.fill_(-1);
        }
        layer.eval();
        var x = randn(4, 6);
        var plain = nn.functional.linear(x, layer.Weight, layer.Bias);
        Assert.That(layer.ActiveAdapter, Is.EqualTo("second"), "the adapter added last is active");
        var second = layer.forward(x);
        layer.ActiveAdapter = "first";
        var first = layer.forward(x);
        var a1 = (LoraLayer)layer.Adapter("first")!;
        var a2 = (LoraLayer)layer.Adapter("second")!;
        Assert.That(first.sub(plain.add(x.matmul(a1.A.t()).matmul(a1.B.t()).mul(1f))).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.That(second.sub(plain.add(x.matmul(a2.A.t()).matmul(a2.B.t()).mul(3f))).abs().max().item<float>(), Is.LessThan(1e-5f));
        layer.ActiveAdapter = null;
        Assert.That(layer.forward(x).equal(plain).all().item<bool>());
        Assert.Throws<InvalidOperationException>(() => layer.AddAdapter("first", new LoraLayer(6, 5, 2, 1, 0)));
        Assert.That(layer.named_parameters().Select(p => p.name), Is.SupersetOf(new[] { "first.lora_A.weight", "second.lora_B.weight" }));
    }

    [Test]
    public void AdaptersAtBothSitesAndAPromptChangeTheOutputAndTrain()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var backbone = new BertBackbone(model);
        var (ids, mask, types) = TinyBert.RandomBatch(2, 7);
        var plain = model.forward(ids, mask, types);
        var attentionShift = new Shift(TinyBert.Config.HiddenSize);
        var feedForwardShift = new Shift(TinyBert.Config.HiddenSize);
        backbone.InsertAdapter(1, AdapterSite.AttentionOutput, "adapter", attentionShift);
        backbone.InsertAdapter(1, AdapterSite.FeedForwardOutput, "adapter", feedForwardShift);
        Assert.That(model.forward(ids, mask, types).sub(plain).abs().max().item<float>(), Is.EqualTo(0f), "a zero shift changes nothing");
        using (no_grad()) attentionShift.Delta.copy_(linspace(-1, 1, TinyBert.Config.HiddenSize));
        var shifted = model.forward(ids, mask, types);
        Assert.That(shifted.sub(plain).abs().max().item<float>(), Is.GreaterThan(0.1f));
        backbone.SetPrompt("prompt", 3, new Prompt(3, TinyBert.Config.HiddenSize));
        var prompted = model.forward(ids, mask, types);
        Assert.That(prompted.shape, Is.EqualTo(plain.shape), "virtual tokens are dropped from the output");
        Assert.That(prompted.sub(shifted).abs().max().item<float>(), Is.GreaterThan(0.1f));
        prompted.mul(randn_like(prompted)).sum().backward();
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var name in new[] { "prompt.vectors", "encoder.layer.1.attention.output.adapter.delta", "encoder.layer.1.output.adapter.delta" })
            Assert.That(parameters[name].grad?.abs().max().item<float>(), Is.GreaterThan(0f), name);
        Assert.Throws<ArgumentOutOfRangeException>(() => backbone.InsertAdapter(TinyBert.Config.NumHiddenLayers, AdapterSite.FeedForwardOutput, "x", new Shift(4)));
        Assert.Throws<InvalidOperationException>(() => backbone.InsertAdapter(1, AdapterSite.FeedForwardOutput, "other", new Shift(4)), "one adapter per site");
        Assert.Throws<InvalidOperationException>(() => backbone.SetPrefix("prefix", 2, new Prompt(2, 4)), "one prompt or prefix");
    }

    [Test]
    public void AdapterSitesAreBeforeTheResidualLayerNorm()
    {
        // LayerNorm removes a constant added to every feature: a constant shift at either site changes nothing, which it
        // would if the site were after the LayerNorm.
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        var backbone = new BertBackbone(model);
        var (ids, mask, types) = TinyBert.RandomBatch(2, 7);
        var plain = model.forward(ids, mask, types);
        var last = TinyBert.Config.NumHiddenLayers - 1;
        var attention = new Shift(TinyBert.Config.HiddenSize);
        var feedForward = new Shift(TinyBert.Config.HiddenSize);
        backbone.InsertAdapter(last, AdapterSite.AttentionOutput, "adapter", attention);
        backbone.InsertAdapter(last, AdapterSite.FeedForwardOutput, "adapter", feedForward);
        using (no_grad())
        {
            attention.Delta.fill_(3f);
            feedForward.Delta.fill_(-2f);
        }
        Assert.That(model.forward(ids, mask, types).sub(plain).abs().max().item<float>(), Is.LessThan(1e-4f));
        using (no_grad()) feedForward.Delta[0] = 5f;
        Assert.That(model.forward(ids, mask, types).sub(plain).abs().max().item<float>(), Is.GreaterThan(0.1f));
    }

    [Test]
    public void MethodOptionsRoundTripThroughTheRegistryWithPeftFieldNames()
    {
        var lora = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0.05f, TargetModules = new[] { "query", "dense" } };
        var json = MethodRegistry.ToJson(lora);
        Assert.That(json.ToJsonString(), Does.Contain("\"r\":4").And.Contain("\"lora_alpha\":8").And.Contain("\"peft_type\":\"LORA\"").And.Contain("\"target_modules\""));
        var back = (LoraOptions)MethodRegistry.FromJson(json, "test");
        Assert.That((back.Rank, back.Alpha, back.Dropout, back.TargetModules), Is.EqualTo((4, 8f, 0.05f, (IReadOnlyList<string>)new[] { "query", "dense" })));
        Assert.That(MethodRegistry.PeftTypes, Is.SupersetOf(new[] { "LORA", "BITFIT", "FULL" }));
        Assert.That(MethodRegistry.FromJson(MethodRegistry.ToJson(new BitFitOptions()), "test"), Is.InstanceOf<BitFitOptions>());
        json["peft_type"] = "NOPE";
        Assert.That(Assert.Throws<InvalidDataException>(() => MethodRegistry.FromJson(json, "test"))!.Message, Does.Contain("NOPE").And.Contain("LORA"));
        json["peft_type"] = "LORA";
        json["r"] = 100_000;
        Assert.That(Assert.Throws<InvalidDataException>(() => MethodRegistry.FromJson(json, "test"))!.Message, Does.Contain("Rank"));
    }

    private sealed class Shift : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Parameter delta;

        public Shift(long width) : base("shift")
        {
            delta = new TorchSharp.Modules.Parameter(zeros(width));
            RegisterComponents();
        }

        public TorchSharp.Modules.Parameter Delta => delta;

        public override Tensor forward(Tensor input) => input.add(delta);
    }

    private sealed class Prompt : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Parameter vectors;

        public Prompt(long count, long width) : base("prompt")
        {
            vectors = new TorchSharp.Modules.Parameter(randn(count, width));
            RegisterComponents();
        }

        public override Tensor forward(Tensor words) => vectors.alias();
    }
}
