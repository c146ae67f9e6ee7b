using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Peft.Bench;

/// <summary>Options shared by the sentence-pair benchmarks (<c>stsb</c>, <c>mrpc</c>), parsed in the style of <c>methods</c>.</summary>
internal sealed class PairArguments
{
    public int? TrainRows { get; private set; }
    public int? EvalRows { get; private set; }
    public int Epochs { get; private set; } = 4;
    public int MaxLength { get; private set; } = 128;
    public int BatchSize { get; private set; } = 32;
    public int Seed { get; private set; } = 1;
    public float LoraLearningRate { get; private set; } = 2e-3f;
    public float FullLearningRate { get; private set; } = 5e-5f;
    public int Rank { get; private set; } = 8;
    public double TestFraction { get; private set; } = 0.15;
    public bool SkipFull { get; private set; }
    public bool SkipCross { get; private set; }
    public bool SkipBi { get; private set; }
    public bool BothOrders { get; private set; }
    public SimilarityLoss Loss { get; private set; } = SimilarityLoss.CosineMse;
    public string? Output { get; private set; }
    public string? Data { get; private set; }

    public static string Options(string task, int epochs) =>
        "  --train-rows N      at most N training rows (default: all rows not held apart)\n" +
        "  --eval-rows N       at most N of the held-apart rows (default: all)\n" +
        "  --test-fraction F   share of the file held apart for testing, after a seeded shuffle (default 0.15)\n" +
        $"  --epochs N          passes over the training rows, every model (default {epochs})\n" +
        "  --max-length N      longest token sequence (default 128)\n" +
        "  --batch-size N      rows per step (default 32)\n" +
        "  --lr X              peak learning rate of the LoRA rows (default 0.002)\n" +
        "  --full-lr X         peak learning rate of full fine-tuning (default 5e-05)\n" +
        "  --rank N            LoRA rank, every Linear layer (default 8)\n" +
        "  --skip-full         leave out the full fine-tuning row\n" +
        "  --skip-cross        (stsb) leave out the cross-encoder rows\n" +
        "  --skip-bi           (stsb) leave out the bi-encoder rows\n" +
        "  --both-orders       (stsb) cross-encoders train on both orders of each pair and score the mean of both\n" +
        "  --loss mse|cosent   (stsb) the bi-encoders' training loss (default mse: CosineSimilarityLoss)\n" +
        "  --seed N            seed of the split, the MLContext and the trainers (default 1)\n" +
        $"  --output FILE       results file (default bench/results/{task}.json; the table goes beside it as .md)\n" +
        "  --data DIR          data folder (default ../shared/data beside the repository root)";

