using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Peft.Perf;
using static TorchSharp.torch;

// perf [--quick] [--out FILE]: the whole benchmark (children for each training-step figure).
// step MODE BATCH SEQ STEPS WARMUP [THREADS]: one training-step measurement, as a JSON line (used by perf).
var invariant = CultureInfo.InvariantCulture;
if (args.Length >= 1 && args[0] == "step")
{
    if (args.Length > 6) PeftRuntime.SetThreads(int.Parse(args[6], invariant));
    var r = StepRunner.Run(args[1], int.Parse(args[2], invariant), int.Parse(args[3], invariant), int.Parse(args[4], invariant), int.Parse(args[5], invariant));
    Console.WriteLine("RESULT " + StepRunner.ToJson(r));
    return 0;
}

// kernels: fp32 against bf16 rates of the matrix products and attention a MiniLM step runs (diagnostic).
if (args.Length >= 1 && args[0] == "kernels")
{
    MixedPrecision.Kernels(Console.WriteLine);
    return 0;
}

// accuracy [ROWS]: only the fp32 / bf16 / AttentionDropout 0 accuracy comparison on SST-2 (default 2000 training rows).
if (args.Length >= 1 && args[0] == "accuracy")
{
    var clock = Stopwatch.StartNew();
    var rows = args.Length > 1 ? int.Parse(args[1], invariant) : 2000;
    var result = MixedPrecision.Accuracy(Path.Combine(FindRoot(), "..", "shared", "data", "sst2"), rows, m => Console.WriteLine($"{clock.Elapsed:mm\\:ss} {m}"));
    Console.WriteLine(result.ToJsonString());
    return 0;
}

// saved: whether libtorch keeps the input of a frozen Linear for the backward pass (diagnostic; run with MALLOC_MMAP_THRESHOLD_=65536).
if (args.Length >= 1 && args[0] == "saved")
{
    foreach (var frozen in new[] { true, false })
    {
        using var scope = NewDisposeScope();
        var layers = Enumerable.Range(0, 20).Select(_ => nn.Linear(384, 384)).ToList();
        foreach (var l in layers) foreach (var p in l.parameters()) p.requires_grad = !frozen;
        var x = randn(4096, 384).requires_grad_(true);
        long before = Memory.Rss();
        var y = x;
        foreach (var l in layers)
        {
            var next = l.forward(y);
            if (!ReferenceEquals(y, x)) y.Dispose(); // only autograd may keep it now
            y = next;
        }
        Console.WriteLine($"frozen={frozen}: RSS after 20 chained Linear forwards {(Memory.Rss() - before) / 1e6:F0} MB above before (one activation is {4096 * 384 * 4 / 1e6:F1} MB)");
        y.sum().backward();
    }
    return 0;
}

