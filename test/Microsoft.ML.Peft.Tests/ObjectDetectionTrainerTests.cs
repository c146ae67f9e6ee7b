using System.Diagnostics;
using System.IO.Compression;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The object detection trainer end to end with the package's ResNet-18 on synthetic images of coloured squares.</summary>
[TestFixture]
public class ObjectDetectionTrainerTests
{
    public sealed class Row
    {
        public byte[] Image { get; set; } = Array.Empty<byte>();
        public string[] Label { get; set; } = Array.Empty<string>();
        public float[] BoundingBoxes { get; set; } = Array.Empty<float>();
    }

    public sealed class Prediction
    {
        public string[] PredictedLabel { get; set; } = Array.Empty<string>();
        public float[] Score { get; set; } = Array.Empty<float>();
        public float[] PredictedBoundingBoxes { get; set; } = Array.Empty<float>();
    }

    private static readonly string[] Classes = { "red", "blue" };

    /// <summary>
    /// A <paramref name="width"/> x <paramref name="height"/> grey noisy image with one or two squares, red or blue, at
    /// random places (not overlapping); <paramref name="squares"/> 0 gives a background image.
    /// </summary>
    internal static Row Scene(Random random, int width, int height, int squares)
    {
        var boxes = new List<(int X, int Y, int Side, int Class)>();
        for (int tries = 0; boxes.Count < squares && tries < 50; tries++)
        {
            int side = random.Next(Math.Min(width, height) / 4, Math.Min(width, height) / 2);
            int x = random.Next(0, width - side), y = random.Next(0, height - side);
            if (boxes.Any(b => x < b.X + b.Side && b.X < x + side && y < b.Y + b.Side && b.Y < y + side)) continue;
            boxes.Add((x, y, side, random.Next(2)));
        }
        var noise = new byte[width * height];
        random.NextBytes(noise);
        using var image = ImageTestImages.Rgb(width, height, (x, y) =>
        {
            foreach (var b in boxes)
                if (x >= b.X && x < b.X + b.Side && y >= b.Y && y < b.Y + b.Side)
                    return b.Class == 0 ? ((byte)230, (byte)30, (byte)30) : ((byte)30, (byte)60, (byte)230);
            byte v = (byte)(100 + noise[y * width + x] / 8);
            return (v, v, v);
        });
        return new Row
        {
            Image = ImageTestImages.Png(image),
            Label = boxes.Select(b => Classes[b.Class]).ToArray(),
            BoundingBoxes = boxes.SelectMany(b => new float[] { b.X, b.Y, b.X + b.Side, b.Y + b.Side }).ToArray(),
        };
    }

