using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;

namespace Peft.Bench;

/// <summary>
/// MovieLens-100K explicit ratings: matrix factorisation and its adaptation to later ratings. Two protocols:
/// <list type="bullet">
/// <item><b>temporal</b>: ratings ordered by timestamp; a base model trained on the earliest 80%, adapted on the next
/// 10%, every model evaluated on the last 10%; rows for the global mean, user+item biases (80% and 90%), the base alone,
/// the base with each adaptation method, and full retraining on the first 90%;</item>
/// <item><b>random</b>: ML.NET's seeded 80/20 split, the base recipe against the global mean and biases.</item>
/// </list>
/// RMSE and MAE come from ML.NET's regression evaluator; sizes are those of the saved model files.
/// </summary>
internal static class RecommendationBenchmark
{
    public const string Usage =
        "Usage: Peft.Bench movielens [options]\n" +
        "  --seed N            seed of the random split and every trainer (default 1)\n" +
        "  --adapt-rank N      LoRA rank of the adaptation (default: the trainer's, 4)\n" +
        "  --adapt-lr X        learning rate of the adaptations (default: the trainer's)\n" +
        "  --adapt-lambda X    regularisation of the adaptations (default: the trainer's)\n" +
        "  --adapt-iterations N  passes of the adaptations (default: the trainer's)\n" +
        "  --skip-random       leave out the random 80/20 split\n" +
        "  --threads N         libtorch intra-op threads (default 1: these models' operations are too small to gain from more)\n" +
        "  --sweep SPECS       instead of the table: train the temporal base once, then adapt it with each of the\n" +
        "                      comma-separated METHOD:OPTIMIZER:LR:LAMBDA:ITERATIONS[:RANK] and print RMSE and MAE\n" +
        "  --sweep-ncf SPECS   instead of the table: train the neural variant on the random and temporal splits with each of the\n" +
        "                      comma-separated LAMBDA:LR:ITERATIONS and print RMSE and MAE\n" +
        "  --output FILE       results file (default bench/results/movielens.json; the table goes beside it as .md)\n" +
        "  --data DIR          data folder (default ../shared/data beside the repository root)";

    private sealed record Rating(string User, string Item, float Label, long Timestamp);

    /// <summary>What ML.NET reads: text ids (matched by value by the model) and the rating.</summary>
    private sealed class RatingRow
    {
        public string User { get; set; } = "";
        public string Item { get; set; } = "";
        public float Label { get; set; }
    }

