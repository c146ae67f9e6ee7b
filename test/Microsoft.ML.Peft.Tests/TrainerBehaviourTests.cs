using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Trainer behaviour on a tiny BERT: learning, seeds, early stopping, truncation, empty text, self-contained files.</summary>
[TestFixture]
public class TrainerBehaviourTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    private static (ITransformer Model, IDataView Data) Fit(MLContext ml, PeftTextClassificationTrainer.Options options, IEnumerable<SentenceRow> rows)
    {
        var data = ml.Data.LoadFromEnumerable(rows);
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(data);
        return (model, data);
    }

    private static float[][] Scores(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Score).ToArray();

    /// <summary>ML.NET creates loaders by reflection and wraps their exceptions; the loader's own is the innermost.</summary>
    internal static Exception Innermost(Exception e)
    {
        while (e is System.Reflection.TargetInvocationException { InnerException: not null }) e = e.InnerException;
        return e;
    }

    [Test]
    public void LearnsTheSyntheticTask()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 6;
        var (model, _) = Fit(ml, options, TinyTraining.Rows(160, seed: 1));
        var test = ml.Data.LoadFromEnumerable(TinyTraining.Rows(60, seed: 2));
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        TestContext.Out.WriteLine($"tiny BERT synthetic accuracy {metrics.MicroAccuracy:F3}");
        Assert.That(metrics.MicroAccuracy, Is.GreaterThan(0.75));
    }

    [Test]
    public void SameSeedSameDataGivesTheSameModel()
    {
        var rows = TinyTraining.Rows(48, seed: 3);
        var ml = new MLContext(1);
        var (first, data) = Fit(ml, TinyTraining.Options(tinyBert), rows);
        var (second, _) = Fit(new MLContext(1), TinyTraining.Options(tinyBert), rows);
        var other = TinyTraining.Options(tinyBert);
        other.Seed = 2;
        var (third, _) = Fit(new MLContext(1), other, rows);
        Assert.That(Scores(ml, second, data), Is.EqualTo(Scores(ml, first, data)));
        Assert.That(Scores(ml, third, data), Is.Not.EqualTo(Scores(ml, first, data)));
    }

    [Test]
    public void LongTextIsTruncatedAndCounted()
    {
        var ml = new MLContext(1);
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var rows = TinyTraining.Rows(24, 6);
        var longText = string.Join(' ', Enumerable.Repeat("the good movie", 200)); // far past the 40-row position table
        rows.Add(new SentenceRow { Sentence = longText, Label = "positive" });
        var options = TinyTraining.Options(tinyBert);
        options.MaxSequenceLength = 40;
        options.MaxEpoch = 1;
        var (model, _) = Fit(ml, options, rows);
        lock (messages) Assert.That(messages, Has.Some.Contains("1 of 25 training rows were longer than MaxSequenceLength=40"));
        var peft = ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();
        var scored = Scores(ml, model, ml.Data.LoadFromEnumerable(new[] { new SentenceRow { Sentence = longText, Label = "positive" } }));
        Assert.That(scored[0].Sum(), Is.EqualTo(1f).Within(1e-4));
        Assert.That(peft.TruncatedRowCount, Is.EqualTo(1));
    }

    [Test]
    public void MaxSequenceLengthBeyondThePositionTableIsAnError()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxSequenceLength = 41;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Fit(ml, options, TinyTraining.Rows(8, 1)));
        Assert.That(e!.ParamName, Is.EqualTo("MaxSequenceLength"));
        Assert.That(e.Message, Does.Contain("40"));
    }

    [Test]
    public void EmptyAndMissingTextIsScoredAsEmpty()
    {
        var ml = new MLContext(1);
        var rows = TinyTraining.Rows(24, 7);
        rows.Add(new SentenceRow { Sentence = "", Label = "negative" });
        rows.Add(new SentenceRow { Sentence = null!, Label = "positive" });
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var (model, data) = Fit(ml, options, rows);
        var scores = Scores(ml, model, data);
        Assert.That(scores, Has.Length.EqualTo(26));
        Assert.That(scores[^1], Is.EqualTo(scores[^2]), "missing text is treated as empty text");
    }

    [Test]
    public void EmbeddedBaseModelMakesASelfContainedFile()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        options.EmbedBaseModel = true;
        var (model, data) = Fit(ml, options, TinyTraining.Rows(24, 8));
        var path = Path.Combine(Path.GetTempPath(), $"peft-embedded-{Guid.NewGuid():N}.zip");
        var moved = TinyBert.WriteDirectory(seed: 7); // identical weights elsewhere, then removed
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var copy = Path.Combine(Path.GetTempPath(), $"peft-tiny-moved-{Guid.NewGuid():N}");
            Directory.Move(tinyBert, copy);
            try
            {
                var loaded = new MLContext(2).Model.Load(path, out _);
                Assert.That(Scores(ml, loaded, data), Is.EqualTo(Scores(ml, model, data)).Within(1e-6f));
            }
            finally
            {
                Directory.Move(copy, tinyBert);
            }
        }
        finally
        {
            File.Delete(path);
            Directory.Delete(moved, recursive: true);
        }
    }

    [Test]
    public void MovedBaseModelIsFoundThroughLoadWithBaseModel()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var (model, data) = Fit(ml, options, TinyTraining.Rows(24, 9));
        var path = Path.Combine(Path.GetTempPath(), $"peft-ref-{Guid.NewGuid():N}.zip");
        var moved = Path.Combine(Path.GetTempPath(), $"peft-tiny-moved-{Guid.NewGuid():N}");
        ml.Model.Save(model, data.Schema, path);
        Directory.Move(tinyBert, moved);
        try
        {
            var wrapped = Assert.Catch(() => new MLContext(2).Model.Load(path, out _));
            var missing = Innermost(wrapped!);
            Assert.That(missing, Is.InstanceOf<FileNotFoundException>());
            Assert.That(missing.Message, Does.Contain("LoadWithBaseModel").And.Contain("SHA-256"));
            var loaded = new MLContext(2).Model.LoadWithBaseModel(path, moved, out _);
            Assert.That(Scores(ml, loaded, data), Is.EqualTo(Scores(ml, model, data)).Within(1e-6f));
        }
        finally
        {
            Directory.Move(moved, tinyBert);
            File.Delete(path);
        }
    }

    [Test]
    public void BaseModelWithAnotherHashIsRejected()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var (model, data) = Fit(ml, options, TinyTraining.Rows(24, 10));
        var path = Path.Combine(Path.GetTempPath(), $"peft-hash-{Guid.NewGuid():N}.zip");
        var other = TinyBert.WriteDirectory(seed: 99);
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var e = Assert.Throws<InvalidDataException>(() => new MLContext(2).Model.LoadWithBaseModel(path, other, out _));
            Assert.That(e!.Message, Does.Contain("is not the one this model was trained on").And.Contain(other));
        }
        finally
        {
            File.Delete(path);
            Directory.Delete(other, recursive: true);
        }
    }
}
