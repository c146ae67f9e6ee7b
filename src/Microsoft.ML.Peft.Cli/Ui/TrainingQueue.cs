using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>
/// Trains the runs one at a time, in the order asked: each training is <c>mlnet-peft auto</c> in a child process, so a
/// crash or an out-of-memory there leaves the app running. Cancelling sends SIGTERM, which the CLI turns into a clean stop.
/// </summary>
internal sealed class TrainingQueue : IDisposable
{
    /// <summary>The files a training writes in its run's folder, removed before it starts again.</summary>
    public static readonly string[] Outputs = { "model.zip", "report.html", "metrics.json", "events.jsonl", "trials.jsonl", "train.log" };

    /// <summary>The folder of the generated C# project in a run's folder (its name is the project's and namespace's).</summary>
    public const string CodeFolder = "ConsoleApp";

    private readonly RunStore store;
    private readonly Channel<string> channel = Channel.CreateUnbounded<string>();
    private readonly List<string> waiting = new();
    private readonly object gate = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly Task worker;
    private Process? current;
    private string? currentId;
    private bool cancelCurrent;

    public TrainingQueue(RunStore store)
    {
        this.store = store;
        worker = Task.Run(WorkAsync);
    }

    /// <summary>Where run <paramref name="id"/> waits: 0 while it trains, 1 for the next, null when it is not in the queue.</summary>
    public int? Position(string id)
    {
        lock (gate)
        {
            if (currentId == id) return 0;
            int i = waiting.IndexOf(id);
            return i < 0 ? null : i + 1;
        }
    }

    /// <summary>Queues run <paramref name="id"/> (already marked queued by the caller).</summary>
    public void Enqueue(string id)
    {
        lock (gate)
        {
            if (waiting.Contains(id) || currentId == id) throw new InvalidOperationException("This run is already training or waiting to train.");
            waiting.Add(id);
        }
        channel.Writer.TryWrite(id);
    }

    /// <summary>Cancels run <paramref name="id"/>'s training: out of the queue, or SIGTERM to its process. False when it is neither.</summary>
    public bool Cancel(string id)
    {
        lock (gate)
        {
            if (waiting.Remove(id))
            {
                store.Update(id, r =>
                {
                    r.Status = UiStatus.Cancelled;
                    r.Error = null;
                });
                return true;
            }
            if (currentId != id || current is null) return false;
            cancelCurrent = true;
            Terminate(current);
            return true;
        }
    }