// masks: what dropout's masks cost (drawing them with bernoulli_ or uniform draws, applying them as booleans or floats) and
// attention with dropout, forward and backward, through the formula, DropoutAttention and the fused kernel (diagnostic).
if (args.Length >= 1 && args[0] == "masks")
{
    using var scope = NewDisposeScope();
    var a = randn(32, 12, 128, 128);
    var keepFloat = empty(32, 12, 128, 128).bernoulli_(0.9);
    var keepBool = keepFloat.to(ScalarType.Bool);
    double Time(string name, Func<TorchSharp.torch.Tensor> op)
    {
        for (int i = 0; i < 3; i++) op().Dispose();
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < 20; i++) op().Dispose();
        double ms = watch.Elapsed.TotalMilliseconds / 20;
        Console.WriteLine($"{name,-40} {ms,7:F2} ms");
        return ms;
    }
    Time("a * floatMask", () => a.mul(keepFloat));
    Time("a * boolMask", () => a.mul(keepBool));
    Time("a * boolMask.to(float)", () => { using var f = keepBool.to(ScalarType.Float32); return a.mul(f); });
    Time("where(boolMask, a, 0)", () => where(keepBool, a, 0f));
    Time("a.masked_fill(~boolMask, 0)", () => { using var n = keepBool.logical_not(); return a.masked_fill(n, 0f); });
    Time("bernoulli float draws", () => empty(32, 12, 128, 128).bernoulli_(0.9));
    Time("float draws to bool", () => keepFloat.to(ScalarType.Bool));
    using var gen = new Generator(1);
    Time("bernoulli float draws, generator", () => empty(32, 12, 128, 128).bernoulli_(0.9, generator: gen));
    Time("uniform draws, generator", () => empty(32, 12, 128, 128).uniform_(0, 1, generator: gen));
    Time("rand < 0.9, generator", () => { using var u = rand(new long[] { 32, 12, 128, 128 }, generator: gen); return u.lt(0.9); });
    Time("randint bytes, generator", () => randint(0, 256, new long[] { 32, 12, 128, 128 }, dtype: ScalarType.Byte, generator: gen));
    Time("bernoulli bool draws, generator", () => empty(new long[] { 32, 12, 128, 128 }, ScalarType.Bool).bernoulli_(0.9, generator: gen));
    Time("a.clone() (one pass)", () => a.clone());
    // Attention with dropout, forward and backward: the explicit formula through autograd against DropoutAttention.
    var q = randn(32, 128, 12, 32).transpose(1, 2).requires_grad_(true);
    var k = randn(32, 128, 12, 32).transpose(1, 2).requires_grad_(true);
    var v = randn(32, 128, 12, 32).transpose(1, 2).requires_grad_(true);
    var additive = zeros(32, 1, 1, 128);
    var upstream = randn(32, 12, 128, 32);
    void Both(string name, Func<TorchSharp.torch.Tensor> forward)
    {
        var cpu = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
        var ms = Time(name, () => { using var inner = NewDisposeScope(); forward().mul(upstream).sum().backward(); return zeros(1).MoveToOuterDisposeScope(); });
        Console.WriteLine($"{"",-40} processor {(System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds / 23:F1} ms a call");
    }
    Both("explicit formula fwd+bwd", () => matmul(softmax(matmul(q, k.transpose(-2, -1)).div(Math.Sqrt(32)).add(additive), -1).mul(keepBool).div(0.9), v));
    Both("DropoutAttention fwd+bwd", () => Microsoft.ML.Peft.Backbones.Bert.DropoutAttention.Run(q, k, v, additive, keepBool, 0.1));
    Both("fused kernel (no dropout) fwd+bwd", () => nn.functional.scaled_dot_product_attention(q, k, v, additive, 0.0));
    Both("DropoutAttention fwd only", () => { using (no_grad()) Microsoft.ML.Peft.Backbones.Bert.DropoutAttention.Run(q, k, v, additive, keepBool, 0.1); return q.sum(); });
    Time("softmax", () => softmax(a, -1));
    return 0;
}

// rss: what is resident after each stage of building the LoRA step's model (diagnostic).
if (args.Length >= 1 && args[0] == "rss")
{
    StepRunner.ResidentStages(Console.WriteLine);
    return 0;
}

// contention: only the two-process section, written to bench/results/contention.json.
if (args.Length >= 1 && args[0] == "contention")
{
    var clock = Stopwatch.StartNew();
    var section = Contention.Run(typeof(StepRunner).Assembly.Location, 5, 1, m => Console.WriteLine($"{clock.Elapsed:mm\\:ss} {m}"));
    section["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", invariant);
    section["command"] = "dotnet run -c Release --project bench/Peft.Perf -- contention";
    section["cores"] = Environment.ProcessorCount;
    section["loadAverageAtEnd"] = LoadAverage();
    var file = Path.Combine(FindRoot(), "bench", "results", "contention.json");
    File.WriteAllText(file, section.ToJsonString(Json.Indented));
    Console.WriteLine($"Written {file}.");
    return 0;
}

