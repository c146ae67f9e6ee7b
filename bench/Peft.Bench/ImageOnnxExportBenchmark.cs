using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Tasks.ImageClassification;

namespace Peft.Bench;

/// <summary>
/// <c>export-onnx-image</c>: inference speed of a LoRA-tuned ResNet-18 exported to ONNX (adapter merged, batch
/// normalisation folded) in ONNX Runtime against the library's own batched inference (<c>transformer.Transform</c>) on
/// the same Fashion-MNIST test images. ONNX Runtime runs with all graph optimisations and one intra-op thread per core;
/// it is timed on the network alone and with the library's decoding and preprocessing
/// (<see cref="PeftImageClassificationTransformer.PreprocessImage"/>) added, which is what <c>Transform</c> also does.
/// </summary>
internal static class ImageOnnxExportBenchmark
{
    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- export-onnx-image [options]\n" +
        "  --rows N         test images scored (first N of t10k-images-idx3-ubyte.gz; default 400)\n" +
        "  --train-rows N   training images for the one-epoch LoRA model (default 200)\n" +
        "  --image-size S   side the network sees (default 96, the trainer's default)\n" +
        "  --batch N        images per batch, for both (default 32, the trainer's default)\n" +
        "  --repeats N      timed passes over the rows; the median is reported (default 3)\n" +
        $"  --data DIR       folder of Fashion-MNIST's .gz files (default {ImageComparison.DefaultDataFolder})\n" +
        "  --output FILE    results file (default bench/results/export-onnx-image.json)";

