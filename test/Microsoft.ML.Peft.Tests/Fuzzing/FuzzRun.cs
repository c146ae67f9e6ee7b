using System.Diagnostics;
using System.Text;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// One fuzzing run over one target: a fixed seed, a time budget and a case limit. Each case runs a mutated input
/// through the loader under a hang limit and is classified: accepted (loaded and predicted finite values), refused with
/// one of the library's documented exceptions (<see cref="IsDocumented"/>), or a failure (any other exception, a hang,
/// a silent NaN, process memory growing past its bound). Failures are collected with the case's seed and mutation, so a
/// failure can be replayed alone; <see cref="Finish"/> prints the counts and fails the test if there was any.
/// </summary>
internal sealed class FuzzRun
{
    /// <summary>How long one case may take before it counts as a hang.</summary>
    public static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(20);

    /// <summary>How much the process's resident memory may grow over the run (a claimed size that is allocated before it is checked shows here).</summary>
    public const long MemoryGrowthLimit = 1L << 30;

    private readonly string target;
    private readonly Stopwatch clock = Stopwatch.StartNew();
    private readonly TimeSpan budget;
    private readonly int maxCases;
    private readonly long baselineMemory;
    private readonly Dictionary<string, int> outcomes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> mutations = new(StringComparer.Ordinal);
    private readonly List<string> failures = new();
    private readonly Dictionary<string, int> failureKinds = new(StringComparer.Ordinal);
    private long peakMemory;
    private bool stopped;

    public FuzzRun(string target, int seed, TimeSpan budget, int maxCases)
    {
        this.target = target;
        Seed = seed;
        this.budget = budget;
        this.maxCases = maxCases;
        GC.Collect();
        baselineMemory = peakMemory = ResidentMemory();
    }

    public int Seed { get; }

    public int Cases { get; private set; }

    /// <summary>Whether the run may start another case (within its budget and case limit, and not stopped by a hang).</summary>
    public bool More => !stopped && Cases < maxCases && clock.Elapsed < budget && failures.Count < 200;

    /// <summary>The random source of case <paramref name="index"/>: each case can be replayed from (seed, index) alone.</summary>
    /// <remarks>Not <c>HashCode.Combine</c>: its values change from process to process, so no run could be replayed.</remarks>
    public Random CaseRandom(int index) => new(unchecked(Seed * 1_000_003 + index * 7_919));

    /// <summary>
    /// The library's documented refusals of a damaged input (docs/architecture.md, "Loading trusts nothing"):
    /// <see cref="InvalidDataException"/> for anything wrong inside a file (<c>LoadPeft</c> turns ML.NET's own framing
    /// errors into it too), <see cref="FileNotFoundException"/> and <see cref="DirectoryNotFoundException"/> for a file
    /// that a model names and that is not there.
    /// </summary>
    public static bool IsDocumented(Exception e) => e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException;

    /// <summary>
    /// ML.NET's parallel cursors wrap what a cursor throws (an <see cref="InvalidOperationException"/> "Splitter/consolidator
    /// worker encountered exception", once per level); the scorer's own exception is inside.
    /// </summary>
    private static Exception Unwrap(Exception e)
    {
        while (e is InvalidOperationException { InnerException: { } inner } && e.Message.StartsWith("Splitter/consolidator", StringComparison.Ordinal)) e = inner;
        return e;
    }

    /// <summary>
    /// Runs one case: <paramref name="attempt"/> loads the mutated input and, when it loads, uses it, returning null when
    /// everything it produced was sound or a description of what was not (a NaN score).
    /// </summary>
    public void Case(int index, string mutation, Func<string?> attempt)
    {
        Cases++;
        mutations[mutation] = mutations.GetValueOrDefault(mutation) + 1;
        string? problem;
        string outcome;
        var task = Task.Run(attempt);
        try
        {
            if (!task.Wait(HangLimit))
            {
                stopped = true;
                Fail(index, mutation, $"no answer within {HangLimit.TotalSeconds:F0} s (a hang)");
                return;
            }
            problem = task.Result;
            outcome = problem is null ? "loaded and scored" : "FAILURE";
            if (problem is not null) failureKinds["loaded, then " + problem[..Math.Min(problem.Length, 24)]] = failureKinds.GetValueOrDefault("loaded, then " + problem[..Math.Min(problem.Length, 24)]) + 1;
        }
        catch (AggregateException wrapped) when (wrapped.InnerExceptions.Count == 1)
        {
            var e = Unwrap(wrapped.InnerException!);
            outcome = IsDocumented(e) ? $"refused: {e.GetType().Name}" : "FAILURE";
            problem = IsDocumented(e) ? null : $"undocumented {e}";
            if (problem is not null)
            {
                var kind = $"{e.GetType().Name} at {Where(e)}";
                failureKinds[kind] = failureKinds.GetValueOrDefault(kind) + 1;
            }
        }
        outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        if (problem is not null) Fail(index, mutation, problem);

        if (Cases % 8 == 0)
        {
            peakMemory = Math.Max(peakMemory, ResidentMemory());
            if (peakMemory - baselineMemory > MemoryGrowthLimit)
            {
                stopped = true;
                Fail(index, mutation, $"resident memory grew by {(peakMemory - baselineMemory) >> 20:N0} MB over the run");
            }
        }
    }

    /// <summary>The innermost frame of this library (or else the first frame) that an exception passed through: where to fix it.</summary>
    private static string Where(Exception e)
    {
        var frames = new StackTrace(e, fNeedFileInfo: false).GetFrames().Where(f => f.GetMethod()?.DeclaringType is not null).ToList();
        var frame = frames.FirstOrDefault(f => f.GetMethod()!.DeclaringType!.Assembly.GetName().Name == "Microsoft.ML.Peft") ?? frames.FirstOrDefault();
        var method = frame?.GetMethod();
        return method is null ? "?" : $"{method.DeclaringType!.Name}.{method.Name}";
    }

    private void Fail(int index, string mutation, string problem) =>
        failures.Add($"case {index} (seed {Seed}, mutation '{mutation}'): {problem}");

    /// <summary>Prints the counts and fails when any case failed.</summary>
    public void Finish()
    {
        GC.Collect();
        peakMemory = Math.Max(peakMemory, ResidentMemory());
        var report = new StringBuilder();
        report.AppendLine($"{target}: {Cases} mutations in {clock.Elapsed.TotalSeconds:F1} s (seed {Seed}); resident memory {baselineMemory >> 20:N0} MB at start, peak {peakMemory >> 20:N0} MB");
        foreach (var (outcome, count) in outcomes.OrderByDescending(p => p.Value)) report.AppendLine($"  {outcome}: {count}");
        report.AppendLine("  mutations: " + string.Join(", ", mutations.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} {p.Value}")));
        foreach (var (kind, count) in failureKinds.OrderByDescending(p => p.Value)) report.AppendLine($"  failure kind: {kind} x {count}");
        TestContext.Out.Write(report.ToString());
        if (Environment.GetEnvironmentVariable("PEFT_FUZZ_LOG") is { Length: > 0 } log) File.AppendAllText(log, report + string.Join("\n\n", failures) + "\n");
        Assert.That(failures, Is.Empty, $"{target}: {failures.Count} failing case(s):\n" + string.Join("\n\n", failures.Take(3)));
        Assert.That(Cases, Is.GreaterThan(0), "no case ran");
    }

    private static long ResidentMemory()
    {
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        return process.WorkingSet64;
    }
}
