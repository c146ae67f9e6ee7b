using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using static TorchSharp.torch;

namespace Peft.Perf;

/// <summary>What one training-step measurement reports (one JSON line on standard output of a child process).</summary>
internal sealed record StepResult(string Mode, int Batch, int Seq, int Threads, double StepMsMedian, double[] StepMsAll,
    long PeakRssBytes, long RssBeforeStepsBytes, long TrainableParameters, long TotalParameters, string Runtime, double CpuMsPerStep);

/// <summary>
/// One training step of MiniLM with a 2-class head, measured in its own process so peak memory belongs to it alone:
/// forward, cross-entropy, backward, gradient clipping, AdamW. Modes: <c>lora</c> (rank 8 on query/value),
/// <c>full</c> (every parameter trainable), <c>checkpointed</c> (lora with activation checkpointing), <c>lora-bf16</c>
/// (lora with <c>Precision = Bf16</c>: the frozen base's products in bfloat16). A suffix <c>-nodrop</c> sets the
/// attention dropout to 0 (fused attention in training), e.g. <c>lora-nodrop</c>, <c>lora-bf16-nodrop</c>.
/// </summary>
internal static class StepRunner
{
    public static StepResult Run(string mode, int batch, int seq, int steps, int warmup)
    {
        var loaded = BaseModelSource.MiniLM().Load();
        bool noAttentionDropout = mode.EndsWith("-nodrop", StringComparison.Ordinal);
        var baseMode = noAttentionDropout ? mode[..^"-nodrop".Length] : mode;
        var precision = baseMode == "lora-bf16" ? PeftPrecision.Bf16 : PeftPrecision.Fp32;
        Microsoft.ML.Peft.Methods.PeftMethodOptions method = baseMode switch
        {
            "lora" or "checkpointed" or "lora-bf16" => new LoraOptions { TargetModules = new[] { "query", "value" } }, // as bench/pytorch/lora_step.py
            "full" => new Microsoft.ML.Peft.Methods.Full.FullFineTuningOptions(),
            _ => throw new ArgumentException($"unknown mode '{mode}'"),
        };
        var settings = new TextClassificationSettings
        {
            Sentence1ColumnName = "Sentence", ScoreColumnName = "Score", PredictedLabelColumnName = "PredictedLabel",
            MaxSequenceLength = seq, BatchSize = batch, ClassCount = 2,
        };
        using var generator0 = new Generator(1);
        var classifier = new TextClassificationModel(settings, loaded, method, embedBaseModel: false, CPU, generator0, headDropout: 0.1f);
        loaded = null;
        classifier.Adapted.Backbone.GradientCheckpointing = baseMode == "checkpointed";
        classifier.ConfigureCompute(precision, noAttentionDropout ? 0 : null);
        var model = classifier.Network;
        model.train();
        var trainable = classifier.TrainableParameters().Select(p => p.Parameter).ToList();
        using var optimizer = optim.AdamW(trainable, 1e-3, weight_decay: 0.01);

        var generator = new Generator(1);
        using var ids = randint(1000, 30522, new long[] { batch, seq }, generator: generator);
        using var mask = ones(batch, seq, ScalarType.Int64);
        using var types = zeros(batch, seq, ScalarType.Int64);
        using var labels = randint(0, 2, new long[] { batch }, generator: generator);

        void Step()
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(model.forward(ids, mask, types), labels);
            loss.backward();
            nn.utils.clip_grad_norm_(trainable, 1.0);
            optimizer.step();
        }

        // The baseline is the loaded model before any step: what loading left behind is released first, with the
        // decommitting collection the training loop makes before its first step.
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        TrainingLoop.ReleaseLoadingGarbage();
        Memory.TrimNativeHeap();
        long before = Memory.Rss();
        Memory.ResetPeak();
        for (int i = 0; i < warmup; i++) Step();
        var times = new double[steps];
        var cpuBefore = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
        for (int i = 0; i < steps; i++)
        {
            var watch = Stopwatch.StartNew();
            Step();
            times[i] = watch.Elapsed.TotalMilliseconds;
        }
        // Processor time of the timed steps (all threads): less sensitive than wall time to other processes on the cores.
        double cpuMs = (System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalMilliseconds / steps;
        long peak = Memory.PeakRss();
        return new StepResult(mode, batch, seq, get_num_threads(), Stats.Median(times), times, peak, before,
            trainable.Sum(p => p.numel()), model.parameters().Sum(p => p.numel()), "TorchSharp " + typeof(TorchSharp.torch).Assembly.GetName().Version, Math.Round(cpuMs, 1));
    }