bool quick = args.Contains("--quick");
var root = FindRoot();
var outIndex = Array.IndexOf(args, "--out");
var outPath = outIndex >= 0 && outIndex + 1 < args.Length ? Path.GetFullPath(args[outIndex + 1]) : Path.Combine(root, "bench", "results", "latest.json");
int steps = quick ? 2 : 5, warmup = quick ? 1 : 2;
var total = Stopwatch.StartNew();
var json = new JsonObject
{
    ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", invariant),
    ["command"] = "dotnet run -c Release --project bench/Peft.Perf" + (quick ? " -- --quick" : ""),
    ["quick"] = quick,
    ["machine"] = new JsonObject
    {
        ["cores"] = Environment.ProcessorCount,
        ["os"] = RuntimeInformation.OSDescription,
        ["cpu"] = CpuModel(),
        ["dotnet"] = RuntimeInformation.FrameworkDescription,
        ["torchSharp"] = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString(),
        ["libtorchThreads"] = get_num_threads(),
        ["ompWaitPolicy"] = PeftRuntime.WaitPolicy?.ToString() ?? "not set (libgomp spins, then sleeps)",
        ["onnxRuntime"] = typeof(InferenceSession).Assembly.GetName().Version?.ToString(),
        ["loadAverageAtStart"] = LoadAverage(),
    },
    ["stepsTimed"] = steps,
    ["warmupSteps"] = warmup,
};
void Log(string message) => Console.WriteLine($"{total.Elapsed:mm\\:ss} {message}");

// 1. The machine's practical fp32 GEMM rate through TorchSharp.
double gemm = Math.Max(GemmGflops(2048, 5), GemmGflops(4096, quick ? 3 : 5));
json["gemmGflops"] = Math.Round(gemm, 1);
Log($"GEMM: {gemm:F1} GFLOP/s");
// 1b. The same in bfloat16 (oneDNN on AVX-512 BF16 / AMX), the anchor of bf16Mfu.
double gemmBf16 = Math.Max(MixedPrecision.GemmGflops(2048, 5, ScalarType.BFloat16), MixedPrecision.GemmGflops(4096, quick ? 3 : 5, ScalarType.BFloat16));
json["gemmBf16Gflops"] = Math.Round(gemmBf16, 1);
Log($"GEMM bf16: {gemmBf16:F1} GFLOP/s");

// 2. Training steps, each in its own process (peak memory is the process's own).
var self = typeof(StepRunner).Assembly.Location;
StepResult? Child(string mode, int batch, int seq, int n, int w, bool memory = false)
{
    var result = RunChild("dotnet", $"\"{self}\" step {mode} {batch} {seq} {n} {w}", environment: memory ? MemoryEnvironment : null);
    if (result is null) return null;
    var step = JsonSerializer.Deserialize<StepResult>(result, Json.Options);
    Log($"{mode,-12} batch {batch,2} seq {seq,3}: {step!.StepMsMedian,8:F0} ms/step, peak RSS {step.PeakRssBytes / 1e6:F0} MB (before steps {step.RssBeforeStepsBytes / 1e6:F0} MB)");
    return step;
}
var lora = Child("lora", 32, 128, steps, warmup);
var loraBf16 = Child("lora-bf16", 32, 128, steps, warmup);
var full = Child("full", 32, 128, steps, warmup);
var checkpointed = Child("checkpointed", 32, 128, steps, warmup);
// Peak memory from separate runs in which glibc returns every large freed block at once (a fixed mmap threshold):
// otherwise freed activation buffers stay resident and the peak measures the allocator, not the step.
var loraMemory = Child("lora", 32, 128, 1, 1, memory: true);
var fullMemory = Child("full", 32, 128, 1, 1, memory: true);
var checkpointedMemory = Child("checkpointed", 32, 128, 1, 1, memory: true);
// The LoRA step with AttentionDropout = 0: attention through libtorch's fused kernel, which keeps no attention matrices.
var noDropMemory = Child("lora-nodrop", 32, 128, 1, 1, memory: true);
var checkpointedNoDropMemory = Child("checkpointed-nodrop", 32, 128, 1, 1, memory: true);

// 2b. Two processes sharing the cores: the OpenMP wait policy and the thread count (PeftRuntime).
json["contention"] = Contention.Run(self, quick ? 3 : 5, 1, Log);

