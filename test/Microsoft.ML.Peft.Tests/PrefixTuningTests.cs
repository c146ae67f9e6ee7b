using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.PrefixTuning;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Torch;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Prefix tuning as Hugging Face PEFT applies it to BERT: table layout, attention paths, checkpointing, training, saving.</summary>
[TestFixture]
public class PrefixTuningTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    /// <summary>The tiny BERT's weights in a model with <paramref name="layers"/> layers (0: the embeddings alone).</summary>
    private static BertModel Truncated(BertModel full, int layers, BertConfig? config = null)
    {
        config ??= TinyBert.Config;
        config.NumHiddenLayers = layers;
        var model = new BertModel(config);
        var source = full.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad()) foreach (var (name, parameter) in model.named_parameters()) parameter.copy_(source[name]);
        model.eval();
        return model;
    }

    /// <summary>
    /// The prefix table that makes one row's real tokens see, in every layer, the keys and values that the tokens
    /// <paramref name="prefixIds"/> placed before them would have: layer i's keys (block 2i) and values (block 2i+1) are
    /// the key and value projections of the plain model's hidden states entering layer i at the prefix positions.
    /// </summary>
    private static Tensor TableOfTokens(BertModel full, Tensor prefixIds, Tensor ids, Tensor mask, Tensor types)
    {
        long n = prefixIds.shape[0];
        int layers = TinyBert.Config.NumHiddenLayers, hidden = TinyBert.Config.HiddenSize;
        var joinedIds = cat(new[] { prefixIds.unsqueeze(0), ids }, 1);
        var joinedMask = cat(new[] { ones(1, n, ScalarType.Int64), mask }, 1);
        var joinedTypes = cat(new[] { zeros(1, n, ScalarType.Int64), types }, 1);
        var table = zeros(n, layers * 2, hidden);
        var linears = full.Linears().ToDictionary(l => l.Name, l => l.Layer);
        for (int i = 0; i < layers; i++)
        {
            using var truncated = Truncated(full, i);
            var entering = truncated.forward(joinedIds, joinedMask, joinedTypes)[0, ..(int)n];
            table[.., 2 * i] = linears[$"encoder.layer.{i}.attention.self.key"].forward(entering);
            table[.., 2 * i + 1] = linears[$"encoder.layer.{i}.attention.self.value"].forward(entering);
        }
        return table.view(n, layers * 2 * hidden);
    }

    [Test]
    public void TableLayoutAndPositionsMatchPeftsPastKeyValuesOnBert()
    {
        // With past_key_values, Hugging Face's BERT offsets the real tokens' positions by n and lets them attend to the
        // n prefix keys and values of each layer. Prefixes equal to the keys and values of tokens p therefore give the
        // real tokens exactly the plain model's states on [p, x] (one row: p's states depend on x).
        using var scope = NewDisposeScope();
        using var full = TinyBert.CreateModel();
        using var prefixed = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(prefixed, new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = false });
        prefixed.eval();
        var prefixIds = tensor(new long[] { 9, 20, 14 });
        var (ids, mask, types) = TinyBert.RandomBatch(2, 8);
        for (int row = 0; row < 2; row++) // row 0 has padding
        {
            var (rowIds, rowMask, rowTypes) = (ids[row..(row + 1)], mask[row..(row + 1)], types[row..(row + 1)]);
            using (no_grad()) adapted.Parameters().Single().Parameter.copy_(TableOfTokens(full, prefixIds, rowIds, rowMask, rowTypes));
            var expected = full.forward(cat(new[] { prefixIds.unsqueeze(0), rowIds }, 1), cat(new[] { ones(1, 3, ScalarType.Int64), rowMask }, 1),
                cat(new[] { zeros(1, 3, ScalarType.Int64), rowTypes }, 1))[.., 3.., ..];
            var output = prefixed.forward(rowIds, rowMask, rowTypes);
            Assert.That(output.shape, Is.EqualTo(new long[] { 1, 8, TinyBert.Config.HiddenSize }));
            Assert.That(output.sub(expected).abs().max().item<float>(), Is.LessThan(1e-4f), $"row {row}");
            prefixed.FuseProjections();
            Assert.That(prefixed.forward(rowIds, rowMask, rowTypes).sub(expected).abs().max().item<float>(), Is.LessThan(1e-4f), $"row {row}, fused projections");
            prefixed.ClearFusedProjections();
        }
        // Swapping the key and value blocks of one layer changes the output: the layout matters.
        var table = adapted.Parameters().Single().Parameter;
        var before = prefixed.forward(ids[1..2], mask[1..2], types[1..2]);
        using (no_grad())
        {
            var blocks = table.detach().clone().view(3, 4, -1);
            table.view(3, 4, -1)[.., 0] = blocks[.., 1];
            table.view(3, 4, -1)[.., 1] = blocks[.., 0];
        }
        Assert.That(prefixed.forward(ids[1..2], mask[1..2], types[1..2]).sub(before).abs().max().item<float>(), Is.GreaterThan(1e-2f));
    }

    [Test]
    public void ManualDropoutPathAttendsToThePrefixAsTheFusedAndPlainPathsDo()
    {
        // Attention dropout this small keeps (almost) every probability: the training path's manual attention must
        // then agree with the evaluation path.
        using var scope = NewDisposeScope();
        var config = TinyBert.Config;
        config.HiddenDropoutProb = 0;
        config.AttentionProbsDropoutProb = 1e-7;
        using var model = TinyBert.Randomized(new BertModel(config), 3);
        using var generator = new Generator(2);
        TinyBert.Adapt(model, new PrefixTuningOptions { NumVirtualTokens = 4 }, generator);
        var (ids, mask, types) = TinyBert.RandomBatch(3, 9);
        model.eval();
        var evaluated = model.forward(ids, mask, types);
        model.train();
        var trained = model.forward(ids, mask, types);
        Assert.That(trained.sub(evaluated).abs().max().item<float>(), Is.LessThan(1e-5f));
        model.eval();
        model.FuseProjections();
        Assert.That(model.forward(ids, mask, types).sub(evaluated).abs().max().item<float>(), Is.LessThan(1e-5f));
        using var plain = TinyBert.Randomized(new BertModel(config), 3);
        plain.eval();
        Assert.That(evaluated.sub(plain.forward(ids, mask, types)).abs().max().item<float>(), Is.GreaterThan(1e-2f), "the prefix changes the output");
    }

    [Test]
    public void ProjectionIsPeftsTwoLayerReparameterisationByHand()
    {
        using var scope = NewDisposeScope();
        using var encoder = new PrefixEncoder(count: 1, hidden: 1, encoderHidden: 1, width: 2, projection: true, generator: null);
        var parameters = encoder.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.That(parameters.Keys, Is.EquivalentTo(new[] { "embedding", "transform.0.weight", "transform.0.bias", "transform.2.weight", "transform.2.bias" }));
        using (no_grad())
        {
            parameters["embedding"].fill_(0.5f);
            parameters["transform.0.weight"].fill_(2f);
            parameters["transform.0.bias"].fill_(0f);
            parameters["transform.2.weight"].copy_(tensor(new[] { 1f, -1f }).view(2, 1));
            parameters["transform.2.bias"].copy_(tensor(new[] { 0.1f, 0.2f }));
        }
        // tanh(2 · 0.5) = 0.7615942; then (0.7615942 + 0.1, -0.7615942 + 0.2).
        Assert.That(encoder.forward(empty(0)).data<float>().ToArray(), Is.EqualTo(new[] { 0.8615942f, -0.5615942f }).Within(1e-6f));
    }

    [Test]
    public void GradientCheckpointingGivesThePrefixTheSameGradients()
    {
        Dictionary<string, float[]> Gradients(bool checkpointing, out float loss)
        {
            using var scope = NewDisposeScope();
            using var random = new RandomSource(21, CPU);
            using var model = TinyBert.CreateModel();
            var backbone = new BertBackbone(model);
            var adapter = new AdaptedBackbone(backbone, new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 16 }, random.Init);
            using var network = new TextClassificationNetwork(backbone, new ClassificationHead(TinyBert.Config.HiddenSize, 2, 0.1, random.Init));
            backbone.GradientCheckpointing = checkpointing;
            network.train();
            RunDropout.Attach(network, random);
            var (ids, mask, types) = TinyBert.RandomBatch(4, 12);
            var value = nn.functional.cross_entropy(network.forward(ids, mask, types), tensor(new long[] { 0, 1, 1, 0 }));
            value.backward();
            loss = value.item<float>();
            return adapter.Parameters().ToDictionary(p => p.Key, p => p.Parameter.grad!.data<float>().ToArray());
        }
        var plain = Gradients(false, out var plainLoss);
        var checkpointed = Gradients(true, out var checkpointedLoss);
        Assert.That(checkpointedLoss, Is.EqualTo(plainLoss).Within(1e-6f));
        Assert.That(plain.Keys, Is.EquivalentTo(new[] { "bert.prompt_encoder.embedding", "bert.prompt_encoder.transform.0.weight", "bert.prompt_encoder.transform.0.bias",
            "bert.prompt_encoder.transform.2.weight", "bert.prompt_encoder.transform.2.bias" }));
        foreach (var (name, gradient) in plain)
        {
            Assert.That(gradient.Any(g => g != 0), $"{name} has no gradient");
            Assert.That(checkpointed[name], Is.EqualTo(gradient).Within(1e-5f), name);
        }
    }

    [Test]
    public void SavedStateIsTheComputedTableWithoutProjection()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        using var generator = new Generator(3);
        var adapted = TinyBert.Adapt(model, new PrefixTuningOptions { NumVirtualTokens = 5, PrefixProjection = true, EncoderHiddenSize = 8 }, generator);
        var saved = adapted.SavedState().Single();
        Assert.That((saved.Key, saved.TopLevel), Is.EqualTo(("prompt_embeddings", true)));
        long width = TinyBert.Config.NumHiddenLayers * 2L * TinyBert.Config.HiddenSize;
        Assert.That(saved.Value.shape, Is.EqualTo(new long[] { 5, width }));
        var p = adapted.Parameters().ToDictionary(x => x.Key, x => x.Parameter);
        var byHand = nn.functional.linear(tanh(nn.functional.linear(p["bert.prompt_encoder.embedding"], p["bert.prompt_encoder.transform.0.weight"], p["bert.prompt_encoder.transform.0.bias"])),
            p["bert.prompt_encoder.transform.2.weight"], p["bert.prompt_encoder.transform.2.bias"]);
        Assert.That(saved.Value.sub(byHand).abs().max().item<float>(), Is.LessThan(1e-6f));
        Assert.That(p["bert.prompt_encoder.transform.0.weight"].shape, Is.EqualTo(new long[] { 8, TinyBert.Config.HiddenSize }));
        var json = MethodRegistry.ToJson(adapted.Method.SavedOptions).ToJsonString();
        Assert.That(json, Does.Contain("\"peft_type\":\"PREFIX_TUNING\"").And.Contain("\"prefix_projection\":false").And.Contain("\"num_virtual_tokens\":5")
            .And.Contain("\"encoder_hidden_size\":8").And.Contain("\"num_layers\":2").And.Contain("\"num_attention_heads\":4").And.Contain("\"token_dim\":32"));
        Assert.That(((PrefixTuningOptions)adapted.Method.Options).PrefixProjection, Is.True, "the trained form keeps its projection");
    }

    [Test]
    public void InvalidOptionsNameTheOption()
    {
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixTuningOptions { NumVirtualTokens = 0 }.Validate())!.ParamName, Is.EqualTo("NumVirtualTokens"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixTuningOptions { EncoderHiddenSize = 0 }.Validate())!.ParamName, Is.EqualTo("EncoderHiddenSize"));
        using var model = TinyBert.CreateModel();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(model, new PrefixTuningOptions { NumVirtualTokens = 39 }));
        Assert.That(e!.ParamName, Is.EqualTo("NumVirtualTokens"));
        using var other = TinyBert.CreateModel();
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(other, new PrefixTuningOptions { NumLayers = 12 }))!.ParamName, Is.EqualTo("NumLayers"));
        using var third = TinyBert.CreateModel();
        TinyBert.Adapt(third, new PrefixTuningOptions { NumVirtualTokens = 35 });
        third.eval();
        var (ids, mask, types) = TinyBert.RandomBatch(1, 6);
        Assert.That(Assert.Throws<ArgumentException>(() => third.forward(ids, mask, types))!.Message, Does.Contain("at most 5"));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void TrainsSavesAndLoadsWithTheSameProbabilities(bool projection)
    {
        var result = MethodTraining.TrainSaveAndLoad(tinyBert, new PrefixTuningOptions { NumVirtualTokens = 4, PrefixProjection = projection, EncoderHiddenSize = 16 },
            learningRate: projection ? 1e-2f : 5e-2f, epochs: 3);
        var losses = result.History.Select(h => h.TrainingLoss).ToList();
        TestContext.Out.WriteLine($"losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.That(losses[^1], Is.LessThan(losses[0]));
        Assert.That(result.Saved.Keys, Is.EquivalentTo(new[] { "prompt_embeddings", "base_model.model.classifier.weight", "base_model.model.classifier.bias" }));
        Assert.That(result.Saved["prompt_embeddings"], Has.Length.EqualTo(4 * 2 * 2 * TinyBert.Config.HiddenSize));
        Assert.That(result.MethodJson, Does.Contain("\"prefix_projection\":false"), "loaded as the computed table");
        Assert.That(MethodTraining.MaxDifference(result.Trained, result.Loaded), Is.LessThanOrEqualTo(1e-6));
    }
}
