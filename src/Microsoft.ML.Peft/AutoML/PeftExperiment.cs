using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>Options of <see cref="PeftExperiment"/>.</summary>
public sealed class PeftExperimentOptions
{
    /// <summary>The time budget in seconds for the whole run: calibration, trials and the final refit. Default 600.</summary>
    public int TrainTimeSeconds = 600;

    /// <summary>Share of the training rows held out for validation when <see cref="PeftExperiment.Run"/> gets no validation set. Default 0.2.</summary>
    public double ValidationFraction = 0.2;

    /// <summary>The metric that ranks trials (one of the task's <see cref="PeftSearchTask.Metrics"/>). Default (null): the task's first, the trainer's own validation metric.</summary>
    public string? MetricName;

    /// <summary>Seed of the sampler, the split and every trial: the same seed on the same data samples the same settings.</summary>
    public int Seed = 1;

    /// <summary>What to search.</summary>
    public PeftSearchSpace SearchSpace = new();

    /// <summary>JSON-lines log of finished trials (null: none). With <see cref="Resume"/> an existing log is continued.</summary>
    public string? TrialLogPath;

    /// <summary>Continue the search of the existing <see cref="TrialLogPath"/> (it must be a log of the same task, data, space, metric and seed). Default false: a new log replaces it.</summary>
    public bool Resume;

    /// <summary>
    /// Train the best settings again on the training and validation rows together when the time left allows (see
    /// <see cref="FinalTrainingShare"/> for how long). Default true.
    /// </summary>
    public bool Refit = true;

    /// <summary>
    /// Share of the budget the search keeps for the final training (with <see cref="Refit"/>), as FLAML's retraining
    /// within the budget: when the best trial's validation metric still rose at its last epoch, the final training runs as
    /// many epochs as the time left allows (at most <see cref="MaxFinalEpochs"/>); when it peaked earlier, its best epoch
    /// count. Default 0.4; 0 keeps only the time of the best trial's epochs.
    /// </summary>
    public double FinalTrainingShare = 0.4;

    /// <summary>The most epochs the final training runs when it extends the best trial's. Default 10.</summary>
    public int MaxFinalEpochs = 10;

    /// <summary>
    /// The first trial is the task's default recipe (LoRA rank 8, alpha 16 on every linear layer or every convolution, at
    /// the method's reference learning rate, the trainer's input size, the most epochs of the space), where the space
    /// holds it (else the nearest values), as Optuna's enqueued trials: the search never ranks below the defaults on the
    /// validation rows. Default true.
    /// </summary>
    public bool StartWithDefaults = true;

    /// <summary>Stop after this many trials (null: as many as the budget allows).</summary>
    public int? MaxTrials;

    /// <summary>Random trials before the tree-structured Parzen estimator takes over. Default 4.</summary>
    public int StartupTrials = 4;

    /// <summary>Successive halving's reduction factor η: rungs at epochs 1, η, η²; at each only the top 1/η go on. Default 3.</summary>
    public int ReductionFactor = 3;

    /// <summary>The smallest budget accepted before anything is measured, in seconds.</summary>
    public const int MinimumTrainTimeSeconds = 10;

    internal void Validate()
    {
        if (TrainTimeSeconds < MinimumTrainTimeSeconds)
            throw new ArgumentOutOfRangeException(nameof(TrainTimeSeconds), TrainTimeSeconds,
                $"The time budget of {TrainTimeSeconds} s is too small for one trial: give at least {MinimumTrainTimeSeconds} s (more for larger data; the search measures what one trial needs and says so).");
        if (!(ValidationFraction > 0 && ValidationFraction < 1)) throw new ArgumentOutOfRangeException(nameof(ValidationFraction), ValidationFraction, "ValidationFraction must be in (0, 1).");
        if (SearchSpace is null) throw new ArgumentNullException(nameof(SearchSpace));
        SearchSpace.Validate();
        if (MaxTrials is < 1) throw new ArgumentOutOfRangeException(nameof(MaxTrials), MaxTrials, "MaxTrials must be at least 1.");
        if (StartupTrials < 1) throw new ArgumentOutOfRangeException(nameof(StartupTrials), StartupTrials, "StartupTrials must be at least 1.");
        if (!(FinalTrainingShare >= 0 && FinalTrainingShare < 1)) throw new ArgumentOutOfRangeException(nameof(FinalTrainingShare), FinalTrainingShare, "FinalTrainingShare must be in [0, 1).");
        if (MaxFinalEpochs < 1) throw new ArgumentOutOfRangeException(nameof(MaxFinalEpochs), MaxFinalEpochs, "MaxFinalEpochs must be at least 1.");
        if (ReductionFactor < 2) throw new ArgumentOutOfRangeException(nameof(ReductionFactor), ReductionFactor, "ReductionFactor must be at least 2.");
        if (Resume && TrialLogPath is null) throw new ArgumentException($"{nameof(Resume)} needs a {nameof(TrialLogPath)}.", nameof(Resume));
        if (TrialLogPath is not null && string.IsNullOrWhiteSpace(TrialLogPath)) throw new ArgumentException($"{nameof(TrialLogPath)} is empty.", nameof(TrialLogPath));
    }
}

