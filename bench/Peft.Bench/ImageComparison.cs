using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Samples;
using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Peft.Bench;

/// <summary>
/// <c>images</c>: image classification on Fashion-MNIST, ML.NET's own transfer learning against PEFT fine-tuning of a
/// ResNet, on the same images. The images are written as PNG files and read back by ML.NET's LoadImages, as an ML.NET
/// user's images would be. Rows: <c>mlnet</c> is ML.NET's path (LoadImages, ResizeImages 224x224, ExtractPixels,
/// DnnFeaturizeImage with ResNet18, LbfgsMaximumEntropy on the 512 features); PEFT rows come from <see cref="RunPeft"/>.
/// A run of some methods replaces their rows in the results file and keeps the others (same data and seed only).
/// </summary>
internal static class ImageComparison
{
    public const string DefaultDataFolder = "/usr/share/datasets/fashion-mnist";
    public const int DefaultTrainRows = 10_000;
    public const int DefaultValidationRows = 2_000;
    public const int DefaultTestRows = 10_000;
    /// <summary>Side of the square images ResNet18 is fed (ML.NET's ResizeImages; the PEFT rows upsample to the same).</summary>
    public const int ImageSize = 224;
    public const string MlNet = "mlnet";

    /// <summary>Names --methods accepts: mlnet, then the PEFT methods' names (as in <c>methods</c>).</summary>
    public static readonly string[] KnownMethods = new[] { MlNet }.Concat(ImageRecipe.Names).ToArray();

    public static readonly string Usage = string.Create(CultureInfo.InvariantCulture,
        $"usage: dotnet run -c Release --project bench/Peft.Bench -- images [options]\n" +
        $"  --methods a,b,...   rows to run (default: {MlNet}): {string.Join(", ", KnownMethods)}\n" +
        $"  --train-rows N      the first N images of train-images-idx3-ubyte.gz to train on (default {DefaultTrainRows:N0})\n" +
        $"  --validation-rows N the last N images of the same file, for choosing a PEFT recipe; never reported (default {DefaultValidationRows:N0})\n" +
        $"  --test-rows N       the first N images of t10k-images-idx3-ubyte.gz to evaluate on (default: all {DefaultTestRows:N0})\n" +
        $"  --seed N            seed of the MLContext and of the PEFT trainers (default 1)\n" +
        $"  --output FILE       results file (default bench/results/images-fashion-mnist.json at the default sizes, images-fashion-mnist-small.json\n" +
        $"                      otherwise, which git ignores); the Markdown table goes beside it as .md\n" +
        $"  --data DIR          folder of Fashion-MNIST's .gz files (default {DefaultDataFolder}, Debian's dataset-fashion-mnist)");

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var options = ImageBenchOptions.Parse(args);
        var train = FashionMnistSet.Read(options.DataFolder, train: true);
        var test = FashionMnistSet.Read(options.DataFolder, train: false);
        if (options.TrainRows + options.ValidationRows > train.Count)
            throw new ArgumentException($"--train-rows {options.TrainRows} and --validation-rows {options.ValidationRows} add up to more than the {train.Count:N0} training images.");
        if (options.TestRows > test.Count)
            throw new ArgumentException($"--test-rows {options.TestRows} is more than the {test.Count:N0} test images.");
        bool defaultSizes = options.TrainRows == DefaultTrainRows && options.ValidationRows == DefaultValidationRows && options.TestRows == DefaultTestRows;
        var resultsFile = Path.GetFullPath(options.Output ?? Path.Combine(root, "bench", "results",
            defaultSizes ? "images-fashion-mnist.json" : "images-fashion-mnist-small.json"));

        var watch = Stopwatch.StartNew();
        using var images = ImageSplit.Write(train, test, options.TrainRows, options.ValidationRows, options.TestRows);
        Program.Log($"Fashion-MNIST: {images.Description}; PNG files written in {watch.Elapsed.TotalSeconds:F1} s to {images.Folder}. " +
            $"Methods {string.Join(", ", options.Methods)}, seed {options.Seed}, {Environment.ProcessorCount} cores.");

