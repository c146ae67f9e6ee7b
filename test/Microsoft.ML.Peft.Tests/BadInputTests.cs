using System.IO.Compression;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Each kind of bad input gets an exception that names the column, option or file at fault.</summary>
[TestFixture]
public class BadInputTests
{
    private string tinyBert = null!;
    private string savedModel = null!;
    private MLContext ml = null!;

    private sealed class NumericTextRow
    {
        public float Sentence { get; set; }
        public string Label { get; set; } = "";
    }

    private sealed class OtherRow
    {
        public string Text { get; set; } = "";
    }

    private sealed class UnkeyedRow
    {
        public string Sentence { get; set; } = "";
        public float Label { get; set; }
    }

    [OneTimeSetUp]
    public void SetUp()
    {
        tinyBert = TinyBert.WriteDirectory();
        ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        savedModel = Path.Combine(Path.GetTempPath(), $"peft-bad-input-{Guid.NewGuid():N}.zip");
        ml.Model.Save(model, data.Schema, savedModel);
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        Directory.Delete(tinyBert, recursive: true);
        File.Delete(savedModel);
    }

    private PeftTextClassificationTransformer FitKeyed<T>(IEnumerable<T> rows, PeftTextClassificationTrainer.Options? options = null) where T : class
    {
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        return ml.MulticlassClassification.Trainers.PeftTextClassification(options ?? TinyTraining.Options(tinyBert)).Fit(keyed);
    }