    private async Task WorkAsync()
    {
        try
        {
            await foreach (var id in channel.Reader.ReadAllAsync(stopping.Token))
            {
                lock (gate)
                {
                    if (!waiting.Remove(id)) continue;   // cancelled while waiting
                    currentId = id;
                    cancelCurrent = false;
                }
                try
                {
                    await TrainAsync(id);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    Finish(id, UiStatus.Failed, $"The training could not run: {e.Message}");
                }
                finally
                {
                    lock (gate)
                    {
                        currentId = null;
                        current = null;
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task TrainAsync(string id)
    {
        var run = store.Get(id) ?? throw new InvalidOperationException($"There is no run '{id}'.");
        var folder = store.Folder(id);
        ClearOutputs(folder);

        var scenario = Scenarios.Get(run.Scenario) ?? throw new InvalidOperationException($"'{run.Scenario}' is not a scenario.");
        var start = Command(scenario.Arguments(run, folder));
        start.WorkingDirectory = folder;
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        start.Environment["NO_COLOR"] = "1";
        start.Environment["TERM"] = "dumb";
        var logPath = Path.Combine(folder, "train.log");
        using var log = new StreamWriter(new FileStream(logPath, FileMode.Create, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        log.WriteLine("mlnet-peft " + string.Join(' ', start.ArgumentList.Skip(start.FileName.EndsWith("dotnet", StringComparison.Ordinal) || start.FileName.EndsWith("dotnet.exe", StringComparison.Ordinal) ? 1 : 0).Select(Quote)));
        var lines = new object();
        void Append(string? line)
        {
            if (line is null) return;
            lock (lines) log.WriteLine(line);
        }

        var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        lock (gate)
        {
            if (stopping.IsCancellationRequested) return;
            store.Update(id, r =>
            {
                r.Status = UiStatus.Training;
                r.Error = null;
                r.Result = null;
            });
            process.Start();
            current = process;
        }
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await process.WaitForExitAsync();
        process.WaitForExit();   // drains the output events
        int exit = process.ExitCode;
        process.Dispose();
        bool cancelled;
        lock (gate) cancelled = cancelCurrent;
        // Ctrl+C in a terminal reaches the training process too (same process group): that stop is the app's, not a cancel.
        if (stopping.IsCancellationRequested || Cancellation.Token.IsCancellationRequested)
            Finish(id, UiStatus.Interrupted, "The app stopped during this training; start it again.");
        else if (exit == 0)
            Complete(id, folder);
        else if (cancelled || exit == ExitCodes.Cancelled)
            Finish(id, UiStatus.Cancelled, null);
        else
            Finish(id, UiStatus.Failed, ErrorOf(logPath, exit));
    }

    /// <summary>Removes what a training wrote in run folder <paramref name="folder"/> (model, report, events, generated project).</summary>
    public static void ClearOutputs(string folder)
    {
        foreach (var file in Outputs) File.Delete(Path.Combine(folder, file));
        foreach (var sub in new[] { CodeFolder, "report-charts" })
        {
            var path = Path.Combine(folder, sub);
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        }
    }

    private void Finish(string id, string status, string? error) => store.Update(id, r =>
    {
        r.Status = status;
        r.Error = error;
    });

    private void Complete(string id, string folder)
    {
        JsonObject? result = null;
        var metrics = Path.Combine(folder, "metrics.json");
        try
        {
            result = JsonNode.Parse(File.ReadAllText(metrics)) as JsonObject;
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            Finish(id, UiStatus.Failed, $"The training ended but its metrics could not be read: {e.Message}");
            return;
        }
        store.Update(id, r =>
        {
            r.Status = UiStatus.Completed;
            r.Error = null;
            r.Result = result;
        });
    }

    /// <summary>The CLI's error lines (<c>error: ...</c>) from the log, or its last lines.</summary>
    private static string ErrorOf(string logPath, int exit)
    {
        var lines = File.Exists(logPath) ? File.ReadAllLines(logPath) : Array.Empty<string>();
        var errors = lines.Where(l => l.StartsWith("error: ", StringComparison.Ordinal)).Select(l => l["error: ".Length..]).ToList();
        var text = errors.Count > 0 ? string.Join(" ", errors) : string.Join("\n", lines.Where(l => l.Length > 0).TakeLast(5));
        return $"The training failed (exit code {exit}): {text}";
    }

    /// <summary>The arguments of <c>auto</c> for <paramref name="run"/>.</summary>
    internal static List<string> AutoArguments(UiRun run, string folder)
    {
        var data = run.Data ?? throw new InvalidOperationException("The run has no data.");
        var columns = run.Columns ?? throw new InvalidOperationException("The run's columns are not set.");
        var training = run.Training ?? throw new InvalidOperationException("The run has no training settings.");
        var args = new List<string>
        {
            "auto", "--task", run.Scenario, "--dataset", data.Path,
            "--train-time", training.TrainTime.ToString(CultureInfo.InvariantCulture),
            "--output", Path.Combine(folder, "model.zip"),
            "--report", Path.Combine(folder, "report.html"),
            "--metrics-json", Path.Combine(folder, "metrics.json"),
            "--events", Path.Combine(folder, "events.jsonl"),
            "--trial-log", Path.Combine(folder, "trials.jsonl"),
            "--generate-code", Path.Combine(folder, CodeFolder),
        };
        if (data.Separator is not null)
        {
            args.AddRange(new[] { "--separator", data.Separator });
            if (data.HasHeader) args.Add("--has-header");
        }
        if (columns.Label is not null) args.AddRange(new[] { "--label-col", columns.Label });
        if (columns.Text is not null) args.AddRange(new[] { "--text-col", columns.Text });
        if (columns.Text2 is not null) args.AddRange(new[] { "--text2-col", columns.Text2 });
        if (columns.TagColumn is int tag) args.AddRange(new[] { "--tag-col", tag.ToString(CultureInfo.InvariantCulture) });
        if (columns.ValidationFraction is double fraction) args.AddRange(new[] { "--validation-fraction", fraction.ToString("R", CultureInfo.InvariantCulture) });
        if (training.Mode == "method" && training.Method is not null) args.AddRange(new[] { "--methods", training.Method });
        return args;
    }

    /// <summary>The arguments of <c>recommendation</c> for <paramref name="run"/>: the chosen model kind, the passes if set; it holds out its own test ratings.</summary>
    internal static List<string> RecommendationArguments(UiRun run, string folder)
    {
        var data = run.Data ?? throw new InvalidOperationException("The run has no data.");
        var columns = run.Columns ?? throw new InvalidOperationException("The run's columns are not set.");
        var training = run.Training ?? throw new InvalidOperationException("The run has no training settings.");
        var args = new List<string>
        {
            "recommendation", "--dataset", data.Path,
            "--user-col", columns.User ?? throw new InvalidOperationException("The run has no user column."),
            "--item-col", columns.Item ?? throw new InvalidOperationException("The run has no item column."),
            "--label-col", columns.Label ?? throw new InvalidOperationException("The run has no rating column."),
            "--model-kind", training.Method ?? "mf",
            "--output", Path.Combine(folder, "model.zip"),
            "--metrics-json", Path.Combine(folder, "metrics.json"),
            "--events", Path.Combine(folder, "events.jsonl"),
            "--generate-code", Path.Combine(folder, CodeFolder),
        };
        if (data.Separator is not null) args.AddRange(new[] { "--separator", data.Separator });
        if (data.HasHeader) args.Add("--has-header");
        if (training.Iterations is int passes) args.AddRange(new[] { "--iterations", passes.ToString(CultureInfo.InvariantCulture) });
        return args;
    }

    /// <summary>The epochs of an object-detection training when the page leaves them to the app: fewer than the command's 20, for a first model in minutes.</summary>
    public const int DetectionEpochs = 10;

    /// <summary>The arguments of <c>object-detection</c> for <paramref name="run"/>: its labels and images folder, the chosen method and epochs; it holds out its own test images.</summary>
    internal static List<string> DetectionArguments(UiRun run, string folder)
    {
        var data = run.Data ?? throw new InvalidOperationException("The run has no data.");
        var training = run.Training ?? throw new InvalidOperationException("The run has no training settings.");
        return new List<string>
        {
            "object-detection", "--dataset", data.Path,
            "--images", data.ImagesFolder ?? throw new InvalidOperationException("The run's data has no images folder."),
            "--method", training.Method ?? "lora",
            "--epochs", (training.Iterations ?? DetectionEpochs).ToString(CultureInfo.InvariantCulture),
            "--output", Path.Combine(folder, "model.zip"),
            "--metrics-json", Path.Combine(folder, "metrics.json"),
            "--events", Path.Combine(folder, "events.jsonl"),
        };
    }

    /// <summary>Starts this same program (the apphost, or <c>dotnet mlnet-peft.dll</c>) with <paramref name="arguments"/>.</summary>
    private static ProcessStartInfo Command(IEnumerable<string> arguments)
    {
        var host = Environment.ProcessPath ?? throw new InvalidOperationException("The path of this program is unknown.");
        var start = new ProcessStartInfo(host);
        var name = Path.GetFileNameWithoutExtension(host);
        if (string.Equals(name, "dotnet", StringComparison.OrdinalIgnoreCase))
            start.ArgumentList.Add(Assembly.GetEntryAssembly()?.Location ?? throw new InvalidOperationException("The path of mlnet-peft.dll is unknown."));
        foreach (var a in arguments) start.ArgumentList.Add(a);
        return start;
    }

    private static string Quote(string arg) => arg.Length > 0 && arg.All(c => char.IsLetterOrDigit(c) || "-_./=:,".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>Sends SIGTERM with the system's <c>kill</c>; false when that could not be done.</summary>
    private static bool SendTerm(int pid)
    {
        try
        {
            using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-TERM", pid.ToString(CultureInfo.InvariantCulture) }, UseShellExecute = false });
            if (kill is null) return false;
            kill.WaitForExit(5000);
            return kill.HasExited && kill.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>Asks <paramref name="process"/> to stop: SIGTERM on Unix (the CLI stops at the next step), a kill elsewhere.</summary>
    private static void Terminate(Process process)
    {
        try
        {
            if (process.HasExited) return;
            if (OperatingSystem.IsWindows()) process.Kill(entireProcessTree: true);
            else if (!SendTerm(process.Id)) process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // It has exited meanwhile.
        }
    }

    /// <summary>Stops the queue: the training in progress gets SIGTERM and, after <paramref name="grace"/>, a kill.</summary>
    public void Stop(TimeSpan grace)
    {
        Process? process;
        lock (gate)
        {
            stopping.Cancel();
            process = current;
            foreach (var id in waiting) Finish(id, UiStatus.Interrupted, "The app stopped before this run trained; start the training again.");
            waiting.Clear();
        }
        if (process is not null)
        {
            Terminate(process);
            try
            {
                if (!process.WaitForExit(grace)) process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
        }
        worker.Wait(grace);
    }

    public void Dispose()
    {
        Stop(TimeSpan.FromSeconds(10));
        stopping.Dispose();
    }
}