// 3. PyTorch doing the same LoRA and full steps on the same ONNX weights.
var onnxPath = Path.Combine(Path.GetTempPath(), "peft-perf-minilm.onnx");
var (onnxBytes, vocab, _) = BaseModelSource.MiniLM().ReadFiles();
File.WriteAllBytes(onnxPath, onnxBytes);
var script = Path.Combine(root, "bench", "pytorch", "lora_step.py");
JsonObject? Python(string mode)
{
    if (!File.Exists("/usr/bin/python3") || !File.Exists(script)) return null;
    var line = RunChild("/usr/bin/python3", $"\"{script}\" --onnx \"{onnxPath}\" --mode {mode} --batch 32 --seq 128 --steps {steps} --warmup {warmup} --threads {get_num_threads()}", prefix: "");
    if (line is null) return null;
    var node = JsonNode.Parse(line)!.AsObject();
    Log($"pytorch {mode,-4} batch 32 seq 128: {node["stepMsMedian"]!.GetValue<double>(),8:F0} ms/step, peak RSS {node["peakRssBytes"]!.GetValue<double>() / 1e6:F0} MB");
    return node;
}
var pyLora = Python("lora");
var pyFull = Python("full");

double? Ratio(double? a, double? b) => a is null || b is null || b == 0 ? null : Math.Round(a.Value / b.Value, 3);
json["loraStepMs"] = lora?.StepMsMedian;
json["pytorchLoraStepMs"] = pyLora?["stepMsMedian"]?.GetValue<double>();
json["loraStepVsPytorch"] = Ratio(lora?.StepMsMedian, pyLora?["stepMsMedian"]?.GetValue<double>());
json["pytorchFullStepMs"] = pyFull?["stepMsMedian"]?.GetValue<double>();
json["pytorch"] = pyLora?["torch"]?.GetValue<string>() ?? "not available (install python3-torch python3-onnx libopenblas0-pthread)";
double loraFlops = Flops.LoraStep(32, 128);
json["loraStepGflop"] = Math.Round(loraFlops / 1e9, 1);
json["mfu"] = lora is null ? null : Math.Round(loraFlops / (lora.StepMsMedian / 1000) / (gemm * 1e9), 3);
json["pytorchMfu"] = pyLora is null ? null : Math.Round(loraFlops / (pyLora["stepMsMedian"]!.GetValue<double>() / 1000) / (gemm * 1e9), 3);
json["loraBf16StepMs"] = loraBf16?.StepMsMedian;
json["bf16StepVsFp32"] = Ratio(loraBf16?.StepMsMedian, lora?.StepMsMedian);
json["bf16Mfu"] = loraBf16 is null ? null : Math.Round(loraFlops / (loraBf16.StepMsMedian / 1000) / (gemmBf16 * 1e9), 3);
json["fullStepMs"] = full?.StepMsMedian;
json["loraVsFullTime"] = Ratio(lora?.StepMsMedian, full?.StepMsMedian);
json["memoryEnvironment"] = string.Join(" ", MemoryEnvironment.Select(kv => $"{kv.Key}={kv.Value}"));
json["loraPeakMemoryBytes"] = loraMemory?.PeakRssBytes;
json["fullPeakMemoryBytes"] = fullMemory?.PeakRssBytes;
json["loraVsFullMemory"] = Ratio(loraMemory?.PeakRssBytes, fullMemory?.PeakRssBytes);
json["checkpointedStepMs"] = checkpointed?.StepMsMedian;
json["checkpointedPeakMemoryBytes"] = checkpointedMemory?.PeakRssBytes;
json["checkpointingMemoryRatio"] = Ratio(checkpointedMemory?.PeakRssBytes, loraMemory?.PeakRssBytes);
json["checkpointedVsFullMemory"] = Ratio(checkpointedMemory?.PeakRssBytes, fullMemory?.PeakRssBytes);
json["loraNoAttentionDropoutPeakMemoryBytes"] = noDropMemory?.PeakRssBytes;
json["loraNoAttentionDropoutVsFullMemory"] = Ratio(noDropMemory?.PeakRssBytes, fullMemory?.PeakRssBytes);
json["checkpointedNoAttentionDropoutPeakMemoryBytes"] = checkpointedNoDropMemory?.PeakRssBytes;
json["checkpointedNoAttentionDropoutVsFullMemory"] = Ratio(checkpointedNoDropMemory?.PeakRssBytes, fullMemory?.PeakRssBytes);
// What the figures above hold besides the step itself: runtime, libtorch's code, the weights.
json["loraRssBeforeStepsBytes"] = loraMemory?.RssBeforeStepsBytes;
json["fullRssBeforeStepsBytes"] = fullMemory?.RssBeforeStepsBytes;
json["loraStepBytesAboveBaseline"] = loraMemory is null ? null : loraMemory.PeakRssBytes - loraMemory.RssBeforeStepsBytes;
json["fullStepBytesAboveBaseline"] = fullMemory is null ? null : fullMemory.PeakRssBytes - fullMemory.RssBeforeStepsBytes;
json["checkpointedStepBytesAboveBaseline"] = checkpointedMemory is null ? null : checkpointedMemory.PeakRssBytes - checkpointedMemory.RssBeforeStepsBytes;

