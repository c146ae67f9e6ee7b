using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.PromptTuning;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Prompt tuning as Hugging Face PEFT applies it to BERT: placement, initialisation, limits, training, saving.</summary>
[TestFixture]
public class PromptTuningTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    [Test]
    public void PromptEqualToWordEmbeddingsActsAsThoseTokensPrependedToTheInput()
    {
        // PEFT prepends the prompt to inputs_embeds: the virtual tokens take positions 0..n-1 with token type 0 and pass
        // through the embedding LayerNorm. So a prompt equal to the word vectors of tokens p gives, for the real tokens,
        // exactly what the plain model gives on [p, x] with the mask extended by ones.
        using var scope = NewDisposeScope();
        using var plain = TinyBert.CreateModel();
        using var prompted = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(prompted, new PromptTuningOptions { NumVirtualTokens = 3, PromptTuningInit = PromptTuningOptions.Random });
        prompted.eval();
        var promptIds = tensor(new long[] { 7, 12, 30 });
        using (no_grad()) adapted.Parameters().Single().Parameter.copy_(plain.EmbedWords(promptIds));
        var (ids, mask, types) = TinyBert.RandomBatch(3, 8);
        types[2, TensorIndex.Slice(4)] = 1; // a second segment
        var output = prompted.forward(ids, mask, types);
        var expected = plain.forward(cat(new[] { promptIds.unsqueeze(0).expand(3, -1), ids }, 1), cat(new[] { ones(3, 3, ScalarType.Int64), mask }, 1),
            cat(new[] { zeros(3, 3, ScalarType.Int64), types }, 1))[.., 3.., ..];
        Assert.That(output.shape, Is.EqualTo(new long[] { 3, 8, TinyBert.Config.HiddenSize }));
        Assert.That(output.sub(expected).abs().max().item<float>(), Is.LessThan(1e-5f));
        // The prompt matters: another prompt gives another output.
        // (Not by a constant added to every feature: the embedding LayerNorm removes that.)
        var change = linspace(-1, 1, TinyBert.Config.HiddenSize);
        using (no_grad()) adapted.Parameters().Single().Parameter.add_(change);
        Assert.That(prompted.forward(ids, mask, types).sub(expected).abs().max().item<float>(), Is.GreaterThan(1e-2f));
        // Fused inference projections give the same output.
        prompted.FuseProjections();
        using (no_grad()) adapted.Parameters().Single().Parameter.sub_(change);
        Assert.That(prompted.forward(ids, mask, types).sub(expected).abs().max().item<float>(), Is.LessThan(1e-5f));
    }

    [Test]
    public void SampledVocabularyInitialisationUsesRowsOfTheWordEmbeddings()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        using var generator = new Generator(11);
        var adapted = TinyBert.Adapt(model, new PromptTuningOptions { NumVirtualTokens = 6 }, generator);
        var parameter = adapted.Parameters().Single();
        Assert.That((parameter.Key, parameter.TopLevel), Is.EqualTo(("prompt_embeddings", true)));
        Assert.That(parameter.Parameter.shape, Is.EqualTo(new long[] { 6, TinyBert.Config.HiddenSize }));
        var table = model.EmbedWords(arange(TinyBert.Config.VocabSize, dtype: ScalarType.Int64));
        for (int row = 0; row < 6; row++)
        {
            var distances = table.sub(parameter.Parameter[row]).abs().amax(1);
            Assert.That(distances.min().item<float>(), Is.EqualTo(0f), $"row {row} is a word embedding");
        }
        Assert.That(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name), Is.EqualTo(new[] { "prompt_encoder.embedding" }));

        using var other = TinyBert.CreateModel();
        using var second = new Generator(11);
        var random = TinyBert.Adapt(other, new PromptTuningOptions { NumVirtualTokens = 30, PromptTuningInit = PromptTuningOptions.Random }, second);
        Assert.That(random.Parameters().Single().Parameter.std().item<float>(), Is.EqualTo(1f).Within(0.1f), "RANDOM draws N(0, 1) as nn.Embedding");
    }

    [Test]
    public void SavedOptionsCarryTheBaseModelsShapeWithPeftFieldNames()
    {
        using var model = TinyBert.CreateModel();
        var adapted = TinyBert.Adapt(model, new PromptTuningOptions { NumVirtualTokens = 5 });
        var json = MethodRegistry.ToJson(adapted.Method.SavedOptions).ToJsonString();
        Assert.That(json, Does.Contain("\"peft_type\":\"PROMPT_TUNING\"").And.Contain("\"num_virtual_tokens\":5").And.Contain("\"prompt_tuning_init\":\"SAMPLE_VOCAB\"")
            .And.Contain("\"token_dim\":32").And.Contain("\"num_transformer_submodules\":1").And.Contain("\"num_attention_heads\":4").And.Contain("\"num_layers\":2"));
        Assert.That(MethodRegistry.FromJson(MethodRegistry.ToJson(adapted.Method.SavedOptions), "test"), Is.InstanceOf<PromptTuningOptions>());
    }

    [Test]
    public void InvalidOptionsNameTheOption()
    {
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new PromptTuningOptions { NumVirtualTokens = 0 }.Validate())!.ParamName, Is.EqualTo("NumVirtualTokens"));
        Assert.That(Assert.Throws<ArgumentException>(() => new PromptTuningOptions { PromptTuningInit = "TEXT" }.Validate())!.ParamName, Is.EqualTo("PromptTuningInit"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new PromptTuningOptions { NumTransformerSubmodules = 2 }.Validate())!.ParamName, Is.EqualTo("NumTransformerSubmodules"));
        using var model = TinyBert.CreateModel();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(model, new PromptTuningOptions { NumVirtualTokens = 39 }));
        Assert.That(e!.ParamName, Is.EqualTo("NumVirtualTokens"));
        Assert.That(e.Message, Does.Contain("at most 38"));
        using var other = TinyBert.CreateModel();
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => TinyBert.Adapt(other, new PromptTuningOptions { TokenDim = 64 }))!.ParamName, Is.EqualTo("TokenDim"));
    }

    [Test]
    public void VirtualAndRealTokensMustFitThePositionTable()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel();
        TinyBert.Adapt(model, new PromptTuningOptions { NumVirtualTokens = 30 });
        model.eval();
        var (ids, mask, types) = TinyBert.RandomBatch(2, 11);
        var e = Assert.Throws<ArgumentException>(() => model.forward(ids, mask, types));
        Assert.That(e!.Message, Does.Contain("30 virtual tokens").And.Contain("at most 10"));
        Assert.That(model.forward(ids[.., ..10], mask[.., ..10], types[.., ..10]).shape[1], Is.EqualTo(10));

        // The trainer refuses before training: MaxSequenceLength 16 and 30 virtual tokens exceed 40 positions.
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(8, 1));
        var options = TinyTraining.Options(tinyBert);
        options.Method = new PromptTuningOptions { NumVirtualTokens = 30 };
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var refused = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(keyed));
        Assert.That(refused!.ParamName, Is.EqualTo("MaxSequenceLength"));
        Assert.That(refused.Message, Does.Contain("at most 10"));
    }

    [Test]
    public void TrainsSavesAndLoadsWithTheSameProbabilities()
    {
        var result = MethodTraining.TrainSaveAndLoad(tinyBert, new PromptTuningOptions { NumVirtualTokens = 4 }, learningRate: 5e-2f, epochs: 3);
        var losses = result.History.Select(h => h.TrainingLoss).ToList();
        TestContext.Out.WriteLine($"losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.That(losses[^1], Is.LessThan(losses[0]));
        Assert.That(result.Saved.Keys, Is.EquivalentTo(new[] { "prompt_embeddings", "base_model.model.classifier.weight", "base_model.model.classifier.bias" }));
        Assert.That(result.Saved["prompt_embeddings"], Has.Length.EqualTo(4 * TinyBert.Config.HiddenSize));
        Assert.That(result.MethodJson, Does.Contain("\"num_virtual_tokens\":4").And.Contain("\"token_dim\":32"));
        Assert.That(MethodTraining.MaxDifference(result.Trained, result.Loaded), Is.LessThanOrEqualTo(1e-6));
    }
}
