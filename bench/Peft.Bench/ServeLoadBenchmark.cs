using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Net.Http.Json;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using PeftServing;

namespace Peft.Bench;

/// <summary>
/// <c>serve-load</c>: a load test of the serving example (examples/Serving) on the loopback address. Trains small LoRA
/// adapters of MiniLM on SST-2 rows, then for 1 adapter and for 10 starts the service in a child process and sends it a
/// bounded number of requests (and for a bounded time) from concurrent clients: latency percentiles, throughput,
/// errors, the service's resident memory at start, middle and end; midway one adapter's file is replaced by another
/// adapter (a hot swap) and later by a damaged file (which must leave the swapped-in model serving).
/// </summary>
internal static class ServeLoadBenchmark
{
    public const string Usage = "serve-load [--adapters 1,10] [--clients N (16)] [--requests N per run (1500)] [--max-seconds N per run (120)] " +
        "[--train-rows N per adapter (64)] [--window-ms F (3)] [--max-length N (64)] [--data FOLDER] [--output FILE]";

    public static int Run(IReadOnlyList<string> args, string root)
    {
        if (args[0] == "serve-load-server") return Server(args);
        var adapterCounts = new List<int> { 1, 10 };
        int clients = 16, requests = 1500, maxSeconds = 120, trainRows = 64, maxLength = 64;
        double windowMs = 3;
        string? data = null;
        string output = Path.Combine(root, "bench", "results", "serve-load.json");
        for (int i = 1; i < args.Count; i++)
        {
            string Next() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            switch (args[i])
            {
                case "--adapters": adapterCounts = Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList(); break;
                case "--clients": clients = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--requests": requests = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--max-seconds": maxSeconds = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--train-rows": trainRows = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--window-ms": windowMs = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--max-length": maxLength = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--data": data = Next(); break;
                case "--output": output = Next(); break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        if (adapterCounts.Count == 0 || adapterCounts.Any(c => c < 1) || clients < 1 || requests < 10 || maxSeconds < 1 || trainRows < 8)
            throw new ArgumentException("--adapters, --clients, --requests (at least 10), --max-seconds and --train-rows (at least 8) must be positive.");
        var dataFolder = Path.GetFullPath(data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var trainFile = Path.Combine(dataFolder, "sst2", "train.tsv");
        var devFile = Path.Combine(dataFolder, "sst2", "dev.tsv");
        foreach (var f in new[] { trainFile, devFile })
            if (!File.Exists(f)) throw new FileNotFoundException($"The data file {f} does not exist; pass the data folder with --data.");

        var loadAtStart = MethodComparison.LoadAverage();
        var work = Path.Combine(Path.GetTempPath(), $"peft-serve-load-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            var train = File.ReadLines(trainFile).Skip(1).Select(l => l.Split('\t')).Select(p => new SentimentRow { Sentence = p[0], Label = p[1] }).ToList();
            var texts = File.ReadLines(devFile).Skip(1).Take(500).Select(l => l.Split('\t')[0]).ToList();
            int most = adapterCounts.Max();
            var watch = Stopwatch.StartNew();
            var adapters = Enumerable.Range(0, most).Select(i => TrainAdapter(train, i, trainRows, maxLength, Path.Combine(work, $"adapter-{i}.zip"))).ToList();
            var replacement = TrainAdapter(train, most, trainRows, maxLength, Path.Combine(work, "replacement.zip"));
            double trainSeconds = watch.Elapsed.TotalSeconds;

            var runs = new JsonArray();
            var rows = new List<RunResult>();
            foreach (int count in adapterCounts)
            {
                var folder = Path.Combine(work, $"served-{count}");
                Directory.CreateDirectory(folder);
                foreach (var a in adapters.Take(count)) File.Copy(a, Path.Combine(folder, Path.GetFileName(a)));
                var result = LoadRun(folder, count, replacement, texts, clients, requests, maxSeconds, windowMs);
                rows.Add(result);
                runs.Add(result.ToJson());
            }

            var report = new JsonObject
            {
                ["benchmark"] = "serve-load",
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}",
                ["loadAverageAtStart"] = loadAtStart,
                ["loadAverageAtEnd"] = MethodComparison.LoadAverage(),
                ["note"] = "The service (a child process) and the load generator (this process) share the machine's cores, as do other jobs running on it; latencies include both.",
                ["commandLine"] = string.Join(' ', args),
                ["adapters"] = $"LoRA r=8 all-linear adapters of all-MiniLM-L6-v2, each trained for 1 epoch on {trainRows} other rows of sst2/train.tsv (max length {maxLength}, seed = its number); " +
                    "the replacement swapped in midway is one more such adapter",
                ["trainSeconds"] = Math.Round(trainSeconds, 1),
                ["requests"] = $"one sentence per request (the first {texts.Count} sentences of sst2/dev.tsv in turn), adapters in turn, {clients} concurrent clients with keep-alive connections",
                ["batchWindowMilliseconds"] = windowMs,
                ["runs"] = runs,
            };
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
            File.WriteAllText(output, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

            Console.WriteLine();
            Console.WriteLine($"Serving load test: {clients} clients, batch window {windowMs.ToString(CultureInfo.InvariantCulture)} ms, {Environment.ProcessorCount} cores (shared), loopback only");
            Console.WriteLine();
            Console.WriteLine("| adapters | requests | errors | seconds | requests/s | p50 ms | p95 ms | p99 ms | mean batch | RSS loaded / start / middle / end MB | swap: answers old / new model, damaged file kept out |");
            Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
            foreach (var r in rows) Console.WriteLine(r.TableRow());
            Console.WriteLine();
            Console.WriteLine($"Results written to {Path.GetRelativePath(root, Path.GetFullPath(output))}.");
            return rows.All(r => r.Errors == 0 && r.SwapOk) ? 0 : 1;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static string TrainAdapter(List<SentimentRow> all, int index, int rows, int maxLength, string path)
    {
        var ml = new MLContext(index);
        var train = ml.Data.LoadFromEnumerable(all.Skip(index * rows).Take(rows).ToList());
        var options = new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentimentRow.Sentence),
            MaxEpoch = 1,
            BatchSize = 16,
            MaxSequenceLength = maxLength,
            Seed = index,
            Method = new LoraOptions(),
        };
        var model = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label))
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(train);
        ml.Model.Save(model, train.Schema, path);
        foreach (var d in model.OfType<IDisposable>()) d.Dispose();
        Program.Log($"adapter {index} trained and saved ({new FileInfo(path).Length:N0} bytes).");
        return path;
    }

    /// <summary>One run: the service in a child process with <paramref name="count"/> adapters, then the load.</summary>
    private static RunResult LoadRun(string folder, int count, string replacement, List<string> texts, int clients, int requests, int maxSeconds, double windowMs)
    {
        using var server = StartServer(folder, windowMs, out var baseUrl);
        try
        {
            using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = clients, PooledConnectionLifetime = Timeout.InfiniteTimeSpan })
            {
                BaseAddress = new Uri(baseUrl),
                Timeout = TimeSpan.FromSeconds(60),
            };
            var names = Enumerable.Range(0, count).Select(i => $"adapter-{i}").ToList();
            var swapped = names[0];
            var result = new RunResult { Adapters = count, Clients = clients };
            result.RssLoaded = Rss(server.Id);
            // Warm-up: every adapter answers a few requests (pools, first batches, lazy initialisation).
            foreach (var warm in Task.WhenAll(Enumerable.Range(0, Math.Max(2 * count, clients)).Select(i =>
                http.PostAsJsonAsync($"/predict/{names[i % count]}", new { text = texts[i % texts.Count] }))).GetAwaiter().GetResult())
            {
                using (warm) warm.EnsureSuccessStatusCode();
            }
            result.RssStart = Rss(server.Id);
            var oldSha = Sha256(Path.Combine(folder, swapped + ".zip"));
            var newSha = Sha256(replacement);

            var latencies = new double[requests];
            int issued = 0, completed = 0, errors = 0, oldAnswers = 0, newAnswers = 0;
            var errorSamples = new List<string>();
            var deadline = Stopwatch.StartNew();
            var stopAt = TimeSpan.FromSeconds(maxSeconds);
            var load = Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
            {
                while (deadline.Elapsed < stopAt)
                {
                    int i = Interlocked.Increment(ref issued) - 1;
                    if (i >= requests) return;
                    var adapter = names[i % count];
                    var started = Stopwatch.GetTimestamp();
                    try
                    {
                        using var response = await http.PostAsJsonAsync($"/predict/{adapter}", new { text = texts[i % texts.Count] }).ConfigureAwait(false);
                        var body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
                        latencies[i] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                        var json = response.IsSuccessStatusCode ? JsonNode.Parse(body) : null;
                        if (json?["prediction"]?["label"] is null) throw new InvalidOperationException($"{(int)response.StatusCode}: {body}");
                        if (adapter == swapped)
                        {
                            var sha = json["model"]!.GetValue<string>();
                            if (sha == newSha) Interlocked.Increment(ref newAnswers);
                            else Interlocked.Increment(ref oldAnswers);
                        }
                    }
                    catch (Exception e)
                    {
                        latencies[i] = double.NaN;
                        Interlocked.Increment(ref errors);
                        lock (errorSamples) if (errorSamples.Count < 5) errorSamples.Add($"{adapter}: {e.Message}");
                    }
                    Interlocked.Increment(ref completed);
                }
            })).ToList();

            // Meanwhile: the swap at 30% of the requests, the damaged file at 60%, memory at 50%.
            var damaged = Damaged(replacement, Path.Combine(Path.GetTempPath(), $"peft-damaged-{Guid.NewGuid():N}.zip"));
            bool swapDone = false, damageDone = false;
            string? damageError = null;
            var all = Task.WhenAll(load);
            var samples = new List<(int Done, long Rss)>(); // the service's memory each second of the run
            var sampling = Stopwatch.StartNew();
            while (!all.IsCompleted)
            {
                int done = Volatile.Read(ref completed);
                if (!swapDone && done >= requests * 3 / 10)
                {
                    Replace(replacement, Path.Combine(folder, swapped + ".zip"));
                    swapDone = true;
                    Program.Log($"{count} adapter(s): {done} requests done, {swapped} replaced by another adapter.");
                }
                if (swapDone && !damageDone && done >= requests * 6 / 10 && Volatile.Read(ref newAnswers) > 0)
                {
                    Replace(damaged, Path.Combine(folder, swapped + ".zip"));
                    damageDone = true;
                    Program.Log($"{count} adapter(s): {done} requests done, {swapped} replaced by a damaged file.");
                }
                if (result.RssMiddle == 0 && done >= requests / 2) result.RssMiddle = Rss(server.Id);
                if (samples.Count == 0 || sampling.ElapsedMilliseconds >= 1000)
                {
                    samples.Add((done, Rss(server.Id)));
                    sampling.Restart();
                }
                Thread.Sleep(5);
            }
            all.GetAwaiter().GetResult();
            double seconds = deadline.Elapsed.TotalSeconds;
            result.RssEnd = Rss(server.Id);
            samples.Add((completed, result.RssEnd));
            result.RssSamples = samples;
            if (result.RssMiddle == 0) result.RssMiddle = result.RssEnd;
            File.Delete(damaged);

            // What the service reports now: the swapped-in model still serving, the damaged file's error, the batches.
            JsonArray models = JsonNode.Parse(http.GetStringAsync("/models").GetAwaiter().GetResult())!.AsArray();
            for (int wait = 0; damageDone && wait < 100 && models.Single(m => m!["name"]!.GetValue<string>() == swapped)!["lastError"] is null; wait++)
            {
                Thread.Sleep(50);
                models = JsonNode.Parse(http.GetStringAsync("/models").GetAwaiter().GetResult())!.AsArray();
            }
            var swappedModel = models.Single(m => m!["name"]!.GetValue<string>() == swapped)!;
            damageError = swappedModel["lastError"]?["message"]?.GetValue<string>();
            long batches = models.Sum(m => m!["batches"]?.GetValue<long>() ?? 0), batchedRows = models.Sum(m => m!["batchedRows"]?.GetValue<long>() ?? 0);

            var ok = latencies.Take(Math.Min(issued, requests)).Where(l => !double.IsNaN(l) && l > 0).OrderBy(l => l).ToArray();
            result.Requests = Math.Min(issued, requests);
            result.Completed = completed;
            result.Errors = errors + (result.Requests - completed);
            result.ErrorSamples = errorSamples;
            result.Seconds = seconds;
            result.P50 = Percentile(ok, 0.50);
            result.P95 = Percentile(ok, 0.95);
            result.P99 = Percentile(ok, 0.99);
            result.Max = ok.Length > 0 ? ok[^1] : 0;
            result.MeanBatch = batches > 0 ? (double)batchedRows / batches : 0;
            result.OldModelAnswers = oldAnswers;
            result.NewModelAnswers = newAnswers;
            result.ServingAfterSwap = swappedModel["sha256"]?.GetValue<string>() == newSha;
            result.DamagedFileError = damageError;
            result.SwapOk = swapDone && damageDone && oldAnswers > 0 && newAnswers > 0 && result.ServingAfterSwap && damageError is not null;
            result.SharesBaseModel = models.All(m => m!["sharesBaseModel"]?.GetValue<bool>() == true);
            Program.Log($"{count} adapter(s): {completed} requests in {seconds:F1} s, {errors} errors; p50 {result.P50:F1} ms, p95 {result.P95:F1} ms, p99 {result.P99:F1} ms.");
            if (oldSha == newSha) throw new InvalidOperationException("The replacement adapter equals the served one.");
            return result;
        }
        finally
        {
            StopServer(server);
        }
    }

    private static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];

    /// <summary>Replaces a served file as a deployment would: a copy beside it (not *.zip), then a rename over it.</summary>
    private static void Replace(string source, string target)
    {
        var temporary = target + ".uploading";
        File.Copy(source, temporary, overwrite: true);
        File.Move(temporary, target, overwrite: true);
    }

    /// <summary>A copy of <paramref name="source"/> whose adapter entry has one byte changed (its saved hash no longer matches).</summary>
    private static string Damaged(string source, string path)
    {
        File.Copy(source, path);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        var entry = zip.Entries.Single(e => e.FullName.EndsWith("Adapter.safetensors", StringComparison.Ordinal));
        byte[] bytes;
        using (var s = entry.Open())
        using (var m = new MemoryStream())
        {
            s.CopyTo(m);
            bytes = m.ToArray();
        }
        bytes[^1] ^= 0x55;
        var name = entry.FullName;
        entry.Delete();
        using var w = zip.CreateEntry(name).Open();
        w.Write(bytes);
        return path;
    }

    private static string Sha256(string file) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));

    /// <summary>Resident memory of a process (VmRSS).</summary>
    private static long Rss(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    }

    private static Process StartServer(string folder, double windowMs, out string baseUrl)
    {
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(ServeLoadBenchmark).Assembly.Location);
        foreach (var a in new[] { "serve-load-server", folder, windowMs.ToString(CultureInfo.InvariantCulture) }) start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        while (true)
        {
            var line = process.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"The service process ended before listening (exit code {(process.WaitForExit(5000) ? process.ExitCode : -1)}).");
            if (line.StartsWith("LISTENING ", StringComparison.Ordinal))
            {
                baseUrl = line["LISTENING ".Length..].Trim();
                break;
            }
            Console.Error.WriteLine($"  [service] {line}");
        }
        // Keep relaying what the service logs (loads, swaps, the damaged file).
        _ = Task.Run(() =>
        {
            while (process.StandardOutput.ReadLine() is { } line) Console.Error.WriteLine($"  [service] {line}");
        });
        Program.Log($"service process {process.Id} listening on {baseUrl}.");
        return process;
    }

    /// <summary>Closes the service's standard input (it stops gracefully), killing it if it has not ended after 20 seconds.</summary>
    private static void StopServer(Process server)
    {
        if (server.HasExited) return;
        server.StandardInput.Close();
        if (!server.WaitForExit(20_000)) server.Kill();
    }

    /// <summary>The child: the serving example on 127.0.0.1 (any free port) over the folder, until its standard input closes.</summary>
    private static int Server(IReadOnlyList<string> args)
    {
        var app = ServingApp.Build(new[] { "--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Microsoft.AspNetCore=Warning", "--Logging:Console:FormatterName=simple" }, o =>
        {
            o.ModelFolder = args[1];
            o.BatchWindowMilliseconds = double.Parse(args[2], CultureInfo.InvariantCulture);
        });
        app.StartAsync().GetAwaiter().GetResult();
        Console.WriteLine($"LISTENING {app.Urls.Single()}");
        Console.Out.Flush();
        while (Console.In.ReadLine() is not null) { }
        app.StopAsync().GetAwaiter().GetResult();
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return 0;
    }

    private sealed class RunResult
    {
        public int Adapters, Clients, Requests, Completed, Errors, OldModelAnswers, NewModelAnswers;
        public double Seconds, P50, P95, P99, Max, MeanBatch;
        public long RssLoaded, RssStart, RssMiddle, RssEnd;
        public bool SwapOk, ServingAfterSwap, SharesBaseModel;
        public string? DamagedFileError;
        public List<string> ErrorSamples = new();
        public List<(int Done, long Rss)> RssSamples = new();

        public JsonObject ToJson() => new()
        {
            ["adapters"] = Adapters,
            ["clients"] = Clients,
            ["requests"] = Requests,
            ["completed"] = Completed,
            ["errors"] = Errors,
            ["errorSamples"] = new JsonArray(ErrorSamples.Select(e => (JsonNode)JsonValue.Create(e)!).ToArray()),
            ["seconds"] = Math.Round(Seconds, 2),
            ["requestsPerSecond"] = Math.Round(Completed / Seconds, 1),
            ["latencyP50Ms"] = Math.Round(P50, 2),
            ["latencyP95Ms"] = Math.Round(P95, 2),
            ["latencyP99Ms"] = Math.Round(P99, 2),
            ["latencyMaxMs"] = Math.Round(Max, 2),
            ["meanBatchRows"] = Math.Round(MeanBatch, 2),
            ["rssLoadedBytes"] = RssLoaded,
            ["rssStartBytes"] = RssStart,
            ["rssMiddleBytes"] = RssMiddle,
            ["rssEndBytes"] = RssEnd,
            ["rssMaxBytes"] = RssSamples.Count == 0 ? RssEnd : RssSamples.Max(r => r.Rss),
            ["rssEachSecond"] = new JsonArray(RssSamples.Select(r => (JsonNode)new JsonObject { ["requestsDone"] = r.Done, ["rssBytes"] = r.Rss }).ToArray()),
            ["sharesBaseModel"] = SharesBaseModel,
            ["swap"] = new JsonObject
            {
                ["answersOfOldModel"] = OldModelAnswers,
                ["answersOfNewModel"] = NewModelAnswers,
                ["newModelServingAtEnd"] = ServingAfterSwap,
                ["damagedFileError"] = DamagedFileError,
                ["ok"] = SwapOk,
            },
        };

        public string TableRow() => string.Create(CultureInfo.InvariantCulture,
            $"| {Adapters} | {Completed:N0} | {Errors} | {Seconds:F1} | {Completed / Seconds:F1} | {P50:F1} | {P95:F1} | {P99:F1} | {MeanBatch:F2} | " +
            $"{RssLoaded / 1e6:F0} / {RssStart / 1e6:F0} / {RssMiddle / 1e6:F0} / {RssEnd / 1e6:F0} | {OldModelAnswers} / {NewModelAnswers}, {(DamagedFileError is null ? "no error reported" : "error reported, swapped-in model kept")} |");
    }
}