// 4. Inference: our batched Transform against ONNX Runtime on the same sentences, same batches, same threads.
var ml = new MLContext(1);
var sentences = File.ReadLines(Path.Combine(root, "..", "shared", "data", "sst2", "dev.tsv")).Skip(1)
    .Select(l => l.Split('\t')[0]).Take(quick ? 512 : 2048).ToList();
var trainRows = sentences.Take(32).Select((s, i) => new Row { Sentence = s, Label = i % 2 == 0 ? "a" : "b" }).ToList();
var trainData = ml.Data.LoadFromEnumerable(trainRows);
var model = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options { Sentence1ColumnName = "Sentence", MaxEpoch = 1, BatchSize = 32 }))
    .Fit(trainData);
var peft = ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();
var scoreData = ml.Data.LoadFromEnumerable(sentences.Select(s => new Row { Sentence = s, Label = "a" }));
double ours = RowsPerSecond(() =>
{
    var scored = peft.Transform(scoreData);
    using var cursor = scored.GetRowCursor(new[] { scored.Schema["Score"] });
    var getter = cursor.GetGetter<Microsoft.ML.Data.VBuffer<float>>(scored.Schema["Score"]);
    Microsoft.ML.Data.VBuffer<float> value = default;
    while (cursor.MoveNext()) getter(ref value);
}, sentences.Count);
var encoder = new TextEncoder(vocab, lowerCase: true, maxLength: 128);
using var session = new InferenceSession(onnxBytes, new SessionOptions { IntraOpNumThreads = get_num_threads(), InterOpNumThreads = 1 });
void OrtPass(InferenceSession onnxSession, bool tokenTypes)
{
    // The same batching as the transformer: 256 rows read ahead, sorted by length, 32 at a time.
    for (int start = 0; start < sentences.Count; start += 256)
    {
        var rows = encoder.Tokenize(sentences.Skip(start).Take(256).ToList()).OrderBy(r => r.Ids.Length).ToList();
        for (int b = 0; b < rows.Count; b += 32)
        {
            var batch = encoder.Pad(rows.Skip(b).Take(32).ToList());
            int[] dims = { batch.Rows, batch.Length };
            var inputs = new List<NamedOnnxValue>
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(batch.InputIds, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(batch.AttentionMask, dims)),
            };
            if (tokenTypes) inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(batch.TokenTypeIds, dims)));
            using var results = onnxSession.Run(inputs);
        }
    }
}
double ort = RowsPerSecond(() => OrtPass(session, tokenTypes: true), sentences.Count);
json["inferenceRows"] = sentences.Count;
json["inferenceRowsPerSec"] = Math.Round(ours, 1);
json["ortRowsPerSec"] = Math.Round(ort, 1);
json["inferenceVsOrt"] = Math.Round(ours / ort, 3);
Log($"inference: ours {ours:F1} rows/s, ONNX Runtime {ort:F1} rows/s");
// 4b. The same model exported with int8 encoder weights (DynamicQuantizeLinear + MatMulInteger) in ONNX Runtime, same batches.
var int8Path = Path.Combine(Path.GetTempPath(), $"peft-perf-int8-{Guid.NewGuid():N}.onnx");
try
{
    ml.Model.ExportPeftToOnnx(model, int8Path, new PeftOnnxExportOptions { Quantization = PeftOnnxQuantization.DynamicInt8 });
    using var int8Session = new InferenceSession(int8Path, new SessionOptions { IntraOpNumThreads = get_num_threads(), InterOpNumThreads = 1 });
    double int8Rows = RowsPerSecond(() => OrtPass(int8Session, tokenTypes: false), sentences.Count);
    json["int8RowsPerSec"] = Math.Round(int8Rows, 1);
    json["int8InferenceVsOrt"] = Math.Round(int8Rows / ort, 3);
    // The best way this library offers to score the same rows (TorchSharp fp32, or its int8 ONNX export) against ONNX
    // Runtime's fp32 on the base graph.
    json["bestInferenceVsOrt"] = Math.Round(Math.Max(ours, int8Rows) / ort, 3);
    json["bestInference"] = int8Rows > ours ? "int8 ONNX export in ONNX Runtime" : "TorchSharp fp32 Transform";
    Log($"inference: ONNX Runtime on the int8 export {int8Rows:F1} rows/s ({int8Rows / ort:F2}x ONNX Runtime fp32 on the base graph)");
}
finally
{
    File.Delete(int8Path);
}