    public static PairArguments Parse(IReadOnlyList<string> args, int defaultEpochs)
    {
        var a = new PairArguments { Epochs = defaultEpochs };
        for (int i = 1; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Positive(string option) =>
                int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{option} must be a positive integer.");
            float Rate(string option) =>
                float.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 && float.IsFinite(v) ? v : throw new ArgumentException($"{option} must be a positive number.");
            switch (args[i])
            {
                case "--train-rows": a.TrainRows = Positive(args[i]); break;
                case "--eval-rows": a.EvalRows = Positive(args[i]); break;
                case "--test-fraction":
                    var option = args[i];
                    a.TestFraction = double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var f) && f > 0 && f < 1
                        ? f : throw new ArgumentException($"{option} must be between 0 and 1.");
                    break;
                case "--epochs": a.Epochs = Positive(args[i]); break;
                case "--max-length": a.MaxLength = Positive(args[i]); break;
                case "--batch-size": a.BatchSize = Positive(args[i]); break;
                case "--lr": a.LoraLearningRate = Rate(args[i]); break;
                case "--full-lr": a.FullLearningRate = Rate(args[i]); break;
                case "--rank": a.Rank = Positive(args[i]); break;
                case "--skip-full": a.SkipFull = true; break;
                case "--skip-cross": a.SkipCross = true; break;
                case "--skip-bi": a.SkipBi = true; break;
                case "--both-orders": a.BothOrders = true; break;
                case "--loss":
                    a.Loss = Value() switch
                    {
                        "mse" => SimilarityLoss.CosineMse,
                        "cosent" => SimilarityLoss.CoSent,
                        var other => throw new ArgumentException($"--loss must be mse or cosent, not '{other}'."),
                    };
                    break;
                case "--seed": a.Seed = int.Parse(Value(), NumberStyles.None, CultureInfo.InvariantCulture); break;
                case "--output": a.Output = Value(); break;
                case "--data": a.Data = Value(); break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        return a;
    }

    /// <summary>
    /// The rows of a file split apart: a seeded shuffle, then the last <see cref="TestFraction"/> are the test rows and the
    /// others the training rows, each cut to <see cref="TrainRows"/> / <see cref="EvalRows"/>.
    /// </summary>
    public (List<T> Train, List<T> Test) Split<T>(IReadOnlyList<T> rows)
    {
        var shuffled = rows.ToArray();
        new Random(Seed).Shuffle(shuffled);
        int test = (int)Math.Round(shuffled.Length * TestFraction);
        var train = shuffled.Take(shuffled.Length - test).ToList();
        var held = shuffled.Skip(shuffled.Length - test).ToList();
        if (TrainRows is int t && t < train.Count) train = train.Take(t).ToList();
        if (EvalRows is int e && e < held.Count) held = held.Take(e).ToList();
        return (train, held);
    }

    public JsonObject Recipe() => new()
    {
        ["epochs"] = Epochs, ["maxLength"] = MaxLength, ["batchSize"] = BatchSize, ["seed"] = Seed, ["loraLearningRate"] = LoraLearningRate,
        ["fullLearningRate"] = FullLearningRate, ["bothOrders"] = BothOrders, ["biEncoderLoss"] = Loss.ToString(), ["loraRank"] = Rank, ["loraAlpha"] = 2 * Rank, ["loraTargets"] = "all-linear", ["testFraction"] = TestFraction,
    };

    public LoraOptions Lora() => new() { Rank = Rank, Alpha = 2 * Rank };
}

/// <summary>Helpers of the pair benchmarks: reading the data, sizes of saved models, the results files.</summary>
internal static class PairBench
{
    public static List<string[]> ReadTsv(string path, int fields)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The data file {path} does not exist; pass the data folder with --data.", path);
        var rows = new List<string[]>();
        int line = 1;
        foreach (var text in File.ReadLines(path).Skip(1))
        {
            line++;
            if (text.Length == 0) continue;
            var parts = text.Split('\t');
            if (parts.Length != fields) throw new InvalidDataException($"{path}, line {line}: {parts.Length} tab-separated fields, expected {fields}.");
            rows.Add(parts);
        }
        return rows;
    }

    /// <summary>Saves the model to a temporary file; returns the uncompressed size of its adapter entry (the method's tensors and the head).</summary>
    public static long AdapterBytes(MLContext ml, ITransformer model, DataViewSchema schema)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peft-bench-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, schema, path);
            using var zip = ZipFile.OpenRead(path);
            return zip.Entries.Where(e => e.FullName.EndsWith("Adapter.safetensors", StringComparison.Ordinal)).Sum(e => e.Length);
        }
        finally
        {
            File.Delete(path);
        }
    }

    public static MLContext Context(int seed, string source)
    {
        var ml = new MLContext(seed);
        ml.Log += (_, e) =>
        {
            if (e.Kind is ChannelMessageKind.Warning or ChannelMessageKind.Error ||
                (e.Kind == ChannelMessageKind.Info && e.Source.StartsWith(source, StringComparison.Ordinal)))
                Program.Log(e.Message);
        };
        return ml;
    }

    public static JsonObject Machine() => new()
    {
        ["processorCount"] = Environment.ProcessorCount,
        ["os"] = RuntimeInformation.OSDescription,
        ["framework"] = RuntimeInformation.FrameworkDescription,
        ["loadAverage"] = File.Exists("/proc/loadavg") && double.TryParse(File.ReadAllText("/proc/loadavg").Split(' ')[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var load) ? load : null,
    };

    public static void Write(string root, string resultsFile, JsonObject report, string table)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
        File.WriteAllText(resultsFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.WriteAllText(Path.ChangeExtension(resultsFile, ".md"), table);
        Console.WriteLine(table);
        Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)} and {Path.GetRelativePath(root, Path.ChangeExtension(resultsFile, ".md"))}.");
    }

    /// <summary>The Markdown table of a pair benchmark's report: its setup line, then one row per model with two metric columns.</summary>
    public static string Table(JsonObject report, string title, (string Header, string Key) first, (string Header, string Key) second)
    {
        var s = new StringBuilder();
        var recipe = report["recipe"]!;
        s.AppendLine(CultureInfo.InvariantCulture, $"{title}: {report["data"]}; {recipe["epochs"]} epoch(s), max length {recipe["maxLength"]}, batch {recipe["batchSize"]}, seed {recipe["seed"]}.");
        s.AppendLine();
        s.AppendLine($"| model | {first.Header} | {second.Header} | trainable parameters | share | train s | adapter bytes | lr |");
        s.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report["rows"]!.AsArray())
        {
            long trainable = r!["trainableParameters"]!.GetValue<long>(), total = r["totalParameters"]?.GetValue<long>() ?? 0;
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {r["name"]} | {F(r[first.Key], "F4")} | {F(r[second.Key], "F4")} | {trainable:N0} | " +
                $"{(trainable == 0 ? 0 : 100.0 * trainable / total).ToString("F2", CultureInfo.InvariantCulture)}% | {F(r["trainSeconds"], "F0")} | " +
                $"{r["adapterBytes"]!.GetValue<long>():N0} | {F(r["learningRate"], "G")} |");
        }
        return s.ToString();
    }

    public static string F(JsonNode? n, string format) =>
        n is null ? "" : double.Parse(n.ToJsonString(), CultureInfo.InvariantCulture).ToString(format, CultureInfo.InvariantCulture);
}

