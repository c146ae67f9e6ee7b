using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using Microsoft.ML.Peft.Tasks.Recommendation.Ranking;

namespace Peft.Bench;

/// <summary>
/// MovieLens-100K as implicit feedback (every rating is an interaction), leave-last-out (He et al. 2017): each user's
/// latest rating is held out and ranked among 99 sampled movies the user never rated. Rows: item popularity, matrix
/// factorisation with BPR and with binary cross-entropy, neural collaborative filtering (NeuMF); HR@10, NDCG@10, training
/// seconds and trainable parameters.
/// </summary>
internal static class MovieLensImplicitBenchmark
{
    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- movielens-implicit [options]\n" +
        "  --mf-epochs N       passes of both matrix factorisations (default 20)\n" +
        "  --mf-rank N         their factor rank (default 32)\n" +
        "  --mf-lr X           their Adam learning rate (default 0.005)\n" +
        "  --mf-lambda X       their L2 regularisation (default 0.01)\n" +
        "  --ncf-epochs N      passes of neural collaborative filtering (default 20)\n" +
        "  --ncf-rank N        its embedding size (default 32; MLP 64-32-16)\n" +
        "  --ncf-lr X          its Adam learning rate (default 0.003)\n" +
        "  --ncf-lambda X      its L2 regularisation (default 0.03)\n" +
        "  --ncf-std X         standard deviation of its initial embeddings (default 0.01)\n" +
        "  --threads N         libtorch intra-op threads (default 1: these models' operations are too small to gain from more)\n" +
        "  --negatives N       sampled negatives per training interaction (default 4)\n" +
        "  --eval-negatives N  movies each held-out movie is ranked against (default 99)\n" +
        "  --k N               the top-K cut-off (default 10)\n" +
        "  --skip-mf           leave out the matrix factorisation rows\n" +
        "  --validation        tune: hold out each user's second-latest rating from the training interactions and rank it (the\n" +
        "                      test ratings are not read); default results file movielens-implicit-validation.json\n" +
        "  --seed N            seed of the trainers and of the evaluation's draw (default 1)\n" +
        "  --output FILE       results file (default bench/results/movielens-implicit.json; the table goes beside it as .md)\n" +
        "  --data DIR          data folder (default ../shared/data beside the repository root)";

    private sealed class Arguments
    {
        public int MfEpochs = 20, MfRank = 32, NcfEpochs = 20, NcfRank = 32, Negatives = 4, EvalNegatives = 99, K = 10, Seed = 1, Threads = 1;
        public double MfLearningRate = 0.005, MfLambda = 0.01, NcfLearningRate = 0.003, NcfLambda = 0.03, NcfStd = 0.01;
        public string? Output, Data;
        public bool Validation, SkipMf;

