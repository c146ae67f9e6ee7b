using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.AutoML;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Peft.Bench;

/// <summary>
/// <c>search</c>: the automated search (<see cref="PeftExperiment"/>) with a time budget on the first rows of
/// sst2/train.tsv against the default LoRA recipe trained for the same wall time on the same rows, both evaluated on
/// sst2/test-sentences.tsv. The default recipe gets as many epochs as fit in the search's wall time (measured by a first
/// one-epoch run, which is reported too). Target: the search's model is the more accurate.
/// </summary>
internal static class SearchBenchmark
{
    public const string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- search [options]\n" +
        "  --budget S        the search's time budget in seconds, refit included (default 900)\n" +
        "  --train-rows N    first N rows of sst2/train.tsv (default 6000; the search holds 20% of them out for validation)\n" +
        "  --eval-rows N     first N rows of sst2/test-sentences.tsv (default: all 1,821)\n" +
        "  --seed N          seed of the search and the default recipe (default 1)\n" +
        "  --data DIR        the data folder (default ../shared/data)\n" +
        "  --output FILE     results file (default bench/results/search-sst2.json; the table goes beside it as .md)";

    public static int Run(IReadOnlyList<string> args, string root)
    {
        int budget = 900, trainRows = 6000, seed = 1;
        int? evalRows = null;
        string data = Path.Combine(root, "..", "shared", "data");
        string? output = null;
        for (int i = 1; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Int() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new ArgumentException($"{args[i]} needs a positive whole number.");
            switch (args[i])
            {
                case "--budget": budget = Int(); break;
                case "--train-rows": trainRows = Int(); break;
                case "--eval-rows": evalRows = Int(); break;
                case "--seed": seed = Int(); break;
                case "--data": data = Value(); break;
                case "--output": output = Value(); break;
                default: throw new ArgumentException($"Unknown option {args[i]}.");
            }
        }
        var train = Read(Path.Combine(data, "sst2", "train.tsv"), trainRows);
        var test = Read(Path.Combine(data, "sst2", "test-sentences.tsv"), evalRows);
        Program.Log($"search: {train.Count:N0} training rows, {test.Count:N0} test sentences, budget {budget} s");

        var ml = PairBench.Context(seed, "PeftExperiment");
        var trainView = ml.Data.LoadFromEnumerable(train);
        var testView = ml.Data.LoadFromEnumerable(test);

        // The search.
        var experiment = new PeftExperiment(ml, PeftSearchTasks.TextClassification(nameof(SentimentRow.Label), nameof(SentimentRow.Sentence)),
            new PeftExperimentOptions { TrainTimeSeconds = budget, Seed = seed });
        experiment.TrialCompleted += (_, t) => Program.Log($"trial {t.Number} {t.Status}: {t.Parameters}; accuracy {t.Metric?.ToString("F4", CultureInfo.InvariantCulture) ?? "-"}, {t.Seconds:F0} s");
        var watch = Stopwatch.StartNew();
        var result = experiment.Run(trainView);
        double searchSeconds = watch.Elapsed.TotalSeconds;
        var searchRow = Row(ml, "search (best of the leaderboard" + (result.Refitted ? $", refitted on all rows for {result.RefitEpochs} epoch(s))" : ")"), result.Model, trainView, testView, searchSeconds,
            result.BestTrial.Parameters.ToString());
        (result.Model as IDisposable)?.Dispose();

        // The default recipe: one epoch first, to measure; then as many epochs as the search's wall time holds.
        var defaults = new PeftTextClassificationTrainer.Options();
        var (oneEpoch, oneEpochSeconds) = TrainDefault(ml, trainView, epochs: 1);
        var oneEpochRow = Row(ml, "default LoRA recipe, 1 epoch", oneEpoch, trainView, testView, oneEpochSeconds, Recipe(defaults, 1));
        (oneEpoch as IDisposable)?.Dispose();
        int epochs = Math.Max(1, (int)Math.Floor(searchSeconds / oneEpochSeconds));
        JsonObject sameTimeRow;
        if (epochs == 1)
        {
            sameTimeRow = oneEpochRow.DeepClone().AsObject();
            sameTimeRow["name"] = "default LoRA recipe, same wall time (1 epoch)";
        }
        else
        {
            var (model, seconds) = TrainDefault(ml, trainView, epochs);
            sameTimeRow = Row(ml, $"default LoRA recipe, same wall time ({epochs} epochs)", model, trainView, testView, seconds, Recipe(defaults, epochs));
            (model as IDisposable)?.Dispose();
        }

        double searchAccuracy = searchRow["accuracy"]!.GetValue<double>(), defaultAccuracy = sameTimeRow["accuracy"]!.GetValue<double>();
        var leaderboard = result.Leaderboard();
        var report = new JsonObject
        {
            ["benchmark"] = "search",
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["machine"] = PairBench.Machine(),
            ["command"] = "dotnet run -c Release --project bench/Peft.Bench -- " + string.Join(' ', args),
            ["data"] = $"first {train.Count:N0} rows of sst2/train.tsv (the search validates on a seeded 20% of them), evaluated on {test.Count:N0} rows of sst2/test-sentences.tsv",
            ["budgetSeconds"] = budget,
            ["searchSeconds"] = Math.Round(searchSeconds, 1),
            ["trials"] = result.Trials.Count,
            ["rows"] = new JsonArray(searchRow, sameTimeRow, oneEpochRow),
            ["leaderboard"] = new JsonArray(leaderboard.Select(t => (JsonNode)new JsonObject
            {
                ["trial"] = t.Number, ["status"] = t.Status.ToString(), ["validationAccuracy"] = t.Metric, ["seconds"] = Math.Round(t.Seconds, 1),
                ["epochsTrained"] = t.Epochs.Count, ["settings"] = t.Parameters.ToString(),
            }).ToArray()),
            ["targets"] = new JsonObject
            {
                ["searchBeatsDefaultRecipe"] = searchAccuracy > defaultAccuracy,
                ["withinBudget"] = searchSeconds <= budget * 1.1,
            },
        };
        var table = Table(report, leaderboard, budget, searchSeconds);
        PairBench.Write(root, Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", "search-sst2.json")), report, table);
        return 0;
    }

    private static (ITransformer Model, double Seconds) TrainDefault(MLContext ml, IDataView train, int epochs)
    {
        Program.Log($"default LoRA recipe: {epochs} epoch(s)");
        var watch = Stopwatch.StartNew();
        var model = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label))
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
            {
                LabelColumnName = nameof(SentimentRow.Label), Sentence1ColumnName = nameof(SentimentRow.Sentence), MaxEpoch = epochs,
            }))
            .Fit(train);
        return (model, watch.Elapsed.TotalSeconds);
    }

    private static string Recipe(PeftTextClassificationTrainer.Options o, int epochs) =>
        $"method lora, rank 8, alpha 16, targets all-linear, learning rate {o.LearningRate.ToString("G", CultureInfo.InvariantCulture)}, epochs {epochs}, max length {o.MaxSequenceLength}";

    private static JsonObject Row(MLContext ml, string name, ITransformer model, IDataView train, IDataView test, double seconds, string settings)
    {
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test), nameof(SentimentRow.Label));
        var peft = Flatten(model).OfType<PeftTextClassificationTransformer>().Single();
        return new JsonObject
        {
            ["name"] = name,
            ["settings"] = settings,
            ["accuracy"] = Math.Round(metrics.MicroAccuracy, 4),
            ["wallSeconds"] = Math.Round(seconds, 1),
            ["trainableParameters"] = peft.TrainableParameterCount,
            ["adapterBytes"] = PairBench.AdapterBytes(ml, model, train.Schema),
        };
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };

    private static List<SentimentRow> Read(string path, int? rows)
    {
        var all = MethodComparison.ReadTsv(path, header: true, textFirst: true);
        return rows is int n ? all.Take(n).ToList() : all;
    }

    private static string Table(JsonObject report, IReadOnlyList<PeftTrialResult> leaderboard, int budget, double searchSeconds)
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"Automated search on SST-2: {report["data"]}; budget {budget} s, the search took {searchSeconds:F0} s ({report["trials"]} trials).");
        s.AppendLine();
        s.AppendLine("| model | accuracy | wall s | trainable parameters | adapter bytes | settings |");
        s.AppendLine("|---|---:|---:|---:|---:|---|");
        foreach (var r in report["rows"]!.AsArray())
            s.AppendLine(CultureInfo.InvariantCulture, $"| {r!["name"]} | {r["accuracy"]!.GetValue<double>():F4} | {r["wallSeconds"]!.GetValue<double>():F0} | " +
                $"{r["trainableParameters"]!.GetValue<long>():N0} | {r["adapterBytes"]!.GetValue<long>():N0} | {r["settings"]} |");
        s.AppendLine();
        s.AppendLine("Leaderboard (validation accuracy on the held-out 20% of the training rows):");
        s.AppendLine();
        s.AppendLine("| rank | trial | status | validation accuracy | epochs | s | settings |");
        s.AppendLine("|---:|---:|---|---:|---:|---:|---|");
        int rank = 0;
        foreach (var t in leaderboard)
            s.AppendLine(CultureInfo.InvariantCulture, $"| {++rank} | {t.Number} | {t.Status} | {(t.Metric is double m ? m.ToString("F4", CultureInfo.InvariantCulture) : "-")} | {t.Epochs.Count} | {t.Seconds:F0} | {t.Parameters} |");
        return s.ToString();
    }
}
