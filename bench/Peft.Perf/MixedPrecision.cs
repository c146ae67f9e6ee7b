using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using static TorchSharp.torch;

namespace Peft.Perf;

/// <summary>
/// What bfloat16 mixed precision (<c>Precision = Bf16</c>) gives: the machine's bf16 GEMM rate through TorchSharp, and
/// the SST-2 accuracy of a short LoRA training in fp32 and in bf16 (same rows, same seed) on <c>test-sentences.tsv</c>.
/// </summary>
internal static class MixedPrecision
{
    /// <summary>Best <c>mm</c> rate of two n x n matrices of <paramref name="type"/>, in GFLOP/s.</summary>
    public static double GemmGflops(int n, int repeats, ScalarType type)
    {
        using var scope = NewDisposeScope();
        var a = randn(n, n).to(type);
        var b = randn(n, n).to(type);
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

    /// <summary>Times fp32 and bf16 versions of a MiniLM layer's operations at batch 32 x 128 (diagnostic output).</summary>
    public static void Kernels(Action<string> print)
    {
        double Time(Action run, int repeats = 5)
        {
            run();
            double best = double.MaxValue;
            for (int i = 0; i < repeats; i++)
            {
                var watch = Stopwatch.StartNew();
                run();
                best = Math.Min(best, watch.Elapsed.TotalMilliseconds);
            }
            return best;
        }
        using var scope = NewDisposeScope();
        print($"mm 2048 fp32 {GemmGflops(2048, 3, ScalarType.Float32):F1} GFLOP/s, bf16 {GemmGflops(2048, 3, ScalarType.BFloat16):F1} GFLOP/s, " +
            $"fp16 {GemmGflops(2048, 3, ScalarType.Float16):F1} GFLOP/s; threads {get_num_threads()}");
        var x = randn(32, 128, 384);
        var w = randn(1536, 384).div(20);
        var x16 = x.to(ScalarType.BFloat16);
        var w16 = w.to(ScalarType.BFloat16);
        double flops = 2.0 * 32 * 128 * 384 * 1536;
        void Report(string name, double ms, double f) => print($"{name,-40} {ms,8:F2} ms {f / ms / 1e6,8:F1} GFLOP/s");
        Report("linear fp32 [32,128,384]x[1536,384]", Time(() => { using var y = nn.functional.linear(x, w); }), flops);
        Report("linear bf16", Time(() => { using var y = nn.functional.linear(x16, w16); }), flops);
        Report("linear bf16 incl. casts", Time(() => { using var a = x.to(ScalarType.BFloat16); using var y = nn.functional.linear(a, w16); using var z = y.to(ScalarType.Float32); }), flops);
        Report("matmul 2-D bf16", Time(() => { using var a = x16.view(-1, 384); using var y = a.matmul(w16.t()); }), flops);
        var g = randn(32, 128, 1536);
        var g16 = g.to(ScalarType.BFloat16);
        Report("grad input fp32 (g W)", Time(() => { using var y = g.matmul(w); }), flops);
        Report("grad input bf16 (g W)", Time(() => { using var y = g16.matmul(w16); }), flops);
        var wt16 = w16.t().contiguous();
        Report("grad input bf16 linear(g, W^T contiguous)", Time(() => { using var y = nn.functional.linear(g16, wt16); }), flops);
        Report("cast fp32->bf16 [32,128,1536]", Time(() => { using var y = g.to(ScalarType.BFloat16); }), 0);
        var q = randn(32, 12, 128, 32);
        var q16 = q.to(ScalarType.BFloat16);
        var mask = zeros(32, 1, 1, 128);
        var mask16 = mask.to(ScalarType.BFloat16);
        double attention = 2.0 * 2 * 32 * 12 * 128 * 128 * 32;
        Report("sdpa fp32", Time(() => { using var y = nn.functional.scaled_dot_product_attention(q, q, q, mask); }), attention);
        Report("sdpa bf16", Time(() => { using var y = nn.functional.scaled_dot_product_attention(q16, q16, q16, mask16); }), attention);
        Report("sdpa fp32 forward+backward", Time(() =>
        {
            using var inner = NewDisposeScope();
            var a = q.detach().requires_grad_(true);
            nn.functional.scaled_dot_product_attention(a, a, a, mask).sum().backward();
        }), 3 * attention);
        Report("sdpa bf16 forward+backward", Time(() =>
        {
            using var inner = NewDisposeScope();
            var a = q16.detach().requires_grad_(true);
            nn.functional.scaled_dot_product_attention(a, a, a, mask16).sum().backward();
        }), 3 * attention);
        Report("gelu fp32 [32,128,1536]", Time(() => { using var y = nn.functional.gelu(g); }), 0);
        Report("gelu bf16", Time(() => { using var y = nn.functional.gelu(g16); }), 0);
    }

    /// <summary>
    /// Trains LoRA (the library's defaults: r=8 on every Linear layer) on the first <paramref name="trainRows"/> rows of
    /// SST-2's <c>train.tsv</c> for one epoch in fp32, in bf16, and in fp32 with <c>AttentionDropout = 0</c> (fused attention
    /// in training), with one seed, and scores <c>test-sentences.tsv</c> with each.
    /// </summary>
    public static JsonObject Accuracy(string sst2Folder, int trainRows, Action<string> log)
    {
        var ml = new MLContext(1);
        Row Parse(string line)
        {
            var parts = line.Split('\t');
            return new Row { Sentence = parts[0], Label = parts[1] };
        }
        var train = ml.Data.LoadFromEnumerable(File.ReadLines(Path.Combine(sst2Folder, "train.tsv")).Skip(1).Take(trainRows).Select(Parse).ToList());
        var test = File.ReadLines(Path.Combine(sst2Folder, "test-sentences.tsv")).Skip(1).Select(Parse).ToList();
        var testData = ml.Data.LoadFromEnumerable(test);
        var result = new JsonObject { ["trainRows"] = trainRows, ["epochs"] = 1, ["testRows"] = test.Count, ["method"] = "LoRA r=8 all-linear (library defaults)" };
        var accuracy = new Dictionary<string, double>();
        foreach (var (name, precision, attentionDropout) in new (string, PeftPrecision, float?)[]
                 { ("fp32", PeftPrecision.Fp32, null), ("bf16", PeftPrecision.Bf16, null), ("fp32NoAttentionDropout", PeftPrecision.Fp32, 0f) })
        {
            var options = new PeftTextClassificationTrainer.Options
            {
                Sentence1ColumnName = nameof(Row.Sentence), MaxEpoch = 1, Seed = 1, Precision = precision, AttentionDropout = attentionDropout, Method = new LoraOptions(),
            };
            var watch = Stopwatch.StartNew();
            var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(train);
            double trainSeconds = watch.Elapsed.TotalSeconds;
            watch.Restart();
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(testData));
            double scoreSeconds = watch.Elapsed.TotalSeconds;
            foreach (var d in model.OfType<IDisposable>()) d.Dispose();
            accuracy[name] = metrics.MicroAccuracy;
            result[name + "Accuracy"] = Math.Round(metrics.MicroAccuracy, 4);
            result[name + "TrainSeconds"] = Math.Round(trainSeconds, 1);
            result[name + "ScoreSeconds"] = Math.Round(scoreSeconds, 1);
            log($"{name}: SST-2 test-sentences accuracy {metrics.MicroAccuracy:P2} after {trainRows} rows x 1 epoch ({trainSeconds:F0} s training, {scoreSeconds:F0} s scoring {test.Count} rows)");
        }
        // In accuracy points (percent): bf16 minus fp32.
        result["deltaPoints"] = Math.Round(100 * (accuracy["bf16"] - accuracy["fp32"]), 2);
        result["noAttentionDropoutDeltaPoints"] = Math.Round(100 * (accuracy["fp32NoAttentionDropout"] - accuracy["fp32"]), 2);
        return result;
    }
}
