using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// <c>mlnet-peft ui</c> run as a process, as a user starts it: <c>dotnet mlnet-peft.dll ui --port 0 --work-dir DIR</c>.
/// Waits for the URL with the access token that the app prints on standard output, then gives its address, token and an
/// <see cref="HttpClient"/> that sends the token (header <c>X-Peft-Token</c>). <see cref="Dispose"/> stops the app with
/// SIGTERM, as Ctrl+C or a service manager would, and kills it only if it does not stop in time.
/// </summary>
internal sealed partial class UiHost : IDisposable
{
    /// <summary>How long the app may take to print its URL.</summary>
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long the app may take to stop after SIGTERM.</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    private readonly StringBuilder output = new();
    private Process? process;
    private HttpClient? client;

    private readonly string[] extraArguments;

    private UiHost(string workDir, string[] extraArguments)
    {
        WorkDir = workDir;
        this.extraArguments = extraArguments;
    }

    /// <summary>The app's work folder (runs/, ...), kept across <see cref="Restart"/>.</summary>
    public string WorkDir { get; }

    /// <summary>The app's address, <c>http://127.0.0.1:PORT/</c>.</summary>
    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>The access token from the printed URL.</summary>
    public string Token { get; private set; } = "";

    /// <summary>The URL the app printed, token included: what a user opens.</summary>
    public Uri StartUrl => new(BaseAddress, "/?token=" + Uri.EscapeDataString(Token));

    /// <summary>A client for <see cref="BaseAddress"/> that sends the token in the header <c>X-Peft-Token</c> (a new one after <see cref="Restart"/>).</summary>
    public HttpClient Client => client ?? throw new ObjectDisposedException(nameof(UiHost));

    /// <summary>The process's id (changes on <see cref="Restart"/>).</summary>
    public int ProcessId => process?.Id ?? throw new ObjectDisposedException(nameof(UiHost));

    /// <summary>Everything the app wrote so far (standard output and error, interleaved as they came), for failure messages.</summary>
    public string Output
    {
        get
        {
            lock (output) return output.ToString();
        }
    }

    /// <summary>
    /// Starts the app on a free port with <paramref name="workDir"/> as its work folder (a new temporary folder, removed
    /// after the test run, when null) and waits for its URL; fails the test with the app's output when it does not print one
    /// within <see cref="StartTimeout"/>. <paramref name="extraArguments"/> follow (e.g. <c>--max-upload-mb 1</c>).
    /// </summary>
    public static UiHost Start(string? workDir = null, params string[] extraArguments)
    {
        workDir ??= TestTemp.Track(Directory.CreateTempSubdirectory("peft-ui-work-").FullName);
        var host = new UiHost(workDir, extraArguments);
        try
        {
            host.Launch();
        }
        catch
        {
            host.Dispose();
            throw;
        }
        return host;
    }

    /// <summary>A client for the app that sends no token (nor cookie), for the tests of refused requests.</summary>
    public HttpClient ClientWithoutToken() => new(new HttpClientHandler { UseCookies = false }) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>Stops the app (SIGTERM) and starts it again on the same work folder: a new port, token and <see cref="Client"/>.</summary>
    public void Restart()
    {
        Stop();
        Launch();
    }

    /// <summary>
    /// Sends SIGTERM and waits up to <see cref="StopTimeout"/>; kills the process tree when it has not stopped by then.
    /// Returns whether it stopped by itself, and its exit code (null when it had to be killed or was not running).
    /// </summary>
    public (bool StoppedBySignal, int? ExitCode) Stop()
    {
        client?.Dispose();
        client = null;
        var running = process;
        process = null;
        if (running is null) return (false, null);
        using (running)
        {
            if (running.HasExited)
            {
                running.WaitForExit();
                return (false, running.ExitCode);
            }
            Signal(running.Id, "TERM");
            if (running.WaitForExit(StopTimeout))
            {
                running.WaitForExit(); // the output's last lines
                return (true, running.ExitCode);
            }
            try
            {
                running.Kill(entireProcessTree: true);
                running.WaitForExit();
            }
            catch (InvalidOperationException)
            {
                // It exited between the wait and the kill.
            }
            return (false, null);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => Stop();

    private void Launch()
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = WorkDir,
        };
        foreach (var argument in new[] { CliProcess.CliPath, "ui", "--port", "0", "--work-dir", WorkDir }.Concat(extraArguments))
            start.ArgumentList.Add(argument);
        // OpenMP's worker threads sleep instead of spinning between the trainings' steps (the machines running the tests are shared).
        start.Environment["OMP_WAIT_POLICY"] = "PASSIVE";
        // No ANSI colours or terminal widths in the output that is searched for the URL.
        start.Environment["NO_COLOR"] = "1";

        var url = new TaskCompletionSource<Match>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new Process { StartInfo = start, EnableRaisingEvents = true };
        started.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            Append(e.Data);
            var match = UrlPattern().Match(e.Data);
            if (match.Success) url.TrySetResult(match);
        };
        started.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null) Append(e.Data);
        };
        started.Exited += (_, _) => url.TrySetException(new InvalidOperationException("the app exited before printing its URL"));
        lock (output) output.Append($"--- {DateTime.Now:HH:mm:ss} dotnet {string.Join(' ', start.ArgumentList)}\n");
        if (!started.Start()) Assert.Fail("The mlnet-peft ui process did not start.");
        process = started;
        started.BeginOutputReadLine();
        started.BeginErrorReadLine();

        try
        {
            if (!url.Task.Wait(StartTimeout))
                Assert.Fail($"mlnet-peft ui printed no URL (http://127.0.0.1:PORT/?token=...) within {StartTimeout.TotalSeconds:0} s. Its output:\n{Output}");
        }
        catch (AggregateException e)
        {
            started.WaitForExit();
            Assert.Fail($"mlnet-peft ui {e.InnerException?.Message} (exit code {started.ExitCode}). Its output:\n{Output}");
        }
        var found = url.Task.Result;
        BaseAddress = new Uri(found.Groups["base"].Value + "/");
        Token = Uri.UnescapeDataString(found.Groups["token"].Value);
        client = new HttpClient(new HttpClientHandler { UseCookies = false }) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(120) };
        client.DefaultRequestHeaders.Add("X-Peft-Token", Token);
    }

    private void Append(string line)
    {
        lock (output) output.Append(line).Append('\n');
    }

    /// <summary>Sends a signal with kill(1), as a shell would.</summary>
    private static void Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false })
            ?? throw new InvalidOperationException("kill did not start.");
        kill.WaitForExit();
    }

    [GeneratedRegex(@"(?<base>http://127\.0\.0\.1:\d+)/\?token=(?<token>[A-Za-z0-9_\-~.%]+)")]
    private static partial Regex UrlPattern();
}
