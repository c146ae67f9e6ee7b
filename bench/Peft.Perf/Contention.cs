using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Peft.Perf;

/// <summary>
/// Two training processes on the same cores: the LoRA step alone and with a second, identical process running at the
/// same time, under OpenMP's active and passive wait policies (OMP_WAIT_POLICY in each child's environment), and with
/// one libtorch thread per process (PeftRuntime.SetThreads). Shows what the passive policy and fewer threads save
/// when an application shares the machine.
/// </summary>
internal static class Contention
{
    private const int Batch = 16, Seq = 128;

    public static JsonObject Run(string self, int steps, int warmup, Action<string> log)
    {
        var result = new JsonObject { ["batch"] = Batch, ["seq"] = Seq, ["processes"] = 2 };
        double? Case(string key, string policy, int processes, int? threads)
        {
            var children = Enumerable.Range(0, processes).Select(_ => Start(self, policy, threads, steps, warmup)).ToList();
            var times = children.Select(Finish).ToList();
            if (times.Any(t => t is null)) return null;
            double mean = times.Average(t => t!.Value);
            result[key + "StepMs"] = Math.Round(mean, 1);
            log($"contention {key,-22} ({processes} process{(processes > 1 ? "es" : "")}, OMP_WAIT_POLICY={policy}, threads {threads?.ToString(CultureInfo.InvariantCulture) ?? "default"}): {mean,8:F0} ms/step");
            return mean;
        }
        var aloneActive = Case("aloneActive", "ACTIVE", 1, null);
        var alonePassive = Case("alonePassive", "PASSIVE", 1, null);
        var sharedActive = Case("sharedActive", "ACTIVE", 2, null);
        var sharedPassive = Case("sharedPassive", "PASSIVE", 2, null);
        var sharedOneThread = Case("sharedPassiveOneThread", "PASSIVE", 2, 1);
        result["passiveVsActiveAlone"] = Ratio(alonePassive, aloneActive);
        result["passiveVsActiveShared"] = Ratio(sharedPassive, sharedActive);
        result["oneThreadVsActiveShared"] = Ratio(sharedOneThread, sharedActive);
        return result;
    }

    private static double? Ratio(double? a, double? b) => a is null || b is null || b == 0 ? null : Math.Round(a.Value / b.Value, 3);

    private static (Process Process, Task<string> Stdout, Task<string> Stderr) Start(string self, string policy, int? threads, int steps, int warmup)
    {
        var arguments = $"\"{self}\" step lora {Batch} {Seq} {steps} {warmup}" + (threads is { } t ? " " + t.ToString(CultureInfo.InvariantCulture) : "");
        var start = new ProcessStartInfo("dotnet", arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["OMP_WAIT_POLICY"] = policy;
        var process = Process.Start(start)!;
        return (process, process.StandardOutput.ReadToEndAsync(), process.StandardError.ReadToEndAsync());
    }

    private static double? Finish((Process Process, Task<string> Stdout, Task<string> Stderr) child)
    {
        using var process = child.Process;
        process.WaitForExit();
        var line = child.Stdout.Result.Split('\n').Select(l => l.Trim()).LastOrDefault(l => l.StartsWith("RESULT {", StringComparison.Ordinal));
        if (process.ExitCode != 0 || line is null)
        {
            Console.Error.WriteLine($"contention child failed (exit {process.ExitCode}): {child.Stderr.Result}");
            return null;
        }
        return JsonSerializer.Deserialize<StepResult>(line["RESULT ".Length..], Json.Options)!.StepMsMedian;
    }
}
