using System.Diagnostics;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Training;

/// <summary>What a task hands the training loop: how many rows, their lengths (for batching), the loss of a batch and the validation metric.</summary>
internal sealed class TrainingJob
{
    /// <summary>Number of training rows; batches are arrays of row indices.</summary>
    public required int RowCount { get; init; }

    /// <summary>A cost per row (token count): batches group rows of similar cost. Null: plain shuffled batches.</summary>
    public int[]? RowLengths { get; init; }

    /// <summary>The mean loss of a batch of rows (the network is in training mode, gradients on).</summary>
    public required Func<int[], Tensor> Loss { get; init; }

    /// <summary>The validation metric (higher is better), computed in evaluation mode; null without validation data.</summary>
    public Func<double>? Validate { get; init; }

    /// <summary>The metric's name in progress reports.</summary>
    public string MetricName { get; init; } = "accuracy";
}

/// <summary>
/// The one training loop of every task: AdamW over the trainable parameters in the method's parameter groups, linear
/// warm-up then linear decay, gradient clipping, length-bucketed shuffled batches, validation and early stopping that
/// restores the best epoch, ML.NET cancellation checked every step, and structured progress.
/// </summary>
internal sealed class TrainingLoop
{
    private const int ProgressEverySteps = 25;
    private readonly PeftTrainerOptions options;
    private readonly IHost host;
    private readonly IChannel ch;

    public TrainingLoop(PeftTrainerOptions options, IHost host, IChannel ch)
    {
        this.options = options;
        this.host = host;
        this.ch = ch;
    }

