using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Runs that behave: structured progress, early stopping, cancellation, run-owned generators, parallel scoring, pairs, bad validation data.</summary>
[TestFixture]
public class RunBehaviourTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    private static (ITransformer KeyMap, IDataView Train) Keyed<T>(MLContext ml, IEnumerable<T> rows) where T : class
    {
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        return (keyMap, keyMap.Transform(data));
    }

    private static float[][] Scores(ITransformer model, IDataView data) => model.Transform(data).GetColumn<float[]>("Score").ToArray();

    [Test]
    public void EarlyStoppingKeepsWeightsWhoseValidationAccuracyIsTheBestReported()
    {
        var ml = new MLContext(1);
        var (keyMap, train) = Keyed(ml, TinyTraining.Rows(40, 4));
        var validation = keyMap.Transform(ml.Data.LoadFromEnumerable(TinyTraining.Rows(30, 5)));
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 8;
        options.EarlyStoppingPatience = 2;
        options.LearningRate = 2e-2f; // large enough that accuracy moves between epochs
        options.ValidationSet = validation;
        var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(options);
        var events = new List<EpochMetrics>();
        trainer.EpochCompleted += (_, m) => events.Add(m);
        using var model = trainer.Fit(train);
        Assert.That(model.TrainingHistory, Is.EqualTo(events));
        Assert.That(events.Select(e => e.Epoch), Is.EqualTo(Enumerable.Range(1, events.Count)));
        Assert.That(events, Has.All.Matches<EpochMetrics>(e => e.MetricName == "accuracy" && e.ValidationMetric is >= 0 and <= 1 && double.IsFinite(e.TrainingLoss)));
        var best = events.Max(e => e.ValidationMetric!.Value);
        Assert.That(events.Single(e => e.IsBest && e.ValidationMetric == best && !events.Any(o => o.Epoch < e.Epoch && o.ValidationMetric == best)), Is.Not.Null);
        // The weights kept are the best epoch's: ML.NET's own evaluator on the validation set gives that accuracy.
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(validation));
        TestContext.Out.WriteLine($"epochs {events.Count}, validation accuracies {string.Join(", ", events.Select(e => e.ValidationMetric))}, restored {metrics.MicroAccuracy}");
        Assert.That(metrics.MicroAccuracy, Is.EqualTo(best).Within(1e-9));
    }

    [Test]
    public void CancellingThroughMLContextStopsTrainingAtTheNextStep()
    {
        var ml = new MLContext(1);
        var (_, train) = Keyed(ml, TinyTraining.Rows(64, 4));
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 50;
        var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(options);
        int epochs = 0;
        trainer.EpochCompleted += (_, _) =>
        {
            if (++epochs == 1) ml.CancelExecution();
        };
        Assert.Catch<OperationCanceledException>(() => trainer.Fit(train));
        Assert.That(epochs, Is.EqualTo(1));
    }

    [Test]
    public void ConcurrentTrainingsWithOneSeedMatchASoloRunAndLeaveTheGlobalGeneratorAlone()
    {
        var rows = TinyTraining.Rows(48, 3);
        float[][] Train()
        {
            var ml = new MLContext(1);
            var (_, train) = Keyed(ml, rows);
            using var model = ml.MulticlassClassification.Trainers.PeftTextClassification(TinyTraining.Options(tinyBert)).Fit(train);
            return Scores(model, train);
        }
        manual_seed(123);
        var expectedDraw = rand(4).data<float>().ToArray();
        manual_seed(123);
        var solo = Train();
        Assert.That(rand(4).data<float>().ToArray(), Is.EqualTo(expectedDraw), "training drew from libtorch's global generator");
        var parallel = Enumerable.Range(0, 2).Select(_ => Task.Run(Train)).ToArray();
        Task.WaitAll(parallel);
        foreach (var run in parallel) Assert.That(run.Result, Is.EqualTo(solo));
    }

    [Test]
    public void ParallelPredictionEnginesAndCursorsAgreeWithBatchedScoring()
    {
        var ml = new MLContext(1);
        var rows = TinyTraining.Rows(40, 6);
        var data = ml.Data.LoadFromEnumerable(rows);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(data);
        var batched = ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Score).ToArray();
        var engines = Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            var engine = ml.Model.CreatePredictionEngine<SentenceRow, SentencePrediction>(model);
            return rows.Select(r => engine.Predict(r).Score.ToArray()).ToArray();
        })).ToArray();
        var cursors = Enumerable.Range(0, 3).Select(_ => Task.Run(() => model.Transform(data).GetColumn<float[]>("Score").ToArray())).ToArray();
        Task.WaitAll(engines.Concat<Task>(cursors).ToArray());
        foreach (var result in engines.Select(t => t.Result).Concat(cursors.Select(t => t.Result)))
            for (int i = 0; i < rows.Count; i++) Assert.That(result[i], Is.EqualTo(batched[i]).Within(1e-5f), $"row {i}");
    }

    public sealed class PairRow
    {
        public string First { get; set; } = "";
        public string Second { get; set; } = "";
        public string Label { get; set; } = "";
    }

    [Test]
    public void SentencePairsTrainSaveAndLoad()
    {
        // The label depends on the second text only; the first is filler.
        var sentences = TinyTraining.Rows(120, 8);
        var filler = TinyTraining.Rows(120, 9);
        var rows = sentences.Zip(filler, (s, f) => new PairRow { First = f.Sentence, Second = s.Sentence, Label = s.Label }).ToList();
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(rows);
        var options = TinyTraining.Options(tinyBert);
        options.Sentence1ColumnName = nameof(PairRow.First);
        options.Sentence2ColumnName = nameof(PairRow.Second);
        options.MaxEpoch = 6;
        options.MaxSequenceLength = 24;
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        var test = ml.Data.LoadFromEnumerable(TinyTraining.Rows(60, 10).Zip(TinyTraining.Rows(60, 11), (s, f) => new PairRow { First = f.Sentence, Second = s.Sentence, Label = s.Label }));
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        TestContext.Out.WriteLine($"pair accuracy {metrics.MicroAccuracy:F3}");
        Assert.That(metrics.MicroAccuracy, Is.GreaterThan(0.75));
        var path = Path.Combine(Path.GetTempPath(), $"peft-pairs-{Guid.NewGuid():N}.zip");
        ml.Model.Save(model, data.Schema, path);
        var loaded = new MLContext(2).Model.Load(path, out _);
        File.Delete(path);
        var peft = ((IEnumerable<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
        Assert.That((peft.Sentence1ColumnName, peft.Sentence2ColumnName), Is.EqualTo(("First", "Second")));
        Assert.That(Scores(loaded, test), Is.EqualTo(Scores(model, test)).Within(1e-5f));
    }

    [Test]
    public void ValidationSetWithOtherClassesIsNamed()
    {
        var ml = new MLContext(1);
        var (_, train) = Keyed(ml, TinyTraining.Rows(16, 1));
        var otherRows = TinyTraining.Rows(8, 2).Select(r => new SentenceRow { Sentence = r.Sentence, Label = r.Label == "positive" ? "yes" : "no" });
        var (_, otherValidation) = Keyed(ml, otherRows);
        var options = TinyTraining.Options(tinyBert);
        options.ValidationSet = otherValidation;
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(train));
        Assert.That(e!.ParamName, Is.EqualTo("ValidationSet"));
        Assert.That(e.Message, Does.Contain("other classes").And.Contain("yes"));
    }

    public sealed class NumberPairRow
    {
        public string Sentence { get; set; } = "";
        public float Other { get; set; }
        public string Label { get; set; } = "";
    }

    [Test]
    public void SecondTextColumnOfTheWrongTypeIsNamed()
    {
        var ml = new MLContext(1);
        var (_, train) = Keyed(ml, TinyTraining.Rows(8, 1).Select(r => new NumberPairRow { Sentence = r.Sentence, Other = 1, Label = r.Label }));
        var options = TinyTraining.Options(tinyBert);
        options.Sentence2ColumnName = nameof(NumberPairRow.Other);
        var e = Assert.Catch<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(train));
        Assert.That(e!.ParamName, Is.EqualTo("Sentence2ColumnName"));
        Assert.That(e.Message, Does.Contain("'Other'").And.Contain("Single"));
    }
}