    private sealed class Prediction
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    public static int Run(IReadOnlyList<string> args, string root)
    {
        int rows = 400, trainRows = 200, imageSize = 96, batch = 32, repeats = 3;
        string data = ImageComparison.DefaultDataFolder;
        string output = Path.Combine(root, "bench", "results", "export-onnx-image.json");
        for (int i = 1; i < args.Count; i++)
        {
            string option = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{option} needs a value.");
            int Count()
            {
                var text = Value();
                return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0
                    ? v : throw new ArgumentException($"{option} must be a positive integer, got '{text}'.");
            }
            switch (option)
            {
                case "--rows": rows = Count(); break;
                case "--train-rows": trainRows = Count(); break;
                case "--image-size": imageSize = Count(); break;
                case "--batch": batch = Count(); break;
                case "--repeats": repeats = Count(); break;
                case "--data": data = Path.GetFullPath(Value()); break;
                case "--output": output = Path.GetFullPath(Value()); break;
                default: throw new ArgumentException($"Unknown option '{option}'.");
            }
        }

        string loadBefore = LoadAverage();
        var trainSet = FashionMnistSet.Read(data, train: true);
        var testSet = FashionMnistSet.Read(data, train: false);
        if (rows > testSet.Count) throw new ArgumentException($"--rows {rows} is more than the {testSet.Count:N0} test images.");
        if (trainRows > trainSet.Count) throw new ArgumentException($"--train-rows {trainRows} is more than the {trainSet.Count:N0} training images.");
        using var images = ImageSplit.Write(trainSet, testSet, trainRows, 0, rows);
        var ml = new MLContext(1);
        var train = images.Train.Select(r => Absolute(images, r)).ToList();
        var test = images.Test.Select(r => Absolute(images, r)).ToList();

        Program.Log($"Training LoRA (r=8 on every convolution) on {trainRows} images at {imageSize} x {imageSize}, 1 epoch ...");
        var options = new PeftImageClassificationTrainer.Options
        {
            ImageColumnName = nameof(ImageRow.ImagePath),
            ImageSize = imageSize,
            BatchSize = batch,
            MaxEpoch = 1,
            Seed = 1,
        };
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftImageClassification(options))
            .Fit(ml.Data.LoadFromEnumerable(train));
        var peft = ((IEnumerable<ITransformer>)model).OfType<PeftImageClassificationTransformer>().Single();
        try
        {
            var onnxFile = Path.Combine(images.Folder, "model.onnx");
            var watch = Stopwatch.StartNew();
            ml.Model.ExportPeftToOnnx(model, onnxFile);
            double exportSeconds = watch.Elapsed.TotalSeconds;
            long onnxBytes = new FileInfo(onnxFile).Length;
            Program.Log($"Exported {onnxBytes:N0} bytes in {exportSeconds:F1} s.");

            // Ours: Transform over the image paths, reading every Score (decoding, preprocessing and the network, batched).
            var testData = ml.Data.LoadFromEnumerable(test);
            float[][] ours = Array.Empty<float[]>();
            double OursPass()
            {
                var w = Stopwatch.StartNew();
                ours = ml.Data.CreateEnumerable<Prediction>(peft.Transform(testData), reuseRowObject: false).Select(p => p.Score).ToArray();
                return w.Elapsed.TotalSeconds;
            }
            OursPass();
            var oursSeconds = Median(Enumerable.Range(0, repeats).Select(_ => OursPass()));
            Program.Log($"Transform: {rows / oursSeconds:F1} images/s.");

            // The library's decoding and preprocessing, which the ONNX model's input needs.
            int per = 3 * imageSize * imageSize;
            var pixels = new float[rows * per];
            double PreprocessPass()
            {
                var w = Stopwatch.StartNew();
                Parallel.For(0, rows, i => peft.PreprocessImage(File.ReadAllBytes(test[i].ImagePath)).CopyTo(pixels.AsSpan(i * per, per)));
                return w.Elapsed.TotalSeconds;
            }
            PreprocessPass();
            var preprocessSeconds = Median(Enumerable.Range(0, repeats).Select(_ => PreprocessPass()));

            using var sessionOptions = new SessionOptions
            {
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                IntraOpNumThreads = Environment.ProcessorCount,
            };
            using var session = new InferenceSession(onnxFile, sessionOptions);
            var onnx = new float[rows][];
            double OnnxPass()
            {
                var w = Stopwatch.StartNew();
                for (int start = 0; start < rows; start += batch)
                {
                    int n = Math.Min(batch, rows - start);
                    var input = new DenseTensor<float>(pixels.AsMemory(start * per, n * per), new[] { n, 3, imageSize, imageSize });
                    using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor("image", input) }, new[] { "probabilities" });
                    var probabilities = results[0].AsTensor<float>();
                    int classes = probabilities.Dimensions[1];
                    for (int r = 0; r < n; r++) onnx[start + r] = Enumerable.Range(0, classes).Select(c => probabilities[r, c]).ToArray();
                }
                return w.Elapsed.TotalSeconds;
            }
            OnnxPass();
            var onnxSeconds = Median(Enumerable.Range(0, repeats).Select(_ => OnnxPass()));
            double maxDifference = ours.Zip(onnx, (a, b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Max()).Max();

            double oursRate = rows / oursSeconds, onnxRate = rows / onnxSeconds, endToEndRate = rows / (onnxSeconds + preprocessSeconds);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{rows} Fashion-MNIST test images at {imageSize} x {imageSize}, batch {batch}, {Environment.ProcessorCount} cores:\n" +
                $"  ours (Transform: decode, preprocess, TorchSharp) {oursRate,8:F1} images/s\n" +
                $"  ONNX Runtime, network only                       {onnxRate,8:F1} images/s  ({onnxRate / oursRate:F2}x ours)\n" +
                $"  ONNX Runtime + the library's preprocessing       {endToEndRate,8:F1} images/s  ({endToEndRate / oursRate:F2}x ours)\n" +
                $"  largest probability difference ONNX vs ours: {maxDifference:E2}"));

            var report = new JsonObject
            {
                ["benchmark"] = "export-onnx-image",
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}",
                ["commandLine"] = string.Join(' ', args),
                ["loadAverage"] = $"{loadBefore} before, {LoadAverage()} after (1, 5, 15 minutes; other processes share the cores)",
                ["model"] = $"LoRA r=8 alpha=16 on every convolution of ResNet-18 ({ImageSizeText(imageSize)}), 1 epoch on {trainRows} training images; merged on export",
                ["rows"] = rows,
                ["imageSize"] = imageSize,
                ["batch"] = batch,
                ["repeats"] = repeats,
                ["onnxBytes"] = onnxBytes,
                ["exportSeconds"] = Math.Round(exportSeconds, 2),
                ["oursImagesPerSecond"] = Math.Round(oursRate, 1),
                ["onnxNetworkImagesPerSecond"] = Math.Round(onnxRate, 1),
                ["preprocessImagesPerSecond"] = Math.Round(rows / preprocessSeconds, 1),
                ["onnxWithPreprocessingImagesPerSecond"] = Math.Round(endToEndRate, 1),
                ["onnxNetworkVsOurs"] = Math.Round(onnxRate / oursRate, 2),
                ["onnxWithPreprocessingVsOurs"] = Math.Round(endToEndRate / oursRate, 2),
                ["maxProbabilityDifference"] = maxDifference,
                ["onnxRuntime"] = "graph optimisations all, intra-op threads = cores, float32 CPU",
                ["ours"] = "PeftImageClassificationTransformer.Transform (adapter merged in memory), batched BatchSize images at a time; decoding and preprocessing included",
            };
            Directory.CreateDirectory(Path.GetDirectoryName(output)!);
            File.WriteAllText(output, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine($"Results written to {Path.GetRelativePath(root, output)}.");
            return 0;
        }
        finally
        {
            peft.Dispose();
        }
    }

    /// <summary>The system's load averages (Linux), or "unknown".</summary>
    private static string LoadAverage()
    {
        try
        {
            return string.Join(", ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
        catch (UnauthorizedAccessException)
        {
            return "unknown";
        }
    }

    private static string ImageSizeText(int size) => string.Create(CultureInfo.InvariantCulture, $"{size} x {size} inputs");

    private static ImageRow Absolute(ImageSplit split, ImageRow row) =>
        new() { ImagePath = Path.Combine(split.Folder, row.ImagePath), Label = row.Label };

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        return sorted[sorted.Length / 2];
    }
}