// 5. Single-row latency through PredictionEngine.
var engine = ml.Model.CreatePredictionEngine<Row, Prediction>(model);
for (int i = 0; i < 5; i++) engine.Predict(new Row { Sentence = sentences[i] });
var latencies = sentences.Take(quick ? 100 : 300).Select(s =>
{
    var watch = Stopwatch.StartNew();
    engine.Predict(new Row { Sentence = s });
    return watch.Elapsed.TotalMilliseconds;
}).ToList();
json["predictionEngineP50Ms"] = Math.Round(Stats.Percentile(latencies, 0.5), 2);
json["predictionEngineP95Ms"] = Math.Round(Stats.Percentile(latencies, 0.95), 2);
Log($"PredictionEngine: p50 {Stats.Percentile(latencies, 0.5):F2} ms, p95 {Stats.Percentile(latencies, 0.95):F2} ms");

// 6. Sizes: the saved adapter entry against the base model file.
var zip = Path.Combine(Path.GetTempPath(), "peft-perf-model.zip");
ml.Model.Save(model, trainData.Schema, zip);
long adapterBytes;
using (var archive = ZipFile.OpenRead(zip)) adapterBytes = archive.Entries.Where(e => e.FullName.EndsWith("Adapter.safetensors", StringComparison.Ordinal)).Sum(e => e.Length);
json["adapterBytes"] = adapterBytes;
json["modelFileBytes"] = new FileInfo(zip).Length;
json["baseModelBytes"] = onnxBytes.LongLength;
json["adapterVsBase"] = Math.Round((double)adapterBytes / onnxBytes.LongLength, 4);

// 7. Scaling of the LoRA step with sequence length and batch size, in fp32 and bf16: step time, rows per second, peak RSS.
var scaling = new JsonArray();
foreach (var mode in new[] { "lora", "lora-bf16" })
{
    foreach (var (batch, seq) in new[] { (32, 64), (32, 128), (32, 256), (8, 512), (8, 128), (64, 128) })
    {
        var r = batch == 32 && seq == 128 ? (mode == "lora" ? lora : loraBf16) : Child(mode, batch, seq, quick ? 1 : 3, 1);
        scaling.Add(new JsonObject
        {
            ["precision"] = mode == "lora" ? "fp32" : "bf16", ["batch"] = batch, ["seq"] = seq, ["stepMs"] = r?.StepMsMedian,
            ["rowsPerSec"] = r is null ? null : Math.Round(batch / (r.StepMsMedian / 1000), 1),
            ["peakRssBytes"] = r?.PeakRssBytes, ["activationBytes"] = r is null ? null : r.PeakRssBytes - r.RssBeforeStepsBytes,
        });
    }
}
json["scaling"] = scaling;