    public static int Run(IReadOnlyList<string> args, string root)
    {
        int seed = 1;
        int? adaptRank = null, adaptIterations = null;
        double? adaptLr = null, adaptLambda = null;
        bool skipRandom = false;
        int threads = 1;
        string? output = null, data = null, sweep = null, sweepNcf = null;
        for (int k = 1; k < args.Count; k++)
        {
            string Value() => k + 1 < args.Count ? args[++k] : throw new ArgumentException($"{args[k]} needs a value.");
            int Int() => int.TryParse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{args[k - 1]} needs a positive integer.");
            double Double() => double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v : throw new ArgumentException($"{args[k - 1]} needs a number, 0 or more.");
            switch (args[k])
            {
                case "--seed": seed = Int(); break;
                case "--adapt-rank": adaptRank = Int(); break;
                case "--adapt-lr": adaptLr = Double(); break;
                case "--adapt-lambda": adaptLambda = Double(); break;
                case "--adapt-iterations": adaptIterations = Int(); break;
                case "--skip-random": skipRandom = true; break;
                case "--threads": threads = Int(); break;
                case "--sweep": sweep = Value(); break;
                case "--sweep-ncf": sweepNcf = Value(); break;
                case "--output": output = Value(); break;
                case "--data": data = Value(); break;
                default: throw new ArgumentException($"Unknown option '{args[k]}'.");
            }
        }
        TorchSharp.torch.set_num_threads(threads);
        var file = Path.Combine(data ?? Path.Combine(root, "..", "shared", "data"), "movielens-100k", "u.data");
        var ratings = Read(file);
        var ml = PairBench.Context(seed, "Peft");
        var work = Directory.CreateTempSubdirectory("peft-movielens-");
        try
        {
            if (sweep is not null) return Sweep(ml, ratings, seed, sweep);
            if (sweepNcf is not null) return SweepNeural(ml, ratings, seed, sweepNcf);
            var report = new JsonObject
            {
                ["benchmark"] = "movielens",
                ["data"] = $"MovieLens-100K, {ratings.Count:N0} ratings",
                ["seed"] = seed,
                ["threads"] = threads,
                ["machine"] = PairBench.Machine(),
            };
            report["temporal"] = Temporal(ml, ratings, seed, work.FullName, adaptRank, adaptLr, adaptLambda, adaptIterations);
            if (!skipRandom) report["random"] = RandomSplit(ml, ratings, seed, work.FullName);
            var resultsFile = Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", "movielens.json"));
            PairBench.Write(root, resultsFile, report, Table(report));
            return 0;
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static List<Rating> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The MovieLens file {path} does not exist; pass the data folder with --data.", path);
        var rows = new List<Rating>();
        int line = 1;
        foreach (var text in File.ReadLines(path).Skip(1))
        {
            line++;
            if (text.Length == 0) continue;
            var parts = text.Split('|');
            if (parts.Length != 4 || !float.TryParse(parts[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var rating) ||
                !long.TryParse(parts[3], NumberStyles.Integer, CultureInfo.InvariantCulture, out var time))
                throw new InvalidDataException($"{path}, line {line}: expected user|item|rating|timestamp.");
            rows.Add(new Rating(parts[0], parts[1], rating, time));
        }
        return rows;
    }

    private static IDataView View(MLContext ml, IEnumerable<Rating> rows) =>
        ml.Data.LoadFromEnumerable(rows.Select(r => new RatingRow { User = r.User, Item = r.Item, Label = r.Label }).ToList());

    private static PeftMatrixFactorizationTrainer.Options BaseOptions(int seed) => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        Seed = seed,
    };

    /// <summary>User and item biases alone: rank-1 factors starting at zero get no gradient and stay zero.</summary>
    private static PeftMatrixFactorizationTrainer.Options BiasOptions(int seed)
    {
        var options = BaseOptions(seed);
        options.ApproximationRank = 1;
        options.InitialStandardDeviation = 0;
        options.Lambda = 0.01;
        options.NumberOfIterations = 15;
        return options;
    }

    private static JsonObject Row(string name, string trainedOn, MLContext ml, ITransformer? model, IDataView test, float? constant,
        IReadOnlyList<Rating> testRows, double seconds, long trainable, long bytes)
    {
        double rmse, mae;
        if (model is null)
        {
            rmse = Math.Sqrt(testRows.Average(r => (r.Label - constant!.Value) * (double)(r.Label - constant.Value)));
            mae = testRows.Average(r => Math.Abs(r.Label - constant!.Value));
        }
        else
        {
            var metrics = ml.Regression.Evaluate(model.Transform(test));
            (rmse, mae) = (metrics.RootMeanSquaredError, metrics.MeanAbsoluteError);
        }
        Program.Log($"{name}: RMSE {rmse:F4}, MAE {mae:F4}, {trainable:N0} trained parameters, {bytes:N0} bytes, {seconds:F1} s");
        return new JsonObject
        {
            ["model"] = name,
            ["trainedOn"] = trainedOn,
            ["rmse"] = Math.Round(rmse, 4),
            ["mae"] = Math.Round(mae, 4),
            ["trainableParameters"] = trainable,
            ["modelBytes"] = bytes,
            ["trainSeconds"] = Math.Round(seconds, 2),
        };
    }

    private static (PeftMatrixFactorizationTransformer Model, double Seconds, long Bytes, string Path) TrainBase(MLContext ml, PeftMatrixFactorizationTrainer.Options options, IDataView train, string path)
    {
        var clock = Stopwatch.StartNew();
        var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(train);
        double seconds = clock.Elapsed.TotalSeconds;
        ml.Model.Save(model, train.Schema, path);
        return (model, seconds, new FileInfo(path).Length, path);
    }

    private static JsonObject Temporal(MLContext ml, List<Rating> ratings, int seed, string work, int? adaptRank, double? adaptLr, double? adaptLambda, int? adaptIterations)
    {
        var ordered = ratings.Select((r, k) => (r, k)).OrderBy(p => p.r.Timestamp).ThenBy(p => p.k).Select(p => p.r).ToList();
        int n80 = (int)(ordered.Count * 0.8), n90 = (int)(ordered.Count * 0.9);
        var first80 = ordered.Take(n80).ToList();
        var next10 = ordered.Skip(n80).Take(n90 - n80).ToList();
        var first90 = ordered.Take(n90).ToList();
        var last10 = ordered.Skip(n90).ToList();
        var baseUsers = first80.Select(r => r.User).ToHashSet();
        int unseenTestUsers = last10.Select(r => r.User).Distinct().Count(u => !baseUsers.Contains(u));
        int adaptationNewUsers = next10.Select(r => r.User).Distinct().Count(u => !baseUsers.Contains(u));
        Program.Log($"Temporal: base {first80.Count:N0}, adaptation {next10.Count:N0} ({adaptationNewUsers} new users), test {last10.Count:N0} ({unseenTestUsers} users not in the base's ratings).");
        var test = View(ml, last10);
        var train80 = View(ml, first80);
        var train90 = View(ml, first90);
        var adapt = View(ml, next10);
        var rows = new JsonArray();

        rows.Add(Row("global mean", "first 80%", ml, null, test, first80.Average(r => r.Label), last10, 0, 1, 0));
        rows.Add(Row("global mean", "first 90%", ml, null, test, first90.Average(r => r.Label), last10, 0, 1, 0));
        foreach (var (name, view) in new[] { ("first 80%", train80), ("first 90%", train90) })
        {
            var (bias, seconds, bytes, _) = TrainBase(ml, BiasOptions(seed), view, Path.Combine(work, $"bias-{name[6..8]}.zip"));
            rows.Add(Row("user + item biases", name, ml, bias, test, null, last10, seconds, BiasParameters(bias), bytes));
            bias.Dispose();
        }
        var (baseModel, baseSeconds, baseBytes, basePath) = TrainBase(ml, BaseOptions(seed), train80, Path.Combine(work, "base.zip"));
        rows.Add(Row($"matrix factorization, rank {baseModel.ApproximationRank} (the base)", "first 80%", ml, baseModel, test, null, last10, baseSeconds, baseModel.TrainableParameterCount, baseBytes));
        foreach (var (method, newcomers) in new[] { (MatrixFactorizationAdaptation.Lora, false), (MatrixFactorizationAdaptation.Bias, true), (MatrixFactorizationAdaptation.Lora, true), (MatrixFactorizationAdaptation.Full, true) })
        {
            var options = new PeftMatrixFactorizationAdaptationTrainer.Options { Method = method, Seed = seed, BaseModelPath = basePath, UnknownIdsAsNewcomers = newcomers };
            if (adaptRank is int r) options.AdaptationRank = r;
            if (adaptLr is double lr) options.LearningRate = lr;
            if (adaptLambda is double l) options.Lambda = l;
            if (adaptIterations is int it) options.NumberOfIterations = it;
            var clock = Stopwatch.StartNew();
            using var adapted = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, options).Fit(adapt);
            double seconds = clock.Elapsed.TotalSeconds;
            var path = Path.Combine(work, $"adapted-{method}-{newcomers}.zip");
            ml.Model.Save(adapted, adapt.Schema, path);
            string label = (method == MatrixFactorizationAdaptation.Lora ? $"base + LoRA adaptation, r = {options.AdaptationRank}" : $"base + {method.ToString().ToLowerInvariant()} adaptation") +
                (newcomers ? "" : ", unknown users scored as the base does");
            rows.Add(Row(label, "next 10% (base frozen)", ml, adapted, test, null, last10, seconds, adapted.TrainableParameterCount, new FileInfo(path).Length));
        }
        var (retrained, retrainSeconds, retrainBytes, _) = TrainBase(ml, BaseOptions(seed), train90, Path.Combine(work, "retrained.zip"));
        rows.Add(Row($"matrix factorization, rank {retrained.ApproximationRank} (full retraining)", "first 90%", ml, retrained, test, null, last10, retrainSeconds, retrained.TrainableParameterCount, retrainBytes));
        retrained.Dispose();
        // The neural variant: its base, its adaptations (the same options as the matrix factorisation's) and its retraining.
        var ncfPath = Path.Combine(work, "ncf-80.zip");
        var (ncfRow, ncfBase) = Neural(ml, seed, train80, "first 80%", test, last10, ncfPath);
        rows.Add(ncfRow);
        foreach (var method in new[] { MatrixFactorizationAdaptation.Bias, MatrixFactorizationAdaptation.Lora })
        {
            var options = new PeftNeuralCollaborativeFilteringAdaptationTrainer.Options { Method = method, Seed = seed, BaseModelPath = ncfPath };
            var clock = Stopwatch.StartNew();
            using var adapted = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(ncfBase, options).Fit(adapt);
            double seconds = clock.Elapsed.TotalSeconds;
            var path = Path.Combine(work, $"ncf-adapted-{method}.zip");
            ml.Model.Save(adapted, adapt.Schema, path);
            rows.Add(Row(method == MatrixFactorizationAdaptation.Lora ? $"neural base + LoRA adaptation, r = {options.AdaptationRank}" : "neural base + bias adaptation",
                "next 10% (base frozen)", ml, adapted, test, null, last10, seconds, adapted.TrainableParameterCount, new FileInfo(path).Length));
        }
        ncfBase.Dispose();
        var (ncfRetrained, ncfModel) = Neural(ml, seed, train90, "first 90%", test, last10, Path.Combine(work, "ncf-90.zip"));
        ncfModel.Dispose();
        rows.Add(ncfRetrained);
        baseModel.Dispose();
        return new JsonObject
        {
            ["protocol"] = "ratings ordered by timestamp: base on the earliest 80%, adaptation on the next 10%, evaluation on the last 10%",
            ["baseRatings"] = first80.Count,
            ["adaptationRatings"] = next10.Count,
            ["testRatings"] = last10.Count,
            ["adaptationNewUsers"] = adaptationNewUsers,
            ["testUsersUnseenByBase"] = unseenTestUsers,
            ["rows"] = rows,
        };
    }