/// <summary>A trial that starts: its number and settings.</summary>
public sealed record PeftTrialStart(int Number, PeftTrialParameters Parameters, double SecondsLeft);

/// <summary>An epoch of a trial.</summary>
public sealed record PeftTrialEpoch(int Number, EpochMetrics Metrics);

/// <summary>
/// Automated PEFT search within a time budget, as ML.NET's AutoML experiments (which Microsoft.ML.AutoML does not offer
/// for PEFT): samples the method, rank, alpha, target modules, learning rate, epochs and input size with a tree-structured
/// Parzen estimator that learns from finished trials, stops poor trials early by successive halving on the per-epoch
/// validation metric, skips (and reports) trials that fail, logs every trial so a search resumes after a crash, and
/// returns the best model, trained again on all rows when the budget allows, with the leaderboard.
/// </summary>
public sealed class PeftExperiment
{
    private readonly MLContext mlContext;
    private readonly PeftSearchTask task;
    private readonly PeftExperimentOptions options;
    private readonly IHost host;

    /// <summary>Creates an experiment; nothing runs until <see cref="Run"/>.</summary>
    public PeftExperiment(MLContext mlContext, PeftSearchTask task, PeftExperimentOptions options)
    {
        this.mlContext = mlContext ?? throw new ArgumentNullException(nameof(mlContext));
        this.task = task ?? throw new ArgumentNullException(nameof(task));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        Metric = options.MetricName is null ? task.Metrics[0]
            : task.Metrics.FirstOrDefault(m => m.Name == options.MetricName)
              ?? throw new ArgumentException($"'{options.MetricName}' is not a metric of {task.Name}; choose one of {string.Join(", ", task.Metrics.Select(m => m.Name))}.", nameof(options.MetricName));
        var space = options.SearchSpace;
        Methods = space.Methods ?? task.DefaultMethods;
        foreach (var m in Methods) PeftMethodNames.Find(m, task.ForImages);
        TargetModules = task.ForImages ? task.DefaultTargetModules : space.TargetModules ?? task.DefaultTargetModules;
        InputSizes = (space.InputSizes ?? task.DefaultInputSizes).Distinct().OrderBy(s => s).ToList();
        Epochs = Enumerable.Range(space.MinEpochs, space.MaxEpochs - space.MinEpochs + 1).ToList();
        Dimensions = new[]
        {
            new SearchDimension("method", Methods.Count),
            new SearchDimension("rank", space.Ranks.Count),
            new SearchDimension("alpha", space.AlphaOverRank.Count),
            new SearchDimension("targets", TargetModules.Count),
            new SearchDimension("learning rate", 0, Math.Log(space.MinLearningRateFactor), Math.Log(space.MaxLearningRateFactor)),
            new SearchDimension("epochs", Epochs.Count),
            new SearchDimension(task.InputSizeName, InputSizes.Count),
        };
        host = CatalogUtils.GetEnvironment(mlContext.Model).Register(nameof(PeftExperiment));
    }

    /// <summary>Raised when a trial starts.</summary>
    public event EventHandler<PeftTrialStart>? TrialStarted;

    /// <summary>Raised after each epoch of a trial.</summary>
    public event EventHandler<PeftTrialEpoch>? EpochCompleted;

    /// <summary>Raised when a trial ends (completed, pruned, out of time or failed).</summary>
    public event EventHandler<PeftTrialResult>? TrialCompleted;

    /// <summary>The metric that ranks the trials.</summary>
    public PeftSearchMetric Metric { get; }

    private IReadOnlyList<string> Methods { get; }
    private IReadOnlyList<string> TargetModules { get; }
    private IReadOnlyList<int> InputSizes { get; }
    private IReadOnlyList<int> Epochs { get; }
    private IReadOnlyList<SearchDimension> Dimensions { get; }

