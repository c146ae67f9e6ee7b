using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Methods.Vera;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The trainer with each Linear-layer method on the tiny BERT: the loss falls, every trained tensor moves while every
/// frozen one keeps its initial value, and a saved model loads and scores the same.
/// </summary>
[TestFixture]
public class LinearMethodTrainingTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory(seed: 7);

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    private static IEnumerable<TestCaseData> Methods()
    {
        yield return new TestCaseData(new LoraOptions { Rank = 4, UseRslora = true, LoraPlusLearningRateRatio = 4 }).SetName("RsLoraWithLoraPlus");
        yield return new TestCaseData(new LoraOptions { Rank = 4, UseDora = true, TargetModules = new[] { "query", "value", "output.dense" } }).SetName("Dora");
        yield return new TestCaseData(new LoraOptions { Rank = 4, InitLoraWeights = LoraInitialization.Gaussian }).SetName("GaussianLora");
        yield return new TestCaseData(new LoraOptions { Rank = 4, InitLoraWeights = LoraInitialization.Pissa, TargetModules = new[] { "query", "value" } }).SetName("Pissa");
        yield return new TestCaseData(new VeraOptions { Rank = 16 }).SetName("Vera");
        yield return new TestCaseData(new VeraOptions { Rank = 16, SaveProjection = false, ProjectionPrngKey = 3 }).SetName("VeraWithoutSavedProjections");
        yield return new TestCaseData(new IA3Options()).SetName("IA3");
    }

    [TestCaseSource(nameof(Methods))]
    public void TrainsSavesAndReloads(PeftMethodOptions method)
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.Method = method;
        options.LearningRate = 1e-2f;
        options.KeepBaseForUnmerge = true;   // the adapter is unmerged below to compare it with its initial values
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(48, seed: 4));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(data);
        var peft = ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();
        var history = peft.TrainingHistory;
        TestContext.Out.WriteLine($"{method.PeftType}: losses {string.Join(", ", history.Select(h => h.TrainingLoss.ToString("F4")))}");
        Assert.That(history[^1].TrainingLoss, Is.LessThan(history[0].TrainingLoss));

        // The same adapter before training: the trainer draws new parameters first from a generator seeded with Seed.
        using (var scope = NewDisposeScope())
        {
            using var initialModel = TinyBert.CreateModel(seed: 7);
            using var generator = new Generator((ulong)options.Seed);
            var initial = TinyBert.Adapt(initialModel, method, generator);
            var adapted = peft.Model.Adapted;
            adapted.Unmerge();
            Assert.That(adapted.Parameters().Select(p => p.Key), Is.EquivalentTo(initial.Parameters().Select(p => p.Key)));
            var trained = adapted.Parameters().Select(p => p.Parameter.Handle).ToHashSet();
            var before = initialModel.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            int frozen = 0;
            foreach (var (name, parameter) in adapted.Backbone.Module.named_parameters())
            {
                var difference = parameter.sub(before[name]).abs().max().item<float>();
                if (trained.Contains(parameter.Handle)) Assert.That(difference, Is.GreaterThan(0f), $"{name} did not train");
                else
                {
                    Assert.That(difference, Is.EqualTo(0f), $"{name} is frozen but changed");
                    Assert.That(parameter.requires_grad, Is.False, name);
                    frozen++;
                }
            }
            Assert.That(frozen, Is.GreaterThan(20));
            adapted.Merge();
        }

        var path = Path.Combine(Path.GetTempPath(), $"peft-{method.PeftType}-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = new MLContext(2).Model.Load(path, out _);
            var loadedPeft = ((IEnumerable<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
            Assert.That(loadedPeft.Method, Is.EqualTo(method.PeftType));
            var expected = Scores(ml, model, data);
            var actual = Scores(ml, loaded, data);
            Assert.That(actual, Has.Length.EqualTo(expected.Length));
            for (int i = 0; i < expected.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f), $"row {i}");
            Assert.That(expected.Select(s => s[0]).Distinct().Count(), Is.GreaterThan(10), "scores depend on the input");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static float[][] Scores(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Score).ToArray();
}
