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
        Write("search", new JsonObject
        {
            ["task"] = task.Name, ["metric"] = experiment.Metric.Name, ["higherIsBetter"] = experiment.Metric.HigherIsBetter, ["budgetSeconds"] = budget,
        });
        experiment.TrialStarted += (_, t) => Write("trial", new JsonObject
        {
            ["trial"] = t.Number,
            ["parameters"] = new JsonObject(t.Parameters.ToPairs(task.InputSizeName).Select(p => KeyValuePair.Create(p.Name, (JsonNode?)JsonValue.Create(p.Value)))),
            ["secondsLeft"] = Number(t.SecondsLeft),
        });
        experiment.EpochCompleted += (_, e) => Write("epoch", new JsonObject
        {
            ["trial"] = e.Number, ["epoch"] = e.Metrics.Epoch, ["maxEpoch"] = e.Metrics.MaxEpoch, ["loss"] = Number(e.Metrics.TrainingLoss),
            ["validation"] = Number(e.Metrics.ValidationMetric), ["metric"] = e.Metrics.MetricName,
        });
        experiment.TrialCompleted += (_, t) => Write("trialEnd", new JsonObject
        {
            ["trial"] = t.Number, ["status"] = PeftTrialResult.StatusName(t.Status), ["metric"] = Number(t.Metric), ["seconds"] = Number(t.Seconds), ["error"] = t.Error,
        });
    }

    /// <summary>A line of text about the search (refit, evaluation...).</summary>
    public void Message(string text) => Write("message", new JsonObject { ["text"] = text });

    /// <summary>The last event: the best trial and the test metrics.</summary>
    public void Done(PeftExperimentResult result, IEnumerable<(string Key, string Label, double Value)> metrics) => Write("done", new JsonObject
    {
        ["bestTrial"] = result.BestTrial.Number,
        ["validationMetric"] = Number(result.BestTrial.Metric),
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