    /// <summary>Prints the resident memory after each stage of building the LoRA step's model, and the managed heap's share.</summary>
    public static void ResidentStages(Action<string> print)
    {
        void Report(string stage)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            Memory.TrimNativeHeap();
            print($"{stage,-44} RSS {Memory.Rss() / 1e6,7:F0} MB, managed heap {GC.GetTotalMemory(false) / 1e6,6:F0} MB, committed {GC.GetGCMemoryInfo().TotalCommittedBytes / 1e6,6:F0} MB");
        }
        Report("start");
        using (var t = ones(4, 4)) { }
        Report("libtorch loaded");
        var loaded = BaseModelSource.MiniLM().Load();
        Report("base model parsed");
        var settings = new TextClassificationSettings
        {
            Sentence1ColumnName = "Sentence", ScoreColumnName = "Score", PredictedLabelColumnName = "PredictedLabel",
            MaxSequenceLength = 128, BatchSize = 32, ClassCount = 2,
        };
        using var generator = new Generator(1);
        using var classifier = new TextClassificationModel(settings, loaded, new LoraOptions { TargetModules = new[] { "query", "value" } }, embedBaseModel: false, CPU, generator, headDropout: 0.1f);
        Report("model built (parsed arrays still referenced)");
        loaded = null;
        Report("parsed arrays released");
        TrainingLoop.ReleaseLoadingGarbage();
        Report("after an aggressive collection");
        print($"parameters: {classifier.Network.parameters().Sum(p => p.numel() * 4) / 1e6:F0} MB");
        // Where the resident pages are: the largest mappings of /proc/self/smaps (files by name, anonymous memory as one).
        foreach (var (name, kb) in Memory.ResidentByMapping().Take(12)) print($"  {kb / 1024.0,7:F0} MB  {name}");
    }

    public static string ToJson(StepResult result) => JsonSerializer.Serialize(result, Json.Options);
}

/// <summary>Resident memory of this process from /proc (Linux).</summary>
internal static class Memory
{
    public static long Rss() => Read("VmRSS:");

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    /// <summary>Returns freed native heap pages to the system (glibc), so RSS shows what is in use.</summary>
    public static void TrimNativeHeap()
    {
        try
        {
            MallocTrim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc: RSS may include freed pages.
        }
    }

    public static long PeakRss() => Read("VmHWM:");

    /// <summary>Resident kilobytes by mapped file (anonymous mappings together as "[anonymous]"), largest first.</summary>
    public static IEnumerable<(string Name, long Kb)> ResidentByMapping()
    {
        var totals = new Dictionary<string, long>();
        string current = "[anonymous]";
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length > 0 && parts[0].Contains('-') && !parts[0].EndsWith(':'))
            {
                current = parts.Length >= 6 ? string.Join(' ', parts[5..]) : "[anonymous]";
                if (!current.StartsWith('/')) current = current.StartsWith("[heap", StringComparison.Ordinal) ? "[heap]" : "[anonymous]";
            }
            else if (parts.Length >= 2 && parts[0] == "Rss:")
            {
                totals[current] = totals.GetValueOrDefault(current) + long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        return totals.OrderByDescending(kv => kv.Value).Select(kv => (kv.Key, kv.Value));
    }

    /// <summary>Resets the peak (VmHWM) to the current RSS, so the peak that follows belongs to what runs next.</summary>
    public static void ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Without it the peak includes start-up; the baseline RSS is reported beside it.
        }
    }

    private static long Read(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
            var parts = line[key.Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return long.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        return -1;
    }
}

internal static class Stats
{
    public static double Median(IReadOnlyList<double> values) => Percentile(values, 0.5);

    public static double Percentile(IReadOnlyList<double> values, double q)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return double.NaN;
        double position = q * (sorted.Length - 1);
        int low = (int)Math.Floor(position), high = (int)Math.Ceiling(position);
        return sorted[low] + (sorted[high] - sorted[low]) * (position - low);
    }
}

internal static class Json
{
    public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };
    public static readonly JsonSerializerOptions Indented = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };
}