// 8. Accuracy of bf16 against fp32: a short LoRA training of each on the same SST-2 rows, scored on test-sentences.tsv.
var accuracy = MixedPrecision.Accuracy(Path.Combine(root, "..", "shared", "data", "sst2"), quick ? 1000 : 2000, Log);
json["precisionAccuracy"] = accuracy;
// Training throughput on SST-2's own rows (their lengths, the library's batching), from the runs above, and the time of a
// whole epoch of train.tsv (60,614 rows) at that rate: a projection from trainRows rows, not a timed whole epoch.
const int sst2TrainRows = 60614;
foreach (var (key, precision) in new[] { ("sst2EpochRowsPerSec", "fp32"), ("sst2EpochRowsPerSecBf16", "bf16") })
{
    var seconds = accuracy[precision + "TrainSeconds"]?.GetValue<double>();
    double? rate = seconds is > 0 ? Math.Round(accuracy["trainRows"]!.GetValue<int>() / seconds.Value, 1) : null;
    json[key] = rate;
    json[key.Replace("RowsPerSec", "SecondsProjected", StringComparison.Ordinal)] = rate is null ? null : Math.Round(sst2TrainRows / rate.Value);
}
json["bf16AccuracyDelta"] = accuracy["deltaPoints"]!.GetValue<double>();
json["noAttentionDropoutAccuracyDelta"] = accuracy["noAttentionDropoutDeltaPoints"]!.GetValue<double>();
json["machine"]!["loadAverageAtEnd"] = LoadAverage();
json["totalSeconds"] = Math.Round(total.Elapsed.TotalSeconds, 1);

// Table and targets.
var targets = new (string Key, string Op, double Bound)[]
{
    ("loraStepVsPytorch", "<=", 1.0), ("mfu", ">=", 0.4), ("loraVsFullMemory", "<=", 0.7),
    ("checkpointedVsFullMemory", "<=", 0.45), ("inferenceVsOrt", ">=", 0.8), ("adapterVsBase", "<=", 0.02),
    ("bestInferenceVsOrt", ">=", 1.2), ("predictionEngineP50Ms", "<=", 10),
    ("bf16StepVsFp32", "<=", 0.6), ("bf16AccuracyDelta", "|x| <=", 0.5),
    ("loraNoAttentionDropoutVsFullMemory", "<=", 0.7), ("checkpointedNoAttentionDropoutVsFullMemory", "<=", 0.45),
};
Console.WriteLine();
Console.WriteLine("| figure | value | target |");
Console.WriteLine("|---|---:|---|");
foreach (var key in new[] { "gemmGflops", "loraStepMs", "pytorchLoraStepMs", "loraStepVsPytorch", "mfu", "pytorchMfu", "fullStepMs", "pytorchFullStepMs", "loraVsFullTime",
    "loraPeakMemoryBytes", "fullPeakMemoryBytes", "loraVsFullMemory", "checkpointedStepMs", "checkpointedPeakMemoryBytes", "checkpointingMemoryRatio", "checkpointedVsFullMemory",
    "inferenceRowsPerSec", "ortRowsPerSec", "inferenceVsOrt", "int8RowsPerSec", "int8InferenceVsOrt", "bestInferenceVsOrt", "predictionEngineP50Ms", "predictionEngineP95Ms", "adapterBytes", "baseModelBytes", "adapterVsBase",
    "gemmBf16Gflops", "loraBf16StepMs", "bf16StepVsFp32", "bf16Mfu", "bf16AccuracyDelta",
    "loraNoAttentionDropoutPeakMemoryBytes", "loraNoAttentionDropoutVsFullMemory", "checkpointedNoAttentionDropoutPeakMemoryBytes",
    "checkpointedNoAttentionDropoutVsFullMemory", "noAttentionDropoutAccuracyDelta" })
{
    var target = targets.FirstOrDefault(t => t.Key == key);
    var value = json[key];
    string verdict = "";
    if (target.Key is not null)
    {
        var v = value?.GetValue<double>();
        bool met = v is not null && target.Op switch { "<=" => v <= target.Bound, "|x| <=" => Math.Abs(v.Value) <= target.Bound, _ => v >= target.Bound };
        verdict = $"{target.Op} {target.Bound.ToString(invariant)} {(v is null ? "not measured" : met ? "met" : "MISSED")}";
    }
    Console.WriteLine($"| {key} | {value?.ToJsonString() ?? "n/a"} | {verdict} |");
}
var contention = json["contention"]!;
foreach (var key in new[] { "aloneActiveStepMs", "alonePassiveStepMs", "sharedActiveStepMs", "sharedPassiveStepMs", "sharedPassiveOneThreadStepMs", "passiveVsActiveAlone", "passiveVsActiveShared", "oneThreadVsActiveShared" })
    Console.WriteLine($"| contention.{key} | {contention[key]?.ToJsonString() ?? "n/a"} | |");
