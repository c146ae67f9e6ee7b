using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using Microsoft.ML.Peft.Samples;

namespace Peft.Bench;

/// <summary>
/// <c>detect</c>: object detection on the Raccoon photos (one class): a frozen backbone (feature pyramid and head only),
/// LoRA on every convolution and full fine-tuning, trained on the same images and evaluated on held-apart ones (mAP@0.5
/// and mAP@[0.5:0.95], COCO-style), with train seconds, images per second and model bytes against the base model's.
/// Targets: the best PEFT method reaches mAP@0.5 0.70 in at most 20 minutes of training with a file under 10% of the
/// base. Then a multi-class check on synthetic scenes (Fashion-MNIST items pasted on a canvas, boxes known).
/// </summary>
internal static class ObjectDetectionBenchmark
{
    public const string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- detect [options]\n" +
        "  --methods a,b       of probe (frozen backbone), lora, bitfit, full (default probe,lora,full)\n" +
        "  --epochs N          passes over the training images (default 20)\n" +
        "  --image-size N      side of the square the network sees (default 256)\n" +
        "  --held-out N        raccoon images held apart for evaluation, chosen by the seed (default 32 of 160)\n" +
        "  --synthetic N       synthetic multi-class scenes for the second check (default 160; 0 skips it)\n" +
        "  --fashion DIR       Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)\n" +
        "  --seed N            seed (default 1)\n" +
        "  --data DIR          the data folder (default ../shared/data)\n" +
        "  --output FILE       results file (default bench/results/detect-raccoon.json; the table goes beside it as .md)";