        var ml = new MLContext(options.Seed);
        ml.Log += (_, e) =>
        {
            if (e.Kind is ChannelMessageKind.Warning or ChannelMessageKind.Error ||
                (e.Kind == ChannelMessageKind.Info && e.Source.StartsWith("Peft", StringComparison.Ordinal)))
                Program.Log(e.Message);
        };

        var setup = new JsonObject
        {
            ["trainRows"] = options.TrainRows,
            ["validationRows"] = options.ValidationRows,
            ["testRows"] = options.TestRows,
            ["imageSize"] = ImageSize,
            ["seed"] = options.Seed,
        };
        var report = File.Exists(resultsFile) ? JsonNode.Parse(File.ReadAllText(resultsFile))!.AsObject() : new JsonObject();
        if (report.Count > 0 && !JsonNode.DeepEquals(report["setup"], setup))
        {
            Program.Log($"{Path.GetFileName(resultsFile)} holds results of other data sizes or another seed; starting it afresh.");
            report = new JsonObject();
        }
        report["benchmark"] = "images";
        report["dataset"] = "fashion-mnist";
        report["data"] = images.Description;
        report["commandLine"] = "images " + string.Join(' ', args.Skip(1));
        report["setup"] = setup;
        var rows = report["methods"] as JsonArray ?? new JsonArray();
        report["methods"] = rows;