    [Test]
    public void MissingTextColumnIsNamed()
    {
        var options = TinyTraining.Options(tinyBert);
        options.Sentence1ColumnName = "Review";
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => FitKeyed(TinyTraining.Rows(8, 1), options));
        Assert.That(e!.Message, Does.Contain("'Review'").And.Contain("Sentence1ColumnName").And.Contain("Sentence"));
    }

    [Test]
    public void MissingLabelColumnIsNamed()
    {
        var options = TinyTraining.Options(tinyBert);
        options.LabelColumnName = "Sentiment";
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => FitKeyed(TinyTraining.Rows(8, 1), options));
        Assert.That(e!.Message, Does.Contain("'Sentiment'").And.Contain("LabelColumnName"));
    }

    [Test]
    public void NonTextColumnIsNamedWithItsType()
    {
        var rows = Enumerable.Range(0, 8).Select(i => new NumericTextRow { Sentence = i, Label = i % 2 == 0 ? "a" : "b" });
        var e = Assert.Throws<ArgumentException>(() => FitKeyed(rows));
        Assert.That(e!.Message, Does.Contain("'Sentence'").And.Contain("Single").And.Contain("text"));
    }

    [Test]
    public void LabelThatIsNotAKeyPointsToMapValueToKey()
    {
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(i => new UnkeyedRow { Sentence = "good", Label = i % 2 }));
        var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(TinyTraining.Options(tinyBert));
        var e = Assert.Throws<ArgumentException>(() => trainer.Fit(data));
        Assert.That(e!.Message, Does.Contain("'Label'").And.Contain("key type").And.Contain("MapValueToKey"));
    }

    [Test]
    public void EmptyTrainingSetIsAnError()
    {
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(8, 1));
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(ml.Data.FilterByCustomPredicate<SentenceRow>(data, _ => true));
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(TinyTraining.Options(tinyBert)).Fit(keyed));
        Assert.That(e!.Message, Does.Contain("no row"));
    }

    [Test]
    public void SingleClassIsAnError()
    {
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(8, 1));
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(ml.Data.FilterByCustomPredicate<SentenceRow>(data, r => r.Label == "negative"));
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(TinyTraining.Options(tinyBert)).Fit(keyed));
        Assert.That(e!.Message, Does.Contain("single class"));
    }

    [TestCase("BatchSize", 0)]
    [TestCase("MaxEpoch", 0)]
    [TestCase("LearningRate", -1e-3)]
    [TestCase("WeightDecay", -0.1)]
    [TestCase("MaxSequenceLength", 2)]
    [TestCase("Rank", 0)]
    public void InvalidOptionsAreRejectedWhenTheTrainerIsCreated(string option, double value)
    {
        var options = TinyTraining.Options(tinyBert);
        switch (option)
        {
            case "BatchSize": options.BatchSize = (int)value; break;
            case "MaxEpoch": options.MaxEpoch = (int)value; break;
            case "LearningRate": options.LearningRate = (float)value; break;
            case "WeightDecay": options.WeightDecay = (float)value; break;
            case "MaxSequenceLength": options.MaxSequenceLength = (int)value; break;
            case "Rank": ((Microsoft.ML.Peft.Methods.Lora.LoraOptions)options.Method).Rank = (int)value; break;
        }
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options));
        Assert.That(e!.ParamName, Is.EqualTo(option));
    }

    [Test]
    public void UnsupportedDeviceIsNamed()
    {
        var options = TinyTraining.Options(tinyBert);
        options.Device = "tpu";
        var e = Assert.Throws<ArgumentException>(() => FitKeyed(TinyTraining.Rows(8, 1), options));
        Assert.That(e!.Message, Does.Contain("'tpu'"));
    }

    [Test]
    public void MissingBaseModelFileIsNamed()
    {
        var options = TinyTraining.Options(tinyBert);
        options.BaseModel = Microsoft.ML.Peft.Backbones.BaseModelSource.FromOnnx("/nonexistent/model.onnx");
        var e = Assert.Throws<FileNotFoundException>(() => FitKeyed(TinyTraining.Rows(8, 1), options));
        Assert.That(e!.Message, Does.Contain("/nonexistent/model.onnx"));
    }

    [Test]
    public void FileThatIsNotOnnxIsReportedAsSuch()
    {
        var fake = Path.Combine(Path.GetTempPath(), $"peft-not-onnx-{Guid.NewGuid():N}.onnx");
        File.WriteAllText(fake, "this is not a protobuf");
        File.Copy(Path.Combine(tinyBert, "vocab.txt"), Path.ChangeExtension(fake, ".vocab"));
        try
        {
            var options = TinyTraining.Options(tinyBert);
            options.BaseModel = Microsoft.ML.Peft.Backbones.BaseModelSource.FromOnnx(fake, Path.ChangeExtension(fake, ".vocab"));
            var e = Assert.Throws<InvalidDataException>(() => FitKeyed(TinyTraining.Rows(8, 1), options));
            Assert.That(e!.Message, Does.Contain(Path.GetFileName(fake)));
        }
        finally
        {
            File.Delete(fake);
            File.Delete(Path.ChangeExtension(fake, ".vocab"));
        }
    }

    [Test]
    public void TruncatedModelZipFailsToLoadWithAnError()
    {
        var truncated = Path.Combine(Path.GetTempPath(), $"peft-truncated-{Guid.NewGuid():N}.zip");
        var bytes = File.ReadAllBytes(savedModel);
        File.WriteAllBytes(truncated, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        try
        {
            var e = Assert.Catch(() => new MLContext(2).Model.Load(truncated, out _));
            Assert.That(TrainerBehaviourTests.Innermost(e!), Is.InstanceOf<InvalidDataException>().Or.InstanceOf<FormatException>());
        }
        finally
        {
            File.Delete(truncated);
        }
    }

    [TestCase("Metadata.json", "'Metadata.json' entry is damaged")]
    [TestCase("Adapter.safetensors", "'Adapter.safetensors' entry is damaged")]
    [TestCase("Vocab", "'Vocab' entry is damaged")]
    public void CorruptedEntryOfTheModelZipIsReported(string entrySuffix, string expected)
    {
        var corrupted = Path.Combine(Path.GetTempPath(), $"peft-corrupted-{Guid.NewGuid():N}.zip");
        File.Copy(savedModel, corrupted);
        try
        {
            using (var zip = ZipFile.Open(corrupted, ZipArchiveMode.Update))
            {
                var entry = zip.Entries.Single(e => e.FullName.EndsWith(entrySuffix, StringComparison.Ordinal));
                var name = entry.FullName;
                byte[] content;
                using (var s = entry.Open())
                using (var m = new MemoryStream())
                {
                    s.CopyTo(m);
                    content = m.ToArray();
                }
                entry.Delete();
                // Keep the length prefix intact where there is one, garble what follows.
                for (int i = 12; i < content.Length; i += 3) content[i] ^= 0x5A;
                using var w = zip.CreateEntry(name).Open();
                w.Write(content);
            }
            var e = Assert.Catch(() => new MLContext(2).Model.Load(corrupted, out _));
            var inner = TrainerBehaviourTests.Innermost(e!);
            TestContext.Out.WriteLine($"{inner.GetType().Name}: {inner.Message}");
            Assert.That(inner, Is.InstanceOf<InvalidDataException>());
            Assert.That(inner.Message, Does.Contain(expected).IgnoreCase);
        }
        finally
        {
            File.Delete(corrupted);
        }
    }

    [Test]
    public void ScoringDataWithoutTheTextColumnIsNamed()
    {
        var loaded = ml.Model.Load(savedModel, out _);
        var other = ml.Data.LoadFromEnumerable(new[] { new OtherRow() });
        var peft = ((IEnumerable<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
        var e = Assert.Catch<ArgumentException>(() => peft.Transform(other));
        Assert.That(e!.Message, Does.Contain("'Sentence'"));
    }
}
