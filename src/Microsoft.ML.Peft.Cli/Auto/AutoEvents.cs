using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Peft.AutoML;

namespace Microsoft.ML.Peft.Cli.Auto;

/// <summary>
/// The search's progress as JSON lines (<c>auto --events FILE</c>), one object a line, flushed as it happens, for tools
/// that follow a run (the web app streams them to its page). Every event has <c>type</c> and <c>elapsed</c> (seconds
/// since the search started); the types and their fields are listed in docs/ui.md.
/// </summary>
internal sealed class AutoEvents : IDisposable
{
    private readonly StreamWriter writer;
    private readonly Stopwatch watch = Stopwatch.StartNew();
    private readonly object gate = new();

    private AutoEvents(string path)
    {
        writer = new StreamWriter(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite), new UTF8Encoding(false)) { AutoFlush = true };
    }

    /// <summary>Creates (or empties) <paramref name="path"/>; null when no events file is asked for.</summary>
    public static AutoEvents? Open(string? path) => path is null ? null : new AutoEvents(path);

    /// <summary>Follows <paramref name="experiment"/>'s trials and epochs.</summary>
    public void Attach(PeftExperiment experiment, PeftSearchTask task, int budget)
    {
        Search(task.Name, experiment.Metric.Name, experiment.Metric.HigherIsBetter, budget);
        experiment.TrialStarted += (_, t) => Trial(t.Number, t.Parameters.ToPairs(task.InputSizeName).Select(p => (p.Name, p.Value)), t.SecondsLeft);
        experiment.EpochCompleted += (_, e) => Epoch(e.Number, e.Metrics.Epoch, e.Metrics.MaxEpoch, e.Metrics.TrainingLoss, e.Metrics.ValidationMetric, e.Metrics.MetricName);
        experiment.TrialCompleted += (_, t) => TrialEnd(t.Number, PeftTrialResult.StatusName(t.Status), t.Metric, t.Seconds, t.Error);
    }

    /// <summary>The first event: what is trained, the metric that ranks the trials, the time budget (null when there is none).</summary>
    public void Search(string task, string metric, bool higherIsBetter, int? budgetSeconds) => Write("search", new JsonObject
    {
        ["task"] = task, ["metric"] = metric, ["higherIsBetter"] = higherIsBetter, ["budgetSeconds"] = budgetSeconds,
    });

    /// <summary>A trial starts with <paramref name="parameters"/>.</summary>
    public void Trial(int number, IEnumerable<(string Name, string Value)> parameters, double? secondsLeft) => Write("trial", new JsonObject
    {
        ["trial"] = number,
        ["parameters"] = new JsonObject(parameters.Select(p => KeyValuePair.Create(p.Name, (JsonNode?)JsonValue.Create(p.Value)))),
        ["secondsLeft"] = Number(secondsLeft),
    });

    /// <summary>An epoch (a pass over the training data) of trial <paramref name="trial"/> ended.</summary>
    public void Epoch(int trial, int epoch, int maxEpoch, double? loss, double? validation, string? metric) => Write("epoch", new JsonObject
    {
        ["trial"] = trial, ["epoch"] = epoch, ["maxEpoch"] = maxEpoch, ["loss"] = Number(loss), ["validation"] = Number(validation), ["metric"] = metric,
    });

    /// <summary>Trial <paramref name="trial"/> ended.</summary>
    public void TrialEnd(int trial, string status, double? metric, double? seconds, string? error) => Write("trialEnd", new JsonObject
    {
        ["trial"] = trial, ["status"] = status, ["metric"] = Number(metric), ["seconds"] = Number(seconds), ["error"] = error,
    });

    /// <summary>A line of text about the search (refit, evaluation...).</summary>
    public void Message(string text) => Write("message", new JsonObject { ["text"] = text });

    /// <summary>The last event: the best trial and the test metrics.</summary>
    public void Done(PeftExperimentResult result, IEnumerable<(string Key, string Label, double Value)> metrics) =>
        Done(result.BestTrial.Number, result.BestTrial.Metric, metrics.Select(m => (m.Key, m.Value)));

    /// <summary>The last event: the chosen trial, its validation metric (null when there is none) and the test metrics.</summary>
    public void Done(int bestTrial, double? validationMetric, IEnumerable<(string Key, double Value)> metrics) => Write("done", new JsonObject
    {
        ["bestTrial"] = bestTrial,
        ["validationMetric"] = Number(validationMetric),
        ["metrics"] = new JsonObject(metrics.Select(m => KeyValuePair.Create(m.Key, Number(m.Value)))),
    });

    private static JsonNode? Number(double? value) => value is double v && double.IsFinite(v) ? JsonValue.Create(Math.Round(v, 6)) : null;

    private void Write(string type, JsonObject fields)
    {
        var line = new JsonObject { ["type"] = type, ["elapsed"] = Math.Round(watch.Elapsed.TotalSeconds, 3) };
        foreach (var (key, value) in fields.ToList())
        {
            fields.Remove(key);
            line[key] = value;
        }
        lock (gate) writer.WriteLine(line.ToJsonString());
    }

    public void Dispose() => writer.Dispose();
}