    /// <summary>The settings a point of the sampler's space stands for.</summary>
    internal PeftTrialParameters Decode(double[] point)
    {
        var space = options.SearchSpace;
        var method = PeftMethodNames.Find(Methods[(int)point[0]], task.ForImages);
        bool lora = method.PeftType == "LORA";
        int rank = space.Ranks[(int)point[1]];
        float reference = task.ForImages ? method.ImageLearningRate : method.TextLearningRate;
        return new PeftTrialParameters(method.Name,
            lora ? rank : null,
            lora ? rank * space.AlphaOverRank[(int)point[2]] : null,
            lora && !task.ForImages ? TargetModules[(int)point[3]] : null,
            (float)(reference * Math.Exp(point[4])),
            Epochs[(int)point[5]],
            InputSizes[(int)point[6]]);
    }

    /// <summary>The trainer options of a trial.</summary>
    internal PeftTrainerOptions TrainerOptions(PeftTrialParameters p, int seed, IDataView? validation)
    {
        var o = task.NewOptions();
        var fields = new JsonObject();
        if (p.Rank is int r) fields["r"] = r;
        if (p.Alpha is float a) fields["lora_alpha"] = a;
        if (p.TargetModules is not null)
            fields["target_modules"] = new JsonArray(p.TargetModules.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(t => (JsonNode)JsonValue.Create(t)!).ToArray());
        o.Method = PeftMethodNames.Create(p.Method, task.ForImages, fields);
        o.LearningRate = p.LearningRate;
        o.MaxEpoch = p.Epochs;
        o.Seed = seed;
        o.ValidationSet = validation;
        // Patience as long as the run: never stops early, but the best validation epoch's weights are restored.
        o.EarlyStoppingPatience = validation is null ? 0 : p.Epochs;
        task.SetInputSize(o, p.InputSize);
        return o;
    }

