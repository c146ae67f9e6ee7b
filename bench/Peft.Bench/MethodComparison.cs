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
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Peft.Bench;

/// <summary>
/// <c>methods</c>: every PEFT method on the same training rows of one data set with the same epoch budget, evaluated on
/// rows training never saw; one results file and one Markdown table per data set. Methods run one after the other in
/// one process; a run of some methods replaces their rows in the results file and keeps the others.
/// </summary>
internal static class MethodComparison
{
    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- methods --dataset sst2|agnews [options]\n" +
        "  --methods a,b,...   methods to run (default: all): " + MethodRecipes.NamesText + "\n" +
        "  --train-rows N      training rows (default 8000)\n" +
        "  --eval-rows N       evaluation rows (default: sst2 all 1,821 of test-sentences.tsv; agnews 2,000 rows of train.tsv after the training rows)\n" +
        "  --epochs N          passes over the training rows, every method (default 1)\n" +
        "  --max-length N      longest token sequence (default 128)\n" +
        "  --seed N            seed (default 1)\n" +
        "  --output FILE       results file (default bench/results/methods-<dataset>.json; the table goes beside it as .md)\n" +
        "  --data DIR          data folder (default ../shared/data beside the repository root)";

    public static int Run(IReadOnlyList<string> args, string root)
    {
        string? dataset = null, output = null, data = null;
        int trainRows = 8000, epochs = 1, maxLength = 128, seed = 1;
        int? evalRows = null;
        var methods = MethodRecipes.Names.ToList();
        for (int i = 1; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Positive(string option) =>
                int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{option} must be a positive integer.");
            switch (args[i])
            {
                case "--dataset": dataset = Value(); break;
                case "--methods":
                    methods = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
                    var unknown = methods.FirstOrDefault(m => !MethodRecipes.AllNames.Contains(m));
                    if (unknown is not null) throw new ArgumentException($"Unknown method '{unknown}' in --methods; known: {MethodRecipes.NamesText}.");
                    break;
                case "--train-rows": trainRows = Positive(args[i]); break;
                case "--eval-rows": evalRows = Positive(args[i]); break;
                case "--epochs": epochs = Positive(args[i]); break;
                case "--max-length": maxLength = Positive(args[i]); break;
                case "--seed": seed = int.Parse(Value(), NumberStyles.None, CultureInfo.InvariantCulture); break;
                case "--output": output = Value(); break;
                case "--data": data = Value(); break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        if (dataset is not ("sst2" or "agnews")) throw new ArgumentException("--dataset must be sst2 or agnews.");
        var dataFolder = Path.GetFullPath(data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var (train, test, description) = dataset == "sst2" ? Sst2(dataFolder, trainRows, evalRows) : AgNews(dataFolder, trainRows, evalRows ?? 2000);
        var resultsFile = Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", $"methods-{dataset}.json"));
        Program.Log($"{dataset}: {description}; {epochs} epoch(s), max length {maxLength}, seed {seed}; methods {string.Join(", ", methods)}.");

        var ml = new MLContext(seed);
        ml.Log += (_, e) =>
        {
            if (e.Kind is ChannelMessageKind.Warning or ChannelMessageKind.Error ||
                (e.Kind == ChannelMessageKind.Info && e.Source.StartsWith("PeftTextClassification", StringComparison.Ordinal)))
                Program.Log(e.Message);
        };
        var report = File.Exists(resultsFile) ? JsonNode.Parse(File.ReadAllText(resultsFile))!.AsObject() : new JsonObject();
        var recipeNow = new JsonObject { ["epochs"] = epochs, ["maxLength"] = maxLength, ["seed"] = seed, ["batchSize"] = 32, ["trainRows"] = train.Count, ["evalRows"] = test.Count };
        if (report.Count > 0 && (report["dataset"]?.GetValue<string>() != dataset || !JsonNode.DeepEquals(report["recipe"], recipeNow)))
        {
            // Rows of another data set or recipe do not belong in the same table.
            Program.Log($"{Path.GetFileName(resultsFile)} holds results of another data set or recipe; starting it afresh.");
            report = new JsonObject();
        }
        report["benchmark"] = "methods";
        report["dataset"] = dataset;
        report["data"] = description;
        report["commandLine"] = "methods " + string.Join(' ', args.Skip(1));
        report["recipe"] = recipeNow;
        var rows = report["methods"] as JsonArray ?? new JsonArray();
        report["methods"] = rows;
        foreach (var name in methods)
        {
            var recipe = MethodRecipes.Get(name);
            double? load = LoadAverage();
            var result = RunMethod(ml, recipe, train, test, epochs, maxLength, seed);
            result["loadAverageAtStart"] = load;
            result["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            result["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}";
            var existing = rows.Select((r, index) => (r, index)).FirstOrDefault(x => x.r?["name"]?.GetValue<string>() == name);
            if (existing.r is not null) rows[existing.index] = result;
            else rows.Add(result);
            // Keep the table in the order of MethodRecipes.Names, whatever order runs came in.
            var ordered = rows.Select(r => r!.DeepClone()).OrderBy(r => Array.IndexOf(MethodRecipes.AllNames, r["name"]!.GetValue<string>())).ToList();
            rows.Clear();
            foreach (var r in ordered) rows.Add(r);
            Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
            File.WriteAllText(resultsFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            File.WriteAllText(Path.ChangeExtension(resultsFile, ".md"), Table(report));
        }
        Console.WriteLine(Table(report));
        Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)} and {Path.GetRelativePath(root, Path.ChangeExtension(resultsFile, ".md"))}.");
        return 0;
    }

    private static JsonObject RunMethod(MLContext ml, MethodRecipe recipe, IReadOnlyList<SentimentRow> trainRows, IReadOnlyList<SentimentRow> testRows,
        int epochs, int maxLength, int seed)
    {
        Program.Log($"{recipe.Name}: {recipe.Description}, learning rate {recipe.LearningRate.ToString("G", CultureInfo.InvariantCulture)} ...");
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        var labels = ml.Data.LoadFromEnumerable(trainRows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).Select(l => new LabelRow { Label = l }).ToList());
        var options = new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentimentRow.Sentence),
            MaxEpoch = epochs,
            MaxSequenceLength = maxLength,
            LearningRate = recipe.LearningRate,
            Seed = seed,
            Method = recipe.Create(),
        };
        var pipeline = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label), keyData: labels)
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));
        var watch = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        watch.Stop();
        var peft = model.OfType<PeftTextClassificationTransformer>().Single();
        try
        {
            // The transformer has merged the adapter where the method allows: this is inference after merging.
            var evalWatch = Stopwatch.StartNew();
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test), labelColumnName: nameof(SentimentRow.Label));
            evalWatch.Stop();
            long adapterBytes = AdapterBytes(ml, model, train.Schema);
            var result = new JsonObject
            {
                ["name"] = recipe.Name,
                ["method"] = peft.Method,
                ["description"] = recipe.Description,
                ["learningRate"] = recipe.LearningRate,
                ["accuracy"] = metrics.MicroAccuracy,
                ["macroF1"] = MethodResult.MacroF1Of(metrics.ConfusionMatrix),
                ["trainableParameters"] = peft.TrainableParameterCount,
                ["totalParameters"] = peft.TotalParameterCount,
                ["trainableShare"] = (double)peft.TrainableParameterCount / peft.TotalParameterCount,
                ["trainSeconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
                ["trainRowsPerSecond"] = Math.Round(trainRows.Count * (double)epochs / watch.Elapsed.TotalSeconds, 1),
                ["adapterBytes"] = adapterBytes,
                ["inferenceRowsPerSecond"] = Math.Round(testRows.Count / evalWatch.Elapsed.TotalSeconds, 1),
            };
            Program.Log(result.ToJsonString());
            return result;
        }
        finally
        {
            peft.Dispose();
        }
    }

    /// <summary>Uncompressed size of the saved model's adapter entry (the method's tensors and the head).</summary>
    private static long AdapterBytes(MLContext ml, ITransformer model, DataViewSchema schema)
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

    /// <summary>The Markdown table of a results file.</summary>
    public static string Table(JsonObject report)
    {
        static double D(JsonNode n) => double.Parse(n.ToJsonString(), CultureInfo.InvariantCulture);
        static string F(JsonNode? n, string format) => n is null ? "" : D(n).ToString(format, CultureInfo.InvariantCulture);
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"{report["dataset"]}: {report["data"]}; {report["recipe"]?["epochs"]} epoch(s), max length {report["recipe"]?["maxLength"]}, batch 32, seed {report["recipe"]?["seed"]}.");
        s.AppendLine();
        s.AppendLine("| method | accuracy | macro-F1 | trainable parameters | share | train s | train rows/s | adapter bytes | inference rows/s (merged) | lr |");
        s.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report["methods"]!.AsArray())
        {
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {r!["name"]} ({r["description"]}) | {F(r["accuracy"], "F4")} | {F(r["macroF1"], "F4")} | {r["trainableParameters"]!.GetValue<long>():N0} | " +
                $"{(100 * D(r["trainableShare"]!)).ToString("F2", CultureInfo.InvariantCulture)}% | {F(r["trainSeconds"], "F0")} | {F(r["trainRowsPerSecond"], "F1")} | " +
                $"{r["adapterBytes"]!.GetValue<long>():N0} | {F(r["inferenceRowsPerSecond"], "F0")} | {F(r["learningRate"], "G")} |");
        }
        return s.ToString();
    }

    private static (List<SentimentRow> Train, List<SentimentRow> Test, string Description) Sst2(string folder, int trainRows, int? evalRows)
    {
        var train = ReadTsv(Path.Combine(folder, "sst2", "train.tsv"), header: true, textFirst: true).Take(trainRows).ToList();
        var test = ReadTsv(Path.Combine(folder, "sst2", "test-sentences.tsv"), header: true, textFirst: true);
        if (evalRows is int n) test = test.Take(n).ToList();
        return (train, test, $"first {train.Count:N0} rows of sst2/train.tsv, evaluated on {test.Count:N0} rows of sst2/test-sentences.tsv");
    }

    private static (List<SentimentRow> Train, List<SentimentRow> Test, string Description) AgNews(string folder, int trainRows, int evalRows)
    {
        var all = ReadTsv(Path.Combine(folder, "agnews", "train.tsv"), header: false, textFirst: true);
        if (trainRows + evalRows > all.Count) throw new ArgumentException($"agnews/train.tsv has {all.Count} rows, fewer than {trainRows} + {evalRows}.");
        var train = all.Take(trainRows).ToList();
        var test = all.Skip(trainRows).Take(evalRows).ToList();
        return (train, test, $"first {train.Count:N0} rows of agnews/train.tsv, evaluated on the next {test.Count:N0} (rows training never saw)");
    }

    internal static List<SentimentRow> ReadTsv(string path, bool header, bool textFirst)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The data file {path} does not exist; pass the data folder with --data.", path);
        var rows = new List<SentimentRow>();
        foreach (var line in File.ReadLines(path).Skip(header ? 1 : 0))
        {
            if (line.Length == 0) continue;
            var tab = line.LastIndexOf('\t');
            if (tab < 0) throw new InvalidDataException($"{path}: a line without a tab: '{line}'.");
            rows.Add(new SentimentRow { Sentence = line[..tab], Label = line[(tab + 1)..] });
        }
        return rows;
    }

    internal static double? LoadAverage()
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