    /// <summary>Trains <paramref name="network"/>; the parameters in <paramref name="trainable"/> are the ones that change.</summary>
    public List<EpochMetrics> Run(nn.Module network, IReadOnlyList<NamedParameter> trainable, IReadOnlyList<ParameterGroup> groups,
        TrainingJob job, RandomSource random, Action<EpochMetrics>? onEpoch)
    {
        var parameters = trainable.Select(p => p.Parameter).ToList();
        int stepsPerEpoch = (job.RowCount + options.BatchSize - 1) / options.BatchSize;
        int totalSteps = stepsPerEpoch * options.MaxEpoch;
        int warmupSteps = (int)Math.Ceiling(totalSteps * options.WarmupRatio);
        var adamGroups = groups.Select(g => new AdamW.ParamGroup(g.Parameters,
            new AdamW.Options { LearningRate = options.LearningRate * g.LearningRateScale, weight_decay = options.WeightDecay })).ToList();
        using var optimizer = optim.AdamW(adamGroups, options.LearningRate, weight_decay: options.WeightDecay);
        var schedule = optim.lr_scheduler.LambdaLR(optimizer, step =>
            step < warmupSteps ? (step + 1.0) / (warmupSteps + 1.0) : Math.Max(0.0, (double)(totalSteps - step) / Math.Max(1, totalSteps - warmupSteps)));
        var order = Enumerable.Range(0, job.RowCount).ToArray();
        var lengths = job.RowLengths ?? new int[job.RowCount];
        var history = new List<EpochMetrics>();
        double best = double.NegativeInfinity;
        int bestEpoch = 0, epochsWithoutImprovement = 0;
        Dictionary<string, Tensor>? bestWeights = null;
        RunDropout.Attach(network, random);
        ReleaseLoadingGarbage();
        try
        {
            for (int epoch = 1; epoch <= options.MaxEpoch; epoch++)
            {
                random.Shuffle.Shuffle(order);
                network.train();
                var watch = Stopwatch.StartNew();
                double lossSum = 0;
                var batches = LengthBuckets(order, lengths, options.BatchSize, random.Shuffle);
                int step = 0, seen = 0;
                foreach (var rows in batches)
                {
                    host.CheckAlive();
                    using var scope = NewDisposeScope();
                    var loss = job.Loss(rows);
                    optimizer.zero_grad();
                    loss.backward();
                    if (options.MaxGradientNorm > 0) nn.utils.clip_grad_norm_(parameters, options.MaxGradientNorm);
                    optimizer.step();
                    schedule.step();
                    float value = loss.item<float>();
                    if (!float.IsFinite(value))
                        throw new InvalidOperationException($"The training loss became {value} at epoch {epoch}, step {step + 1}: lower the LearningRate or check the data.");
                    lossSum += value * rows.Length;
                    seen += rows.Length;
                    if (++step % ProgressEverySteps == 0 && step < batches.Count)
                        ch.Info($"Epoch {epoch}/{options.MaxEpoch}: step {step}/{batches.Count}, loss {lossSum / seen:F4}, {seen / watch.Elapsed.TotalSeconds:F1} rows/s");
                }
                watch.Stop();
                double? metric = null;
                bool isBest = false;
                if (job.Validate is not null)
                {
                    host.CheckAlive();
                    network.eval();
                    metric = job.Validate();
                    isBest = metric > best;
                }
                var metrics = new EpochMetrics(epoch, options.MaxEpoch, lossSum / job.RowCount, job.RowCount / watch.Elapsed.TotalSeconds,
                    job.Validate is null ? null : job.MetricName, metric, isBest);
                history.Add(metrics);
                ch.Info($"Epoch {epoch}/{options.MaxEpoch}: loss {metrics.TrainingLoss:F4}, {metrics.RowsPerSecond:F1} rows/s" +
                    (metric is null ? "" : $", validation {job.MetricName} {metric:F4}"));
                onEpoch?.Invoke(metrics);
                if (metric is null) continue;
                if (isBest)
                {
                    best = metric.Value;
                    bestEpoch = epoch;
                    epochsWithoutImprovement = 0;
                    if (options.EarlyStoppingPatience > 0)
                    {
                        DisposeAll(bestWeights);
                        bestWeights = trainable.ToDictionary(p => p.Key, p => p.Parameter.detach().clone().DetachFromDisposeScope());
                    }
                }
                else if (options.EarlyStoppingPatience > 0 && ++epochsWithoutImprovement >= options.EarlyStoppingPatience)
                {
                    ch.Info($"Early stopping: no better validation {job.MetricName} for {epochsWithoutImprovement} epochs.");
                    break;
                }
            }
            if (bestWeights is not null && bestEpoch != history.Count)
            {
                using (no_grad())
                {
                    foreach (var p in trainable) p.Parameter.copy_(bestWeights[p.Key]);
                }
                ch.Info($"Restored the weights of epoch {bestEpoch} (validation {job.MetricName} {best:F4}).");
            }
        }
        finally
        {
            DisposeAll(bestWeights);
            RunDropout.Attach(network, null);
            network.eval();
        }
        return history;
    }

    /// <summary>
    /// Batches of shuffled rows in which lengths are similar, so little compute goes to padding: each window of 64
    /// batches' worth of shuffled rows is sorted by length and cut into batches, and the batches are shuffled.
    /// </summary>
    internal static List<int[]> LengthBuckets(int[] shuffled, int[] lengths, int batchSize, Random random)
    {
        var batches = new List<int[]>();
        int window = batchSize * 64;
        for (int start = 0; start < shuffled.Length; start += window)
        {
            var chunk = shuffled.AsSpan(start, Math.Min(window, shuffled.Length - start)).ToArray();
            var sorted = chunk.OrderBy(i => lengths[i]).ToArray(); // stable: ties keep the shuffled order
            for (int b = 0; b < sorted.Length; b += batchSize)
                batches.Add(sorted.AsSpan(b, Math.Min(batchSize, sorted.Length - b)).ToArray());
        }
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(batches));
        return batches;
    }

    private static void DisposeAll(Dictionary<string, Tensor>? tensors)
    {
        if (tensors is null) return;
        foreach (var t in tensors.Values) t.Dispose();
        tensors.Clear();
    }

    /// <summary>
    /// What building the model left behind (the parsed weights, the file's bytes: hundreds of megabytes) is garbage
    /// before the first step; a collection that decommits returns those pages to the system, which the runtime would
    /// otherwise keep resident through training. The training loop makes it before its first step (and the memory
    /// benchmark before it measures one).
    /// </summary>
    internal static void ReleaseLoadingGarbage() => GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
}