    /// <summary>Adapts one temporal base with each setting of <paramref name="specs"/>, printing the test RMSE and MAE (exploration, no results file).</summary>
    private static int Sweep(MLContext ml, List<Rating> ratings, int seed, string specs)
    {
        var settings = specs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(spec =>
        {
            var f = spec.Split(':');
            if (f.Length is < 5 or > 6 || !Enum.TryParse<MatrixFactorizationAdaptation>(f[0], true, out var method) || !Enum.TryParse<MatrixFactorizationOptimizer>(f[1], true, out var optimizer))
                throw new ArgumentException($"--sweep: '{spec}' is not METHOD:OPTIMIZER:LR:LAMBDA:ITERATIONS[:RANK].");
            return (spec, new PeftMatrixFactorizationAdaptationTrainer.Options
            {
                Method = method,
                Optimizer = optimizer,
                LearningRate = double.Parse(f[2], CultureInfo.InvariantCulture),
                Lambda = double.Parse(f[3], CultureInfo.InvariantCulture),
                NumberOfIterations = int.Parse(f[4], CultureInfo.InvariantCulture),
                AdaptationRank = f.Length == 6 ? int.Parse(f[5], CultureInfo.InvariantCulture) : 4,
                Seed = seed,
            });
        }).ToList();
        var ordered = ratings.Select((r, k) => (r, k)).OrderBy(p => p.r.Timestamp).ThenBy(p => p.k).Select(p => p.r).ToList();
        int n80 = (int)(ordered.Count * 0.8), n90 = (int)(ordered.Count * 0.9);
        var test = View(ml, ordered.Skip(n90));
        var adapt = View(ml, ordered.Skip(n80).Take(n90 - n80));
        using var baseModel = ml.Regression.Trainers.PeftMatrixFactorization(BaseOptions(seed)).Fit(View(ml, ordered.Take(n80)));
        var metrics = ml.Regression.Evaluate(baseModel.Transform(test));
        Console.WriteLine($"base: RMSE {metrics.RootMeanSquaredError:F4}, MAE {metrics.MeanAbsoluteError:F4}");
        foreach (var (spec, options) in settings)
        {
            var clock = Stopwatch.StartNew();
            using var adapted = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, options).Fit(adapt);
            metrics = ml.Regression.Evaluate(adapted.Transform(test));
            Console.WriteLine($"{spec}: RMSE {metrics.RootMeanSquaredError:F4}, MAE {metrics.MeanAbsoluteError:F4}, {adapted.TrainableParameterCount:N0} parameters, {clock.Elapsed.TotalSeconds:F1} s");
        }
        return 0;
    }

    /// <summary>Trains the neural variant on the random split with each LAMBDA:LR:ITERATIONS of <paramref name="specs"/> (exploration, no results file).</summary>
    private static int SweepNeural(MLContext ml, List<Rating> ratings, int seed, string specs)
    {
        var split = ml.Data.TrainTestSplit(View(ml, ratings), testFraction: 0.2, seed: seed);
        var ordered = ratings.Select((r, k) => (r, k)).OrderBy(p => p.r.Timestamp).ThenBy(p => p.k).Select(p => p.r).ToList();
        var temporalTrain = View(ml, ordered.Take((int)(ordered.Count * 0.8)));
        var temporalTest = View(ml, ordered.Skip((int)(ordered.Count * 0.9)));
        foreach (var spec in specs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        foreach (var (protocol, train, test) in new[] { ("random", split.TrainSet, split.TestSet), ("temporal", temporalTrain, temporalTest) })
        {
            var f = spec.Split(':');
            if (f.Length != 3) throw new ArgumentException($"--sweep-ncf: '{spec}' is not LAMBDA:LR:ITERATIONS.");
            var clock = Stopwatch.StartNew();
            using var model = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(new PeftNeuralCollaborativeFilteringTrainer.Options
            {
                MatrixColumnIndexColumnName = "User",
                MatrixRowIndexColumnName = "Item",
                Lambda = double.Parse(f[0], CultureInfo.InvariantCulture),
                LearningRate = double.Parse(f[1], CultureInfo.InvariantCulture),
                NumberOfIterations = int.Parse(f[2], CultureInfo.InvariantCulture),
                Seed = seed,
            }).Fit(train);
            var metrics = ml.Regression.Evaluate(model.Transform(test));
            Console.WriteLine($"{spec} {protocol}: RMSE {metrics.RootMeanSquaredError:F4}, MAE {metrics.MeanAbsoluteError:F4}, {clock.Elapsed.TotalSeconds:F1} s");
        }
        return 0;
    }

    /// <summary>The neural variant (NeuMF with biases, the trainer's defaults) trained on <paramref name="train"/> and scored on the test ratings.</summary>
    private static (JsonObject Row, PeftNeuralCollaborativeFilteringTransformer Model) Neural(MLContext ml, int seed, IDataView train, string trainedOn, IDataView test, IReadOnlyList<Rating> testRows, string path)
    {
        var clock = Stopwatch.StartNew();
        var model = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(new PeftNeuralCollaborativeFilteringTrainer.Options
        {
            MatrixColumnIndexColumnName = "User",
            MatrixRowIndexColumnName = "Item",
            Seed = seed,
        }).Fit(train);
        double seconds = clock.Elapsed.TotalSeconds;
        ml.Model.Save(model, train.Schema, path);
        return (Row($"neural collaborative filtering (NeuMF, {model.ApproximationRank}, MLP {string.Join('-', model.HiddenLayerSizes)})", trainedOn, ml, model, test, null, testRows,
            seconds, model.TrainableParameterCount, new FileInfo(path).Length), model);
    }

    private static long BiasParameters(PeftMatrixFactorizationTransformer bias) => bias.UserCount + bias.ItemCount + 1;

    private static JsonObject RandomSplit(MLContext ml, List<Rating> ratings, int seed, string work)
    {
        var split = ml.Data.TrainTestSplit(View(ml, ratings), testFraction: 0.2, seed: seed);
        var trainRows = ml.Data.CreateEnumerable<RatingRow>(split.TrainSet, reuseRowObject: false).ToList();
        var testRows = ml.Data.CreateEnumerable<RatingRow>(split.TestSet, reuseRowObject: false).Select(r => new Rating(r.User, r.Item, r.Label, 0)).ToList();
        var rows = new JsonArray
        {
            Row("global mean", "random 80%", ml, null, split.TestSet, trainRows.Average(r => r.Label), testRows, 0, 1, 0),
        };
        var (bias, biasSeconds, biasBytes, _) = TrainBase(ml, BiasOptions(seed), split.TrainSet, Path.Combine(work, "random-bias.zip"));
        rows.Add(Row("user + item biases", "random 80%", ml, bias, split.TestSet, null, testRows, biasSeconds, BiasParameters(bias), biasBytes));
        bias.Dispose();
        var (model, seconds, bytes, _) = TrainBase(ml, BaseOptions(seed), split.TrainSet, Path.Combine(work, "random-mf.zip"));
        rows.Add(Row($"matrix factorization, rank {model.ApproximationRank}", "random 80%", ml, model, split.TestSet, null, testRows, seconds, model.TrainableParameterCount, bytes));
        model.Dispose();
        var (neuralRow, neural) = Neural(ml, seed, split.TrainSet, "random 80%", split.TestSet, testRows, Path.Combine(work, "random-ncf.zip"));
        neural.Dispose();
        rows.Add(neuralRow);
        return new JsonObject
        {
            ["protocol"] = $"ML.NET TrainTestSplit, 20% test, seed {seed}",
            ["trainRatings"] = trainRows.Count,
            ["testRatings"] = testRows.Count,
            ["rows"] = rows,
        };
    }

    private static string Table(JsonObject report)
    {
        var s = new StringBuilder();
        var temporal = report["temporal"]!;
        s.AppendLine(CultureInfo.InvariantCulture, $"MovieLens-100K, temporal: {temporal["protocol"]} ({temporal["baseRatings"]:N0} / {temporal["adaptationRatings"]} / {temporal["testRatings"]} ratings; " +
            $"{temporal["testUsersUnseenByBase"]} test users unseen by the base). Seed {report["seed"]}.");
        AppendRows(s, temporal["rows"]!.AsArray());
        if (report["random"] is { } random)
        {
            s.AppendLine();
            s.AppendLine(CultureInfo.InvariantCulture, $"MovieLens-100K, random split: {random["protocol"]}.");
            AppendRows(s, random["rows"]!.AsArray());
        }
        return s.ToString();
    }

    private static void AppendRows(StringBuilder s, JsonArray rows)
    {
        s.AppendLine();
        s.AppendLine("| model | trained on | RMSE | MAE | trained parameters | file bytes | seconds |");
        s.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var row in rows)
            s.AppendLine(CultureInfo.InvariantCulture, $"| {row!["model"]} | {row["trainedOn"]} | {(double)row["rmse"]!:F4} | {(double)row["mae"]!:F4} | {(long)row["trainableParameters"]!:N0} | {(long)row["modelBytes"]!:N0} | {(double)row["trainSeconds"]!:F1} |");
    }
}