    private const double MapTarget = 0.70, SecondsTarget = 1200, SizeShareTarget = 0.10;

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var methods = new[] { "probe", "lora", "full" };
        int epochs = 20, imageSize = 256, heldOut = 32, synthetic = 160, seed = 1;
        string data = Path.Combine(root, "..", "shared", "data"), fashion = ImageComparison.DefaultDataFolder;
        string? output = null;
        for (int i = 1; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Int(int min) => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= min ? v : throw new ArgumentException($"{args[i]} needs a whole number of at least {min}.");
            switch (args[i])
            {
                case "--methods": methods = Value().Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries); break;
                case "--epochs": epochs = Int(1); break;
                case "--image-size": imageSize = Int(32); break;
                case "--held-out": heldOut = Int(1); break;
                case "--synthetic": synthetic = Int(0); break;
                case "--fashion": fashion = Value(); break;
                case "--seed": seed = Int(0); break;
                case "--data": data = Value(); break;
                case "--output": output = Value(); break;
                default: throw new ArgumentException($"Unknown option {args[i]}.");
            }
        }
        foreach (var m in methods)
            if (m is not ("probe" or "lora" or "bitfit" or "full")) throw new ArgumentException($"--methods: '{m}' is not one of probe, lora, bitfit, full.");

        var ml = PairBench.Context(seed, "PeftObjectDetection");
        var raccoon = Path.Combine(data, "raccoon");
        var all = ObjectDetectionDataset.Load(ml, Path.Combine(raccoon, "labels.csv"), Path.Combine(raccoon, "images"));
        if (heldOut >= all.ImageCount) throw new ArgumentException($"--held-out {heldOut} leaves no training image of {all.ImageCount}.");
        var order = Enumerable.Range(0, all.ImageCount).ToArray();
        new Random(seed).Shuffle(order);
        var testIndices = order.Take(heldOut).ToHashSet();
        var rows = ml.Data.CreateEnumerable<Row>(all.Data, reuseRowObject: false).ToList();
        var train = ml.Data.LoadFromEnumerable(rows.Where((_, i) => !testIndices.Contains(i)).ToList());
        var test = ml.Data.LoadFromEnumerable(rows.Where((_, i) => testIndices.Contains(i)).ToList());
        long baseBytes = new FileInfo(ImageBaseModelSource.ResNet18().Path).Length;
        Program.Log($"detect: {all.ImageCount - heldOut} training and {heldOut} held-apart raccoon images ({all.BoxCount} boxes in all), {epochs} epochs at {imageSize} px");

        var results = new JsonArray();
        foreach (var method in methods)
            results.Add(TrainAndEvaluate(ml, method, all.Classes, train, test, heldOut, epochs, imageSize, seed, baseBytes));

        JsonObject? syntheticResult = synthetic > 0 ? Synthetic(ml, fashion, synthetic, epochs, seed) : null;

        var peft = results.Select(r => r!.AsObject()).Where(r => r["method"]!.GetValue<string>() != "full").ToList();
        var best = peft.OrderByDescending(r => r["map50"]!.GetValue<double>()).FirstOrDefault();
        var report = new JsonObject
        {
            ["benchmark"] = "detect",
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["machine"] = PairBench.Machine(),
            ["command"] = "dotnet run -c Release --project bench/Peft.Bench -- " + string.Join(' ', args),
            ["data"] = $"raccoon: {all.ImageCount - heldOut} training images, {heldOut} held apart (seed {seed}); {epochs} epochs at {imageSize} px, batch 8",
            ["baseModelBytes"] = baseBytes,
            ["models"] = results,
            ["synthetic"] = syntheticResult,
            ["targets"] = best is null ? null : new JsonObject
            {
                ["bestPeftMethod"] = best["method"]!.GetValue<string>(),
                ["map50AtLeast0.70"] = best["map50"]!.GetValue<double>() >= MapTarget,
                ["trainedWithin1200s"] = best["trainSeconds"]!.GetValue<double>() <= SecondsTarget,
                ["modelUnder10PercentOfBase"] = best["modelBytes"]!.GetValue<long>() < SizeShareTarget * baseBytes,
            },
        };
        PairBench.Write(root, Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", "detect-raccoon.json")), report, Table(report));
        return 0;
    }

    private static JsonObject TrainAndEvaluate(MLContext ml, string method, IReadOnlyList<string> classes, IDataView train, IDataView test, int testImages,
        int epochs, int imageSize, int seed, long baseBytes)
    {
        var keyData = ml.Data.LoadFromEnumerable(classes.Select(c => new ClassRow { Label = c }).ToList());
        var labelToKey = ml.Transforms.Conversion.MapValueToKey("Label", keyData: keyData).Fit(train);
        var options = new PeftObjectDetectionTrainer.Options
        {
            ImageColumnName = "ImagePath",
            MaxEpoch = epochs,
            ImageSize = imageSize,
            Seed = seed,
            // COCO's evaluation keeps detections from 0.05: mAP needs the low-scored ones too.
            ScoreThreshold = 0.05f,
            FreezeBackbone = method == "probe",
            Method = method switch
            {
                "full" => new FullFineTuningOptions(),
                "bitfit" => new Microsoft.ML.Peft.Methods.BitFit.BitFitOptions(),
                _ => Microsoft.ML.Peft.Tasks.ImageClassification.PeftImageClassificationTrainer.Options.DefaultMethod(),
            },
            LearningRate = method == "full" ? 5e-4f : 1e-3f,
        };
        Program.Log($"detect: {method} ...");
        var watch = Stopwatch.StartNew();
        var detector = ml.MulticlassClassification.Trainers.PeftObjectDetection(options).Fit(labelToKey.Transform(train));
        double trainSeconds = watch.Elapsed.TotalSeconds;
        var model = new TransformerChain<ITransformer>(labelToKey, detector);
        try
        {
            watch.Restart();
            var scored = ml.Data.Cache(model.Transform(test));
            var metrics = ml.MulticlassClassification.EvaluateObjectDetection(scored);
            double scoreSeconds = watch.Elapsed.TotalSeconds;
            var path = Path.Combine(Path.GetTempPath(), $"peft-detect-{Guid.NewGuid():N}.zip");
            long bytes;
            try
            {
                ml.Model.Save(model, train.Schema, path);
                bytes = new FileInfo(path).Length;
            }
            finally
            {
                File.Delete(path);
            }
            var row = new JsonObject
            {
                ["method"] = method,
                ["description"] = method switch
                {
                    "probe" => "frozen backbone: feature pyramid and head only",
                    "lora" => "LoRA r=8, alpha 16 on every convolution, pyramid and head",
                    "bitfit" => "BitFit on the backbone, pyramid and head",
                    _ => "full fine-tuning of backbone, pyramid and head",
                },
                ["map50"] = Math.Round(metrics.MeanAveragePrecision50, 4),
                ["map"] = Math.Round(metrics.MeanAveragePrecision, 4),
                ["trainSeconds"] = Math.Round(trainSeconds, 1),
                ["testImagesPerSecond"] = Math.Round(testImages / scoreSeconds, 2),
                ["trainableParameters"] = detector.TrainableParameterCount,
                ["modelBytes"] = bytes,
                ["modelShareOfBase"] = Math.Round((double)bytes / baseBytes, 4),
                ["lossByEpoch"] = new JsonArray(detector.TrainingHistory.Select(e => (JsonNode?)JsonValue.Create(Math.Round(e.TrainingLoss, 4))).ToArray()),
            };
            Program.Log($"detect: {method}: mAP@0.5 {metrics.MeanAveragePrecision50:F4}, mAP {metrics.MeanAveragePrecision:F4}, {trainSeconds:F0} s, {bytes:N0} bytes");
            return row;
        }
        finally
        {
            detector.Dispose();
        }
    }

    /// <summary>The multi-class check: LoRA on synthetic scenes of 1-4 Fashion-MNIST items (10 classes), 80% to train, 20% to evaluate.</summary>
    private static JsonObject Synthetic(MLContext ml, string fashion, int count, int epochs, int seed)
    {
        var set = FashionMnistSet.Read(fashion, train: true);
        var scenes = SyntheticScenes.Generate(set.Pixels.Take(4000).ToList(), set.Labels.Take(4000).ToList(), count, seed);
        var folder = Path.Combine(Path.GetTempPath(), $"peft-scenes-{Guid.NewGuid():N}");
        try
        {
            SyntheticScenes.Write(folder, scenes, FashionMnist.ClassNames);
            var all = ObjectDetectionDataset.Load(ml, Path.Combine(folder, "labels.csv"), Path.Combine(folder, "images"), FashionMnist.ClassNames);
            var rows = ml.Data.CreateEnumerable<Row>(all.Data, reuseRowObject: false).ToList();
            int trainCount = rows.Count * 4 / 5;
            var train = ml.Data.LoadFromEnumerable(rows.Take(trainCount).ToList());
            var test = ml.Data.LoadFromEnumerable(rows.Skip(trainCount).ToList());
            var row = TrainAndEvaluate(ml, "lora", all.Classes, train, test, rows.Count - trainCount, epochs, 128, seed, new FileInfo(ImageBaseModelSource.ResNet18().Path).Length);
            row["data"] = $"{count} synthetic 128x128 scenes of 1-4 Fashion-MNIST items (10 classes), {trainCount} to train, {rows.Count - trainCount} to evaluate; image size 128";
            return row;
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private static string Table(JsonObject report)
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"Object detection: {report["data"]}; base model ResNet-18, {report["baseModelBytes"]!.GetValue<long>():N0} bytes.");
        s.AppendLine();
        s.AppendLine("| method | mAP@0.5 | mAP@[0.5:0.95] | train s | test images/s | trainable parameters | model bytes | share of base |");
        s.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report["models"]!.AsArray())
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {r!["description"]} | {r["map50"]!.GetValue<double>():F4} | {r["map"]!.GetValue<double>():F4} | {r["trainSeconds"]!.GetValue<double>():F0} | " +
                $"{r["testImagesPerSecond"]!.GetValue<double>():F1} | {r["trainableParameters"]!.GetValue<long>():N0} | {r["modelBytes"]!.GetValue<long>():N0} | {r["modelShareOfBase"]!.GetValue<double>():P1} |");
        if (report["synthetic"] is JsonObject syn)
        {
            s.AppendLine();
            s.AppendLine(CultureInfo.InvariantCulture, $"Multi-class check: {syn["data"]}: mAP@0.5 {syn["map50"]!.GetValue<double>():F4}, mAP {syn["map"]!.GetValue<double>():F4} ({syn["trainSeconds"]!.GetValue<double>():F0} s).");
        }
        if (report["targets"] is JsonObject t)
        {
            s.AppendLine();
            s.AppendLine(CultureInfo.InvariantCulture,
                $"Targets (best PEFT method, {t["bestPeftMethod"]}): mAP@0.5 >= 0.70: {Yes(t["map50AtLeast0.70"])}; trained within 20 minutes: {Yes(t["trainedWithin1200s"])}; file under 10% of the base: {Yes(t["modelUnder10PercentOfBase"])}.");
        }
        return s.ToString();
    }

    private static string Yes(JsonNode? n) => n?.GetValue<bool>() == true ? "met" : "NOT met";

    private sealed class Row
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