        foreach (var method in options.Methods)
        {
            double? load = LoadAverage();
            var row = method == MlNet ? RunMlNet(ml, images) : RunPeft(ml, method, images, options);
            Program.Log(row.Describe());
            var node = row.ToJson();
            // Other work on the machine slows the timed figures (not the accuracy); the 1-minute load average tells by how much.
            node["loadAverageAtStart"] = load;
            node["loadAverageAtEnd"] = LoadAverage();
            node["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            node["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}";
            var existing = rows.Select((r, index) => (r, index)).FirstOrDefault(x => x.r?["method"]?.GetValue<string>() == method);
            if (existing.r is not null) rows[existing.index] = node;
            else rows.Add(node);
            var ordered = rows.Select(r => r!.DeepClone()).OrderBy(r => Array.IndexOf(KnownMethods, r["method"]!.GetValue<string>())).ToList();
            rows.Clear();
            foreach (var r in ordered) rows.Add(r);
            Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
            // Relaxed escaping keeps "+" and "/" readable in the file.
            File.WriteAllText(resultsFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
            File.WriteAllText(Path.ChangeExtension(resultsFile, ".md"), Table(report));
        }
        Console.WriteLine(Table(report));
        Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)} and {Path.GetRelativePath(root, Path.ChangeExtension(resultsFile, ".md"))}.");
        return 0;
    }

    /// <summary>
    /// ML.NET's transfer learning as its documentation writes it: LoadImages, ResizeImages to 224x224, ExtractPixels
    /// (planar, 0..255: ResNet18's preprocessing model normalises), DnnFeaturizeImage with the ResNet18 package's ONNX
    /// models (the 512 pooled features), LbfgsMaximumEntropy on them. A cache checkpoint before the trainer keeps the
    /// features of the training images in memory, so each image goes through ResNet18 once.
    /// </summary>
    private static ImageMethodRow RunMlNet(MLContext ml, ImageSplit images)
    {
        var resNet = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        if (!File.Exists(resNet))
            throw new FileNotFoundException($"{resNet} does not exist: the Microsoft.ML.DnnImageFeaturizer.ResNet18 package copies it beside the application when it builds.", resNet);
        Program.Log($"{MlNet}: LoadImages, ResizeImages {ImageSize}x{ImageSize}, ExtractPixels, DnnFeaturizeImage (ResNet18), LbfgsMaximumEntropy ...");
        var train = ml.Data.LoadFromEnumerable(images.Train);
        var test = ml.Data.LoadFromEnumerable(images.Test);
        var labels = ml.Data.LoadFromEnumerable(FashionMnist.ClassNames.Select(n => new LabelRow { Label = n }).ToList());
        var pipeline = ml.Transforms.Conversion.MapValueToKey(nameof(ImageRow.Label), keyData: labels)
            .Append(ml.Transforms.LoadImages("Image", images.Folder, nameof(ImageRow.ImagePath)))
            .Append(ml.Transforms.ResizeImages("Image", imageWidth: ImageSize, imageHeight: ImageSize))
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(ml.Transforms.DnnFeaturizeImage("Features", m => m.ModelSelector.ResNet18(ml, m.OutputColumn, m.InputColumn), "Pixels"))
            .AppendCacheCheckpoint(ml)
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(nameof(ImageRow.Label), "Features"))
            .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));

        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();

        var schema = model.GetOutputSchema(train.Schema);
        int features = schema["Features"].Type is VectorDataViewType vector && vector.Size > 0
            ? vector.Size
            : throw new InvalidOperationException("DnnFeaturizeImage produced no fixed-size feature vector.");
        int classes = schema[nameof(ImageRow.Label)].Type is KeyDataViewType key
            ? checked((int)key.Count)
            : throw new InvalidOperationException("The label column is not a key type.");

        var evalWatch = Stopwatch.StartNew();
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test), labelColumnName: nameof(ImageRow.Label));
        evalWatch.Stop();

        var (modelBytes, onnxBytes, onnxEntries) = SaveAndMeasure(ml, model, train.Schema);
        return new ImageMethodRow(
            Method: MlNet,
            Description: "ML.NET DnnFeaturizeImage (ResNet18, frozen) + LbfgsMaximumEntropy",
            Accuracy: metrics.MicroAccuracy,
            MacroF1: MethodResult.MacroF1Of(metrics.ConfusionMatrix),
            TrainSeconds: watch.Elapsed.TotalSeconds,
            TrainImagesPerSecond: images.Train.Count / watch.Elapsed.TotalSeconds,
            InferImagesPerSecond: images.Test.Count / evalWatch.Elapsed.TotalSeconds,
            TrainableParameters: (long)features * classes + classes,
            ModelBytes: modelBytes,
            Note: string.Create(CultureInfo.InvariantCulture,
                $"{features} features x {classes} classes + biases; model bytes = the saved zip, which holds the ONNX models " +
                $"({onnxEntries} entries, {onnxBytes:N0} bytes uncompressed: ResNet18 and its preprocessing); train s = decoding, resizing and " +
                $"featurizing the training images, then L-BFGS; inference = the same path and the linear model over the test images"));
    }

    /// <summary>
    /// PEFT fine-tuning of a ResNet on the same images (<paramref name="images"/>: training, validation and test PNG
    /// files, with <see cref="ImageRow"/> rows), returning its row. Not wired yet: the image trainer is written beside it.
    /// </summary>
    private static ImageMethodRow RunPeft(MLContext ml, string method, ImageSplit images, ImageBenchOptions options)
    {
        var recipe = ImageRecipe.Get(method);
        var trainerOptions = recipe.Options(images.Folder, options.Seed);
        Program.Log($"{method}: {recipe.Description}; {recipe.ImageSize}x{recipe.ImageSize}, {recipe.Epochs} epochs, learning rate {recipe.LearningRate} ...");
        var train = ml.Data.LoadFromEnumerable(images.Train);
        var test = ml.Data.LoadFromEnumerable(images.Test);
        var labels = ml.Data.LoadFromEnumerable(FashionMnist.ClassNames.Select(n => new LabelRow { Label = n }).ToList());
        var labelToKey = ml.Transforms.Conversion.MapValueToKey(nameof(ImageRow.Label), keyData: labels).Fit(train);
        if (images.Validation.Count > 0) trainerOptions.ValidationSet = labelToKey.Transform(ml.Data.LoadFromEnumerable(images.Validation));
        var trainer = ml.MulticlassClassification.Trainers.PeftImageClassification(trainerOptions);
        var epochs = new List<Microsoft.ML.Peft.Training.EpochMetrics>();
        trainer.EpochCompleted += (_, m) => epochs.Add(m);
        var pipeline = trainer.Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));

        var watch = Stopwatch.StartNew();
        var fitted = pipeline.Fit(labelToKey.Transform(train));
        watch.Stop();
        var model = new TransformerChain<ITransformer>(new ITransformer[] { labelToKey }.Concat(fitted).ToArray());
        try
        {
            var peft = model.OfType<Microsoft.ML.Peft.Tasks.ImageClassification.PeftImageClassificationTransformer>().Single();
            var evalWatch = Stopwatch.StartNew();
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test), labelColumnName: nameof(ImageRow.Label));
            evalWatch.Stop();
            var (modelBytes, _, _) = SaveAndMeasure(ml, model, train.Schema);
            long baseBytes = new FileInfo(Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx")).Length;
            var validation = string.Join(", ", epochs.Select(e => e.ValidationMetric?.ToString("F4", CultureInfo.InvariantCulture) ?? "-"));
            return new ImageMethodRow(
                Method: method,
                Description: recipe.Description,
                Accuracy: metrics.MicroAccuracy,
                MacroF1: MethodResult.MacroF1Of(metrics.ConfusionMatrix),
                TrainSeconds: watch.Elapsed.TotalSeconds,
                TrainImagesPerSecond: (double)images.Train.Count * epochs.Count / watch.Elapsed.TotalSeconds,
                InferImagesPerSecond: images.Test.Count / evalWatch.Elapsed.TotalSeconds,
                TrainableParameters: peft.TrainableParameterCount,
                ModelBytes: modelBytes,
                Note: string.Create(CultureInfo.InvariantCulture,
                    $"{recipe.ImageSize}x{recipe.ImageSize}, {recipe.Epochs} epochs, learning rate {recipe.LearningRate}, random resized crops (scale {recipe.MinCropScale}-1) and flips; " +
                    $"validation accuracy by epoch {validation}; model bytes = the saved zip (adapter and head; the {baseBytes:N0}-byte base model stays outside it: " +
                    $"{100.0 * modelBytes / baseBytes:F2}% of it); train s = reading and decoding the images, then training"));
        }
        finally
        {
            foreach (var disposable in model.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    /// <summary>Saves the model to a temporary zip; returns its size and the uncompressed size and number of its ONNX model entries.</summary>
    private static (long FileBytes, long OnnxBytes, int OnnxEntries) SaveAndMeasure(MLContext ml, ITransformer model, DataViewSchema inputSchema)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peft-bench-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, inputSchema, path);
            using var zip = ZipFile.OpenRead(path);
            // OnnxTransformer saves the model file's bytes as an entry named OnnxModel.
            var onnx = zip.Entries.Where(e => e.Name == "OnnxModel").ToList();
            return (new FileInfo(path).Length, onnx.Sum(e => e.Length), onnx.Count);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>The Markdown table of a results file.</summary>
    public static string Table(JsonObject report)
    {
        static double D(JsonNode? n) => n is null ? double.NaN : double.Parse(n.ToJsonString(), CultureInfo.InvariantCulture);
        static string F(JsonNode? n, string format) => n is null ? "" : D(n).ToString(format, CultureInfo.InvariantCulture);
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"Fashion-MNIST: {report["data"]}; images resized to {report["setup"]?["imageSize"]}x{report["setup"]?["imageSize"]} for ML.NET's featurizer (the PEFT rows' sizes are in their notes), seed {report["setup"]?["seed"]}.");
        s.AppendLine();
        s.AppendLine("| method | accuracy | macro-F1 | train s | train images/s | inference images/s | trainable parameters | model bytes |");
        s.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report["methods"]!.AsArray())
        {
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {r!["method"]} ({r["description"]}) | {F(r["accuracy"], "F4")} | {F(r["macroF1"], "F4")} | {F(r["trainSeconds"], "F0")} | " +
                $"{F(r["trainImagesPerSecond"], "F1")} | {F(r["inferImagesPerSecond"], "F1")} | {r["trainableParameters"]!.GetValue<long>():N0} | {r["modelBytes"]!.GetValue<long>():N0} |");
        }
        s.AppendLine();
        foreach (var r in report["methods"]!.AsArray())
            if (r!["note"]?.GetValue<string>() is { Length: > 0 } note) s.AppendLine(CultureInfo.InvariantCulture, $"- {r["method"]}: {note}.");
        return s.ToString();
    }

    private static double? LoadAverage()
    {
        try
        {
            return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>One row of the image table.</summary>
/// <param name="Method">The --methods name.</param>
/// <param name="Description">What the row trains, in words.</param>
/// <param name="Accuracy">Share of the test images classified right (ML.NET's micro-accuracy).</param>
/// <param name="MacroF1">Mean over the classes of F1, from ML.NET's confusion matrix.</param>
/// <param name="TrainSeconds">Wall time of Fit, reading the training images included.</param>
/// <param name="TrainImagesPerSecond">Training images (times epochs, for PEFT) over <paramref name="TrainSeconds"/>.</param>
/// <param name="InferImagesPerSecond">Test images over the wall time of Transform and Evaluate.</param>
/// <param name="TrainableParameters">Parameters the method trains (the head included).</param>
/// <param name="ModelBytes">Size of what prediction needs that the method saved (see the note).</param>
/// <param name="Note">What the figures include.</param>
internal sealed record ImageMethodRow(string Method, string Description, double Accuracy, double MacroF1, double TrainSeconds,
    double TrainImagesPerSecond, double InferImagesPerSecond, long TrainableParameters, long ModelBytes, string Note)
{
    public JsonObject ToJson() => new()
    {
        ["method"] = Method,
        ["description"] = Description,
        ["accuracy"] = Accuracy,
        ["macroF1"] = MacroF1,
        ["trainSeconds"] = Math.Round(TrainSeconds, 2),
        ["trainImagesPerSecond"] = Math.Round(TrainImagesPerSecond, 1),
        ["inferImagesPerSecond"] = Math.Round(InferImagesPerSecond, 1),
        ["trainableParameters"] = TrainableParameters,
        ["modelBytes"] = ModelBytes,
        ["note"] = Note,
    };

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{Method}: accuracy {Accuracy:F4}, macro-F1 {MacroF1:F4}, train {TrainSeconds:F1} s ({TrainImagesPerSecond:F1} images/s), " +
        $"inference {InferImagesPerSecond:F1} images/s, {TrainableParameters:N0} trainable parameters, model {ModelBytes:N0} bytes.");
}

/// <summary>An image file (relative to <see cref="ImageSplit.Folder"/>) and its class name.</summary>
internal sealed class ImageRow
{
    public string ImagePath { get; set; } = "";

    public string Label { get; set; } = "";
}

/// <summary>
/// The benchmark's images as 8-bit grey PNG files in a temporary folder (deleted on dispose): train/ (the first N
/// training images), validation/ (the last V training images, which training never sees), test/ (the first M test images).
/// </summary>
internal sealed class ImageSplit : IDisposable
{
    private ImageSplit(string folder, List<ImageRow> train, List<ImageRow> validation, List<ImageRow> test, string description)
    {
        Folder = folder;
        Train = train;
        Validation = validation;
        Test = test;
        Description = description;
    }

    public string Folder { get; }
    public IReadOnlyList<ImageRow> Train { get; }
    public IReadOnlyList<ImageRow> Validation { get; }
    public IReadOnlyList<ImageRow> Test { get; }
    public string Description { get; }

    public static ImageSplit Write(FashionMnistSet trainSet, FashionMnistSet testSet, int trainRows, int validationRows, int testRows)
    {
        var folder = Path.Combine(Path.GetTempPath(), $"peft-bench-fashion-mnist-{Guid.NewGuid():N}");
        try
        {
            var train = WriteImages(trainSet, Enumerable.Range(0, trainRows), folder, "train");
            var validation = WriteImages(trainSet, Enumerable.Range(trainSet.Count - validationRows, validationRows), folder, "validation");
            var test = WriteImages(testSet, Enumerable.Range(0, testRows), folder, "test");
            var description = string.Create(CultureInfo.InvariantCulture,
                $"first {trainRows:N0} images of train-images-idx3-ubyte.gz for training, its last {validationRows:N0} for validation (recipe choice only), " +
                $"first {testRows:N0} of t10k-images-idx3-ubyte.gz for evaluation");
            return new ImageSplit(folder, train, validation, test, description);
        }
        catch
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            throw;
        }
    }

    private static List<ImageRow> WriteImages(FashionMnistSet set, IEnumerable<int> indices, string folder, string split)
    {
        Directory.CreateDirectory(Path.Combine(folder, split));
        var rows = new List<ImageRow>();
        foreach (int i in indices)
        {
            var relative = Path.Combine(split, $"{i:D5}.png");
            File.WriteAllBytes(Path.Combine(folder, relative), FashionMnist.EncodePng(set.Pixels[i]));
            rows.Add(new ImageRow { ImagePath = relative, Label = FashionMnist.ClassNames[set.Labels[i]] });
        }
        return rows;
    }

    public void Dispose()
    {
        if (Directory.Exists(Folder)) Directory.Delete(Folder, recursive: true);
    }
}

