using Microsoft.ML.Data;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.LinearProbe;
using Microsoft.ML.Peft.Samples;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The image trainer end to end on real Fashion-MNIST images (written as PNG class folders at run time) with the package's ResNet-18.</summary>
[TestFixture]
public class ImageClassificationTests
{
    private string root = null!;
    private List<ImagePathRow> train = null!, test = null!;

    public sealed class ImagePathRow
    {
        public string ImagePath { get; set; } = "";
        public string Label { get; set; } = "";
    }

    public sealed class ImageBytesRow
    {
        public byte[] Image { get; set; } = Array.Empty<byte>();
        public string Label { get; set; } = "";
    }

    public sealed class Prediction
    {
        public float[] Score { get; set; } = Array.Empty<float>();
        public string PredictedLabel { get; set; } = "";
    }

    [OneTimeSetUp]
    public void WriteImages()
    {
        root = Path.Combine(Path.GetTempPath(), "peft-images-" + Guid.NewGuid().ToString("N"));
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 500);
        train = Rows(FashionMnist.WriteClassFolders(Path.Combine(root, "train"), Enumerable.Range(0, 300).ToList(), pixels, labels));
        test = Rows(FashionMnist.WriteClassFolders(Path.Combine(root, "test"), Enumerable.Range(300, 200).ToList(), pixels, labels));
    }

    [OneTimeTearDown]
    public void RemoveImages() => Directory.Delete(root, recursive: true);

    private static List<ImagePathRow> Rows(IEnumerable<string> paths) =>
        paths.Select(p => new ImagePathRow { ImagePath = p, Label = Path.GetFileName(Path.GetDirectoryName(p))! }).ToList();

    internal static PeftImageClassificationTrainer.Options SmallOptions(PeftMethodOptions? method = null) => new()
    {
        ImageColumnName = "ImagePath",
        ImageSize = 32,
        MaxEpoch = 2,
        BatchSize = 32,
        Method = method ?? PeftImageClassificationTrainer.Options.DefaultMethod(),
    };

    private static ITransformer Fit<T>(MLContext ml, PeftImageClassificationTrainer.Options options, IEnumerable<T> rows) where T : class =>
        ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftImageClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(ml.Data.LoadFromEnumerable(rows));

    private static float[][] Scores(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<Prediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Score).ToArray();

    private static void Dispose(ITransformer model)
    {
        foreach (var t in (IEnumerable<ITransformer>)model) (t as IDisposable)?.Dispose();
    }

    [Test]
    public void LearnsFashionMnistSavesAdaptersOnlyAndScoresTheSameAfterLoading()
    {
        var ml = new MLContext(1);
        var options = SmallOptions();
        options.ImageSize = 64;
        var model = Fit(ml, options, train);
        try
        {
            var peft = ((IEnumerable<ITransformer>)model).OfType<PeftImageClassificationTransformer>().Single();
            Assert.That(peft.TrainingHistory, Has.Count.EqualTo(2));
            Assert.That(peft.TrainingHistory[1].TrainingLoss, Is.LessThan(peft.TrainingHistory[0].TrainingLoss), "the loss falls");
            Assert.That(peft.ClassNames, Is.EqualTo(train.Select(r => r.Label).Distinct().OrderBy(l => l, StringComparer.Ordinal)).Or.EquivalentTo(FashionMnist.ClassNames));
            var testData = ml.Data.LoadFromEnumerable(test);
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(testData));
            TestContext.Out.WriteLine($"300 images, 2 epochs, 64 x 64: accuracy {metrics.MicroAccuracy:F3} on 200 unseen images; trainable {peft.TrainableParameterCount:N0} of {peft.TotalParameterCount:N0}");
            Assert.That(metrics.MicroAccuracy, Is.GreaterThan(0.4), "ten classes: chance is 0.1 (measured 0.55)");
            Assert.That(peft.TrainableParameterCount, Is.LessThan(peft.TotalParameterCount / 20));

            var file = Path.Combine(root, "model.zip");
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(train).Schema, file);
            long baseBytes = new FileInfo(Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx")).Length;
            TestContext.Out.WriteLine($"model file {new FileInfo(file).Length:N0} bytes = {100.0 * new FileInfo(file).Length / baseBytes:F2}% of the base model's {baseBytes:N0}");
            Assert.That(new FileInfo(file).Length, Is.LessThan(baseBytes / 20), "adapters and head only: under 5% of the base model");

            var before = Scores(ml, model, testData);
            var loaded = ml.Model.Load(file, out _);
            try
            {
                var after = Scores(ml, loaded, testData);
                for (int i = 0; i < before.Length; i++)
                    Assert.That(after[i], Is.EqualTo(before[i]).Within(1e-4f), $"row {i}");
                using var engine = ml.Model.CreatePredictionEngine<ImagePathRow, Prediction>(loaded);
                var one = engine.Predict(test[7]);
                Assert.That(one.Score, Is.EqualTo(before[7]).Within(1e-4f), "PredictionEngine scores one image as the batch did");
                Assert.That(one.PredictedLabel, Is.EqualTo(peft.ClassNames[Array.IndexOf(one.Score, one.Score.Max())]));
            }
            finally
            {
                Dispose(loaded);
            }
        }
        finally
        {
            Dispose(model);
        }
    }

    [Test]
    public void BytesAndPathsTrainTheSameModelForOneSeed()
    {
        var rows = train.Take(96).ToList();
        var bytes = rows.Select(r => new ImageBytesRow { Image = File.ReadAllBytes(r.ImagePath), Label = r.Label }).ToList();
        var ml = new MLContext(1);
        var options = SmallOptions();
        options.MaxEpoch = 1;
        var fromPaths = Fit(ml, options, rows);
        var bytesOptions = SmallOptions();
        bytesOptions.MaxEpoch = 1;
        bytesOptions.ImageColumnName = "Image";
        var fromBytes = Fit(ml, bytesOptions, bytes);
        try
        {
            var a = Scores(ml, fromPaths, ml.Data.LoadFromEnumerable(rows.Take(20)));
            var b = Scores(ml, fromBytes, ml.Data.LoadFromEnumerable(bytes.Take(20)));
            for (int i = 0; i < a.Length; i++) Assert.That(b[i], Is.EqualTo(a[i]).Within(1e-5f), $"row {i}: same seed, same images, same model");
        }
        finally
        {
            Dispose(fromPaths);
            Dispose(fromBytes);
        }
    }

    [TestCase("LINEAR_PROBE", false)]
    [TestCase("LINEAR_PROBE", true)]
    [TestCase("BITFIT", false)]
    [TestCase("IA3", false)]
    [TestCase("FULL", false)]
    public void EachImageMethodTrainsAndRoundTrips(string method, bool trainBatchNorm)
    {
        PeftMethodOptions options = method switch
        {
            "LINEAR_PROBE" => new LinearProbeOptions(),
            "BITFIT" => new BitFitOptions(),
            "IA3" => new IA3Options { TargetModules = new[] { PeftImageClassificationTrainer.Options.AllConvolutions }, FeedforwardModules = Array.Empty<string>() },
            _ => new FullFineTuningOptions(),
        };
        var ml = new MLContext(1);
        var trainer = SmallOptions(options);
        trainer.MaxEpoch = 1;
        trainer.TrainBatchNorm = trainBatchNorm;
        var rows = train.Take(64).ToList();
        var model = Fit(ml, trainer, rows);
        try
        {
            var peft = ((IEnumerable<ITransformer>)model).OfType<PeftImageClassificationTransformer>().Single();
            long head = 512 * 10 + 10, batchNorm = 2 * 22 * 0 + BatchNormAffine();
            long expected = method switch
            {
                "LINEAR_PROBE" => head + (trainBatchNorm ? batchNorm : 0),
                "BITFIT" => head + batchNorm / 2,
                "FULL" => peft.TotalParameterCount,
                _ => peft.TrainableParameterCount,
            };
            Assert.That(peft.TrainableParameterCount, Is.EqualTo(expected));
            Assert.That(peft.Method, Is.EqualTo(method));
            var file = Path.Combine(root, $"{method}-{trainBatchNorm}.zip");
            var data = ml.Data.LoadFromEnumerable(rows.Take(16));
            ml.Model.Save(model, data.Schema, file);
            var loaded = ml.Model.Load(file, out _);
            try
            {
                var a = Scores(ml, model, data);
                var b = Scores(ml, loaded, data);
                for (int i = 0; i < a.Length; i++) Assert.That(b[i], Is.EqualTo(a[i]).Within(1e-4f), $"row {i}");
            }
            finally
            {
                Dispose(loaded);
            }
        }
        finally
        {
            Dispose(model);
        }
    }

    /// <summary>Scale and shift of every batch normalisation of the package's ResNet-18.</summary>
    private static long BatchNormAffine()
    {
        var loaded = Backbones.ResNet.ImageBaseModelSource.ResNet18().Load();
        return loaded.Weights.Where(w => w.Key.EndsWith(".weight") && w.Value.Shape.Length == 1).Sum(w => 2 * w.Value.Shape[0]);
    }

    [Test]
    public void ValidationEarlyStoppingAndCancellation()
    {
        var ml = new MLContext(1);
        var options = SmallOptions();
        options.MaxEpoch = 3;
        options.EarlyStoppingPatience = 1;
        options.ValidationSet = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(train))
            .Transform(ml.Data.LoadFromEnumerable(test.Take(60)));
        var trainer = ml.MulticlassClassification.Trainers.PeftImageClassification(options);
        var events = new List<Training.EpochMetrics>();
        trainer.EpochCompleted += (_, m) => events.Add(m);
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(trainer).Fit(ml.Data.LoadFromEnumerable(train.Take(96)));
        Dispose(model);
        Assert.That(events, Is.Not.Empty);
        Assert.That(events.Select(e => e.MetricName), Is.All.EqualTo("accuracy"));
        Assert.That(events.Select(e => e.ValidationMetric), Is.All.InRange(0.0, 1.0));

        var cancelled = new MLContext(1);
        var second = cancelled.MulticlassClassification.Trainers.PeftImageClassification(SmallOptions());
        second.EpochCompleted += (_, _) => cancelled.CancelExecution();
        Assert.Throws<OperationCanceledException>(() =>
            cancelled.Transforms.Conversion.MapValueToKey("Label").Append(second).Fit(cancelled.Data.LoadFromEnumerable(train.Take(64))));
    }

    [Test]
    public void BadInputNamesTheCulprit()
    {
        var ml = new MLContext(1);
        var oneClass = train.Where(r => r.Label == train[0].Label).Take(10).ToList();
        var single = Assert.Throws<ArgumentException>(() => Fit(ml, SmallOptions(), oneClass));
        Assert.That(single!.Message, Does.Contain("single class"));

        var broken = Path.Combine(root, "broken.png");
        File.WriteAllBytes(broken, File.ReadAllBytes(train[0].ImagePath).AsSpan(0, 40).ToArray());
        var withBroken = train.Take(20).Append(new ImagePathRow { ImagePath = broken, Label = train[1].Label }).ToList();
        var e = Assert.Catch<Exception>(() => Fit(ml, SmallOptions(), withBroken));
        Assert.That(e!.Message, Does.Contain(broken), "the unreadable file is named");

        var missing = train.Take(20).Append(new ImagePathRow { ImagePath = Path.Combine(root, "nowhere.png"), Label = train[1].Label }).ToList();
        var notFound = Assert.Catch<Exception>(() => Fit(ml, SmallOptions(), missing));
        Assert.That(notFound!.Message, Does.Contain("nowhere.png"));

        var wrongColumn = SmallOptions();
        wrongColumn.ImageColumnName = "Label";
        var type = Assert.Catch<ArgumentException>(() => Fit(ml, wrongColumn, train.Take(20)));
        Assert.That(type!.Message, Does.Contain("'Label'").And.Contain("ImageColumnName"));

        var size = SmallOptions();
        size.ImageSize = 8;
        var tooSmall = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftImageClassification(size));
        Assert.That(tooSmall!.ParamName, Is.EqualTo("ImageSize"));

        // The package's ResNet-18 pads as CNTK does: sizes that are not multiples of 32 are refused before any tensor work.
        var odd = SmallOptions();
        odd.ImageSize = 40;
        var notMultiple = Assert.Throws<ArgumentOutOfRangeException>(() => Fit(ml, odd, train.Take(20)));
        Assert.That(notMultiple!.ParamName, Is.EqualTo("ImageSize"));
        Assert.That(notMultiple.Message, Does.Contain("multiple of 32").And.Contain("32 or 64"));

        var text = SmallOptions(new Methods.PrefixTuning.PrefixTuningOptions());
        var prefix = Assert.Catch<ArgumentException>(() => Fit(ml, text, train.Take(20)));
        Assert.That(prefix!.Message, Does.Contain("text encoders only"));
    }
}
