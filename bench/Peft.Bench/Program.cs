using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Peft.Bench;

/// <summary>SST-2 quality benchmark: LoRA on MiniLM against ML.NET's classic text pipeline and frozen MiniLM embeddings.</summary>
internal static class Program
{
    /// <summary>LoRA accuracy target on test-sentences.tsv when training on part of train.tsv (8,000 rows by default).</summary>
    private const double LoraAccuracyTarget = 0.86;
    /// <summary>LoRA accuracy target on test-sentences.tsv when training on all of train.tsv.</summary>
    private const double LoraAccuracyTargetFullSet = 0.88;

    private static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] is "shared-memory" or "shared-memory-child") return SharedBaseMemory.Run(args, FindRepositoryRoot());
        if (args.Length > 0 && args[0] == "images")
        {
            try
            {
                return ImageComparison.Run(args, FindRepositoryRoot());
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                Console.Error.WriteLine(ImageComparison.Usage);
                return 2;
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }
        }
        foreach (var (name, run, usage) in new (string, Func<IReadOnlyList<string>, string, int>, string)[]
        {
            ("stsb", StsbBenchmark.Run, StsbBenchmark.Usage),
            ("mrpc", MrpcBenchmark.Run, MrpcBenchmark.Usage),
            ("conll", NerComparison.Run, NerComparison.Usage),
            ("movielens", RecommendationBenchmark.Run, RecommendationBenchmark.Usage),
            ("movielens-implicit", MovieLensImplicitBenchmark.Run, MovieLensImplicitBenchmark.Usage),
            ("search", SearchBenchmark.Run, SearchBenchmark.Usage),
            ("detect", ObjectDetectionBenchmark.Run, ObjectDetectionBenchmark.Usage),
            ("distill", DistillationBenchmark.Run, DistillationBenchmark.Usage),
            ("serve-load", ServeLoadBenchmark.Run, ServeLoadBenchmark.Usage),
            ("serve-load-server", ServeLoadBenchmark.Run, ServeLoadBenchmark.Usage),
            ("export-onnx-image", ImageOnnxExportBenchmark.Run, ImageOnnxExportBenchmark.Usage),
            ("export-onnx", ExportOnnxBenchmark.Run, ExportOnnxBenchmark.Usage),
        })
        {
            if (args.Length == 0 || args[0] != name) continue;
            try
            {
                return run(args, FindRepositoryRoot());
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                Console.Error.WriteLine(usage);
                return 2;
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }
        }
        if (args.Length > 0 && args[0] == "methods")
        {
            try
            {
                return MethodComparison.Run(args, FindRepositoryRoot());
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                Console.Error.WriteLine(MethodComparison.Usage);
                return 2;
            }
        }
        BenchArguments arguments;
        try
        {
            arguments = BenchArguments.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(BenchArguments.Usage);
            return 2;
        }

        var root = FindRepositoryRoot();
        var dataFolder = arguments.DataGiven
            ? Path.GetFullPath(arguments.DataArgument)
            : Path.GetFullPath(Path.Combine(root, BenchArguments.DefaultDataPath));
        var trainFile = Path.Combine(dataFolder, "sst2", "train.tsv");
        var testFile = Path.Combine(dataFolder, "sst2", "test-sentences.tsv");
        var devFile = Path.Combine(dataFolder, "sst2", "dev.tsv");
        var needed = arguments.ValidationRows is null ? new[] { trainFile, testFile } : new[] { trainFile, testFile, devFile };
        foreach (var file in needed)
        {
            if (File.Exists(file)) continue;
            Console.Error.WriteLine($"The data file {file} does not exist; pass the data folder with --data.");
            return 2;
        }

        var loadAtStart = LoadAverage();
        var ml = new MLContext(seed: arguments.Seed);
        ml.Log += (_, e) =>
        {
            if (e.Kind is ChannelMessageKind.Warning or ChannelMessageKind.Error ||
                (e.Kind == ChannelMessageKind.Info && e.Source.StartsWith("PeftTextClassification", StringComparison.Ordinal)))
                Log(e.Message); // ML.NET's message starts with [Source=..., Kind=...]
        };

        var train = ReadRows(ml, trainFile, arguments.TrainRows, out int trainFileRows);
        bool fullTrainingSet = train.Count == trainFileRows;
        var test = ReadRows(ml, testFile, arguments.EvalRows, out _);
        var validation = arguments.ValidationRows is int v ? ReadRows(ml, devFile, v, out _) : null;
        int testTruncated = MiniLMEmbedder.TokenCounts(test.Select(r => r.Sentence).ToList()).Count(n => n > arguments.MaxLength);
        double target = fullTrainingSet ? LoraAccuracyTargetFullSet : LoraAccuracyTarget;
        Log($"SST-2: {train.Count} training rows ({(fullTrainingSet ? "all" : "first")} of {Path.GetFileName(trainFile)}), {test.Count} evaluation rows ({Path.GetFileName(testFile)}, " +
            $"{testTruncated} longer than {arguments.MaxLength} tokens), " +
            (validation is null ? "no validation set" : $"{validation.Count} validation rows ({Path.GetFileName(devFile)}, patience {arguments.Patience})") +
            $"; max length {arguments.MaxLength}, {arguments.Epochs} epoch(s), {Environment.ProcessorCount} cores.");

        long onnxBytes = MiniLMEmbedder.OnnxResourceBytes();
        var results = new List<MethodResult>();
        var lora = RunPeft(ml, arguments, LoraOf(arguments), LoraMethodName(arguments), arguments.LearningRate, train, test, validation, onnxBytes, out long adapterBytes);
        results.Add(lora);
        if (arguments.ReferenceMethods)
        {
            // The other methods on the same rows: BitFit at the LoRA learning rate, full fine-tuning at its own (smaller) one.
            results.Add(RunPeft(ml, arguments, new BitFitOptions(), "BitFit (MiniLM, bias terms)", arguments.LearningRate, train, test, validation, onnxBytes, out _));
            results.Add(RunPeft(ml, arguments, new FullFineTuningOptions(), string.Create(CultureInfo.InvariantCulture, $"Full fine-tuning (MiniLM, lr {arguments.FullLearningRate:G})"),
                arguments.FullLearningRate, train, test, validation, onnxBytes, out _));
        }
        if (!arguments.LoraOnly)
        {
            results.Add(RunClassic(ml, train, test));
            results.Add(RunFrozenEmbeddings(ml, arguments, train, test));
        }

        double adapterPercent = 100.0 * adapterBytes / onnxBytes;
        var table = new StringBuilder();
        table.AppendLine("| method | accuracy | macro-F1 | train s | trainable params | model bytes | note |");
        table.AppendLine("|---|---:|---:|---:|---:|---:|---|");
        foreach (var r in results)
            table.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Method} | {r.Accuracy:F4} | {r.MacroF1:F4} | {r.TrainSeconds:F1} | {r.TrainableParameters:N0} | {r.ModelBytes:N0} | {r.Note} |"));
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"SST-2, {train.Count} training rows, {test.Count} evaluation rows of test-sentences.tsv, max length {arguments.MaxLength}, {arguments.Epochs} epoch(s); LoRA {Recipe(arguments)}"));
        Console.WriteLine();
        Console.Write(table);
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"LoRA adapter file (Adapter.safetensors: LoRA matrices and head): {adapterBytes:N0} bytes = {adapterPercent:F2}% of the MiniLM ONNX file ({onnxBytes:N0} bytes)."));

        var failures = new List<string>();
        if (lora.Accuracy < target)
            failures.Add(string.Create(CultureInfo.InvariantCulture, $"LoRA accuracy {lora.Accuracy:F4} is below the target {target:F2}"));
        foreach (var baseline in results.Where(r => r != lora))
            if (!(lora.Accuracy > baseline.Accuracy))
                failures.Add(string.Create(CultureInfo.InvariantCulture, $"LoRA accuracy {lora.Accuracy:F4} does not beat {baseline.Method} ({baseline.Accuracy:F4})"));

        var resultsFile = arguments.Output is string output
            ? Path.GetFullPath(output)
            : Path.Combine(root, "bench", "results", arguments.LoraOnly ? $"{arguments.Task}-lora-only.json" : fullTrainingSet ? $"{arguments.Task}-full.json" : $"{arguments.Task}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
        var report = new
        {
            benchmark = arguments.Task,
            date = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            machine = new
            {
                processorCount = Environment.ProcessorCount,
                os = RuntimeInformation.OSDescription,
                architecture = RuntimeInformation.OSArchitecture.ToString(),
                framework = RuntimeInformation.FrameworkDescription,
                // Other work on the machine slows the timed runs; the 1-minute load average is kept to read them by.
                loadAverageAtStart = loadAtStart,
                loadAverageAtEnd = LoadAverage(),
            },
            arguments = new
            {
                trainRows = arguments.TrainRows,
                evalRows = arguments.EvalRows,
                validationRows = arguments.ValidationRows,
                loraOnly = arguments.LoraOnly,
                data = arguments.DataArgument,
                commandLine = string.Join(' ', args),
            },
            recipe = new
            {
                maxLength = arguments.MaxLength,
                epochs = arguments.Epochs,
                learningRate = arguments.LearningRate,
                rank = arguments.Rank,
                alpha = arguments.Alpha,
                targetModules = arguments.Targets,
                loraDropout = arguments.LoraDropout,
                batchSize = arguments.BatchSize,
                warmupRatio = arguments.Warmup,
                weightDecay = arguments.WeightDecay,
                headDropout = arguments.HeadDropout,
                earlyStoppingPatience = arguments.Patience,
                maxGradientNorm = new PeftTextClassificationTrainer.Options().MaxGradientNorm,
                seed = arguments.Seed,
            },
            data = new
            {
                trainFile = "sst2/train.tsv",
                trainRows = train.Count,
                fullTrainingSet,
                evalFile = "sst2/test-sentences.tsv",
                evalRows = test.Count,
                evalRowsLongerThanMaxLength = testTruncated,
                validationFile = validation is null ? null : "sst2/dev.tsv",
                validationRows = validation?.Count,
            },
            methods = results.Select(r => new
            {
                method = r.Method,
                accuracy = r.Accuracy,
                macroF1 = r.MacroF1,
                trainSeconds = Math.Round(r.TrainSeconds, 2),
                evalSeconds = Math.Round(r.EvalSeconds, 2),
                trainableParameters = r.TrainableParameters,
                modelBytes = r.ModelBytes,
                note = r.Note,
            }),
            loraAdapterBytes = adapterBytes,
            miniLMOnnxBytes = onnxBytes,
            loraAdapterPercentOfOnnx = Math.Round(adapterPercent, 4),
            targets = new
            {
                loraAccuracyAtLeast = target,
                loraBeatsBothBaselines = !arguments.LoraOnly,
                passed = failures.Count == 0,
                failures,
            },
        };
        File.WriteAllText(resultsFile, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)}.");

        if (failures.Count == 0)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Targets met: LoRA accuracy >= {target:F2}{(arguments.LoraOnly ? " (baselines skipped)" : " and above both baselines")}."));
            return 0;
        }
        foreach (var failure in failures) Console.WriteLine($"TARGET FAILED: {failure}.");
        return 1;
    }

    private static LoraOptions LoraOf(BenchArguments arguments) => new()
    {
        Rank = arguments.Rank,
        Alpha = arguments.Alpha,
        Dropout = arguments.LoraDropout,
        TargetModules = arguments.Targets,
    };

    /// <summary>MapValueToKey, fine-tuning of MiniLM with a method and the arguments' recipe, MapKeyToValue.</summary>
    private static MethodResult RunPeft(MLContext ml, BenchArguments arguments, PeftMethodOptions method, string name, float learningRate,
        IReadOnlyList<SentimentRow> trainRows, IReadOnlyList<SentimentRow> testRows, IReadOnlyList<SentimentRow>? validationRows, long onnxBytes, out long adapterBytes)
    {
        Log($"{name}: fine-tuning all-MiniLM-L6-v2, {Recipe(arguments)}, lr {learningRate.ToString("G", CultureInfo.InvariantCulture)} ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        // The label's key values come from the training rows, so the validation set gets the same mapping.
        var labels = ml.Data.LoadFromEnumerable(trainRows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).Select(l => new LabelRow { Label = l }).ToList());
        var mapLabel = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label), keyData: labels);
        var options = new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentimentRow.Sentence),
            MaxEpoch = arguments.Epochs,
            MaxSequenceLength = arguments.MaxLength,
            BatchSize = arguments.BatchSize,
            LearningRate = learningRate,
            WarmupRatio = arguments.Warmup,
            WeightDecay = arguments.WeightDecay,
            HeadDropout = arguments.HeadDropout,
            EarlyStoppingPatience = arguments.Patience,
            Seed = arguments.Seed,
            Method = method,
        };
        if (validationRows is not null)
        {
            var validation = ml.Data.LoadFromEnumerable(validationRows);
            options.ValidationSet = mapLabel.Fit(validation).Transform(validation);
        }
        var pipeline = mapLabel
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));

        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();
        var peft = model.OfType<PeftTextClassificationTransformer>().Single();
        try
        {
            var (metrics, evalSeconds) = Evaluate(ml, model, test);
            var (modelBytes, adapter) = SaveAndMeasure(ml, model, train.Schema, "Adapter.safetensors");
            adapterBytes = adapter;
            var result = new MethodResult(
                name, metrics, watch.Elapsed.TotalSeconds, evalSeconds, peft.TrainableParameterCount, modelBytes,
                string.Create(CultureInfo.InvariantCulture,
                    $"saved model = the trained tensors (the method's: all encoder weights for full fine-tuning; and the head), vocab; the MiniLM ONNX ({onnxBytes:N0} bytes) is referenced by SHA-256, needed at prediction, not counted"));
            Log(Describe(result));
            return result;
        }
        finally
        {
            peft.Dispose();
        }
    }

    /// <summary>FeaturizeText (word 1-2-grams and character 3-grams), SDCA maximum entropy.</summary>
    private static MethodResult RunClassic(MLContext ml, IReadOnlyList<SentimentRow> trainRows, IReadOnlyList<SentimentRow> testRows)
    {
        Log("ML.NET classic: FeaturizeText + SdcaMaximumEntropy ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        var pipeline = ml.Transforms.Text.FeaturizeText("Features", nameof(SentimentRow.Sentence))
            .Append(ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label)))
            .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy())
            .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));
        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();

        var schema = model.GetOutputSchema(train.Schema);
        int features = schema["Features"].Type is VectorDataViewType vector && vector.Size > 0
            ? vector.Size
            : throw new InvalidOperationException("FeaturizeText produced no fixed-size feature vector.");
        int classes = ClassCount(schema);
        var (metrics, evalSeconds) = Evaluate(ml, model, test);
        var (modelBytes, _) = SaveAndMeasure(ml, model, train.Schema, null);
        var result = new MethodResult("ML.NET FeaturizeText + SdcaMaximumEntropy", metrics, watch.Elapsed.TotalSeconds, evalSeconds,
            (long)features * classes + classes, modelBytes,
            string.Create(CultureInfo.InvariantCulture, $"{features:N0} n-gram features x {classes} classes + biases"));
        Log(Describe(result));
        return result;
    }

    /// <summary>Frozen mean-pooled MiniLM embeddings (ONNX Runtime), LBFGS maximum entropy.</summary>
    private static MethodResult RunFrozenEmbeddings(MLContext ml, BenchArguments arguments, IReadOnlyList<SentimentRow> trainRows, IReadOnlyList<SentimentRow> testRows)
    {
        Log("Frozen MiniLM embeddings + LbfgsMaximumEntropy ...");
        var watch = Stopwatch.StartNew();
        using var embedder = new MiniLMEmbedder(arguments.MaxLength);
        var train = ml.Data.LoadFromEnumerable(Embed(embedder, trainRows));
        var pipeline = ml.Transforms.Conversion.MapValueToKey(nameof(EmbeddedRow.Label))
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy())
            .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));
        var model = pipeline.Fit(train);
        watch.Stop();

        int classes = ClassCount(model.GetOutputSchema(train.Schema));
        var evalWatch = Stopwatch.StartNew();
        var test = ml.Data.LoadFromEnumerable(Embed(embedder, testRows));
        var (metrics, scoreSeconds) = Evaluate(ml, model, test);
        evalWatch.Stop();
        var (modelBytes, _) = SaveAndMeasure(ml, model, train.Schema, null);
        var result = new MethodResult("Frozen MiniLM embeddings + LbfgsMaximumEntropy", metrics, watch.Elapsed.TotalSeconds, evalWatch.Elapsed.TotalSeconds,
            (long)MiniLMEmbedder.Dimensions * classes + classes, modelBytes + embedder.ModelBytes,
            string.Create(CultureInfo.InvariantCulture,
                $"model bytes = linear model ({modelBytes:N0}) + MiniLM ONNX ({embedder.ModelBytes:N0}), needed at prediction; train s includes embedding the training rows"));
        Log(Describe(result));
        return result;
    }

    private static List<EmbeddedRow> Embed(MiniLMEmbedder embedder, IReadOnlyList<SentimentRow> rows)
    {
        var vectors = embedder.Embed(rows.Select(r => r.Sentence).ToList());
        return rows.Select((r, i) => new EmbeddedRow { Features = vectors[i], Label = r.Label }).ToList();
    }

    private static (MulticlassClassificationMetrics Metrics, double Seconds) Evaluate(MLContext ml, ITransformer model, IDataView test)
    {
        var watch = Stopwatch.StartNew();
        var predictions = model.Transform(test);
        var metrics = ml.MulticlassClassification.Evaluate(predictions, labelColumnName: nameof(SentimentRow.Label));
        watch.Stop();
        return (metrics, watch.Elapsed.TotalSeconds);
    }

    /// <summary>Saves the model to a temporary file; returns its size and the uncompressed size of the zip entries named <paramref name="entrySuffix"/>.</summary>
    private static (long FileBytes, long EntryBytes) SaveAndMeasure(MLContext ml, ITransformer model, DataViewSchema inputSchema, string? entrySuffix)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peft-bench-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, inputSchema, path);
            long entryBytes = 0;
            if (entrySuffix is not null)
            {
                using var zip = ZipFile.OpenRead(path);
                var entries = zip.Entries.Where(e => e.FullName.EndsWith(entrySuffix, StringComparison.Ordinal)).ToList();
                if (entries.Count == 0) throw new InvalidOperationException($"The saved model has no entry '{entrySuffix}'.");
                entryBytes = entries.Sum(e => e.Length);
            }
            return (new FileInfo(path).Length, entryBytes);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static int ClassCount(DataViewSchema schema) =>
        schema[nameof(SentimentRow.Label)].Type is KeyDataViewType key
            ? checked((int)key.Count)
            : throw new InvalidOperationException("The label column is not a key type.");

    /// <summary>The first <paramref name="rows"/> rows of the file (all when null); <paramref name="fileRows"/> is how many the file has.</summary>
    private static List<SentimentRow> ReadRows(MLContext ml, string file, int? rows, out int fileRows)
    {
        IDataView view = ml.Data.LoadFromTextFile<SentimentRow>(file, separatorChar: '\t', hasHeader: true, allowQuoting: false, trimWhitespace: false);
        var all = ml.Data.CreateEnumerable<SentimentRow>(view, reuseRowObject: false).ToList();
        if (all.Count == 0) throw new InvalidDataException($"{file} has no rows.");
        fileRows = all.Count;
        return rows is int n && n < all.Count ? all.GetRange(0, n) : all;
    }

    private static string LoraMethodName(BenchArguments a) => string.Create(CultureInfo.InvariantCulture,
        $"LoRA (MiniLM, r={a.Rank} on {string.Join('/', a.Targets)})");

    private static string Recipe(BenchArguments a) => string.Create(CultureInfo.InvariantCulture,
        $"r={a.Rank} alpha={a.Alpha:G} on {string.Join(',', a.Targets)}, LoRA dropout {a.LoraDropout:G}, lr {a.LearningRate:G}, warm-up {a.Warmup:G}, " +
        $"weight decay {a.WeightDecay:G}, batch {a.BatchSize}, head dropout {a.HeadDropout:G}, max length {a.MaxLength}, {a.Epochs} epoch(s), seed {a.Seed}{(a.Patience > 0 ? $", patience {a.Patience}" : "")}");

    /// <summary>The folder holding Microsoft.ML.Peft.sln, found by walking up from the application's folder.</summary>
    private static string FindRepositoryRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Peft.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No Microsoft.ML.Peft.sln above {AppContext.BaseDirectory} or the current directory; run the benchmark from the repository.");
    }

    /// <summary>The 1-minute load average on Linux; null elsewhere.</summary>
    private static double? LoadAverage()
    {
        try
        {
            var text = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg") : null;
            return text is not null && double.TryParse(text.Split(' ')[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static string Describe(MethodResult r) => string.Create(CultureInfo.InvariantCulture,
        $"{r.Method}: accuracy {r.Accuracy:F4}, macro-F1 {r.MacroF1:F4}, train {r.TrainSeconds:F1} s, evaluation {r.EvalSeconds:F1} s, " +
        $"{r.TrainableParameters:N0} trainable parameters, model {r.ModelBytes:N0} bytes.");

    internal static void Log(string message) =>
        Console.Error.WriteLine($"{DateTime.Now.ToString("HH:mm:ss", CultureInfo.InvariantCulture)} {message}");
}

/// <summary>A row of sst2/*.tsv; the label stays text ("0" / "1") so that MapValueToKey maps it.</summary>
internal sealed class SentimentRow
{
    [LoadColumn(0)]
    public string Sentence { get; set; } = "";

    [LoadColumn(1)]
    public string Label { get; set; } = "";
}

/// <summary>One label value: the key data of MapValueToKey.</summary>
internal sealed class LabelRow
{
    public string Label { get; set; } = "";
}

/// <summary>A sentence's frozen MiniLM embedding and its label.</summary>
internal sealed class EmbeddedRow
{
    [VectorType(MiniLMEmbedder.Dimensions)]
    public float[] Features { get; set; } = Array.Empty<float>();

    public string Label { get; set; } = "";
}

/// <summary>Names of the columns a multiclass pipeline adds.</summary>
internal static class MulticlassPrediction
{
    public const string PredictedLabel = "PredictedLabel";
}

/// <summary>One method's figures.</summary>
internal sealed record MethodResult(string Method, double Accuracy, double MacroF1, double TrainSeconds, double EvalSeconds, long TrainableParameters, long ModelBytes, string Note)
{
    public MethodResult(string method, MulticlassClassificationMetrics metrics, double trainSeconds, double evalSeconds, long trainableParameters, long modelBytes, string note)
        : this(method, metrics.MicroAccuracy, MacroF1Of(metrics.ConfusionMatrix), trainSeconds, evalSeconds, trainableParameters, modelBytes, note)
    {
    }

    /// <summary>Mean over classes of 2PR/(P+R), from the confusion matrix's per-class precision and recall.</summary>
    public static double MacroF1Of(ConfusionMatrix matrix)
    {
        double sum = 0;
        for (int c = 0; c < matrix.NumberOfClasses; c++)
        {
            double p = matrix.PerClassPrecision[c], r = matrix.PerClassRecall[c];
            sum += p + r > 0 ? 2 * p * r / (p + r) : 0;
        }
        return sum / matrix.NumberOfClasses;
    }
}