/// <summary>Command-line options of <c>images</c> (see <see cref="ImageComparison.Usage"/>).</summary>
internal sealed class ImageBenchOptions
{
    public IReadOnlyList<string> Methods { get; private set; } = new[] { ImageComparison.MlNet };
    public int TrainRows { get; private set; } = ImageComparison.DefaultTrainRows;
    public int ValidationRows { get; private set; } = ImageComparison.DefaultValidationRows;
    public int TestRows { get; private set; } = ImageComparison.DefaultTestRows;
    public int Seed { get; private set; } = 1;
    public string? Output { get; private set; }
    public string DataFolder { get; private set; } = ImageComparison.DefaultDataFolder;

    /// <summary>Parses the arguments after the command name; throws <see cref="ArgumentException"/> naming a bad option.</summary>
    public static ImageBenchOptions Parse(IReadOnlyList<string> args)
    {
        var result = new ImageBenchOptions();
        for (int i = 1; i < args.Count; i++)
        {
            string option = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{option} needs a value.");
            int Count(bool zeroAllowed)
            {
                var text = Value();
                return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && (v > 0 || zeroAllowed && v == 0)
                    ? v
                    : throw new ArgumentException($"{option} must be a {(zeroAllowed ? "non-negative" : "positive")} integer, got '{text}'.");
            }
            switch (option)
            {
                case "--methods":
                    var methods = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
                    if (methods.Count == 0) throw new ArgumentException("--methods needs at least one method.");
                    var unknown = methods.FirstOrDefault(m => !ImageComparison.KnownMethods.Contains(m));
                    if (unknown is not null) throw new ArgumentException($"Unknown method '{unknown}' in --methods; known: {string.Join(", ", ImageComparison.KnownMethods)}.");
                    result.Methods = methods;
                    break;
                case "--train-rows": result.TrainRows = Count(zeroAllowed: false); break;
                case "--validation-rows": result.ValidationRows = Count(zeroAllowed: true); break;
                case "--test-rows": result.TestRows = Count(zeroAllowed: false); break;
                case "--seed": result.Seed = Count(zeroAllowed: true); break;
                case "--output": result.Output = Value(); break;
                case "--data": result.DataFolder = Path.GetFullPath(Value()); break;
                default: throw new ArgumentException($"Unknown option '{option}'.");
            }
        }
        return result;
    }
}

/// <summary>Fashion-MNIST's images and labels as the shared reader gives them.</summary>
internal sealed record FashionMnistSet(byte[][] Pixels, byte[] Labels)
{
    public int Count => Labels.Length;

    public static FashionMnistSet Read(string folder, bool train)
    {
        var (pixels, labels) = FashionMnist.Read(folder, train);
        return new FashionMnistSet(pixels, labels);
    }
}
