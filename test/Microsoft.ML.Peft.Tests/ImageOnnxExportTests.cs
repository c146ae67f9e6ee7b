using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Samples;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Merged ONNX export of image classifiers: the exported ResNet-18 (adapter merged, batch normalisation folded, head and
/// softmax appended) run by ONNX Runtime and by ML.NET's ApplyOnnxModel on real Fashion-MNIST images gives the
/// transformer's own scores, for every method the image trainer accepts; the in-memory model is left as it was.
/// </summary>
[TestFixture]
public class ImageOnnxExportTests
{
    private const int Size = 32;
    private string root = null!;
    private List<ImageClassificationTests.ImagePathRow> train = null!, score = null!;

    public sealed class PixelRow
    {
        [ColumnName("image"), VectorType(3, Size, Size)]
        public float[] Image { get; set; } = Array.Empty<float>();
    }

    public sealed class OnnxScores
    {
        [ColumnName("probabilities")]
        public float[] Probabilities { get; set; } = Array.Empty<float>();
    }

    [OneTimeSetUp]
    public void WriteImages()
    {
        root = ImageTestImages.TempDirectory("peft-onnx-images");
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 28);
        train = Rows(FashionMnist.WriteClassFolders(Path.Combine(root, "train"), Enumerable.Range(0, 20).ToList(), pixels, labels));
        score = Rows(FashionMnist.WriteClassFolders(Path.Combine(root, "score"), Enumerable.Range(20, 8).ToList(), pixels, labels));
    }

    [OneTimeTearDown]
    public void RemoveImages() => Directory.Delete(root, recursive: true);

    private static List<ImageClassificationTests.ImagePathRow> Rows(IEnumerable<string> paths) =>
        paths.Select(p => new ImageClassificationTests.ImagePathRow { ImagePath = p, Label = Path.GetFileName(Path.GetDirectoryName(p))! }).ToList();

    private ITransformer Fit(MLContext ml, string method, bool trainBatchNorm)
    {
        var options = ImageClassificationTests.SmallOptions(PeftMethodNames.Create(method, forImages: true));
        options.ImageSize = Size;
        options.MaxEpoch = 1;
        options.BatchSize = 20;
        options.TrainBatchNorm = trainBatchNorm;
        return ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftImageClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(ml.Data.LoadFromEnumerable(train));
    }

    private static PeftImageClassificationTransformer Peft(ITransformer model) =>
        ((IEnumerable<ITransformer>)model).OfType<PeftImageClassificationTransformer>().Single();

    private float[][] Scores(MLContext ml, ITransformer model) =>
        ml.Data.CreateEnumerable<ImageClassificationTests.Prediction>(model.Transform(ml.Data.LoadFromEnumerable(score)), reuseRowObject: false)
            .Select(p => p.Score).ToArray();

    private static void Dispose(ITransformer model)
    {
        foreach (var t in (IEnumerable<ITransformer>)model) (t as IDisposable)?.Dispose();
    }

    /// <summary>
    /// Makes the adapter far from trivial (one epoch leaves LoRA's B near zero): random changes to what the method trains
    /// in the ResNet (and batch normalisation when trained), never the head, merged again as the transformer had it.
    /// </summary>
    private static void Perturb(PeftImageClassificationTransformer peft, int seed)
    {
        var model = peft.Model;
        Assert.That(model.SharedBase, Is.Null, "a freshly trained model owns its base weights and scores merged");
        model.Adapted.Unmerge();
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        {
            foreach (var p in model.TrainableParameters().Where(p => !p.Key.StartsWith("classifier.", StringComparison.Ordinal)))
            {
                var spread = p.Parameter.numel() > 1 ? p.Parameter.std().item<float>() : 0f;
                using var noise = randn(p.Parameter.shape, generator: generator, device: p.Parameter.device);
                p.Parameter.add_(noise.mul_(0.15 * spread + 0.02));
            }
        }
        model.Adapted.Merge();
    }

    /// <summary>The preprocessed images, stacked [n, 3, S, S], as the library's own preprocessing gives them.</summary>
    private float[] Pixels(PeftImageClassificationTransformer peft, out int count)
    {
        count = score.Count;
        return score.SelectMany(r => peft.PreprocessImage(File.ReadAllBytes(r.ImagePath))).ToArray();
    }

    private static float[][] RunOnnxRuntime(byte[] onnx, float[] pixels, int count, int side, string output = "probabilities")
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        using var session = new InferenceSession(onnx, options);
        var input = new DenseTensor<float>(pixels, new[] { count, 3, side, side });
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor("image", input) });
        var values = results.Single(r => r.Name == output).AsTensor<float>();
        Assert.That(values.Dimensions.ToArray(), Is.EqualTo(new[] { count, values.Dimensions[1] }));
        return Enumerable.Range(0, count).Select(i => Enumerable.Range(0, values.Dimensions[1]).Select(c => values[i, c]).ToArray()).ToArray();
    }

    private static float[][] RunApplyOnnxModel(MLContext ml, string onnxFile, float[] pixels, int count)
    {
        int per = 3 * Size * Size;
        var rows = Enumerable.Range(0, count).Select(i => new PixelRow { Image = pixels.AsSpan(i * per, per).ToArray() }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        using var transformer = ml.Transforms.ApplyOnnxModel(new[] { "probabilities" }, new[] { "image" }, onnxFile,
            new Dictionary<string, int[]> { ["image"] = new[] { 1, 3, Size, Size } }, gpuDeviceId: null, fallbackToCpu: false).Fit(data);
        return ml.Data.CreateEnumerable<OnnxScores>(transformer.Transform(data), reuseRowObject: false).Select(r => r.Probabilities).ToArray();
    }

    private static void AssertClose(float[][] actual, float[][] expected, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-4f), $"{what}, image {i}");
    }

    private static double MaxDifference(float[][] a, float[][] b) =>
        a.Zip(b, (x, y) => x.Zip(y, (u, v) => (double)Math.Abs(u - v)).Max()).Max();

    [TestCase("lora", false)]
    [TestCase("rslora", false)]
    [TestCase("ia3", false)]
    [TestCase("bitfit", false)]
    [TestCase("full", false)]
    [TestCase("probe", true)]
    public void ExportedModelScoresAsTheTransformerInOnnxRuntimeAndMlNet(string method, bool trainBatchNorm)
    {
        var ml = new MLContext(1);
        var model = Fit(ml, method, trainBatchNorm);
        try
        {
            var peft = Peft(model);
            var trained = Scores(ml, model);
            Perturb(peft, seed: 7);
            var expected = Scores(ml, model);
            var change = MaxDifference(trained, expected);
            TestContext.Out.WriteLine($"{method}: the perturbed adapter moves the probabilities by up to {change:F3}");
            Assert.That(change, Is.GreaterThan(0.01), "the adapter matters: an export that left it out would fail");

            var file = Path.Combine(root, $"{method}.onnx");
            ml.Model.ExportPeftToOnnx(model, file);
            var onnx = File.ReadAllBytes(file);
            Assert.That(Scores(ml, model), Is.EqualTo(expected), "the in-memory model scores exactly as before the export");

            var pixels = Pixels(peft, out int count);
            AssertClose(RunOnnxRuntime(onnx, pixels, count, Size), expected, "ONNX Runtime");
            AssertClose(RunApplyOnnxModel(ml, file, pixels, count), expected, "ApplyOnnxModel");
        }
        finally
        {
            Dispose(model);
        }
    }

    [Test]
    public void LoadedModelsSharingTheirBaseExportWithoutChangingIt()
    {
        var ml = new MLContext(1);
        var model = Fit(ml, "lora", trainBatchNorm: false);
        var zip = Path.Combine(root, "lora.zip");
        try
        {
            Perturb(Peft(model), seed: 11);
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(train).Schema, zip);
        }
        finally
        {
            Dispose(model);
        }
        var first = ml.Model.Load(zip, out _);
        var second = ml.Model.Load(zip, out _);
        try
        {
            var peft = Peft(first);
            Assert.That(peft.SharesBaseModel && Peft(second).SharesBaseModel, "loaded models share the base and score with the adapter unmerged");
            var (name, conv) = peft.Model.Adapted.Backbone.Convolutions().First(c => c.Module.ActiveAdapter is not null);
            Assert.That(conv.Merged, Is.False, name);
            using var baseWeight = conv.Weight.detach().clone();
            var expected = Scores(ml, first);
            var secondBefore = Scores(ml, second);

            using var stream = new MemoryStream();
            ml.Model.ExportPeftToOnnx(first, stream);
            var onnx = stream.ToArray();

            Assert.That(conv.Weight.detach().eq(baseWeight).all().item<bool>(), Is.True, $"{name}'s shared base weight is unchanged");
            Assert.That(conv.Merged, Is.False, $"{name} is still unmerged");
            Assert.That(Scores(ml, first), Is.EqualTo(expected), "the exported model scores exactly as before");
            Assert.That(Scores(ml, second), Is.EqualTo(secondBefore), "the model sharing its base scores exactly as before");

            var pixels = Pixels(peft, out int count);
            AssertClose(RunOnnxRuntime(onnx, pixels, count, Size), expected, "ONNX Runtime on the unmerged model's export");

            using var session = new InferenceSession(onnx);
            var metadata = session.ModelMetadata.CustomMetadataMap;
            Assert.That(System.Text.Json.JsonSerializer.Deserialize<string[]>(metadata["labels"]), Is.EqualTo(peft.ClassNames));
            Assert.That(metadata["image_size"], Is.EqualTo(Size.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            Assert.That(metadata["peft_method"], Is.EqualTo("LORA"));
            Assert.That(metadata["base_model_sha256"], Is.EqualTo(peft.Model.BaseModel.Sha256));
            Assert.That(metadata["channel_order"], Is.AnyOf("RGB", "BGR"));
            Assert.That(metadata, Does.ContainKey("mean").And.ContainKey("std").And.ContainKey("preprocessing"));
            Assert.That(session.InputMetadata["image"].Dimensions, Is.EqualTo(new[] { -1, 3, -1, -1 }), "dynamic batch, height and width");

            // The global average pool lets other sizes run (multiples of 32 for this CNTK-padded base): our own forward's logits.
            const int Larger = 64;
            using var generator = new Generator(3);
            using var images = randn(new long[] { 2, 3, Larger, Larger }, generator: generator);
            float[] logits;
            using (inference_mode())
            using (var output = peft.Model.Network.forward(images))
                logits = output.data<float>().ToArray();
            var exported = RunOnnxRuntime(onnx, images.data<float>().ToArray(), 2, Larger, "logits");
            int classes = peft.ClassCount;
            for (int i = 0; i < 2; i++)
                Assert.That(exported[i], Is.EqualTo(logits.AsSpan(i * classes, classes).ToArray()).Within(1e-3f), $"{Larger} x {Larger} image {i}");
        }
        finally
        {
            Dispose(first);
            Dispose(second);
        }
    }

    /// <summary>Int8 export covers text encoders only: asked for an image classifier, the library and the CLI say so and write nothing.</summary>
    [Test]
    public void Int8QuantizationIsRefusedClearly()
    {
        var ml = new MLContext(1);
        var model = Fit(ml, "lora", trainBatchNorm: false);
        var zip = Path.Combine(root, "int8.zip");
        try
        {
            using var stream = new MemoryStream();
            var e = Assert.Throws<NotSupportedException>(() =>
                ml.Model.ExportPeftToOnnx(model, stream, new PeftOnnxExportOptions { Quantization = PeftOnnxQuantization.DynamicInt8 }));
            Assert.That(e!.Message, Does.Contain("Quantization = DynamicInt8").And.Contain("image classifiers").And.Contain("PeftOnnxQuantization.None"));
            Assert.That(stream.Length, Is.Zero, "nothing written");
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(train).Schema, zip);
        }
        finally
        {
            Dispose(model);
        }
        var onnx = Path.Combine(root, "int8.onnx");
        var run = CliProcess.Run(root, "export-onnx", "--model", zip, "--output", onnx, "--quantize", "int8");
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--quantize int8").And.Contain("image classifier"), run.ToString());
        Assert.That(File.Exists(onnx), Is.False);
    }
}
