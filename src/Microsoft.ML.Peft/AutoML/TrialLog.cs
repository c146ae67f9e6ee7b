using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>
/// The search's trial log: JSON lines, a header naming the experiment (task, seed and a fingerprint of the data, the space
/// and the metric) and then one line per finished trial, flushed as it ends. A search resumes from it after a crash or
/// Ctrl+C: the trials are replayed into the sampler and the early-termination rungs, and numbering goes on.
/// </summary>
internal sealed class TrialLog : IDisposable
{
    internal const string Kind = "peft-trial-log";
    internal const int Version = 1;
    private readonly StreamWriter writer;

    private TrialLog(StreamWriter writer) => this.writer = writer;

    /// <summary>Starts a new log (replacing one at <paramref name="path"/>) with its header.</summary>
    public static TrialLog Create(string path, string task, int seed, string fingerprint)
    {
        var writer = Open(path, FileMode.Create);
        var log = new TrialLog(writer);
        log.WriteLine(new JsonObject { ["kind"] = Kind, ["version"] = Version, ["task"] = task, ["seed"] = seed, ["fingerprint"] = fingerprint });
        return log;
    }

    /// <summary>Opens an existing log to append to, after <see cref="Read"/> checked it.</summary>
    public static TrialLog Append(string path) => new(Open(path, FileMode.Append));

