using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>How a trial ended.</summary>
public enum PeftTrialStatus
{
    /// <summary>Trained every epoch and was evaluated.</summary>
    Completed,

    /// <summary>Stopped early by successive halving: its validation metric ranked too low at a rung.</summary>
    Pruned,

    /// <summary>Stopped because the search's time ran out.</summary>
    OutOfTime,

    /// <summary>Threw (bad settings, out of memory...); reported and skipped.</summary>
    Failed,
}

/// <summary>One trial of a <see cref="PeftExperiment"/>.</summary>
/// <param name="Number">The trial's number, from 1.</param>
/// <param name="Parameters">Its settings.</param>
/// <param name="Status">How it ended.</param>
/// <param name="Metric">The search metric on the validation data (completed trials), or the trainer's last validation metric (pruned or out of time, when it is the search metric); null otherwise.</param>
/// <param name="Seconds">Wall time, evaluation included.</param>
/// <param name="Epochs">The epochs it trained, with their losses and validation metrics.</param>
/// <param name="Error">Why it failed, for <see cref="PeftTrialStatus.Failed"/>.</param>
public sealed record PeftTrialResult(int Number, PeftTrialParameters Parameters, PeftTrialStatus Status, double? Metric, double Seconds,
    IReadOnlyList<EpochMetrics> Epochs, string? Error)
{
    /// <summary>How a trial with <paramref name="status"/> ended, in words: <c>completed</c>, <c>pruned</c>, <c>out of time</c>, <c>failed</c>.</summary>
    public static string StatusName(PeftTrialStatus status) => status switch
    {
        PeftTrialStatus.Completed => "completed",
        PeftTrialStatus.Pruned => "pruned",
        PeftTrialStatus.OutOfTime => "out of time",
        _ => "failed",
    };

    /// <summary>The epoch whose weights the trial's model keeps: its best validation epoch (the trainer restores it), or the last.</summary>
    public int BestEpoch => Epochs.Where(e => e.ValidationMetric is not null).OrderByDescending(e => e.ValidationMetric).ThenBy(e => e.Epoch)
        .Select(e => e.Epoch).DefaultIfEmpty(Epochs.Count).First();
}

/// <summary>What <see cref="PeftExperiment.Run"/> returns: the trials, the best one, and the final model.</summary>
public sealed class PeftExperimentResult
{
    internal PeftExperimentResult(IReadOnlyList<PeftTrialResult> trials, PeftTrialResult best, ITransformer model, bool refitted,
        string metricName, double seconds, double refitSeconds, string? refitNote, int? refitEpochs = null)
    {
        RefitEpochs = refitEpochs;
        Trials = trials;
        BestTrial = best;
        Model = model;
        Refitted = refitted;
        MetricName = metricName;
        Seconds = seconds;
        RefitSeconds = refitSeconds;
        RefitNote = refitNote;
    }

    /// <summary>Every trial, including those of a resumed log, in trial order.</summary>
    public IReadOnlyList<PeftTrialResult> Trials { get; }

    /// <summary>The trials ranked by the metric, best first; trials without a metric last.</summary>
    public IReadOnlyList<PeftTrialResult> Leaderboard(bool higherIsBetter = true) =>
        Trials.OrderBy(t => t.Metric is null ? 1 : 0).ThenBy(t => t.Metric is double m ? (higherIsBetter ? -m : m) : 0).ThenBy(t => t.Number).ToList();

    /// <summary>The best completed trial: the final model uses its settings.</summary>
    public PeftTrialResult BestTrial { get; }

    /// <summary>The final model: the data preparation (label mapping), the trained PEFT transformer and the post-processing (keys back to values).</summary>
    public ITransformer Model { get; }

    /// <summary>Whether <see cref="Model"/> was trained again on the training and validation rows with the best settings (else it is the best trial's model).</summary>
    public bool Refitted { get; }

    /// <summary>Why the model was not refitted, when it was not and a refit was asked for.</summary>
    public string? RefitNote { get; }

    /// <summary>The metric that ranked the trials.</summary>
    public string MetricName { get; }

    /// <summary>Wall time of the whole run (search and refit).</summary>
    public double Seconds { get; }

    /// <summary>The epochs the final training ran on every row (null without one): the best trial's, or more when its metric still rose.</summary>
    public int? RefitEpochs { get; }

    /// <summary>Wall time of the refit (0 without one).</summary>
    public double RefitSeconds { get; }
}
