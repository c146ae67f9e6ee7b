using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>
/// The runs of the work folder: <c>runs/&lt;id&gt;/run.json</c> each, read back when the app starts (a run that was
/// training then is marked interrupted), changed under one lock and written atomically.
/// </summary>
internal sealed partial class RunStore
{
    private readonly Dictionary<string, UiRun> runs = new(StringComparer.Ordinal);
    private readonly object gate = new();

    public RunStore(string workDirectory)
    {
        WorkDirectory = Path.GetFullPath(workDirectory);
        RunsDirectory = Path.Combine(WorkDirectory, "runs");
        Directory.CreateDirectory(RunsDirectory);
        foreach (var folder in Directory.GetDirectories(RunsDirectory))
        {
            var id = Path.GetFileName(folder);
            var file = Path.Combine(folder, "run.json");
            if (!IdPattern().IsMatch(id) || !File.Exists(file)) continue;
            UiRun? run;
            try
            {
                run = JsonSerializer.Deserialize<UiRun>(File.ReadAllText(file), UiJson.Options);
            }
            catch (JsonException e)
            {
                Console.Error.WriteLine($"warning: skipped the run in '{folder}': its run.json is not valid ({e.Message}).");
                continue;
            }
            if (run is null || run.Id != id || !Scenarios.Exists(run.Scenario))
            {
                Console.Error.WriteLine($"warning: skipped the run in '{folder}': its run.json does not describe it.");
                continue;
            }
            if (UiStatus.IsActive(run.Status))
            {
                run.Error = "The app stopped while this run was " + (run.Status == UiStatus.Queued ? "waiting to train" : "training") + "; start the training again.";
                run.Status = UiStatus.Interrupted;
                Save(run);
            }
            runs[id] = run;
        }
    }

    /// <summary>The work folder (full path).</summary>
    public string WorkDirectory { get; }

    /// <summary>The folder of the runs.</summary>
    public string RunsDirectory { get; }

    [GeneratedRegex("^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")]
    private static partial Regex IdPattern();

    /// <summary>Every run, newest first (copies).</summary>
    public IReadOnlyList<UiRun> List()
    {
        lock (gate) return runs.Values.OrderByDescending(r => r.Created).ThenByDescending(r => r.Id, StringComparer.Ordinal).Select(r => r.Clone()).ToList();
    }

    /// <summary>A copy of the run <paramref name="id"/>, or null when there is none (or the id is not one this store makes).</summary>
    public UiRun? Get(string id)
    {
        if (!IdPattern().IsMatch(id)) return null;
        lock (gate) return runs.TryGetValue(id, out var run) ? run.Clone() : null;
    }

    /// <summary>The folder of run <paramref name="id"/>; only for ids that <see cref="Get"/> found.</summary>
    public string Folder(string id) => IdPattern().IsMatch(id) ? Path.Combine(RunsDirectory, id) : throw new ArgumentException($"'{id}' is not a run id.", nameof(id));

    /// <summary>Creates a run of <paramref name="scenario"/>.</summary>
    public UiRun Create(string scenario, string? name)
    {
        var now = DateTime.UtcNow;
        lock (gate)
        {
            string id;
            do id = now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            while (runs.ContainsKey(id));
            var run = new UiRun
            {
                Id = id,
                Name = string.IsNullOrWhiteSpace(name) ? $"{Scenarios.Get(scenario)!.Name} {now.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)}" : name.Trim(),
                Scenario = scenario,
                Created = now,
                Updated = now,
            };
            Directory.CreateDirectory(Folder(id));
            Save(run);
            runs[id] = run;
            return run.Clone();
        }
    }

    /// <summary>Changes run <paramref name="id"/> under the store's lock and saves it; returns the new state (a copy).</summary>
    /// <param name="id">The run.</param>
    /// <param name="change">The change; it may throw to refuse it (nothing is then saved).</param>
    public UiRun Update(string id, Action<UiRun> change)
    {
        lock (gate)
        {
            if (!runs.TryGetValue(id, out var run)) throw new KeyNotFoundException($"There is no run '{id}'.");
            var copy = run.Clone();
            change(copy);
            copy.Updated = DateTime.UtcNow;
            Save(copy);
            runs[id] = copy;
            return copy.Clone();
        }
    }

    private void Save(UiRun run)
    {
        var file = Path.Combine(Folder(run.Id), "run.json");
        OutputFiles.WriteAtomically(file, temporary => File.WriteAllText(temporary, JsonSerializer.Serialize(run, UiJson.Options)));
    }
}