Console.WriteLine();
Console.WriteLine("| precision | batch | seq | LoRA step ms | rows/s | peak RSS MB | activations MB |");
Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
foreach (var row in scaling)
    Console.WriteLine($"| {row!["precision"]} | {row["batch"]} | {row["seq"]} | {row["stepMs"]?.GetValue<double>():F0} | {row["rowsPerSec"]?.GetValue<double>():F1} | {row["peakRssBytes"]?.GetValue<long>() / 1e6:F0} | {row["activationBytes"]?.GetValue<long>() / 1e6:F0} |");
Console.WriteLine();
Console.WriteLine($"SST-2 training throughput (LoRA defaults, {accuracy["trainRows"]} rows of train.tsv): fp32 {json["sst2EpochRowsPerSec"]} rows/s, bf16 {json["sst2EpochRowsPerSecBf16"]} rows/s; " +
    $"a whole epoch of {sst2TrainRows:N0} rows projected at {json["sst2EpochSecondsProjected"]} s and {json["sst2EpochSecondsProjectedBf16"]} s.");
Directory.CreateDirectory(Path.GetDirectoryName(outPath)!);
File.WriteAllText(outPath, json.ToJsonString(Json.Indented));
Console.WriteLine($"\nWritten {outPath} in {total.Elapsed.TotalSeconds:F0} s.");
return 0;

static double GemmGflops(int n, int repeats)
{
    using var scope = NewDisposeScope();
    var a = randn(n, n);
    var b = randn(n, n);
    using (var warm = a.mm(b)) { }
    double best = double.MaxValue;
    for (int i = 0; i < repeats; i++)
    {
        var watch = Stopwatch.StartNew();
        using var c = a.mm(b);
        best = Math.Min(best, watch.Elapsed.TotalSeconds);
    }
    return 2.0 * n * n * n / best / 1e9;
}

static double RowsPerSecond(Action run, int rows)
{
    run(); // warm-up pass
    var watch = Stopwatch.StartNew();
    run();
    return rows / watch.Elapsed.TotalSeconds;
}

static string? RunChild(string file, string arguments, string prefix = "RESULT ", IReadOnlyDictionary<string, string>? environment = null)
{
    var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
    foreach (var (key, value) in environment ?? new Dictionary<string, string>()) start.Environment[key] = value;
    using var process = Process.Start(start)!;
    var stderr = process.StandardError.ReadToEndAsync();
    string? result = null;
    string? line;
    while ((line = process.StandardOutput.ReadLine()) is not null)
        if (line.StartsWith(prefix, StringComparison.Ordinal) && line.TrimStart().StartsWith(prefix + "{", StringComparison.Ordinal)) result = line[prefix.Length..];
    process.WaitForExit();
    if (process.ExitCode != 0 || result is null)
    {
        Console.Error.WriteLine($"child '{file} {arguments}' failed (exit {process.ExitCode}): {stderr.Result}");
        return null;
    }
    return result;
}

static string FindRoot()
{
    var dir = new DirectoryInfo(AppContext.BaseDirectory);
    while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Peft.sln"))) dir = dir.Parent;
    return dir?.FullName ?? throw new InvalidOperationException("Microsoft.ML.Peft.sln not found above the program.");
}

static string? LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : null;

static string? CpuModel() => File.Exists("/proc/cpuinfo")
    ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
    : null;

internal static partial class Program
{
    internal static readonly IReadOnlyDictionary<string, string> MemoryEnvironment = new Dictionary<string, string> { ["MALLOC_MMAP_THRESHOLD_"] = "65536" };
}

internal sealed class Row
{
    public string Sentence { get; set; } = "";
    public string Label { get; set; } = "";
}

internal sealed class Prediction
{
    public float[] Score { get; set; } = Array.Empty<float>();
}