    /// <summary>
    /// Runs the search on <paramref name="train"/>, validating on <paramref name="validation"/> (or on
    /// <see cref="PeftExperimentOptions.ValidationFraction"/> of the training rows), and returns the trials and the final model.
    /// A budget too small for one trial is an <see cref="ArgumentOutOfRangeException"/> giving the minimum; a damaged or
    /// foreign trial log an <see cref="InvalidDataException"/>; cancellation an <see cref="OperationCanceledException"/>
    /// (finished trials stay in the log).
    /// </summary>
    public PeftExperimentResult Run(IDataView train, IDataView? validation = null, CancellationToken cancellationToken = default)
    {
        if (train is null) throw new ArgumentNullException(nameof(train));
        var watch = Stopwatch.StartNew();
        double budget = options.TrainTimeSeconds;
        using var ch = host.Start(nameof(PeftExperiment));

        // Data: the label mapping is fitted on every training row, then the validation rows are held out (unless given).
        var preprocessing = task.FitPreprocessing?.Invoke(mlContext, train);
        IDataView Prepare(IDataView data) => preprocessing?.Transform(data) ?? data;
        IDataView searchTrain, searchValidation, all;
        if (validation is null)
        {
            var split = mlContext.Data.TrainTestSplit(train, options.ValidationFraction, seed: options.Seed);
            searchTrain = Prepare(split.TrainSet);
            searchValidation = Prepare(split.TestSet);
            all = Prepare(train);
        }
        else
        {
            searchTrain = Prepare(train);
            searchValidation = Prepare(validation);
            all = AppendRowsDataView.Create(host, searchTrain.Schema, searchTrain, searchValidation);
        }
        // The trainer checks the columns (with the option at fault) before anything is trained.
        task.CreateTrainer(mlContext, TrainerOptions(Decode(new double[Dimensions.Count]), options.Seed, null), _ => { })
            .GetOutputSchema(SchemaShape.Create(searchTrain.Schema));
        long trainRows = CountRows(searchTrain), validationRows = CountRows(searchValidation);
        if (trainRows == 0) throw new ArgumentException("The training data has no rows.", nameof(train));
        if (validationRows == 0) throw new ArgumentException("The validation data has no rows.", nameof(validation));
        string fingerprint = Fingerprint(searchTrain.Schema, trainRows, validationRows);

        // The trial log: continued, or started anew.
        var history = new List<(PeftTrialResult Trial, double[] Point)>();
        var halving = new SuccessiveHalving(options.ReductionFactor);
        if (options.Resume && File.Exists(options.TrialLogPath))
        {
            history.AddRange(TrialLog.Read(options.TrialLogPath!, task.Name, options.Seed, fingerprint, out bool dropped));
            if (dropped) ch.Warning($"The last line of the trial log {options.TrialLogPath} was cut short; that trial runs again.");
            foreach (var (trial, _) in history)
                foreach (var e in trial.Epochs)
                    if (e.ValidationMetric is double v) halving.Report(e.Epoch, v);
            ch.Info($"Resuming from {options.TrialLogPath}: {history.Count} trials done.");
            if (dropped) RewriteLog(options.TrialLogPath!, fingerprint, history);
        }
        using var log = options.TrialLogPath is null ? null
            : options.Resume && File.Exists(options.TrialLogPath) ? TrialLog.Append(options.TrialLogPath)
            : TrialLog.Create(options.TrialLogPath, task.Name, options.Seed, fingerprint);

        // What one trial costs: one short fit of the first method at the smallest input size.
        var cost = Calibrate(searchTrain, trainRows, validationRows, ch, cancellationToken);
        double minimumTrial = cost.Estimate(InputSizes[0], 1);
        double required = watch.Elapsed.TotalSeconds + minimumTrial * (options.Refit ? 1 + (double)validationRows / trainRows + 1 : 1);
        if (history.Count == 0 && required > budget)
            throw new ArgumentOutOfRangeException(nameof(options.TrainTimeSeconds), options.TrainTimeSeconds,
                $"The time budget of {options.TrainTimeSeconds} s is too small for one trial on {trainRows:N0} training rows: one epoch of {Methods[0]} " +
                $"at {task.InputSizeName} {InputSizes[0]} takes about {minimumTrial:F0} s here{(options.Refit ? ", and the final refit as long again" : "")}; " +
                $"give at least {Math.Ceiling(required * 1.2):F0} s, or fewer rows.");

        var sampler = new TpeSampler(Dimensions, options.StartupTrials);
        ITransformer? bestModel = null;
        PeftTrialResult? bestWithModel = null;
        try
        {
            while (options.MaxTrials is null || history.Count < options.MaxTrials)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int number = history.Count + 1;
                var point = options.StartWithDefaults && number == 1 ? DefaultPoint()
                    : sampler.Sample(history.Select(h => (h.Point, Score(h.Trial))).ToList(), new Random(unchecked(options.Seed * 7919 + number)));
                var parameters = Decode(point);
                // Until a trial has completed only its refit is kept back, so a small budget still gets one.
                var bestSoFar = Best(history);
                double left = budget - watch.Elapsed.TotalSeconds - Math.Max(RefitReserve(bestSoFar, trainRows, validationRows, cost), bestSoFar is null ? 0 : FinalReserve(budget));
                // Epochs that fit: the calibration's estimate, corrected by what the finished trials took against it.
                double correction = Correction(history, cost);
                int Fits(int inputSize) => (int)Math.Floor((left - cost.Overhead) / Math.Max((cost.Estimate(inputSize, 1) - cost.Overhead) * correction, 1e-3));
                int fits = Fits(parameters.InputSize);
                if (fits < 1 && parameters.InputSize != InputSizes[0] && Fits(InputSizes[0]) >= 1)
                {
                    ch.Info($"Trial {number}: {task.InputSizeName} {InputSizes[0]} instead of {parameters.InputSize} fits in the time left.");
                    parameters = parameters with { InputSize = InputSizes[0] };
                    fits = Fits(InputSizes[0]);
                }
                if (fits < 1)
                {
                    ch.Info($"Stopping the search: {Math.Max(0, left):F0} s left (after keeping time for the final refit), not enough for one more epoch " +
                        $"(about {(cost.Estimate(InputSizes[0], 1) - cost.Overhead) * correction + cost.Overhead:F0} s).");
                    break;
                }
                if (fits < parameters.Epochs)
                {
                    ch.Info($"Trial {number}: {fits} epoch(s) instead of {parameters.Epochs} fit in the time left.");
                    parameters = parameters with { Epochs = fits };
                }
                TrialStarted?.Invoke(this, new PeftTrialStart(number, parameters, left));
                var (result, model) = RunTrial(number, parameters, searchTrain, searchValidation, halving, TimeSpan.FromSeconds(Math.Max(1, left)), ch, cancellationToken);
                history.Add((result, point));
                log?.Write(result, point);
                ch.Info($"Trial {number} {PeftTrialResult.StatusName(result.Status)}: {parameters}; {Metric.Name} {(result.Metric is double m ? m.ToString("F4", CultureInfo.InvariantCulture) : "-")}, {result.Seconds:F1} s" +
                    (result.Error is null ? "" : $" ({result.Error})"));
                TrialCompleted?.Invoke(this, result);
                if (model is not null && (bestWithModel is null || Better(result, bestWithModel)))
                {
                    (bestModel as IDisposable)?.Dispose();
                    bestModel = model;
                    bestWithModel = result;
                }
                else
                {
                    (model as IDisposable)?.Dispose();
                }
            }

            var best = Best(history) ?? throw new InvalidOperationException(
                $"No trial completed within the time budget of {options.TrainTimeSeconds} s ({history.Count} trials: " +
                $"{string.Join(", ", history.GroupBy(h => h.Trial.Status).Select(g => $"{g.Count()} {PeftTrialResult.StatusName(g.Key)}"))}); give a larger budget." +
                (history.FirstOrDefault(h => h.Trial.Error is not null).Trial?.Error is string error ? $" First error: {error}" : ""));

            // The final model: the best settings trained on every row, if that fits in the budget; else the best trial's model.
            ITransformer? trained = null;
            bool refitted = false;
            double refitSeconds = 0;
            int? refitEpochs = null;
            string? note = null;
            bool mustRefit = bestWithModel is null || bestWithModel.Number != best.Number;
            if (options.Refit || mustRefit)
            {
                double estimate = RefitReserve(best, trainRows, validationRows, cost);
                double remaining = budget * 1.05 - watch.Elapsed.TotalSeconds;
                if (estimate <= remaining || mustRefit)
                {
                    var refitWatch = Stopwatch.StartNew();
                    var refitParameters = best.Parameters with { Epochs = FinalEpochs(best, FinalEpochSeconds(best, trainRows, validationRows, cost), cost.Overhead, budget - watch.Elapsed.TotalSeconds, out string why) };
                    ch.Info($"Refitting the best settings (trial {best.Number}: {refitParameters}) on all {trainRows + validationRows:N0} rows: {why}.");
                    // The best trial's model is the fallback, so a refit running out of time is stopped at the 10% margin.
                    var limit = mustRefit ? (TimeSpan?)null : TimeSpan.FromSeconds(Math.Max(1, budget * 1.09 - watch.Elapsed.TotalSeconds));
                    trained = Refit(refitParameters, all, limit, ch, cancellationToken, out note);
                    refitted = trained is not null;
                    if (refitted) refitEpochs = refitParameters.Epochs;
                    refitSeconds = refitWatch.Elapsed.TotalSeconds;
                }
                else
                {
                    note = $"no refit: it would take about {estimate:F0} s and {Math.Max(0, remaining):F0} s are left; the best trial's model is kept";
                }
                if (note is not null) ch.Info(note);
            }
            if (trained is not null)
            {
                (bestModel as IDisposable)?.Dispose();
            }
            else
            {
                trained = bestModel ?? throw new InvalidOperationException("The best trial's model was lost: " + note);
            }
            bestModel = null;
            var chain = Assemble(preprocessing, trained, all);
            return new PeftExperimentResult(history.Select(h => h.Trial).ToList(), best, chain, refitted, Metric.Name,
                watch.Elapsed.TotalSeconds, refitSeconds, note, refitEpochs);
        }
        finally
        {
            (bestModel as IDisposable)?.Dispose();
        }
    }

    /// <summary>The sampler's score of a finished trial: the metric turned so that higher is better; no metric is the worst.</summary>
    private double Score(PeftTrialResult trial) =>
        trial.Metric is double m && double.IsFinite(m) ? (Metric.HigherIsBetter ? m : -m) : double.NegativeInfinity;

    private bool Better(PeftTrialResult a, PeftTrialResult b) => Score(a) > Score(b);

    private PeftTrialResult? Best(List<(PeftTrialResult Trial, double[] Point)> history) =>
        history.Select(h => h.Trial).Where(t => t.Status == PeftTrialStatus.Completed && t.Metric is double m && double.IsFinite(m))
            .OrderByDescending(Score).ThenBy(t => t.Number).FirstOrDefault();

    /// <summary>
    /// The median over finished trials of the seconds an epoch took against the calibration's estimate for its input size
    /// (the estimate scales with the input size, which overstates text whose rows are mostly shorter than the maximum); 1 before any.
    /// </summary>
    private static double Correction(List<(PeftTrialResult Trial, double[] Point)> history, TrialCost cost)
    {
        var ratios = history.Select(h => h.Trial).Where(t => t.Epochs.Count > 0 && t.Status != PeftTrialStatus.Failed)
            .Select(t => Math.Max(0, t.Seconds - cost.Overhead) / t.Epochs.Count / Math.Max(cost.Estimate(t.Parameters.InputSize, 1) - cost.Overhead, 1e-3))
            .Where(double.IsFinite).Order().ToList();
        if (ratios.Count == 0) return 1;
        return Math.Clamp(ratios[ratios.Count / 2], 0.1, 10);
    }

    /// <summary>The seconds <see cref="PeftExperimentOptions.FinalTrainingShare"/> keeps for the final training (none when refitting is off).</summary>
    private double FinalReserve(double budget) => options.Refit ? options.FinalTrainingShare * budget : 0;

    /// <summary>
    /// Epochs of the final training: the best trial's best epoch count; more, up to what <paramref name="secondsLeft"/>
    /// holds and <see cref="PeftExperimentOptions.MaxFinalEpochs"/>, when its validation metric still rose at its last epoch.
    /// </summary>
    internal int FinalEpochs(PeftTrialResult best, double perEpoch, double overhead, double secondsLeft, out string why)
    {
        int bestEpoch = best.BestEpoch;
        if (bestEpoch < best.Epochs.Count)
        {
            why = $"{bestEpoch} epoch(s), the best trial's best (its validation {Metric.Name} fell after it)";
            return bestEpoch;
        }
        int fits = (int)Math.Floor((secondsLeft - overhead) / Math.Max(perEpoch, 1e-3));
        int epochs = Math.Clamp(fits, bestEpoch, Math.Max(bestEpoch, options.MaxFinalEpochs));
        why = epochs > bestEpoch
            ? $"{epochs} epoch(s): the best trial's validation {Metric.Name} still rose at its last epoch ({bestEpoch}), and about {perEpoch:F0} s an epoch fit{(epochs == options.MaxFinalEpochs ? $" (at most {options.MaxFinalEpochs})" : "")} in the {Math.Max(0, secondsLeft):F0} s left"
            : $"{epochs} epoch(s), as the best trial";
        return epochs;
    }

    /// <summary>Seconds an epoch of the final training on every row takes, from what the best trial's epochs took.</summary>
    private static double FinalEpochSeconds(PeftTrialResult best, long trainRows, long validationRows, TrialCost cost) =>
        Math.Max(0, best.Seconds - cost.Overhead) / Math.Max(1, best.Epochs.Count) * (trainRows + validationRows) / trainRows;

    /// <summary>The task's default recipe as a point of the sampler's space (the nearest values where the space lacks them).</summary>
    internal double[] DefaultPoint()
    {
        var space = options.SearchSpace;
        static int IndexOr<T>(IReadOnlyList<T> list, T value, int fallback)
        {
            for (int i = 0; i < list.Count; i++)
                if (EqualityComparer<T>.Default.Equals(list[i], value)) return i;
            return fallback;
        }
        static int Nearest(IReadOnlyList<float> list, double value) =>
            Enumerable.Range(0, list.Count).OrderBy(i => Math.Abs(Math.Log(list[i] / value))).First();
        var defaults = task.NewOptions();
        int size = task.ForImages ? ((Tasks.ImageClassification.PeftImageClassificationTrainer.Options)defaults).ImageSize
            : ((PeftTextTrainerOptions)defaults).MaxSequenceLength;
        int sizeIndex = Enumerable.Range(0, InputSizes.Count).OrderBy(i => Math.Abs(InputSizes[i] - size)).ThenByDescending(i => i).First();
        return new double[]
        {
            IndexOr(Methods, "lora", 0),
            Enumerable.Range(0, space.Ranks.Count).OrderBy(i => Math.Abs(Math.Log(space.Ranks[i] / 8.0))).First(),
            Nearest(space.AlphaOverRank, 2),
            IndexOr(TargetModules, task.ForImages ? Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions : "all-linear", TargetModules.Count - 1),
            Math.Clamp(0, Math.Log(space.MinLearningRateFactor), Math.Log(space.MaxLearningRateFactor)),
            Epochs.Count - 1,
            sizeIndex,
        };
    }

    /// <summary>Seconds to keep for the refit of <paramref name="best"/> (none when refitting is off).</summary>
    private double RefitReserve(PeftTrialResult? best, long trainRows, long validationRows, TrialCost cost)
    {
        if (!options.Refit) return 0;
        double scale = (double)(trainRows + validationRows) / trainRows;
        if (best is null) return cost.Estimate(InputSizes[0], 1) * scale;
        double perEpoch = (best.Seconds - cost.Overhead) / Math.Max(1, best.Epochs.Count);
        return cost.Overhead + Math.Max(0, perEpoch) * best.BestEpoch * scale;
    }

    private (PeftTrialResult Result, ITransformer? Model) RunTrial(int number, PeftTrialParameters parameters, IDataView train, IDataView validation,
        SuccessiveHalving halving, TimeSpan limit, IChannel ch, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var epochs = new List<EpochMetrics>();
        bool pruned = false, outOfTime = false;
        var trialContext = NewTrialContext(number, ch);
        using var timer = new Timer(_ =>
        {
            outOfTime = true;
            trialContext.CancelExecution();
        }, null, limit, Timeout.InfiniteTimeSpan);
        using var cancel = cancellationToken.Register(trialContext.CancelExecution);
        ITransformer? model = null;
        try
        {
            var trainer = task.CreateTrainer(trialContext, TrainerOptions(parameters, options.Seed + number, validation), m =>
            {
                epochs.Add(m);
                EpochCompleted?.Invoke(this, new PeftTrialEpoch(number, m));
                if (m.ValidationMetric is double v && !halving.Report(m.Epoch, v) && m.Epoch < m.MaxEpoch)
                {
                    pruned = true;
                    trialContext.CancelExecution();
                }
            });
            model = trainer.Fit(train);
            timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            double metric = Metric.Evaluate(trialContext, model.Transform(validation));
            return (new PeftTrialResult(number, parameters, PeftTrialStatus.Completed, metric, watch.Elapsed.TotalSeconds, epochs, null), model);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            (model as IDisposable)?.Dispose();
            var inner = Unwrap(e);
            var status = inner is OperationCanceledException ? (pruned ? PeftTrialStatus.Pruned : outOfTime ? PeftTrialStatus.OutOfTime : PeftTrialStatus.Failed)
                : PeftTrialStatus.Failed;
            // Without a full run, the trainer's last validation metric stands for the trial (when it is the search's metric).
            double? last = Metric == task.Metrics[0] ? epochs.Where(x => x.ValidationMetric is not null).Select(x => x.ValidationMetric).LastOrDefault() : null;
            string? error = status == PeftTrialStatus.Failed ? $"{inner.GetType().Name}: {inner.Message}" : null;
            if (status == PeftTrialStatus.Failed) ch.Warning($"Trial {number} failed and is skipped: {error}");
            return (new PeftTrialResult(number, parameters, status, status == PeftTrialStatus.Failed ? null : last, watch.Elapsed.TotalSeconds, epochs, error), null);
        }
    }

    /// <summary>Trains the best settings on every row; null (with a note) if it runs past <paramref name="limit"/>.</summary>
    private ITransformer? Refit(PeftTrialParameters parameters, IDataView all, TimeSpan? limit, IChannel ch, CancellationToken cancellationToken, out string? note)
    {
        note = null;
        bool outOfTime = false;
        var context = NewTrialContext(0, ch);
        using var timer = limit is TimeSpan l ? new Timer(_ =>
        {
            outOfTime = true;
            context.CancelExecution();
        }, null, l, Timeout.InfiniteTimeSpan) : null;
        using var cancel = cancellationToken.Register(context.CancelExecution);
        try
        {
            return task.CreateTrainer(context, TrainerOptions(parameters, options.Seed, null), _ => { }).Fit(all);
        }
        catch (Exception e) when (outOfTime && !cancellationToken.IsCancellationRequested && Unwrap(e) is OperationCanceledException)
        {
            note = "the refit ran out of time; the best trial's model is kept";
            return null;
        }
    }

    /// <summary>Each trial runs in its own ML.NET context (so it can be stopped alone); its messages are passed on, marked with the trial.</summary>
    private MLContext NewTrialContext(int number, IChannel ch)
    {
        var context = new MLContext(options.Seed + number);
        string prefix = number == 0 ? "Refit" : number < 0 ? "Calibration" : $"Trial {number}";
        EventHandler<LoggingEventArgs> forward = (_, e) =>
        {
            if (e.Source is null || !e.Source.Contains("Peft", StringComparison.Ordinal) || e.Source.Contains(nameof(PeftExperiment), StringComparison.Ordinal)) return;
            if (e.Kind == ChannelMessageKind.Info) ch.Info($"{prefix}: {e.RawMessage}");
            else if (e.Kind == ChannelMessageKind.Warning) ch.Warning($"{prefix}: {e.RawMessage}");
        };
        // Against the publicized ML.NET reference the event and its backing field share the name; subscribe through the event.
        LogEvent.AddEventHandler(context, forward);
        return context;
    }

    private static readonly System.Reflection.EventInfo LogEvent = typeof(MLContext).GetEvent("Log")
        ?? throw new MissingMemberException(nameof(MLContext), "Log");

    private ITransformer Assemble(ITransformer? preprocessing, ITransformer trained, IDataView data)
    {
        var parts = new List<ITransformer>();
        if (preprocessing is not null) parts.Add(preprocessing);
        parts.Add(trained);
        if (task.Postprocessing is not null)
            parts.Add(task.Postprocessing(mlContext).Fit(trained.Transform(data)));
        return new TransformerChain<ITransformer>(parts.ToArray());
    }

    /// <summary>What a trial costs here: a fixed part (loading the base model, reading the data) and seconds per epoch at an input size.</summary>
    private sealed record TrialCost(double Overhead, double EpochSeconds, int InputSize, bool Images)
    {
        public double Estimate(int inputSize, int epochs)
        {
            double ratio = (double)inputSize / InputSize;
            return Overhead + EpochSeconds * (Images ? ratio * ratio : ratio) * epochs;
        }
    }

    /// <summary>Measures one short fit (two batches of the first method at the smallest input size) and scales it to the data.</summary>
    private TrialCost Calibrate(IDataView train, long trainRows, long validationRows, IChannel ch, CancellationToken cancellationToken)
    {
        var parameters = Decode(new double[Dimensions.Count]) with { Epochs = 1, InputSize = InputSizes[0] };
        var o = TrainerOptions(parameters, options.Seed, null);
        long sample = Math.Min(trainRows, 2L * o.BatchSize);
        var context = NewTrialContext(-1, ch);
        using var cancel = cancellationToken.Register(context.CancelExecution);
        double rowsPerSecond = 0;
        var watch = Stopwatch.StartNew();
        var model = task.CreateTrainer(context, o, m => rowsPerSecond = m.RowsPerSecond).Fit(context.Data.TakeRows(train, sample));
        double seconds = watch.Elapsed.TotalSeconds;
        (model as IDisposable)?.Dispose();
        double perRow = rowsPerSecond > 0 ? 1 / rowsPerSecond : seconds / sample;
        double overhead = Math.Max(0, seconds - perRow * sample);
        // An epoch: the training rows, then scoring the validation rows (about a third of a training row's cost each).
        double epoch = perRow * (trainRows + validationRows / 3.0);
        ch.Info($"Measured one trial's cost: {sample} rows in {seconds:F1} s ({1 / perRow:F0} rows/s); one epoch of {trainRows:N0} rows about {epoch:F0} s.");
        return new TrialCost(overhead, epoch, parameters.InputSize, task.ForImages);
    }

    private static long CountRows(IDataView data)
    {
        if (data.GetRowCount() is long n) return n;
        long count = 0;
        using var cursor = data.GetRowCursor(Array.Empty<DataViewSchema.Column>());
        while (cursor.MoveNext()) count++;
        return count;
    }

    private string Fingerprint(DataViewSchema schema, long trainRows, long validationRows)
    {
        var space = options.SearchSpace;
        var text = string.Join("\n", new[]
        {
            task.Name, Metric.Name, options.ValidationFraction.ToString("R", CultureInfo.InvariantCulture),
            string.Join(",", schema.Where(c => !c.IsHidden).Select(c => $"{c.Name}:{c.Type}")),
            trainRows.ToString(CultureInfo.InvariantCulture), validationRows.ToString(CultureInfo.InvariantCulture),
            PeftSearchSpace.Describe(Methods, space.Ranks, space.AlphaOverRank, TargetModules, space.MinLearningRateFactor, space.MaxLearningRateFactor,
                space.MinEpochs, space.MaxEpochs, InputSizes),
        });
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text))).ToLowerInvariant();
    }

    private void RewriteLog(string path, string fingerprint, List<(PeftTrialResult Trial, double[] Point)> history)
    {
        using var rewritten = TrialLog.Create(path, task.Name, options.Seed, fingerprint);
        foreach (var (trial, point) in history) rewritten.Write(trial, point);
    }

    private static Exception Unwrap(Exception e)
    {
        while (e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException;
        return e;
    }
}
