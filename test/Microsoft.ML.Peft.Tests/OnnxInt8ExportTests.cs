using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Dynamic int8 export (<see cref="PeftOnnxQuantization.DynamicInt8"/>): a LoRA text classifier (MiniLM, one training
/// step on 16 SST-2 rows) exported in float32 and in int8; the int8 graph holds int8 weights and MatMulInteger nodes
/// where the encoder's Linear layers were, is about a quarter of their size, and runs in ONNX Runtime (as written and
/// fused) close to the float32 model.
/// </summary>
[TestFixture]
public class OnnxInt8ExportTests
{
    private List<SentenceRow> train = null!;
    private List<string> sentences = null!;

    [OneTimeSetUp]
    public void ReadRows()
    {
        train = Rows.Sst2(TestData.Sst2Train, skip: 0, take: 16);
        sentences = TestData.ReadSst2(TestData.Sst2Dev, skip: 0, take: 64).Select(r => r.Sentence).ToList();
    }

    [Test]
    public void Int8ExportIsSmallerAndScoresCloseToFloat32()
    {
        var ml = new MLContext(1);
        using var model = Train(ml);
        var expected = model.Score(sentences, null);
        var fp32Path = TempFile();
        var int8Path = TempFile();
        try
        {
            ml.Model.ExportPeftToOnnx(model, fp32Path);
            ml.Model.ExportPeftToOnnx(model, int8Path, new PeftOnnxExportOptions { Quantization = PeftOnnxQuantization.DynamicInt8 });
            Assert.That(model.Score(sentences, null), Is.EqualTo(expected), "exporting leaves the model scoring exactly as before");

            // The graph: int8 weights behind MatMulInteger for the six Linear layers of each of MiniLM's 6 layers.
            var int8 = ModelProto.Parser.ParseFrom(File.ReadAllBytes(int8Path));
            var fp32 = ModelProto.Parser.ParseFrom(File.ReadAllBytes(fp32Path));
            int layers = 6, hidden = 384, intermediate = 1536;
            int Count(ModelProto m, string op) => m.Graph.Node.Count(n => n.OpType == op);
            Assert.That(Count(int8, "MatMulInteger"), Is.EqualTo(6 * layers), "query, key, value, attention output, intermediate and output of every layer");
            Assert.That(Count(int8, "DynamicQuantizeLinear"), Is.EqualTo(4 * layers), "query, key and value share their quantised input");
            Assert.That(Count(fp32, "MatMulInteger"), Is.Zero);
            Assert.That(Count(int8, "MatMul"), Is.EqualTo(Count(fp32, "MatMul") - 6 * layers), "attention scores, context and the head stay float32");
            var int8Weights = int8.Graph.Initializer.Where(t => t.DataType == (int)DataType.Int8 && t.Dims.Count == 2).ToList();
            Assert.That(int8Weights, Has.Count.EqualTo(6 * layers));
            long linearParameters = layers * (4L * hidden * hidden + 2L * hidden * intermediate);
            Assert.That(int8Weights.Sum(t => (long)t.RawData.Length), Is.EqualTo(linearParameters), "one byte per weight");
            Assert.That(int8Weights.Select(t => t.Dims.ToArray()).Distinct(new DimsComparer()).OrderBy(d => d[0] * 10000 + d[1]),
                Is.EqualTo(new[] { new long[] { hidden, hidden }, new long[] { hidden, intermediate }, new long[] { intermediate, hidden } }), "[in, out] as MatMul's B");
            Assert.That(int8.Graph.Initializer.Where(t => t.DataType == (int)DataType.Float).Sum(t => (long)t.RawData.Length),
                Is.EqualTo(fp32.Graph.Initializer.Where(t => t.DataType == (int)DataType.Float).Sum(t => (long)t.RawData.Length) - 4 * linearParameters
                    + 4L * layers * (4 * hidden + intermediate + hidden)), "the float weights of the Linear layers are gone; one float scale per output column is added");

            long fp32Size = new FileInfo(fp32Path).Length, int8Size = new FileInfo(int8Path).Length;
            TestContext.Out.WriteLine($"fp32 {fp32Size / 1048576.0:F1} MB, int8 {int8Size / 1048576.0:F1} MB (Linear weights {4 * linearParameters / 1048576.0:F1} MB -> {linearParameters / 1048576.0:F1} MB; the embeddings stay float32)");
            Assert.That(fp32Size - int8Size, Is.GreaterThan(0.99 * 3 * linearParameters), "three bytes saved per Linear weight");

            using (var session = new InferenceSession(int8Path))
            {
                var meta = session.ModelMetadata.CustomMetadataMap;
                Assert.That(meta[PeftOnnxExport.QuantizationMetadataKey], Is.EqualTo("dynamic-int8"));
                Assert.That(meta["labels"], Is.EqualTo(System.Text.Json.JsonSerializer.Serialize(model.ClassNames)));
            }
            using (var session = new InferenceSession(fp32Path))
                Assert.That(session.ModelMetadata.CustomMetadataMap[PeftOnnxExport.QuantizationMetadataKey], Is.EqualTo("none"));

            // Scores: ONNX Runtime on the graph as written (MatMulInteger with uint8 inputs and int8 weights) and fused.
            var fp32Scores = RunOnnxRuntime(fp32Path, model, GraphOptimizationLevel.ORT_DISABLE_ALL);
            var asWritten = RunOnnxRuntime(int8Path, model, GraphOptimizationLevel.ORT_DISABLE_ALL);
            var optimized = RunOnnxRuntime(int8Path, model, GraphOptimizationLevel.ORT_ENABLE_ALL);
            double fp32Diff = MethodTraining.MaxDifference(fp32Scores, expected);
            double int8Diff = MethodTraining.MaxDifference(asWritten, expected), fusedDiff = MethodTraining.MaxDifference(optimized, expected);
            double spread = expected.Max(p => p.Max()) - expected.Min(p => p.Max());
            int agree = asWritten.Zip(expected, (a, b) => ArgMax(a) == ArgMax(b) ? 1 : 0).Sum();
            int agreeFused = optimized.Zip(expected, (a, b) => ArgMax(a) == ArgMax(b) ? 1 : 0).Sum();
            var confident = Enumerable.Range(0, expected.Length).Where(i => expected[i].Max() > 0.55f).ToList();
            int confidentAgree = confident.Count(i => ArgMax(asWritten[i]) == ArgMax(expected[i]));
            TestContext.Out.WriteLine($"{sentences.Count} dev rows: |fp32 ONNX - ours| {fp32Diff:E2}; |int8 - ours| as written {int8Diff:E2}, fused {fusedDiff:E2}; " +
                $"same class on {agree} (fused {agreeFused}); {confidentAgree} of the {confident.Count} rows with a top probability over 0.55; top probabilities spread over {spread:F3}");
            Assert.That(fp32Diff, Is.LessThanOrEqualTo(1e-4), "the float32 export is the model");
            Assert.That(int8Diff, Is.GreaterThan(1e-6), "int8 products differ from float32 ones: the int8 weights are used");
            // Bounds from measurements (x86-64 with VNNI): the probabilities move by up to 0.022 for this barely trained
            // model, whose top probabilities lie between 0.5 and 0.66 (a third of the rows within 0.02 of a tie), and 3 of
            // 64 classes flip, all near ties. 0.05 leaves room for other kernels (AVX2 without VNNI rounds differently).
            Assert.That(int8Diff, Is.LessThan(0.05), "int8 probabilities within 0.05 of float32 (measured 0.022)");
            Assert.That(fusedDiff, Is.LessThan(0.05), "the same with ONNX Runtime's fusions (DynamicQuantizeMatMul, MatMulIntegerToFloat)");
            Assert.That(confidentAgree, Is.EqualTo(confident.Count), "a row more than 0.05 from a tie keeps its class");
            Assert.That(agree, Is.GreaterThanOrEqualTo(sentences.Count * 7 / 8), "most rows keep their class (measured 61 of 64)");
        }
        finally
        {
            File.Delete(fp32Path);
            File.Delete(int8Path);
        }
    }

    /// <summary>Per-column symmetric quantisation: each column's largest magnitude maps to ±127, every value within half a step.</summary>
    [Test]
    public void WeightsQuantiseColumnByColumnWithinHalfAStep()
    {
        const int Rows = 50, Columns = 7;
        var random = new Random(5);
        var matrix = new float[Rows * Columns];
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Columns; c++)
                matrix[r * Columns + c] = c == 3 ? 0f : (float)(random.NextDouble() * 2 - 1) * (c + 1) * 0.01f;   // column 3 all zeros
        var (values, scales) = OnnxDynamicInt8.QuantizeColumns(matrix, Rows, Columns);
        Assert.That(scales[3], Is.EqualTo(1f), "a zero column keeps scale 1 (no division by zero)");
        for (int c = 0; c < Columns; c++)
        {
            var column = Enumerable.Range(0, Rows).Select(r => matrix[r * Columns + c]).ToArray();
            var quantized = Enumerable.Range(0, Rows).Select(r => (int)values[r * Columns + c]).ToArray();
            if (c != 3)
            {
                Assert.That(scales[c], Is.EqualTo(column.Max(v => MathF.Abs(v)) / 127f).Within(1e-9), $"column {c}: largest magnitude / 127");
                Assert.That(quantized.Max(q => Math.Abs(q)), Is.EqualTo(127), $"column {c} uses the whole range");
            }
            Assert.That(quantized.Min(), Is.GreaterThanOrEqualTo(-127));
            for (int r = 0; r < Rows; r++)
                Assert.That(quantized[r] * scales[c], Is.EqualTo(column[r]).Within(scales[c] * 0.5001), $"[{r}, {c}]");
        }
        Assert.Throws<InvalidOperationException>(() => OnnxDynamicInt8.QuantizeColumns(new[] { 1f, float.NaN }, 1, 2));
    }

    [Test]
    public void UndefinedQuantizationIsRefused()
    {
        var ml = new MLContext(1);
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(train));
        using var stream = new MemoryStream();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Model.ExportPeftToOnnx(keys, stream, new PeftOnnxExportOptions { Quantization = (PeftOnnxQuantization)7 }));
        Assert.That(e!.Message, Does.Contain("Quantization"));
        Assert.That(stream.Length, Is.Zero);
    }

    private PeftTextClassificationTransformer Train(MLContext ml)
    {
        var data = ml.Data.LoadFromEnumerable(train);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        return ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentenceRow.Sentence),
            Method = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 },
            MaxEpoch = 1,
            BatchSize = 16,
            MaxSequenceLength = 32,
            LearningRate = 2e-3f,
        }).Fit(keyed);
    }

    /// <summary>ONNX Runtime on the sentences, tokenized as the transformer does, in batches of 16 padded to their longest row.</summary>
    private float[][] RunOnnxRuntime(string path, PeftTextClassificationTransformer model, GraphOptimizationLevel level)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level };
        using var session = new InferenceSession(path, options);
        var result = new List<float[]>();
        for (int start = 0; start < sentences.Count; start += 16)
        {
            var batch = model.Model.Encoder.Encode(sentences.GetRange(start, Math.Min(16, sentences.Count - start)));
            int[] dims = { batch.Rows, batch.Length };
            using var outputs = session.Run(new[]
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(batch.InputIds, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(batch.AttentionMask, dims)),
            }, new[] { PeftTextClassificationTransformer.OnnxProbabilitiesOutput });
            var probabilities = outputs[0].AsTensor<float>();
            for (int r = 0; r < batch.Rows; r++) result.Add(Enumerable.Range(0, model.ClassCount).Select(c => probabilities[r, c]).ToArray());
        }
        return result.ToArray();
    }

    private static int ArgMax(float[] values) => Array.IndexOf(values, values.Max());

    private static string TempFile() => Path.Combine(Path.GetTempPath(), $"peft-onnx-int8-{Guid.NewGuid():N}.onnx");

    private sealed class DimsComparer : IEqualityComparer<long[]>
    {
        public bool Equals(long[]? x, long[]? y) => x!.SequenceEqual(y!);
        public int GetHashCode(long[] obj) => HashCode.Combine(obj[0], obj[1]);
    }
}