    private static StreamWriter Open(string path, FileMode mode)
    {
        try
        {
            return new StreamWriter(new FileStream(path, mode, FileAccess.Write, FileShare.Read));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"The trial log '{path}' cannot be written: {e.Message}", e);
        }
    }

    /// <summary>Appends a finished trial with its point in the sampler's space.</summary>
    public void Write(PeftTrialResult trial, double[] point)
    {
        var p = trial.Parameters;
        WriteLine(new JsonObject
        {
            ["number"] = trial.Number,
            ["point"] = new JsonArray(point.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray()),
            ["parameters"] = new JsonObject
            {
                ["method"] = p.Method, ["rank"] = p.Rank, ["alpha"] = p.Alpha, ["targets"] = p.TargetModules,
                ["learningRate"] = p.LearningRate, ["epochs"] = p.Epochs, ["inputSize"] = p.InputSize,
            },
            ["status"] = trial.Status.ToString(),
            ["metric"] = trial.Metric is double m && double.IsFinite(m) ? m : null,
            ["seconds"] = Math.Round(trial.Seconds, 3),
            ["epochs"] = new JsonArray(trial.Epochs.Select(e => (JsonNode)new JsonObject
            {
                ["epoch"] = e.Epoch, ["maxEpoch"] = e.MaxEpoch, ["loss"] = double.IsFinite(e.TrainingLoss) ? e.TrainingLoss : null,
                ["rowsPerSecond"] = Math.Round(e.RowsPerSecond, 3), ["metricName"] = e.MetricName,
                ["metric"] = e.ValidationMetric is double v && double.IsFinite(v) ? v : null, ["isBest"] = e.IsBest,
            }).ToArray()),
            ["error"] = trial.Error,
        });
    }

    private void WriteLine(JsonObject line)
    {
        writer.WriteLine(line.ToJsonString());
        writer.Flush();
    }

    public void Dispose() => writer.Dispose();

    /// <summary>
    /// The trials of the log at <paramref name="path"/>, after checking that it is a trial log of this experiment. A file
    /// that is not one, one of another experiment, or a damaged line is an <see cref="InvalidDataException"/> naming the
    /// file and the line; a last line cut short by a crash is dropped (its trial runs again).
    /// </summary>
    public static List<(PeftTrialResult Trial, double[] Point)> Read(string path, string task, int seed, string fingerprint, out bool droppedPartialLine)
    {
        droppedPartialLine = false;
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"The trial log '{path}' cannot be read: {e.Message}", e);
        }
        var lines = text.Split('\n');
        bool complete = text.EndsWith('\n');
        var trials = new List<(PeftTrialResult Trial, double[] Point)>();
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0) continue;
            bool last = i == lines.Length - 1;
            JsonObject obj;
            try
            {
                obj = JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException("not a JSON object");
            }
            catch (Exception e) when (e is JsonException or InvalidDataException)
            {
                if (last && !complete && i > 0)
                {
                    droppedPartialLine = true;
                    break;
                }
                if (i == 0) throw new InvalidDataException($"'{path}' is not a trial log of mlnet-peft (its first line is not JSON). Delete it or give another trial log path.", e);
                throw new InvalidDataException($"The trial log '{path}' is damaged at line {i + 1}: {e.Message}. Delete it to start a new search.", e);
            }
            if (i == 0)
            {
                CheckHeader(path, obj, task, seed, fingerprint);
                continue;
            }
            try
            {
                trials.Add(ReadTrial(obj));
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or NullReferenceException or InvalidDataException)
            {
                throw new InvalidDataException($"The trial log '{path}' is damaged at line {i + 1}: {e.Message}. Delete it to start a new search.", e);
            }
            if (trials[^1].Trial.Number != trials.Count)
                throw new InvalidDataException($"The trial log '{path}' is damaged at line {i + 1}: trial {trials[^1].Trial.Number} where trial {trials.Count} was expected.");
        }
        if (lines.All(l => l.Trim().Length == 0))
            throw new InvalidDataException($"The trial log '{path}' is empty: it is not a trial log. Delete it to start a new search.");
        return trials;
    }

    private static void CheckHeader(string path, JsonObject header, string task, int seed, string fingerprint)
    {
        string? kind = header["kind"] is JsonValue k && k.TryGetValue(out string? s) ? s : null;
        if (kind != Kind)
            throw new InvalidDataException($"'{path}' is not a trial log of mlnet-peft (its first line has no \"kind\": \"{Kind}\"). Delete it or give another trial log path.");
        if (header["version"] is not JsonValue v || !v.TryGetValue(out int version) || version != Version)
            throw new InvalidDataException($"The trial log '{path}' has a format version this build does not read (expected {Version}).");
        string? loggedTask = header["task"] is JsonValue t && t.TryGetValue(out string? ts) ? ts : null;
        int? loggedSeed = header["seed"] is JsonValue sv && sv.TryGetValue(out int si) ? si : null;
        string? loggedPrint = header["fingerprint"] is JsonValue f && f.TryGetValue(out string? fs) ? fs : null;
        if (loggedTask != task || loggedSeed != seed || loggedPrint != fingerprint)
            throw new InvalidDataException($"The trial log '{path}' belongs to another search (task {loggedTask ?? "?"}, seed {loggedSeed?.ToString() ?? "?"}; " +
                $"this one: task {task}, seed {seed}{(loggedTask == task && loggedSeed == seed ? ", other data, search space or metric" : "")}). " +
                "Resume with the same data and options, or delete the log to start anew.");
    }

    private static (PeftTrialResult, double[]) ReadTrial(JsonObject obj)
    {
        var point = obj["point"]!.AsArray().Select(n => n!.GetValue<double>()).ToArray();
        var p = obj["parameters"]!.AsObject();
        var parameters = new PeftTrialParameters(
            p["method"]!.GetValue<string>(), p["rank"]?.GetValue<int>(), p["alpha"]?.GetValue<float>(), p["targets"]?.GetValue<string>(),
            p["learningRate"]!.GetValue<float>(), p["epochs"]!.GetValue<int>(), p["inputSize"]!.GetValue<int>());
        if (!Enum.TryParse<PeftTrialStatus>(obj["status"]!.GetValue<string>(), out var status) || !Enum.IsDefined(status))
            throw new InvalidDataException($"unknown status '{obj["status"]}'");
        var epochs = obj["epochs"]!.AsArray().Select(n =>
        {
            var e = n!.AsObject();
            return new EpochMetrics(e["epoch"]!.GetValue<int>(), e["maxEpoch"]!.GetValue<int>(), e["loss"]?.GetValue<double>() ?? double.NaN,
                e["rowsPerSecond"]!.GetValue<double>(), e["metricName"]?.GetValue<string>(), e["metric"]?.GetValue<double>(), e["isBest"]!.GetValue<bool>());
        }).ToList();
        return (new PeftTrialResult(obj["number"]!.GetValue<int>(), parameters, status, obj["metric"]?.GetValue<double>(),
            obj["seconds"]!.GetValue<double>(), epochs, obj["error"]?.GetValue<string>()), point);
    }
}