/// <summary>
/// <c>stsb</c>: sentence similarity on STS-B's training pairs, a seeded 15% held apart for testing. Rows: the ML.NET
/// baseline (cosine of frozen all-MiniLM-L6-v2 embeddings), the LoRA cross-encoder, the LoRA bi-encoder, and full
/// fine-tuning of whichever LoRA architecture scored the higher Spearman. Targets: the best PEFT row has Spearman at
/// least 0.86 on the held-apart rows and beats the frozen-embedding cosine.
/// </summary>
internal static class StsbBenchmark
{
    private const double SpearmanTarget = 0.86;

    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- stsb [options]\n" + PairArguments.Options("stsb", 4);

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var a = PairArguments.Parse(args, defaultEpochs: 4);
        var folder = Path.GetFullPath(a.Data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var all = PairBench.ReadTsv(Path.Combine(folder, "stsb", "train.tsv"), 3).Select(p => new PairRow
        {
            Sentence1 = p[0],
            Sentence2 = p[1],
            Label = float.Parse(p[2], NumberStyles.Float, CultureInfo.InvariantCulture),
        }).ToList();
        var (train, test) = a.Split(all);
        var description = string.Create(CultureInfo.InvariantCulture,
            $"{train.Count:N0} training pairs and {test.Count:N0} test pairs of stsb/train.tsv ({all.Count:N0} pairs; seeded shuffle, the last {a.TestFraction * 100:F0}% held apart)");
        Program.Log($"STS-B: {description}; {a.Epochs} epoch(s), max length {a.MaxLength}, seed {a.Seed}.");
        var ml = PairBench.Context(a.Seed, "PeftSentenceSimilarity");
        if (a.SkipCross && a.SkipBi) throw new ArgumentException("--skip-cross and --skip-bi leave no PEFT row.");
        var rows = new JsonArray { FrozenCosine(ml, a, test) };
        var cross = a.SkipCross ? null : RunPeft(ml, a, train, test, SimilarityArchitecture.CrossEncoder, a.Lora(), a.LoraLearningRate);
        var bi = a.SkipBi ? null : RunPeft(ml, a, train, test, SimilarityArchitecture.BiEncoder, a.Lora(), a.LoraLearningRate);
        if (cross is not null) rows.Add(cross);
        if (bi is not null) rows.Add(bi);
        var better = bi is null || cross is not null && Spearman(cross) >= Spearman(bi) ? SimilarityArchitecture.CrossEncoder : SimilarityArchitecture.BiEncoder;
        if (!a.SkipFull) rows.Add(RunPeft(ml, a, train, test, better, new FullFineTuningOptions(), a.FullLearningRate));

        double bestPeft = Math.Max(cross is null ? double.NegativeInfinity : Spearman(cross), bi is null ? double.NegativeInfinity : Spearman(bi));
        double baseline = Spearman(rows[0]!);
        var failures = new List<string>();
        if (bestPeft < SpearmanTarget) failures.Add(string.Create(CultureInfo.InvariantCulture, $"the best LoRA Spearman {bestPeft:F4} is below {SpearmanTarget:F2}"));
        if (!(bestPeft > baseline)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"the best LoRA Spearman {bestPeft:F4} does not beat the frozen-embedding cosine ({baseline:F4})"));
        var report = new JsonObject
        {
            ["benchmark"] = "stsb",
            ["data"] = description,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["commandLine"] = "stsb " + string.Join(' ', args.Skip(1)),
            ["machine"] = PairBench.Machine(),
            ["recipe"] = a.Recipe(),
            ["rows"] = rows,
            ["targets"] = new JsonObject
            {
                ["bestPeftSpearmanAtLeast"] = SpearmanTarget,
                ["beatsFrozenCosine"] = true,
                ["passed"] = failures.Count == 0,
                ["failures"] = new JsonArray(failures.Select(f => (JsonNode)f).ToArray()),
            },
        };
        var resultsFile = Path.GetFullPath(a.Output ?? Path.Combine(root, "bench", "results", "stsb.json"));
        PairBench.Write(root, resultsFile, report, Table(report));
        foreach (var failure in failures) Console.WriteLine($"TARGET FAILED: {failure}.");
        return failures.Count == 0 ? 0 : 1;
    }

    private static double Spearman(JsonNode row) => row["spearman"]!.GetValue<double>();

    /// <summary>The ML.NET baseline: the cosine of the two sentences' frozen MiniLM embeddings (ONNX Runtime), no training.</summary>
    private static JsonObject FrozenCosine(MLContext ml, PairArguments a, IReadOnlyList<PairRow> test)
    {
        Program.Log("Frozen MiniLM embeddings, cosine ...");
        var watch = Stopwatch.StartNew();
        using var embedder = new MiniLMEmbedder(a.MaxLength);
        var first = embedder.Embed(test.Select(r => r.Sentence1).ToList());
        var second = embedder.Embed(test.Select(r => r.Sentence2).ToList());
        var scored = test.Select((r, i) => new ScoredPair { Label = r.Label, Score = first[i].Zip(second[i], (x, y) => x * y).Sum() }).ToList();
        watch.Stop();
        var metrics = ml.Regression.EvaluateSentenceSimilarity(ml.Data.LoadFromEnumerable(scored));
        var row = new JsonObject
        {
            ["name"] = "ML.NET baseline: frozen all-MiniLM-L6-v2 embeddings, cosine",
            ["architecture"] = "bi-encoder",
            ["method"] = "none",
            ["pearson"] = metrics.Pearson,
            ["spearman"] = metrics.Spearman,
            ["trainableParameters"] = 0L,
            ["totalParameters"] = null,
            ["trainSeconds"] = 0.0,
            ["evalSeconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
            ["adapterBytes"] = 0L,
            ["learningRate"] = null,
        };
        Program.Log(row.ToJsonString());
        return row;
    }

    private static JsonObject RunPeft(MLContext ml, PairArguments a, IReadOnlyList<PairRow> trainRows, IReadOnlyList<PairRow> testRows,
        SimilarityArchitecture architecture, PeftMethodOptions method, float learningRate)
    {
        var name = $"{(method is FullFineTuningOptions ? "Full fine-tuning" : $"LoRA r={a.Rank} all-linear")}, " +
            (architecture == SimilarityArchitecture.BiEncoder ? (a.Loss == SimilarityLoss.CoSent ? "bi-encoder, CoSENT" : "bi-encoder") : a.BothOrders ? "cross-encoder, both orders" : "cross-encoder");
        Program.Log($"{name}, learning rate {learningRate.ToString("G", CultureInfo.InvariantCulture)} ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        var trainer = ml.Regression.Trainers.PeftSentenceSimilarity(new PeftSentenceSimilarityTrainer.Options
        {
            Architecture = architecture,
            BothOrders = a.BothOrders,
            Loss = a.Loss,
            Method = method,
            LearningRate = learningRate,
            MaxEpoch = a.Epochs,
            MaxSequenceLength = a.MaxLength,
            BatchSize = a.BatchSize,
            Seed = a.Seed,
        });
        var watch = Stopwatch.StartNew();
        using var model = trainer.Fit(train);
        watch.Stop();
        var evalWatch = Stopwatch.StartNew();
        var metrics = ml.Regression.EvaluateSentenceSimilarity(model.Transform(test));
        evalWatch.Stop();
        var row = new JsonObject
        {
            ["name"] = name,
            ["architecture"] = architecture == SimilarityArchitecture.CrossEncoder ? "cross-encoder" : "bi-encoder",
            ["method"] = model.Method,
            ["pearson"] = metrics.Pearson,
            ["spearman"] = metrics.Spearman,
            ["trainableParameters"] = model.TrainableParameterCount,
            ["totalParameters"] = model.TotalParameterCount,
            ["trainSeconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
            ["evalSeconds"] = Math.Round(evalWatch.Elapsed.TotalSeconds, 2),
            ["adapterBytes"] = PairBench.AdapterBytes(ml, model, train.Schema),
            ["learningRate"] = learningRate,
            ["epochLosses"] = new JsonArray(model.TrainingHistory.Select(e => (JsonNode)Math.Round(e.TrainingLoss, 5)).ToArray()),
        };
        Program.Log(row.ToJsonString());
        return row;
    }

    private static string Table(JsonObject report) => PairBench.Table(report, "STS-B", ("Pearson", "pearson"), ("Spearman", "spearman"));

    private sealed class PairRow
    {
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
        public float Label { get; set; }
    }

    private sealed class ScoredPair
    {
        public float Label { get; set; }
        public float Score { get; set; }
    }
}

/// <summary>
/// <c>mrpc</c>: paraphrase detection on MRPC's training pairs, a seeded 15% held apart for testing. Rows: the ML.NET
/// baseline (FeaturizeText on the concatenated pair + SdcaMaximumEntropy), LoRA sentence-pair classification
/// (<c>PeftTextClassification</c> with <c>Sentence2ColumnName</c>), full fine-tuning. Accuracy and F1 of the paraphrase
/// class (label 1), as GLUE reports them. Target: LoRA accuracy at least 0.80.
/// </summary>
internal static class MrpcBenchmark
{
    private const double AccuracyTarget = 0.80;

    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- mrpc [options]\n" + PairArguments.Options("mrpc", 3);

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var a = PairArguments.Parse(args, defaultEpochs: 3);
        var folder = Path.GetFullPath(a.Data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var all = PairBench.ReadTsv(Path.Combine(folder, "mrpc", "train.tsv"), 3)
            .Select(p => new PairRow { Label = p[0], Sentence1 = p[1], Sentence2 = p[2], Pair = p[1] + " " + p[2] }).ToList();
        var (train, test) = a.Split(all);
        var description = string.Create(CultureInfo.InvariantCulture,
            $"{train.Count:N0} training pairs and {test.Count:N0} test pairs of mrpc/train.tsv ({all.Count:N0} pairs; seeded shuffle, the last {a.TestFraction * 100:F0}% held apart; " +
            $"{100.0 * test.Count(r => r.Label == "1") / Math.Max(1, test.Count):F1}% of the test pairs are paraphrases)");
        Program.Log($"MRPC: {description}; {a.Epochs} epoch(s), max length {a.MaxLength}, seed {a.Seed}.");
        var ml = PairBench.Context(a.Seed, "PeftTextClassification");
        var rows = new JsonArray { Classic(ml, train, test) };
        var lora = RunPeft(ml, a, train, test, a.Lora(), $"LoRA r={a.Rank} all-linear, pair classification", a.LoraLearningRate);
        rows.Add(lora);
        if (!a.SkipFull) rows.Add(RunPeft(ml, a, train, test, new FullFineTuningOptions(), "Full fine-tuning, pair classification", a.FullLearningRate));

        double accuracy = lora["accuracy"]!.GetValue<double>();
        var failures = new List<string>();
        if (accuracy < AccuracyTarget) failures.Add(string.Create(CultureInfo.InvariantCulture, $"LoRA accuracy {accuracy:F4} is below {AccuracyTarget:F2}"));
        var report = new JsonObject
        {
            ["benchmark"] = "mrpc",
            ["data"] = description,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["commandLine"] = "mrpc " + string.Join(' ', args.Skip(1)),
            ["machine"] = PairBench.Machine(),
            ["recipe"] = a.Recipe(),
            ["rows"] = rows,
            ["targets"] = new JsonObject
            {
                ["loraAccuracyAtLeast"] = AccuracyTarget,
                ["passed"] = failures.Count == 0,
                ["failures"] = new JsonArray(failures.Select(f => (JsonNode)f).ToArray()),
            },
        };
        var resultsFile = Path.GetFullPath(a.Output ?? Path.Combine(root, "bench", "results", "mrpc.json"));
        PairBench.Write(root, resultsFile, report, Table(report));
        foreach (var failure in failures) Console.WriteLine($"TARGET FAILED: {failure}.");
        return failures.Count == 0 ? 0 : 1;
    }

    /// <summary>Accuracy and F1 of the paraphrase class ("1") from the predicted labels.</summary>
    private static (double Accuracy, double F1) Score(MLContext ml, IDataView scored, IReadOnlyList<PairRow> truth)
    {
        var predicted = scored.GetColumn<string>("PredictedLabel").ToList();
        int tp = 0, fp = 0, fn = 0, correct = 0;
        for (int i = 0; i < truth.Count; i++)
        {
            bool p = predicted[i] == "1", t = truth[i].Label == "1";
            if (p == t) correct++;
            if (p && t) tp++;
            else if (p) fp++;
            else if (t) fn++;
        }
        return ((double)correct / truth.Count, tp == 0 ? 0 : 2.0 * tp / (2 * tp + fp + fn));
    }

    private static IEstimator<ITransformer> MapLabel(MLContext ml, IReadOnlyList<PairRow> train) =>
        ml.Transforms.Conversion.MapValueToKey(nameof(PairRow.Label),
            keyData: ml.Data.LoadFromEnumerable(train.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).Select(l => new LabelRow { Label = l }).ToList()));

    /// <summary>FeaturizeText (word 1-2-grams and character 3-grams) of the two sentences joined by a space, SdcaMaximumEntropy.</summary>
    private static JsonObject Classic(MLContext ml, IReadOnlyList<PairRow> trainRows, IReadOnlyList<PairRow> testRows)
    {
        Program.Log("ML.NET: FeaturizeText on the concatenated pair + SdcaMaximumEntropy ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var pipeline = ml.Transforms.Text.FeaturizeText("Features", nameof(PairRow.Pair))
            .Append(MapLabel(ml, trainRows))
            .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy())
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();
        int features = model.GetOutputSchema(train.Schema)["Features"].Type is VectorDataViewType { Size: > 0 } v ? v.Size : 0;
        var (accuracy, f1) = Score(ml, model.Transform(ml.Data.LoadFromEnumerable(testRows)), testRows);
        var row = new JsonObject
        {
            ["name"] = "ML.NET baseline: FeaturizeText(sentence1 + sentence2) + SdcaMaximumEntropy",
            ["method"] = "none",
            ["accuracy"] = accuracy,
            ["f1"] = f1,
            ["trainableParameters"] = (long)features * 2 + 2,
            ["totalParameters"] = (long)features * 2 + 2,
            ["trainSeconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
            ["adapterBytes"] = 0L,
            ["learningRate"] = null,
        };
        Program.Log(row.ToJsonString());
        return row;
    }

    private static JsonObject RunPeft(MLContext ml, PairArguments a, IReadOnlyList<PairRow> trainRows, IReadOnlyList<PairRow> testRows,
        PeftMethodOptions method, string name, float learningRate)
    {
        Program.Log($"{name}, learning rate {learningRate.ToString("G", CultureInfo.InvariantCulture)} ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var pipeline = MapLabel(ml, trainRows)
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
            {
                Sentence1ColumnName = nameof(PairRow.Sentence1),
                Sentence2ColumnName = nameof(PairRow.Sentence2),
                Method = method,
                LearningRate = learningRate,
                MaxEpoch = a.Epochs,
                MaxSequenceLength = a.MaxLength,
                BatchSize = a.BatchSize,
                Seed = a.Seed,
            }))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();
        var peft = model.OfType<PeftTextClassificationTransformer>().Single();
        try
        {
            var (accuracy, f1) = Score(ml, model.Transform(ml.Data.LoadFromEnumerable(testRows)), testRows);
            var row = new JsonObject
            {
                ["name"] = name,
                ["method"] = peft.Method,
                ["accuracy"] = accuracy,
                ["f1"] = f1,
                ["trainableParameters"] = peft.TrainableParameterCount,
                ["totalParameters"] = peft.TotalParameterCount,
                ["trainSeconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
                ["adapterBytes"] = PairBench.AdapterBytes(ml, model, train.Schema),
                ["learningRate"] = learningRate,
                ["epochLosses"] = new JsonArray(peft.TrainingHistory.Select(e => (JsonNode)Math.Round(e.TrainingLoss, 5)).ToArray()),
            };
            Program.Log(row.ToJsonString());
            return row;
        }
        finally
        {
            peft.Dispose();
        }
    }

    private static string Table(JsonObject report) => PairBench.Table(report, "MRPC", ("accuracy", "accuracy"), ("F1 (paraphrase)", "f1"));

    private sealed class PairRow
    {
        public string Label { get; set; } = "";
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
        public string Pair { get; set; } = "";
    }
}
