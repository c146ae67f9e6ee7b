using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

using Command = System.CommandLine.Command;

/// <summary>
/// <c>object-detection</c>: fine-tune a detector (ResNet backbone, feature pyramid, FCOS head) on labelled photos (a CSV
/// of boxes or Pascal VOC XML files, and an images folder), evaluate mAP on held-out images, save.
/// </summary>
internal static class ObjectDetectionCommand
{
    public const string PredictedLabelColumn = "PredictedLabel";

    public static Command Create()
    {
        var defaults = new PeftObjectDetectionTrainer.Options();
        var dataset = new Option<string>("--dataset") { Description = "The training labels: a CSV file (filename,width,height,class,xmin,ymin,xmax,ymax; one row per box) or a folder of Pascal VOC XML files.", Required = true };
        var images = new Option<string>("--images") { Description = "The folder of the training images (the labels' file names are relative to it).", Required = true };
        var test = new Option<string>("--test-dataset") { Description = "Test labels (same layouts) for the final metrics. Default: 20% of the training images are held out." };
        var testImages = new Option<string>("--test-images") { Description = "The folder of the test images (default: --images)." };
        var model = new Option<string>("--model") { Description = "The base model: an ONNX ResNet, or a torchvision ResNet state dict (.safetensors). Default: ResNet-18 of Microsoft.ML.DnnImageFeaturizer.ResNet18." };
        var method = new Option<string>("--method")
        {
            Description = "The PEFT method of the backbone: " + string.Join("; ", MethodChoices.Methods.Where(m => MethodChoices.ImageMethods.Contains(m.Name)).Select(m => $"{m.Name} ({m.Description})")) +
                ". probe freezes the backbone. The feature pyramid and the head always train in full.",
            DefaultValueFactory = _ => "lora",
        };
        var methodOptions = MethodChoices.CreateOptions();
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training images.", DefaultValueFactory = _ => defaults.MaxEpoch }.AtLeast(1);
        var batchSize = new Option<int>("--batch-size") { Description = "Images per training step.", DefaultValueFactory = _ => defaults.BatchSize }.AtLeast(1);
        var learningRate = new Option<float?>("--learning-rate") { Description = $"Peak learning rate of AdamW (default {defaults.LearningRate.ToString(CultureInfo.InvariantCulture)}, lower for full fine-tuning: 5e-4)." };
        var imageSize = new Option<int>("--image-size") { Description = "Side of the square the network sees, in pixels (a multiple of 32).", DefaultValueFactory = _ => defaults.ImageSize }.AtLeast(32);
        var scoreThreshold = new Option<float>("--score-threshold") { Description = "Boxes scoring below this are not reported (the saved model keeps it).", DefaultValueFactory = _ => defaults.ScoreThreshold };
        var iouThreshold = new Option<float>("--iou-threshold") { Description = "Non-maximum suppression: of two boxes of a class overlapping more than this, the lower-scored is dropped.", DefaultValueFactory = _ => defaults.IOUThreshold };
        foreach (var o in new[] { scoreThreshold, iouThreshold })
            o.Validators.Add(r => { if (r.GetValueOrDefault<float>() is var v && !(v >= 0 && v <= 1)) r.AddError($"{o.Name} must be in [0, 1]; got {v.ToString(CultureInfo.InvariantCulture)}."); });
        var noAugment = new Option<bool>("--no-augmentation") { Description = "Turn off flips, scale jitter and crops." };
        var maxRows = new Option<int?>("--max-rows") { Description = "Use at most this many images of each dataset (the first ones)." };
        maxRows.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is <= 0 and var v) r.AddError($"--max-rows must be positive; got {v}."); });
        var seed = new Option<int>("--seed") { Description = "Seed of the split, initialisation, augmentation and shuffling.", DefaultValueFactory = _ => defaults.Seed };
        var embed = new Option<bool>("--embed-base-model") { Description = "Store the base model inside the saved model (self-contained, larger file)." };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Also write the metrics (map50, map, trainSeconds, trainableParameters, modelBytes...) to this JSON file." };
        var events = new Option<string>("--events")
        {
            Description = "Also write the training's progress to this file as JSON lines, as auto --events does (one trial; an epoch event after each pass with its training loss; done with the test mAP).",
        };

        var command = new Command("object-detection", "Fine-tune an object detector (ResNet backbone with a PEFT method, feature pyramid and FCOS head) on labelled photos, evaluate its mAP and save it as an ML.NET model.")
        {
            dataset, images, test, testImages, model, method, epochs, batchSize, learningRate, imageSize, scoreThreshold, iouThreshold, noAugment,
            maxRows, seed, embed, output, metricsJson, events,
        };
        foreach (var option in methodOptions) command.Options.Add(option.Option);
        command.SetAction(parse =>
        {
            string methodName = parse.GetValue(method)!;
            return Run(new Settings(
                Dataset: parse.GetValue(dataset)!,
                Images: parse.GetValue(images)!,
                TestDataset: parse.GetValue(test),
                TestImages: parse.GetValue(testImages),
                Model: parse.GetValue(model),
                MethodName: methodName,
                Method: MethodChoices.Create(methodName, parse, methodOptions, forImages: true),
                Epochs: parse.GetValue(epochs),
                BatchSize: parse.GetValue(batchSize),
                LearningRate: parse.GetValue(learningRate) ?? (methodName == "full" ? 5e-4f : defaults.LearningRate),
                ImageSize: parse.GetValue(imageSize),
                ScoreThreshold: parse.GetValue(scoreThreshold),
                IouThreshold: parse.GetValue(iouThreshold),
                Augment: !parse.GetValue(noAugment),
                MaxRows: parse.GetValue(maxRows),
                Seed: parse.GetValue(seed),
                EmbedBaseModel: parse.GetValue(embed),
                Output: parse.GetValue(output)!,
                MetricsJson: parse.GetValue(metricsJson),
                Events: parse.GetValue(events)));
        });
        return command;
    }

    private sealed record Settings(
        string Dataset, string Images, string? TestDataset, string? TestImages, string? Model, string MethodName, PeftMethodOptions Method, int Epochs,
        int BatchSize, float LearningRate, int ImageSize, float ScoreThreshold, float IouThreshold, bool Augment, int? MaxRows, int Seed,
        bool EmbedBaseModel, string Output, string? MetricsJson, string? Events);

    private static int Run(Settings s)
    {
        var console = Terminal.Out;
        if (s.TestImages is not null && s.TestDataset is null) throw new UsageException("--test-images needs --test-dataset.");
        if (s.ImageSize % 32 != 0) throw new UsageException($"--image-size must be a multiple of 32 (the backbone's stride); got {s.ImageSize}, try {Math.Max(32, s.ImageSize / 32 * 32)} or {(s.ImageSize / 32 + 1) * 32}.");
        ImageBaseModelSource? baseModel = null;
        if (s.Model is not null)
        {
            if (!File.Exists(s.Model)) throw new FileNotFoundException($"The base model '{s.Model}' (--model) does not exist: give an ONNX ResNet or a torchvision .safetensors file.", s.Model);
            baseModel = ImageBaseModelSource.FromPath(s.Model);
        }
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");
        var eventsPath = s.Events is null ? null : OutputFiles.Check(s.Events, "--events");

        // Every input is read and checked before the (slow) training starts.
        var mlContext = new MLContext(s.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        var all = Load(mlContext, s.Dataset, s.Images, null, s.MaxRows, "--dataset", "--images");
        ObjectDetectionDataset? testSet = s.TestDataset is null ? null
            : Load(mlContext, s.TestDataset, s.TestImages ?? s.Images, all.Classes, s.MaxRows, "--test-dataset", s.TestImages is null ? "--images" : "--test-images");
        IDataView train = all.Data, testData;
        IReadOnlyList<int> testRows;
        if (testSet is not null)
        {
            testData = testSet.Data;
            testRows = Enumerable.Range(0, testSet.ImageCount).ToList();
        }
        else
        {
            if (all.ImageCount < 5) throw new InvalidDataException($"{all.ImageCount} images are too few to hold 20% out for testing; give --test-dataset.");
            // A seeded fifth of the images, at least one, is held out.
            var order = Enumerable.Range(0, all.ImageCount).ToArray();
            new Random(s.Seed).Shuffle(order);
            testRows = order.Take(Math.Max(1, all.ImageCount / 5)).Order().ToList();
            var held = testRows.ToHashSet();
            train = Subset(mlContext, all.Data, i => !held.Contains(i));
            testData = Subset(mlContext, all.Data, held.Contains);
            console.MarkupLine($"No --test-dataset: {testRows.Count} of {all.ImageCount} images (20%) are held out for testing.");
        }

        var keyData = mlContext.Data.LoadFromEnumerable(all.Classes.Select(c => new ClassRow { Label = c }));
        var labelToKey = mlContext.Transforms.Conversion.MapValueToKey(ObjectDetectionDataset.LabelColumnName, keyData: keyData).Fit(train);
        var options = new PeftObjectDetectionTrainer.Options
        {
            LabelColumnName = ObjectDetectionDataset.LabelColumnName,
            BoundingBoxColumnName = ObjectDetectionDataset.BoundingBoxColumnName,
            ImageColumnName = ObjectDetectionDataset.ImagePathColumnName,
            BaseModel = baseModel,
            Method = s.Method,
            FreezeBackbone = s.MethodName == "probe",
            MaxEpoch = s.Epochs,
            BatchSize = s.BatchSize,
            LearningRate = s.LearningRate,
            ImageSize = s.ImageSize,
            ScoreThreshold = s.ScoreThreshold,
            IOUThreshold = s.IouThreshold,
            Augmentation = s.Augment ? new BoxAugmentationOptions() : BoxAugmentationOptions.None,
            Seed = s.Seed,
            EmbedBaseModel = s.EmbedBaseModel,
        };
        using var progress = Auto.AutoEvents.Open(eventsPath);
        var trainer = mlContext.MulticlassClassification.Trainers.PeftObjectDetection(options);
        if (progress is not null)
        {
            // One trial, the chosen settings: the same events as auto's, so that a follower draws the loss per epoch.
            progress.Search("object-detection", "map50", higherIsBetter: true, budgetSeconds: null);
            progress.Trial(1, new[]
            {
                ("method", s.MethodName), ("epochs", s.Epochs.ToString(CultureInfo.InvariantCulture)), ("batchSize", s.BatchSize.ToString(CultureInfo.InvariantCulture)),
                ("learningRate", s.LearningRate.ToString("R", CultureInfo.InvariantCulture)), ("imageSize", s.ImageSize.ToString(CultureInfo.InvariantCulture)),
            }, null);
            trainer.EpochCompleted += (_, m) => progress.Epoch(1, m.Epoch, m.MaxEpoch, m.TrainingLoss, m.ValidationMetric, m.MetricName);
        }
        var watch = Stopwatch.StartNew();
        var detector = TrainingProgress.Run(mlContext, console, "Training", () => trainer.Fit(labelToKey.Transform(train)));
        double trainSeconds = watch.Elapsed.TotalSeconds;
        var trained = new TransformerChain<ITransformer>(labelToKey, detector, mlContext.Transforms.Conversion.MapKeyToValue(PredictedLabelColumn).Fit(detector.Transform(labelToKey.Transform(train))));
        try
        {
            watch.Restart();
            var metrics = TrainingProgress.Run(mlContext, console, "Evaluating", () =>
                mlContext.MulticlassClassification.EvaluateObjectDetection(trained.Transform(testData)));
            double evaluateSeconds = watch.Elapsed.TotalSeconds;
            OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(trained, train.Schema, temporary));
            long modelBytes = new FileInfo(outputPath).Length;
            var json = new JsonObject
            {
                ["task"] = "object-detection",
                ["map50"] = Math.Round(metrics.MeanAveragePrecision50, 6),
                ["map"] = Math.Round(metrics.MeanAveragePrecision, 6),
                ["map75"] = Math.Round(metrics.MeanAveragePrecision75, 6),
                ["perClassAp50"] = new JsonObject(metrics.ClassNames.Select((c, i) => KeyValuePair.Create(c, (JsonNode?)JsonValue.Create(Math.Round(metrics.PerClassAveragePrecision50[i], 6))))),
                ["trainSeconds"] = Math.Round(trainSeconds, 3),
                ["testImagesPerSecond"] = Math.Round(testRows.Count / Math.Max(evaluateSeconds, 1e-9), 3),
                ["trainableParameters"] = detector.TrainableParameterCount,
                ["totalParameters"] = detector.TotalParameterCount,
                ["modelBytes"] = modelBytes,
                ["method"] = s.MethodName,
                ["epochs"] = s.Epochs,
                ["imageSize"] = s.ImageSize,
                ["trainImages"] = all.ImageCount - (testSet is null ? testRows.Count : 0),
                ["testImages"] = testRows.Count,
                ["testBoxes"] = metrics.GroundTruthCount,
                ["classes"] = new JsonArray(all.Classes.Select(c => (JsonNode?)JsonValue.Create(c)).ToArray()),
            };
            var table = new Table().Title("Object detection").AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
            table.AddRow("mAP@0.5", F(metrics.MeanAveragePrecision50, "F4"));
            table.AddRow("mAP@[[0.5:0.95]]", F(metrics.MeanAveragePrecision, "F4"));
            table.AddRow("Test images (boxes)", $"{testRows.Count} ({metrics.GroundTruthCount})");
            table.AddRow("Training time (s)", F(trainSeconds, "F1"));
            table.AddRow("Trainable parameters", Markup.Escape($"{detector.TrainableParameterCount.ToString("N0", CultureInfo.InvariantCulture)} of {detector.TotalParameterCount.ToString("N0", CultureInfo.InvariantCulture)} " +
                $"({F(100.0 * detector.TrainableParameterCount / Math.Max(1, detector.TotalParameterCount), "F2")}%)"));
            table.AddRow("Method", Markup.Escape(s.MethodName));
            table.AddRow("Base model", Markup.Escape(detector.BaseModelDescription));
            table.AddRow("Image size", $"{s.ImageSize} x {s.ImageSize}");
            table.AddRow("Model file (bytes)", modelBytes.ToString("N0", CultureInfo.InvariantCulture));
            console.Write(table);
            console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
            if (metricsPath is not null)
            {
                OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + Environment.NewLine));
                console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
            }
            // The trial's metric is the test mAP@0.5: there is no validation set.
            progress?.TrialEnd(1, "completed", metrics.MeanAveragePrecision50, trainSeconds, null);
            progress?.Done(1, null, new[] { ("map50", metrics.MeanAveragePrecision50), ("map", metrics.MeanAveragePrecision), ("map75", metrics.MeanAveragePrecision75) });
            return 0;
        }
        finally
        {
            foreach (var disposable in trained.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    private static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

    private static ObjectDetectionDataset Load(MLContext mlContext, string labels, string images, IReadOnlyList<string>? classes, int? maxRows, string labelsOption, string imagesOption)
    {
        if (!File.Exists(labels) && !Directory.Exists(labels)) throw new FileNotFoundException($"The labels '{labels}' ({labelsOption}) do not exist: give a CSV file or a folder of Pascal VOC XML files.", labels);
        if (!Directory.Exists(images)) throw new DirectoryNotFoundException($"The images folder '{images}' ({imagesOption}) does not exist.");
        return ObjectDetectionDataset.Load(mlContext, labels, images, classes, maxRows);
    }

    /// <summary>The rows of <paramref name="data"/> whose index <paramref name="keep"/> accepts.</summary>
    private static IDataView Subset(MLContext mlContext, IDataView data, Func<int, bool> keep)
    {
        var rows = mlContext.Data.CreateEnumerable<DatasetRow>(data, reuseRowObject: false).Where((_, i) => keep(i)).ToList();
        return mlContext.Data.LoadFromEnumerable(rows);
    }

    private sealed class DatasetRow
    {
        public string ImagePath { get; set; } = "";
        public string[] Label { get; set; } = Array.Empty<string>();
        public float[] BoundingBoxes { get; set; } = Array.Empty<float>();
    }

    private sealed class ClassRow
    {
        public string Label { get; set; } = "";
    }
}