    private static List<Row> Scenes(int count, int seed, int width, int height)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(i => Scene(random, width, height, i % 8 == 7 ? 0 : 1 + i % 2)).ToList();
    }

    internal static PeftObjectDetectionTrainer.Options SmallOptions() => new()
    {
        ImageSize = 64,
        BatchSize = 8,
        MaxEpoch = 8,
    };

    private static IEstimator<ITransformer> Pipeline(MLContext ml, PeftObjectDetectionTrainer.Options options) =>
        ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Data.LoadFromEnumerable(Classes.Select(c => new { Label = c })))
            .Append(ml.MulticlassClassification.Trainers.PeftObjectDetection(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

    private static IDataView MapLabel(MLContext ml, IDataView data) =>
        ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Data.LoadFromEnumerable(Classes.Select(c => new { Label = c }))).Fit(data).Transform(data);

    private static void Dispose(ITransformer model)
    {
        foreach (var t in (IEnumerable<ITransformer>)model) (t as IDisposable)?.Dispose();
    }

    private static List<Prediction> Predictions(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<Prediction>(model.Transform(data), reuseRowObject: false).ToList();

    private static float Iou(float[] a, int i, float[] b, int j)
    {
        var x = new DetectionBox(a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3], 0);
        var y = new DetectionBox(b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3], 0);
        float w = Math.Max(0, Math.Min(x.XMax, y.XMax) - Math.Max(x.XMin, y.XMin)), h = Math.Max(0, Math.Min(x.YMax, y.YMax) - Math.Max(x.YMin, y.YMin));
        return w * h / (x.Area + y.Area - w * h);
    }

    [Test]
    public void LearnsSquaresScoresInOriginalPixelsSavesHeadsOnlyAndEvaluates()
    {
        var ml = new MLContext(1);
        var options = SmallOptions();
        options.MaxEpoch = 10;
        // A short training leaves scores low (focal loss): keep detections from 0.2 rather than ML.NET's 0.5.
        options.ScoreThreshold = 0.2f;
        // The validation set goes in as the trainer sees its data: with the label mapped to keys.
        options.ValidationSet = MapLabel(ml, ml.Data.LoadFromEnumerable(Scenes(8, 5, 96, 64)));
        // Training images of another size than the canvas (96 x 64 letterboxed to 64 x 64).
        var train = Scenes(32, 1, 96, 64);
        var watch = Stopwatch.StartNew();
        var model = Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(train));
        TestContext.Out.WriteLine($"fit in {watch.Elapsed.TotalSeconds:F1} s");
        try
        {
            var peft = ((IEnumerable<ITransformer>)model).OfType<PeftObjectDetectionTransformer>().Single();
            foreach (var epoch in peft.TrainingHistory)
                TestContext.Out.WriteLine($"epoch {epoch.Epoch}: loss {epoch.TrainingLoss:F3}, {epoch.RowsPerSecond:F1} images/s, mAP@0.5 {epoch.ValidationMetric:F3}");
            Assert.That(peft.TrainingHistory, Has.Count.EqualTo(options.MaxEpoch));
            Assert.That(peft.TrainingHistory[^1].TrainingLoss, Is.LessThan(0.7 * peft.TrainingHistory[0].TrainingLoss), "the loss falls");
            Assert.That(peft.TrainingHistory.Select(e => e.MetricName), Has.All.EqualTo("mAP@0.5"));
            Assert.That(peft.TrainingHistory.Select(e => e.ValidationMetric!.Value), Has.All.InRange(0.0, 1.0));
            Assert.That(peft.ClassNames, Is.EqualTo(Classes));
            Assert.That(peft.Method, Is.EqualTo("LORA"));
            Assert.That(peft.TrainableParameterCount, Is.LessThan(peft.TotalParameterCount / 5));

            // Schema: vectors of keys (with the label's values), of scores and of box coordinates.
            var test = Scenes(8, 9, 120, 90);
            var testData = ml.Data.LoadFromEnumerable(test);
            var scored = peft.Transform(MapLabel(ml, testData));
            var predicted = scored.Schema["PredictedLabel"];
            Assert.That(predicted.Type, Is.InstanceOf<VectorDataViewType>());
            Assert.That(((VectorDataViewType)predicted.Type).ItemType, Is.EqualTo(new KeyDataViewType(typeof(uint), 2)));
            Assert.That(((VectorDataViewType)predicted.Type).Size, Is.EqualTo(0), "variable length");
            VBuffer<ReadOnlyMemory<char>> keyValues = default;
            predicted.GetKeyValues(ref keyValues);
            Assert.That(keyValues.DenseValues().Select(v => v.ToString()), Is.EqualTo(Classes));
            Assert.That(scored.Schema["Score"].Type, Is.EqualTo(new VectorDataViewType(NumberDataViewType.Single)));
            Assert.That(scored.Schema["PredictedBoundingBoxes"].Type, Is.EqualTo(new VectorDataViewType(NumberDataViewType.Single)));

            // Boxes come back in the original 120 x 90 pixels: the top detection finds each square.
            var before = Predictions(ml, model, testData);
            int found = 0, total = 0;
            for (int i = 0; i < test.Count; i++)
            {
                var p = before[i];
                Assert.That(p.PredictedBoundingBoxes, Has.Length.EqualTo(4 * p.Score.Length));
                Assert.That(p.PredictedLabel, Has.Length.EqualTo(p.Score.Length));
                Assert.That(p.Score, Is.Ordered.Descending);
                Assert.That(p.PredictedBoundingBoxes.Where((v, k) => k % 2 == 0), Has.All.InRange(0f, 120f));
                Assert.That(p.PredictedBoundingBoxes.Where((v, k) => k % 2 == 1), Has.All.InRange(0f, 90f));
                for (int j = 0; j < test[i].Label.Length; j++)
                {
                    total++;
                    if (Enumerable.Range(0, p.Score.Length).Any(k => p.PredictedLabel[k] == test[i].Label[j] && Iou(p.PredictedBoundingBoxes, k, test[i].BoundingBoxes, j) > 0.5f)) found++;
                }
            }
            TestContext.Out.WriteLine($"found {found} of {total} squares at IoU > 0.5 with the right colour; top scores {string.Join(", ", before.Select(p => p.Score.FirstOrDefault().ToString("F2")))}");
            Assert.That(found, Is.GreaterThanOrEqualTo(total * 7 / 10), "squares are found in the original image's pixels (measured 10 of 10)");

            // The evaluator on the scored data agrees with ObjectDetectionEvaluator on the same boxes read back.
            var metrics = ml.MulticlassClassification.EvaluateObjectDetection(scored);
            var rows = ml.Data.CreateEnumerable<ScoredKeys>(scored, reuseRowObject: false).ToList();
            IReadOnlyList<IReadOnlyList<DetectionBox>> truth = rows.Select(r => (IReadOnlyList<DetectionBox>)Enumerable.Range(0, r.Label.Length)
                .Select(j => new DetectionBox(r.BoundingBoxes[4 * j], r.BoundingBoxes[4 * j + 1], r.BoundingBoxes[4 * j + 2], r.BoundingBoxes[4 * j + 3], (int)r.Label[j] - 1)).ToList()).ToList();
            IReadOnlyList<IReadOnlyList<DetectionBox>> detections = rows.Select(r => (IReadOnlyList<DetectionBox>)Enumerable.Range(0, r.PredictedLabel.Length)
                .Select(j => new DetectionBox(r.PredictedBoundingBoxes[4 * j], r.PredictedBoundingBoxes[4 * j + 1], r.PredictedBoundingBoxes[4 * j + 2], r.PredictedBoundingBoxes[4 * j + 3], (int)r.PredictedLabel[j] - 1, r.Score[j])).ToList()).ToList();
            var expected = ObjectDetectionEvaluator.Evaluate(truth, detections, Classes);
            TestContext.Out.WriteLine($"test mAP@0.5 {metrics.MeanAveragePrecision50:F3}, mAP {metrics.MeanAveragePrecision:F3}");
            Assert.That(metrics.MeanAveragePrecision50, Is.InRange(0.5, 1.0), "measured 0.97");
            Assert.That(metrics.MeanAveragePrecision50, Is.EqualTo(expected.MeanAveragePrecision50));
            Assert.That(metrics.MeanAveragePrecision, Is.EqualTo(expected.MeanAveragePrecision));
            Assert.That(metrics.ClassNames, Is.EqualTo(Classes));
            // The whole pipeline's output, whose PredictedLabel MapKeyToValue turned into class names, evaluates the same.
            var viaNames = ml.MulticlassClassification.EvaluateObjectDetection(model.Transform(testData));
            Assert.That(viaNames.MeanAveragePrecision50, Is.EqualTo(metrics.MeanAveragePrecision50));
            Assert.That(viaNames.MeanAveragePrecision, Is.EqualTo(metrics.MeanAveragePrecision));

            Assert.That(metrics.GroundTruthCount, Is.EqualTo(test.Sum(r => r.Label.Length)));

            // Save: adapters, pyramid and head only; loading scores the same, and so does a prediction engine.
            var dir = ImageTestImages.TempDirectory("peft-detection");
            try
            {
                var file = Path.Combine(dir, "model.zip");
                ml.Model.Save(model, ml.Data.LoadFromEnumerable(train).Schema, file);
                long baseBytes = new FileInfo(Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx")).Length;
                long size = new FileInfo(file).Length;
                TestContext.Out.WriteLine($"model file {size:N0} bytes, base model {baseBytes:N0}");
                Assert.That(size, Is.LessThan(baseBytes / 10), "no base weights in the file");
                using (var zip = ZipFile.OpenRead(file))
                    Assert.That(zip.Entries.Select(e => e.FullName), Has.None.Contains(".onnx"));
                // Loading checks what it reads: settings out of range and tensors of the wrong shape are refused, naming what is wrong.
                foreach (var (field, value, named) in new (string, int, string)[] { ("image_size", 100, "ImageSize 100"), ("num_labels", 0, "0 object classes"), ("channels", 12, "head width 12") })
                {
                    var bad = SafeLoadingTests.RewriteEntry(file, "Metadata.json", b => SafeLoadingTests.EditMetadata(b, json => json["task_settings"]![field] = value));
                    var e = Assert.Catch(() => ml.Model.LoadPeft(bad, new PeftLoadOptions(), out _))!;
                    Assert.That(e.ToString(), Does.Contain(named), field);
                }
                var wrongClasses = SafeLoadingTests.RewriteEntry(file, "Metadata.json", b => SafeLoadingTests.EditMetadata(b, json =>
                {
                    json["task_settings"]!["num_labels"] = 3;
                    json["task_settings"]!["label_values"] = new System.Text.Json.Nodes.JsonArray("red", "blue", "green");
                }));
                Assert.That(Assert.Catch(() => ml.Model.LoadPeft(wrongClasses, new PeftLoadOptions(), out _))!.ToString(), Does.Contain("head.cls_logits"), "the saved head has 2 classes, not 3");
                var loaded = ml.Model.Load(file, out _);
                try
                {
                    var after = Predictions(ml, loaded, testData);
                    for (int i = 0; i < before.Count; i++)
                    {
                        Assert.That(after[i].PredictedLabel, Is.EqualTo(before[i].PredictedLabel), $"row {i}");
                        Assert.That(after[i].Score, Is.EqualTo(before[i].Score).Within(1e-4f), $"row {i}");
                        Assert.That(after[i].PredictedBoundingBoxes, Is.EqualTo(before[i].PredictedBoundingBoxes).Within(1e-2f), $"row {i}");
                    }
                    // The pipeline maps the label first: a row to predict carries an empty one.
                    using var engine = ml.Model.CreatePredictionEngine<Row, Prediction>(loaded);
                    var one = engine.Predict(new Row { Image = test[3].Image });
                    Assert.That(one.PredictedLabel, Is.EqualTo(before[3].PredictedLabel));
                    Assert.That(one.PredictedBoundingBoxes, Is.EqualTo(before[3].PredictedBoundingBoxes).Within(1e-2f), "a prediction engine scores one image as the batch did");
                }
                finally
                {
                    Dispose(loaded);
                }
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        finally
        {
            Dispose(model);
        }
    }

    public sealed class ScoredKeys
    {
        public uint[] Label { get; set; } = Array.Empty<uint>();
        public float[] BoundingBoxes { get; set; } = Array.Empty<float>();
        [ColumnName("PredictedLabel")] public uint[] PredictedLabel { get; set; } = Array.Empty<uint>();
        public float[] Score { get; set; } = Array.Empty<float>();
        public float[] PredictedBoundingBoxes { get; set; } = Array.Empty<float>();
    }

    [Test]
    public void FrozenBackboneBitFitAndFullFineTuningTrain()
    {
        var ml = new MLContext(2);
        var data = ml.Data.LoadFromEnumerable(Scenes(8, 3, 64, 64));
        var counts = new Dictionary<string, long>();
        foreach (var (name, configure) in new (string, Action<PeftObjectDetectionTrainer.Options>)[]
        {
            ("frozen", o => o.FreezeBackbone = true),
            ("bitfit", o => o.Method = new BitFitOptions()),
            ("full", o => o.Method = new FullFineTuningOptions()),
        })
        {
            var options = SmallOptions();
            options.MaxEpoch = 1;
            configure(options);
            var model = Pipeline(ml, options).Fit(data);
            try
            {
                var peft = ((IEnumerable<ITransformer>)model).OfType<PeftObjectDetectionTransformer>().Single();
                Assert.That(double.IsFinite(peft.TrainingHistory.Single().TrainingLoss), name);
                counts[name] = peft.TrainableParameterCount;
                if (name == "frozen") Assert.That(peft.Method, Is.EqualTo("LINEAR_PROBE"));
            }
            finally
            {
                Dispose(model);
            }
        }
        TestContext.Out.WriteLine(string.Join(", ", counts.Select(c => $"{c.Key} {c.Value:N0}")));
        Assert.That(counts["frozen"], Is.LessThan(counts["bitfit"]));
        Assert.That(counts["bitfit"], Is.LessThan(counts["full"]));
        Assert.That(counts["full"] - counts["frozen"], Is.GreaterThan(10_000_000), "full fine-tuning trains ResNet-18's 11M parameters too");
    }

    [Test]
    public void CachedImagesMapBoxesBackToTheOriginalPixels()
    {
        // A 200 x 100 image cached at a longer side of 64 is 64 x 32; a box maps there and back.
        var rgb = new byte[200 * 100 * 3];
        var image = CachedImage.Read(() => new Inputs.Images.DecodedImage(200, 100, rgb, "test"), 64);
        Assert.That((image.Image.Width, image.Image.Height, image.OriginalWidth, image.OriginalHeight), Is.EqualTo((64, 32, 200, 100)));
        var box = new DetectionBox(50, 20, 150, 80, 1);
        var cached = image.ToCached(box);
        Assert.That(cached.XMin, Is.EqualTo(16f).Within(1e-4f));
        Assert.That(cached.YMax, Is.EqualTo(25.6f).Within(1e-4f));
        var back = image.ToOriginal(cached);
        Assert.That(new[] { back.XMin, back.YMin, back.XMax, back.YMax }, Is.EqualTo(new[] { 50f, 20f, 150f, 80f }).Within(1e-3f));
        // Letterboxing the 64 x 32 cache onto a 64 canvas: offset 16 rows; the canvas box (16, 22.4, 48, 41.6) is the original box.
        var (_, _, transform) = BoxAugmentation.Letterbox(new ChwImage(new float[3 * 64 * 32], 3, 32, 64), Array.Empty<DetectionBox>(), 64);
        var original = image.ToOriginal(transform.ToImage(new DetectionBox(16, 22.4f, 48, 41.6f, 0)));
        Assert.That(new[] { original.XMin, original.YMin, original.XMax, original.YMax }, Is.EqualTo(new[] { 50f, 20f, 150f, 80f }).Within(1e-3f));
    }

    [Test]
    public void ImageSizeMustBeAMultipleOf32()
    {
        var ml = new MLContext(1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftObjectDetection(new PeftObjectDetectionTrainer.Options { ImageSize = 100 }));
        Assert.That(e!.Message, Does.Contain("ImageSize").And.Contain("multiple of 32").And.Contain("96"));
    }

    private static Exception FitError(Row bad, int rowIndex = 2, bool scalarLabel = false)
    {
        var ml = new MLContext(1);
        var rows = Scenes(4, 7, 64, 64);
        rows.Insert(rowIndex, bad);
        var options = SmallOptions();
        options.MaxEpoch = 1;
        IDataView data = ml.Data.LoadFromEnumerable(rows);
        if (scalarLabel)
        {
            data = ml.Data.LoadFromEnumerable(rows.Select(r => new { r.Image, Label = r.Label.FirstOrDefault() ?? "red", r.BoundingBoxes }));
            return Assert.Catch(() => ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftObjectDetection(options)).Fit(data))!;
        }
        return Assert.Catch(() => Pipeline(ml, options).Fit(data))!;
    }

    [Test]
    public void BadInputErrorsNameTheColumnAndRow()
    {
        var random = new Random(4);
        var good = Scene(random, 64, 64, 1);

        var mismatch = FitError(new Row { Image = good.Image, Label = new[] { "red" }, BoundingBoxes = new float[] { 1, 2, 30 } });
        Assert.That(mismatch.Message, Does.Contain("Row 3").And.Contain("'BoundingBoxes'").And.Contain("'Label'").And.Contain("4 per key"));

        var inverted = FitError(new Row { Image = good.Image, Label = new[] { "red" }, BoundingBoxes = new float[] { 30, 2, 10, 40 } });
        Assert.That(inverted.Message, Does.Contain("Row 3").And.Contain("'BoundingBoxes'").And.Contain("xmax must exceed xmin"));

        var outside = FitError(new Row { Image = good.Image, Label = new[] { "blue" }, BoundingBoxes = new float[] { 10, 10, 70, 40 } });
        Assert.That(outside.Message, Does.Contain("Row 3").And.Contain("'BoundingBoxes'").And.Contain("outside the 64x64 image"));

        var unknown = FitError(new Row { Image = good.Image, Label = new[] { "green" }, BoundingBoxes = new float[] { 10, 10, 20, 20 } });
        Assert.That(unknown.Message, Does.Contain("Row 3").And.Contain("'Label'"));

        var scalar = FitError(good, scalarLabel: true);
        Assert.That(scalar.Message, Does.Contain("'Label'").And.Contain("vector of keys"));

        // Within the 1-pixel tolerance, and a background image with no boxes: accepted.
        var ml = new MLContext(1);
        var rows = Scenes(4, 7, 64, 64);
        rows.Add(new Row { Image = good.Image, Label = new[] { "red" }, BoundingBoxes = new float[] { -0.5f, 0, 64.8f, 30 } });
        rows.Add(new Row { Image = good.Image });
        var options = SmallOptions();
        options.MaxEpoch = 1;
        var model = Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(rows));
        Dispose(model);
    }
}
