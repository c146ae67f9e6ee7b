using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Peft.Bench;

/// <summary>
/// <c>shared-memory</c>: resident memory of one loaded SST-2 adapter against ten, the ten sharing their base model's
/// weights (the default) and the ten each with a private copy. Each figure comes from a fresh child process that loads
/// the models, scores a few sentences with each, and reads its VmRSS after a full garbage collection and
/// <c>malloc_trim</c> (so memory freed during loading is not counted).
/// </summary>
internal static class SharedBaseMemory
{
    public static int Run(IReadOnlyList<string> args, string root)
    {
        if (args.Count > 0 && args[0] == "shared-memory-child") return Child(args);
        int count = 10, rows = 400;
        string output = Path.Combine(root, "bench", "results", "shared-base-memory.json");
        for (int i = 1; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--models": count = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--train-rows": rows = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--output": output = args[++i]; break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'. Options: --models N (10), --train-rows N (400 per adapter), --output FILE.");
            }
        }
        var folder = Path.Combine(Path.GetTempPath(), $"peft-shared-memory-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            var files = TrainAdapters(root, folder, count, rows);
            var oneShared = Measure(files.Take(1), share: true);
            var tenShared = Measure(files, share: true);
            var tenPrivate = Measure(files, share: false);
            long adapterBytes = files.Sum(f => new FileInfo(f).Length) / files.Count;
            var report = new JsonObject
            {
                ["benchmark"] = "shared-memory",
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}",
                ["commandLine"] = string.Join(' ', args),
                ["adapters"] = $"{count} LoRA adapters (r=8, all-linear) of all-MiniLM-L6-v2, each trained on {rows} other rows of sst2/train.tsv",
                ["modelFileBytes"] = adapterBytes,
                ["rssOneSharedBytes"] = oneShared,
                ["rssTenSharedBytes"] = tenShared,
                ["rssTenPrivateBytes"] = tenPrivate,
                ["tenSharedVsOne"] = Math.Round((double)tenShared / oneShared, 3),
                ["tenPrivateVsOne"] = Math.Round((double)tenPrivate / oneShared, 3),
                ["perExtraSharedModelBytes"] = (tenShared - oneShared) / Math.Max(1, count - 1),
                ["perExtraPrivateModelBytes"] = (tenPrivate - oneShared) / Math.Max(1, count - 1),
            };
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
            File.WriteAllText(output, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Resident memory: 1 model {oneShared / 1e6:F0} MB; {count} sharing the base {tenShared / 1e6:F0} MB ({(double)tenShared / oneShared:F2}x); " +
                $"{count} with private copies {tenPrivate / 1e6:F0} MB ({(double)tenPrivate / oneShared:F2}x). Each further shared model costs " +
                $"{(tenShared - oneShared) / Math.Max(1, count - 1) / 1e6:F1} MB, a private one {(tenPrivate - oneShared) / Math.Max(1, count - 1) / 1e6:F1} MB."));
            Console.WriteLine($"Results written to {Path.GetRelativePath(root, Path.GetFullPath(output))}.");
            return 0;
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static List<string> TrainAdapters(string root, string folder, int count, int rows)
    {
        var all = File.ReadLines(Path.Combine(root, BenchArguments.DefaultDataPath, "sst2", "train.tsv")).Skip(1)
            .Select(l => l.Split('\t')).Select(p => new SentimentRow { Sentence = p[0], Label = p[1] }).ToList();
        var files = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var ml = new MLContext(i);
            var train = ml.Data.LoadFromEnumerable(all.Skip(i * rows).Take(rows).ToList());
            var options = new PeftTextClassificationTrainer.Options { Sentence1ColumnName = nameof(SentimentRow.Sentence), MaxEpoch = 1, Seed = i, Method = new LoraOptions() };
            var model = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label)).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(train);
            var path = Path.Combine(folder, $"adapter-{i}.zip");
            ml.Model.Save(model, train.Schema, path);
            foreach (var d in model.OfType<IDisposable>()) d.Dispose();
            files.Add(path);
            Program.Log($"adapter {i + 1}/{count} trained and saved ({new FileInfo(path).Length:N0} bytes).");
        }
        return files;
    }

    /// <summary>Runs a child process that loads <paramref name="files"/> and returns its resident bytes.</summary>
    private static long Measure(IEnumerable<string> files, bool share)
    {
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(SharedBaseMemory).Assembly.Location);
        start.ArgumentList.Add("shared-memory-child");
        start.ArgumentList.Add(share ? "share" : "private");
        foreach (var f in files) start.ArgumentList.Add(f);
        using var child = Process.Start(start)!;
        var text = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        if (child.ExitCode != 0) throw new InvalidOperationException($"The measuring child failed ({child.ExitCode}): {text}");
        var bytes = long.Parse(text.Trim().Split('\n').Last(), CultureInfo.InvariantCulture);
        Program.Log($"{(share ? "shared" : "private")}, {files.Count()} model(s): {bytes:N0} bytes resident.");
        return bytes;
    }

    private static int Child(IReadOnlyList<string> args)
    {
        bool share = args[1] == "share";
        var ml = new MLContext(1);
        var loaded = new List<ITransformer>();
        var sentences = ml.Data.LoadFromEnumerable(new[] { "a gripping , funny film", "dull and far too long" }.Select(s => new SentimentRow { Sentence = s, Label = "1" }).ToList());
        foreach (var file in args.Skip(2))
        {
            var model = ml.Model.LoadPeft(file, new PeftLoadOptions { ShareBaseModel = share }, out _);
            _ = ml.Data.CreateEnumerable<ScoreRow>(model.Transform(sentences), reuseRowObject: false).ToList();
            loaded.Add(model);
        }
        // Loading reads the base model's file and parses it into managed arrays that are garbage afterwards: an aggressive
        // collection gives their memory back, and malloc_trim what libtorch freed, so what stays is what the models hold.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        _ = malloc_trim(0);
        var rss = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        long kb = long.Parse(rss.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        Console.Error.WriteLine($"managed heap committed: {GC.GetGCMemoryInfo().TotalCommittedBytes:N0} bytes");
        Console.WriteLine(kb * 1024);
        GC.KeepAlive(loaded);
        return 0;
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int malloc_trim(nuint pad);

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }
}