        public static Arguments Parse(IReadOnlyList<string> args)
        {
            var a = new Arguments();
            for (int i = 1; i < args.Count; i++)
            {
                string option = args[i];
                string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{option} needs a value.");
                int Positive() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{option} must be a positive integer.");
                double Number(bool zero) => double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v) && (v > 0 || zero && v == 0)
                    ? v : throw new ArgumentException($"{option} must be a {(zero ? "non-negative" : "positive")} number.");
                switch (option)
                {
                    case "--mf-epochs": a.MfEpochs = Positive(); break;
                    case "--mf-rank": a.MfRank = Positive(); break;
                    case "--mf-lr": a.MfLearningRate = Number(false); break;
                    case "--mf-lambda": a.MfLambda = Number(true); break;
                    case "--ncf-epochs": a.NcfEpochs = Positive(); break;
                    case "--ncf-rank": a.NcfRank = Positive(); break;
                    case "--ncf-lr": a.NcfLearningRate = Number(false); break;
                    case "--ncf-lambda": a.NcfLambda = Number(true); break;
                    case "--ncf-std": a.NcfStd = Number(false); break;
                    case "--threads": a.Threads = Positive(); break;
                    case "--negatives": a.Negatives = Positive(); break;
                    case "--eval-negatives": a.EvalNegatives = Positive(); break;
                    case "--k": a.K = Positive(); break;
                    case "--seed": a.Seed = int.Parse(Value(), NumberStyles.None, CultureInfo.InvariantCulture); break;
                    case "--validation": a.Validation = true; break;
                    case "--skip-mf": a.SkipMf = true; break;
                    case "--output": a.Output = Value(); break;
                    case "--data": a.Data = Value(); break;
                    default: throw new ArgumentException($"Unknown option '{option}'.");
                }
            }
            return a;
        }
    }

    /// <summary>A row of movielens-100k/u.data (<c>user|item|rating|timestamp</c>).</summary>
    private sealed class MovieLensRow
    {
        [LoadColumn(0)] public string User { get; set; } = "";
        [LoadColumn(1)] public string Item { get; set; } = "";
        [LoadColumn(2)] public float Rating { get; set; }
        [LoadColumn(3)] public long Timestamp { get; set; }
    }

    private sealed class ItemInput
    {
        public string Item { get; set; } = "";
    }

    private sealed class ScoreOutput
    {
        public float Score { get; set; }
    }

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var a = Arguments.Parse(args);
        var folder = Path.GetFullPath(a.Data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var file = Path.Combine(folder, "movielens-100k", "u.data");
        if (!File.Exists(file)) throw new FileNotFoundException($"The data file {file} does not exist; pass the data folder with --data.", file);
        TorchSharp.torch.set_num_threads(a.Threads);
        var ml = PairBench.Context(a.Seed, "Peft");
        var data = ml.Data.LoadFromTextFile<MovieLensRow>(file, separatorChar: '|', hasHeader: true);
        var split = ml.Data.LeaveLastOutSplit(data, nameof(MovieLensRow.User), nameof(MovieLensRow.Timestamp));
        // Tuning: the same protocol one step back, inside the training interactions.
        if (a.Validation) split = ml.Data.LeaveLastOutSplit(split.TrainSet, nameof(MovieLensRow.User), nameof(MovieLensRow.Timestamp));
        var train = ml.Data.CreateEnumerable<MovieLensRow>(split.TrainSet, reuseRowObject: false).ToList();
        long testRows = split.TestSet.GetRowCount() ?? 0;
        int users = train.Select(r => r.User).Distinct().Count(), items = train.Select(r => r.Item).Distinct().Count();
        var description = string.Create(CultureInfo.InvariantCulture,
            $"movielens-100k/u.data as implicit feedback, leave-last-out{(a.Validation ? " (validation: the second-latest rating of each user held out, the latest not read)" : "")}: {train.Count:N0} training interactions of {users:N0} users and {items:N0} movies, {testRows:N0} held out");
        Program.Log($"MovieLens-100K implicit: {description}; each held-out movie ranked among {a.EvalNegatives} sampled unseen movies, K = {a.K}, seed {a.Seed}, {a.Threads} libtorch thread(s).");
        var ranking = new RecommendationRankingOptions
        {
            MatrixColumnIndexColumnName = nameof(MovieLensRow.User),
            MatrixRowIndexColumnName = nameof(MovieLensRow.Item),
            K = a.K,
            NegativeCount = a.EvalNegatives,
            Seed = a.Seed,
        };

        var rows = new JsonArray();
        JsonObject Row(string model, ITransformer transformer, TimeSpan trainTime, long parameters, string recipe)
        {
            var clock = Stopwatch.StartNew();
            var metrics = ml.Regression.EvaluateRecommendations(transformer, split.TrainSet, split.TestSet, ranking);
            var row = new JsonObject
            {
                ["model"] = model,
                ["hitRate"] = Math.Round(metrics.HitRate, 4),
                ["ndcg"] = Math.Round(metrics.Ndcg, 4),
                ["trainSeconds"] = Math.Round(trainTime.TotalSeconds, 1),
                ["trainableParameters"] = parameters,
                ["evalSeconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
                ["users"] = metrics.UserCount,
                ["meanNegatives"] = Math.Round(metrics.MeanNegativeCount, 2),
                ["recipe"] = recipe,
            };
            Program.Log(string.Create(CultureInfo.InvariantCulture, $"{model}: HR@{a.K} {metrics.HitRate:F4}, NDCG@{a.K} {metrics.Ndcg:F4}, train {trainTime.TotalSeconds:F1} s, {parameters:N0} trainable parameters."));
            rows.Add(row);
            return row;
        }

        // Popularity: the number of training interactions of the movie.
        var popularityClock = Stopwatch.StartNew();
        var counts = train.GroupBy(r => r.Item).ToDictionary(g => g.Key, g => g.Count());
        var popularity = ml.Transforms.CustomMapping<ItemInput, ScoreOutput>((input, output) => output.Score = counts.GetValueOrDefault(input.Item), contractName: null).Fit(split.TrainSet);
        popularityClock.Stop();
        var baseline = Row("Popularity (training interactions of the movie)", popularity, popularityClock.Elapsed, 0, "a count per movie; nothing trained");

        foreach (var loss in a.SkipMf ? Array.Empty<ImplicitFeedbackLoss>() : new[] { ImplicitFeedbackLoss.Bpr, ImplicitFeedbackLoss.BinaryCrossEntropy })
        {
            var options = new PeftMatrixFactorizationTrainer.Options
            {
                MatrixColumnIndexColumnName = nameof(MovieLensRow.User),
                MatrixRowIndexColumnName = nameof(MovieLensRow.Item),
                Feedback = RecommendationFeedback.Implicit,
                ImplicitLoss = loss,
                NegativesPerPositive = a.Negatives,
                ApproximationRank = a.MfRank,
                LearningRate = a.MfLearningRate,
                Lambda = a.MfLambda,
                NumberOfIterations = a.MfEpochs,
                Seed = a.Seed,
            };
            Program.Log($"Matrix factorisation, {loss}: training ...");
            var mfTrainer = ml.Regression.Trainers.PeftMatrixFactorization(options);
            var mfClock = Stopwatch.StartNew();
            mfTrainer.IterationCompleted += (_, e) => Program.Log(string.Create(CultureInfo.InvariantCulture, $"  pass {e.Iteration}: loss {e.TrainingMse:F4} ({mfClock.Elapsed.TotalSeconds:F1} s)"));
            using var mf = mfTrainer.Fit(split.TrainSet);
            Row($"Matrix factorisation, {(loss == ImplicitFeedbackLoss.Bpr ? "BPR" : "binary cross-entropy")}", mf, mf.TrainingTime, mf.TrainableParameterCount,
                string.Create(CultureInfo.InvariantCulture, $"rank {a.MfRank}, {a.Negatives} negatives, Adam lr {a.MfLearningRate:G}, lambda {a.MfLambda:G}, batch {options.BatchSize}, {a.MfEpochs} epochs"));
        }

        var ncfOptions = new PeftNeuralCollaborativeFilteringTrainer.Options
        {
            MatrixColumnIndexColumnName = nameof(MovieLensRow.User),
            MatrixRowIndexColumnName = nameof(MovieLensRow.Item),
            Feedback = RecommendationFeedback.Implicit,
            ImplicitLoss = ImplicitFeedbackLoss.BinaryCrossEntropy,
            NegativesPerPositive = a.Negatives,
            ApproximationRank = a.NcfRank,
            HiddenLayerSizes = new[] { 2 * a.NcfRank, a.NcfRank, a.NcfRank / 2 },
            LearningRate = a.NcfLearningRate,
            Lambda = a.NcfLambda,
            NumberOfIterations = a.NcfEpochs,
            InitialStandardDeviation = a.NcfStd,
            Seed = a.Seed,
        };
        Program.Log("Neural collaborative filtering: training ...");
        var ncfTrainer = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(ncfOptions);
        var ncfClock = Stopwatch.StartNew();
        ncfTrainer.IterationCompleted += (_, e) => Program.Log(string.Create(CultureInfo.InvariantCulture, $"  pass {e.Iteration}: loss {e.TrainingLoss:F4} ({ncfClock.Elapsed.TotalSeconds:F1} s)"));
        using (var ncf = ncfTrainer.Fit(split.TrainSet))
        {
            Row("Neural collaborative filtering (NeuMF), binary cross-entropy", ncf, ncf.TrainingTime, ncf.TrainableParameterCount,
                string.Create(CultureInfo.InvariantCulture,
                    $"embeddings {a.NcfRank} (GMF and MLP), MLP {string.Join('-', ncfOptions.HiddenLayerSizes)}, {a.Negatives} negatives, initial std {a.NcfStd:G}, Adam lr {a.NcfLearningRate:G}, lambda {a.NcfLambda:G}, batch {ncfOptions.BatchSize}, {a.NcfEpochs} epochs"));
        }

        var failures = new List<string>();
        foreach (var row in rows.Skip(1))
            if (!(row!["hitRate"]!.GetValue<double>() > baseline["hitRate"]!.GetValue<double>()))
                failures.Add($"{row["model"]} (HR@{a.K} {row["hitRate"]}) does not beat popularity ({baseline["hitRate"]})");
        var report = new JsonObject
        {
            ["benchmark"] = a.Validation ? "movielens-implicit-validation" : "movielens-implicit",
            ["data"] = description,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["commandLine"] = "movielens-implicit " + string.Join(' ', args.Skip(1)),
            ["machine"] = PairBench.Machine(),
            ["protocol"] = new JsonObject
            {
                ["split"] = "leave-last-out: each user's latest rating (greatest timestamp, the last row of equal ones) held out",
                ["evalNegatives"] = a.EvalNegatives,
                ["k"] = a.K,
                ["seed"] = a.Seed,
                ["libtorchThreads"] = a.Threads,
                ["tuning"] = "default recipes chosen with --validation (each user's second-latest rating held out from the training interactions; the test ratings unread)",
                ["ties"] = "counted as a random order (expected metrics)",
            },
            ["rows"] = rows,
            ["targets"] = new JsonObject
            {
                ["everyModelBeatsPopularity"] = true,
                ["passed"] = failures.Count == 0,
                ["failures"] = new JsonArray(failures.Select(f => (JsonNode)f).ToArray()),
            },
        };
        var resultsFile = Path.GetFullPath(a.Output ?? Path.Combine(root, "bench", "results", a.Validation ? "movielens-implicit-validation.json" : "movielens-implicit.json"));
        PairBench.Write(root, resultsFile, report, Table(report, a));
        foreach (var failure in failures) Console.WriteLine($"TARGET FAILED: {failure}.");
        return failures.Count == 0 ? 0 : 1;
    }

    private static string Table(JsonObject report, Arguments a)
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"MovieLens-100K, implicit feedback: {report["data"]}; each held-out movie ranked among {a.EvalNegatives} sampled movies its user never rated, seed {a.Seed}.");
        s.AppendLine();
        s.AppendLine(CultureInfo.InvariantCulture, $"| model | HR@{a.K} | NDCG@{a.K} | train s | trainable params | recipe |");
        s.AppendLine("|---|---:|---:|---:|---:|---|");
        foreach (var row in report["rows"]!.AsArray())
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {row!["model"]} | {row["hitRate"]!.GetValue<double>():F4} | {row["ndcg"]!.GetValue<double>():F4} | {row["trainSeconds"]!.GetValue<double>():F1} | {row["trainableParameters"]!.GetValue<long>():N0} | {row["recipe"]} |");
        return s.ToString();
    }
}
