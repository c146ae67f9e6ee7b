using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Bottleneck;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Methods.PrefixTuning;
using Microsoft.ML.Peft.Methods.PromptTuning;
using Microsoft.ML.Peft.Methods.Vera;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The merged ONNX export of text classifiers, run by ONNX Runtime and by ML.NET's <c>ApplyOnnxModel</c> on real SST-2
/// rows and compared with the transformer's own TorchSharp scoring, for every method. Each model is MiniLM after one
/// short training step, with the method's parameters then moved by random noise so that the adapter changes the
/// output well beyond the tolerance (LoRA's B, VeRA's lambda_b and a bottleneck's up-projection start at zero).
/// </summary>
[TestFixture]
public class OnnxExportTests
{
    private const double Tolerance = 1e-4;
    private List<SentenceRow> train = null!;
    private List<string> sentences = null!;

    [OneTimeSetUp]
    public void ReadRows()
    {
        train = Rows.Sst2(TestData.Sst2Train, skip: 0, take: 16);
        sentences = TestData.ReadSst2(TestData.Sst2Dev, skip: 0, take: 20).Select(r => r.Sentence).ToList();
    }

    private static IEnumerable<TestCaseData> Methods()
    {
        TestCaseData Case(string name, PeftMethodOptions options) => new TestCaseData(options).SetArgDisplayNames(name);
        yield return Case("lora", new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 });
        yield return Case("rslora", new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseRslora = true });
        yield return Case("dora", new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseDora = true });
        yield return Case("pissa", new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, InitLoraWeights = LoraInitialization.Pissa });
        yield return Case("loraplus", new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, LoraPlusLearningRateRatio = 16 });
        yield return Case("vera", new VeraOptions { Rank = 16, DInitial = 1 });
        yield return Case("ia3", new IA3Options());
        yield return Case("bitfit", new BitFitOptions());
        yield return Case("full", new FullFineTuningOptions());
        yield return Case("bottleneck", new BottleneckOptions { Placement = BottleneckOptions.Houlsby, NonLinearity = "gelu" });
        yield return Case("prompt", new PromptTuningOptions { NumVirtualTokens = 5 });
        yield return Case("prefix", new PrefixTuningOptions { NumVirtualTokens = 5, PrefixProjection = true });
    }

    [TestCaseSource(nameof(Methods))]
    public void ExportScoresAsTheModelDoes(PeftMethodOptions method)
    {
        var ml = new MLContext(1);
        using var model = Train(ml, method, pairs: false);
        var trained = model.Score(sentences, null);
        Perturb(model);
        var expected = model.Score(sentences, null);
        var moved = MethodTraining.MaxDifference(trained, expected);
        Assert.That(moved, Is.GreaterThan(10 * Tolerance), "the noise on the method's parameters must change the scores, or the comparison proves nothing");

        var path = TempFile(".onnx");
        try
        {
            ml.Model.ExportPeftToOnnx(model, path);
            Assert.That(model.Score(sentences, null), Is.EqualTo(expected), "exporting leaves the model scoring exactly as before");

            var onnxRuntime = RunOnnxRuntime(path, model, sentences, null);
            var applyOnnx = RunApplyOnnxModel(ml, path, model, sentences);
            double runtimeDiff = MethodTraining.MaxDifference(onnxRuntime, expected), mlnetDiff = MethodTraining.MaxDifference(applyOnnx, expected);
            TestContext.Out.WriteLine($"{method.PeftType}: the noise moved the scores by {moved:E2}; |ONNX Runtime - ours| {runtimeDiff:E2}, |ApplyOnnxModel - ours| {mlnetDiff:E2}");
            Assert.That(runtimeDiff, Is.LessThanOrEqualTo(Tolerance));
            Assert.That(mlnetDiff, Is.LessThanOrEqualTo(Tolerance));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void ExportOfAModelOnTheFirstLayersOfItsBaseScoresAsTheModelDoes()
    {
        var ml = new MLContext(1);
        using var model = Train(ml, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }, pairs: false, BaseModelSource.MiniLM().WithLayers(2));
        Perturb(model);
        var expected = model.Score(sentences, null);
        var path = TempFile(".onnx");
        try
        {
            ml.Model.ExportPeftToOnnx(model, path);
            var onnxRuntime = RunOnnxRuntime(path, model, sentences, null);
            double diff = MethodTraining.MaxDifference(onnxRuntime, expected);
            TestContext.Out.WriteLine($"MiniLM's first 2 layers: |ONNX Runtime - ours| {diff:E2}");
            Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
            // Embeddings 47 MB and 7 MB a layer: all six layers would make about 90 MB.
            Assert.That(new FileInfo(path).Length, Is.LessThan(75_000_000), "the graph holds two of MiniLM's six layers, not all of them");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void MetadataDescribesInputsLabelsAndMethod()
    {
        var ml = new MLContext(1);
        using var model = Train(ml, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseDora = true }, pairs: false);
        var path = TempFile(".onnx");
        try
        {
            ml.Model.ExportPeftToOnnx(model, path);
            using var session = new InferenceSession(path);
            Assert.That(session.InputMetadata.Keys, Is.EqualTo(new[] { "input_ids", "attention_mask" }));
            Assert.That(session.InputMetadata["input_ids"].Dimensions, Is.EqualTo(new[] { -1, -1 }), "dynamic batch and sequence axes");
            Assert.That(session.OutputMetadata.Keys, Is.EquivalentTo(new[] { "logits", "probabilities" }));
            var meta = session.ModelMetadata.CustomMetadataMap;
            Assert.That(meta["labels"], Is.EqualTo(System.Text.Json.JsonSerializer.Serialize(model.ClassNames)), "class names in key order");
            Assert.That(model.ClassNames, Is.EquivalentTo(new[] { "negative", "positive" }));
            Assert.That(meta["peft_method"], Is.EqualTo("DORA"));
            Assert.That(meta["adapter"], Does.StartWith("merged"));
            Assert.That(meta["max_sequence_length"], Is.EqualTo("32"));
            Assert.That(meta["lower_case"], Is.EqualTo("true"));
            Assert.That(meta["task"], Is.EqualTo("text-classification"));
            Assert.That(meta["vocab"].Split('\n')[0].TrimEnd('\r'), Is.EqualTo("[PAD]"));
            Assert.That(meta["base_model_sha256"], Has.Length.EqualTo(64));
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Loaded models of one base share its frozen weights and score with the adapter unmerged: the export merges into
    /// copies, so neither the exported model nor another model on the same base changes.
    /// </summary>
    [Test]
    public void ExportOfSharedBaseModelLeavesEveryModelUnchanged()
    {
        var ml = new MLContext(1);
        var zip = TempFile(".zip");
        var otherZip = TempFile(".zip");
        var onnx = TempFile(".onnx");
        try
        {
            using (var model = Train(ml, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseDora = true }, pairs: false))
            {
                Perturb(model);
                SaveModel(ml, model, zip);
            }
            using (var other = Train(ml, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }, pairs: false))
            {
                Perturb(other);
                SaveModel(ml, other, otherZip);
            }
            var loaded = (PeftTextClassificationTransformer)ml.Model.LoadPeft(zip, new PeftLoadOptions(), out _);
            var otherLoaded = (PeftTextClassificationTransformer)ml.Model.LoadPeft(otherZip, new PeftLoadOptions(), out _);
            try
            {
                Assert.That(loaded.SharesBaseModel && otherLoaded.SharesBaseModel, Is.True);
                var expected = loaded.Score(sentences, null);
                var otherExpected = otherLoaded.Score(sentences, null);
                ml.Model.ExportPeftToOnnx(loaded, onnx);
                Assert.That(loaded.Score(sentences, null), Is.EqualTo(expected));
                Assert.That(otherLoaded.Score(sentences, null), Is.EqualTo(otherExpected), "the other model's shared base weights are untouched");
                var diff = MethodTraining.MaxDifference(RunOnnxRuntime(onnx, loaded, sentences, null), expected);
                TestContext.Out.WriteLine($"shared-base DoRA: |ONNX Runtime - ours| {diff:E2}");
                Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
            }
            finally
            {
                loaded.Dispose();
                otherLoaded.Dispose();
            }
        }
        finally
        {
            foreach (var file in new[] { zip, otherZip, onnx }) File.Delete(file);
        }
    }

    /// <summary>Sentence pairs: the graph takes <c>token_type_ids</c> as well (segment 1 for the second text).</summary>
    [Test]
    public void PairModelTakesTokenTypeIds()
    {
        var ml = new MLContext(1);
        using var model = Train(ml, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }, pairs: true);
        Perturb(model);
        var second = sentences.Select((_, i) => sentences[(i + 7) % sentences.Count]).ToList();
        var expected = model.Score(sentences, second);
        var path = TempFile(".onnx");
        try
        {
            ml.Model.ExportPeftToOnnx(model, path);
            using (var session = new InferenceSession(path))
                Assert.That(session.InputMetadata.Keys, Is.EqualTo(new[] { "input_ids", "attention_mask", "token_type_ids" }));
            var diff = MethodTraining.MaxDifference(RunOnnxRuntime(path, model, sentences, second), expected);
            TestContext.Out.WriteLine($"pairs: |ONNX Runtime - ours| {diff:E2}");
            Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void ModelWithoutPeftTransformerIsRefused()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(train);
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var stream = new MemoryStream();
        var e = Assert.Throws<ArgumentException>(() => ml.Model.ExportPeftToOnnx(keys, stream));
        Assert.That(e!.Message, Does.Contain("no PEFT transformer"));
    }

    private PeftTextClassificationTransformer Train(MLContext ml, PeftMethodOptions method, bool pairs, BaseModelSource? baseModel = null)
    {
        IDataView data = pairs
            ? ml.Data.LoadFromEnumerable(train.Select((r, i) => new SentencePairRow { Sentence1 = r.Sentence, Sentence2 = train[(i + 3) % train.Count].Sentence, Label = r.Label }))
            : ml.Data.LoadFromEnumerable(train);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var options = new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = pairs ? nameof(SentencePairRow.Sentence1) : nameof(SentenceRow.Sentence),
            Sentence2ColumnName = pairs ? nameof(SentencePairRow.Sentence2) : null,
            Method = method,
            MaxEpoch = 1,
            BatchSize = 16,
            MaxSequenceLength = 32,
            LearningRate = method is FullFineTuningOptions ? 5e-5f : 2e-3f,
            KeepBaseForUnmerge = true,   // Perturb unmerges
            BaseModel = baseModel,
        };
        return ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(keyed);
    }

    /// <summary>
    /// Moves every parameter the method trains by Gaussian noise (half its mean magnitude, at least 0.025) and
    /// prepares the model for scoring again (unmerged first when it merged).
    /// </summary>
    private static void Perturb(PeftTextClassificationTransformer transformer)
    {
        var model = transformer.Model;
        if (model.SharedBase is null) model.Adapted.Unmerge();
        using (no_grad())
        using (var generator = new Generator(11))
        {
            foreach (var p in model.Adapted.Parameters())
            {
                using var scope = NewDisposeScope();
                var scale = Math.Max(p.Parameter.abs().mean().item<float>(), 0.05f) * 0.5f;
                p.Parameter.add_(randn(p.Parameter.shape, generator: generator).mul_(scale));
            }
        }
        model.PrepareForScoring();
    }

    /// <summary>Tokenizes as the transformer does and runs ONNX Runtime on batches of different sizes and lengths.</summary>
    private static float[][] RunOnnxRuntime(string path, PeftTextClassificationTransformer model, List<string> first, List<string>? second)
    {
        // The graph as written (no fusions); ApplyOnnxModel runs it with ONNX Runtime's default optimizations.
        using var sessionOptions = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(path, sessionOptions);
        var result = new List<float[]>();
        // Three batches: 7 rows, 1 row (no padding), the rest; each padded to its own longest row.
        foreach (var (start, count) in new[] { (0, 7), (7, 1), (8, first.Count - 8) })
        {
            var batch = model.Model.Encoder.Encode(first.GetRange(start, count), second?.GetRange(start, count));
            int[] dims = { batch.Rows, batch.Length };
            var inputs = new List<NamedOnnxValue>
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(batch.InputIds, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(batch.AttentionMask, dims)),
            };
            if (second is not null) inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(batch.TokenTypeIds, dims)));
            using var outputs = session.Run(inputs);
            var probabilities = outputs.Single(o => o.Name == "probabilities").AsTensor<float>();
            Assert.That(probabilities.Dimensions.ToArray(), Is.EqualTo(new[] { batch.Rows, model.ClassCount }));
            for (int r = 0; r < batch.Rows; r++) result.Add(Enumerable.Range(0, model.ClassCount).Select(c => probabilities[r, c]).ToArray());
        }
        return result.ToArray();
    }

    /// <summary>A row of token ids for ApplyOnnxModel (the vectors' size is set in the schema).</summary>
    private sealed class TokenRow
    {
#pragma warning disable IDE1006 // the ONNX input names
        public long[] input_ids { get; set; } = Array.Empty<long>();
        public long[] attention_mask { get; set; } = Array.Empty<long>();
#pragma warning restore IDE1006
    }

    /// <summary>ML.NET's ApplyOnnxModel on the same rows, padded to one length (ML.NET feeds fixed-size vectors, one row at a time).</summary>
    private static float[][] RunApplyOnnxModel(MLContext ml, string path, PeftTextClassificationTransformer model, List<string> first)
    {
        var batch = model.Model.Encoder.Encode(first);
        int length = batch.Length;
        var rows = Enumerable.Range(0, batch.Rows).Select(r => new TokenRow
        {
            input_ids = batch.InputIds.AsSpan(r * length, length).ToArray(),
            attention_mask = batch.AttentionMask.AsSpan(r * length, length).ToArray(),
        }).ToList();
        var schema = SchemaDefinition.Create(typeof(TokenRow));
        schema[nameof(TokenRow.input_ids)].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, length);
        schema[nameof(TokenRow.attention_mask)].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, length);
        var data = ml.Data.LoadFromEnumerable(rows, schema);
        var shapes = new Dictionary<string, int[]> { ["input_ids"] = new[] { 1, length }, ["attention_mask"] = new[] { 1, length } };
        var onnx = ml.Transforms.ApplyOnnxModel(new[] { "probabilities" }, new[] { "input_ids", "attention_mask" }, path, shapes, gpuDeviceId: null, fallbackToCpu: false, recursionLimit: 100).Fit(data);
        try
        {
            return onnx.Transform(data).GetColumn<float[]>("probabilities").ToArray();
        }
        finally
        {
            onnx.Dispose();
        }
    }

    private static void SaveModel(MLContext ml, ITransformer model, string path)
    {
        var schema = ml.Data.LoadFromEnumerable(new[] { new SentenceRow() }).Schema;
        ml.Model.Save(model, schema, path);
    }

    private static string TempFile(string extension) => Path.Combine(Path.GetTempPath(), $"peft-onnx-{Guid.NewGuid():N}{extension}");
}
