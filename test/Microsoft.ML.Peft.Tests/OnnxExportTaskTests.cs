using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The ONNX export of the other text tasks on the tiny BERT (the encoder itself is checked on MiniLM in
/// <see cref="OnnxExportTests"/>): sentence similarity (cross-encoder score, bi-encoder embedding) and named-entity
/// recognition (per-position tag probabilities with case features), each against the task's own TorchSharp forward pass.
/// </summary>
[TestFixture]
public class OnnxExportTaskTests
{
    private const double Tolerance = 1e-4;
    private string tinyBert = "";

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void DeleteTinyBert()
    {
        if (Directory.Exists(tinyBert)) Directory.Delete(tinyBert, recursive: true);
    }

    [Test]
    public void CrossEncoderScoreMatches()
    {
        var ml = new MLContext(1);
        var pairs = SentenceSimilarityTests.TinyPairs(24, 3);
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(SimilarityOptions(SimilarityArchitecture.CrossEncoder)).Fit(ml.Data.LoadFromEnumerable(pairs));
        Perturb(model.Model);
        var first = pairs.Select(p => p.Sentence1).ToList();
        var second = pairs.Select(p => p.Sentence2).ToList();
        var expected = model.Score(first, second);
        var path = Export(ml, model);
        try
        {
            using var session = new InferenceSession(path);
            Assert.That(session.InputMetadata.Keys, Is.EqualTo(new[] { "input_ids", "attention_mask", "token_type_ids" }));
            var batch = model.Model.Encoder.Encode(first, second);
            using var outputs = session.Run(Inputs(batch.InputIds, batch.AttentionMask, batch.Rows, batch.Length, ("token_type_ids", batch.TokenTypeIds)));
            var scores = outputs.Single(o => o.Name == "score").AsTensor<float>().ToArray();
            var diff = scores.Zip(expected, (a, b) => Math.Abs(a - b)).Max();
            TestContext.Out.WriteLine($"cross-encoder: |ONNX Runtime - ours| {diff:E2} on scores from {expected.Min():F2} to {expected.Max():F2}");
            Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
            Assert.That(session.ModelMetadata.CustomMetadataMap["architecture"], Is.EqualTo("cross-encoder"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void BiEncoderEmbeddingMatches()
    {
        var ml = new MLContext(1);
        var pairs = SentenceSimilarityTests.TinyPairs(24, 3);
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(SimilarityOptions(SimilarityArchitecture.BiEncoder)).Fit(ml.Data.LoadFromEnumerable(pairs));
        Perturb(model.Model);
        var sentences = pairs.Select(p => p.Sentence1).Distinct().ToList();
        var expected = model.Embed(sentences);
        var path = Export(ml, model);
        try
        {
            using var session = new InferenceSession(path);
            Assert.That(session.InputMetadata.Keys, Is.EqualTo(new[] { "input_ids", "attention_mask" }));
            var batch = model.Model.Encoder.Encode(sentences);
            using var outputs = session.Run(Inputs(batch.InputIds, batch.AttentionMask, batch.Rows, batch.Length));
            var embeddings = outputs.Single(o => o.Name == "embedding").AsTensor<float>();
            int width = expected[0].Length;
            double diff = 0;
            for (int r = 0; r < sentences.Count; r++)
                for (int c = 0; c < width; c++) diff = Math.Max(diff, Math.Abs(embeddings[r, c] - expected[r][c]));
            TestContext.Out.WriteLine($"bi-encoder: |ONNX Runtime - ours| {diff:E2} over {sentences.Count} embeddings of {width}");
            Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void NerTagProbabilitiesMatchAtEveryWord()
    {
        var ml = new MLContext(1);
        var rows = NerTrainerTests.Rows(24, seed: 4);
        var options = new PeftNamedEntityRecognitionTrainer.Options
        {
            BaseModel = BaseModelSource.FromHuggingFace(tinyBert),
            KeepBaseForUnmerge = true,   // Perturb unmerges
            Method = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 },
            MaxEpoch = 1,
            BatchSize = 8,
            MaxSequenceLength = 8,
            WindowOverlap = 2,
            CaseFeatures = true,
        };
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        using var transformer = ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options).Fit(keyed);
        var model = transformer.Model;
        Perturb(model);
        // Mixed spellings, and sentences longer than one window (cut into several).
        var sentences = rows.Take(10).Select((r, i) => (IReadOnlyList<string>)r.Sentence.Split(' ')
            .Select((w, j) => (i + j) % 3 == 0 ? char.ToUpperInvariant(w[0]) + w[1..] : (i + j) % 5 == 0 ? w.ToUpperInvariant() : w).ToList()).ToList();
        var (windows, tokenized) = model.Prepare(sentences);
        Assert.That(windows.Count, Is.GreaterThan(sentences.Count), "some sentences take several windows");
        float[] expected;
        using (var mode = inference_mode())
        using (var logits = model.Logits(windows, tokenized))
        using (var probabilities = nn.functional.softmax(logits, 1))
            expected = probabilities.cpu().data<float>().ToArray();

        var path = Export(ml, transformer);
        try
        {
            using var session = new InferenceSession(path);
            Assert.That(session.InputMetadata.Keys, Is.EqualTo(new[] { "input_ids", "attention_mask", PeftNamedEntityRecognitionTransformer.OnnxCaseShapesInput }));
            var batch = model.Encoder.Pad(windows.Select(w => w.Row).ToList());
            var shapes = new long[batch.Rows * batch.Length];
            for (int r = 0; r < windows.Count; r++)
                for (int i = 0; i < windows[r].Words.Length; i++)
                    shapes[r * batch.Length + windows[r].FirstPiecePositions[i]] = tokenized[windows[r].Sentence].Shapes[windows[r].Words[i]];
            Assert.That(shapes.Distinct().Count(), Is.GreaterThan(2), "several case shapes occur");
            using var outputs = session.Run(Inputs(batch.InputIds, batch.AttentionMask, batch.Rows, batch.Length, (PeftNamedEntityRecognitionTransformer.OnnxCaseShapesInput, shapes)));
            var onnx = outputs.Single(o => o.Name == "probabilities").AsTensor<float>();
            int tags = model.Settings.Tags.Count, word = 0;
            double diff = 0;
            for (int r = 0; r < windows.Count; r++)
                foreach (var position in windows[r].FirstPiecePositions)
                {
                    for (int t = 0; t < tags; t++) diff = Math.Max(diff, Math.Abs(onnx[r, position, t] - expected[word * tags + t]));
                    word++;
                }
            Assert.That(word * tags, Is.EqualTo(expected.Length));
            TestContext.Out.WriteLine($"NER: |ONNX Runtime - ours| {diff:E2} over {word} words in {windows.Count} windows");
            Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private PeftSentenceSimilarityTrainer.Options SimilarityOptions(SimilarityArchitecture architecture) => new()
    {
        BaseModel = BaseModelSource.FromHuggingFace(tinyBert),
        KeepBaseForUnmerge = true,   // Perturb unmerges
        Architecture = architecture,
        Method = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 },
        MaxEpoch = 1,
        BatchSize = 8,
        MaxSequenceLength = 16,
    };

    private static string Export(MLContext ml, ITransformer model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peft-onnx-{Guid.NewGuid():N}.onnx");
        ml.Model.ExportPeftToOnnx(model, path);
        return path;
    }

    private static List<NamedOnnxValue> Inputs(long[] ids, long[] mask, int rows, int length, params (string Name, long[] Values)[] more)
    {
        int[] dims = { rows, length };
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids, dims)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(mask, dims)),
        };
        inputs.AddRange(more.Select(m => NamedOnnxValue.CreateFromTensor(m.Name, new DenseTensor<long>(m.Values, dims))));
        return inputs;
    }

    /// <summary>Moves the LoRA parameters by noise (B starts at zero) and prepares the model for scoring again.</summary>
    private static void Perturb(TextTaskModel model)
    {
        if (model.SharedBase is null) model.Adapted.Unmerge();
        using (no_grad())
        using (var generator = new Generator(5))
        {
            foreach (var p in model.Adapted.Parameters())
            {
                using var scope = NewDisposeScope();
                p.Parameter.add_(randn(p.Parameter.shape, generator: generator).mul_(0.2));
            }
        }
        model.PrepareForScoring();
    }
}
