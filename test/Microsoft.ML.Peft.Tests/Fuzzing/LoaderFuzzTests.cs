using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using NUnit.Framework;
using SixLabors.ImageSharp.Formats.Png;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// Loader fuzzing of saved models: each test mutates one valid model zip for a bounded time (<see cref="ModelZipFuzzer.Budget"/>)
/// with a fixed seed, and every mutation must either load and score finite values or be refused with a documented
/// exception (<see cref="FuzzRun.IsDocumented"/>), without a hang or unbounded memory.
/// </summary>
[TestFixture]
[NonParallelizable]
public class LoaderFuzzTests
{
    private static readonly string[] Sentences = { "the movie was good", "awful plot and boring actor", "", "great great great" };

    internal static void Dispose(ITransformer model)
    {
        if (model is IEnumerable<ITransformer> chain)
            foreach (var t in chain) (t as IDisposable)?.Dispose();
        (model as IDisposable)?.Dispose();
    }

    /// <summary>
    /// Transforms <paramref name="rows"/> with a loaded model and reads every score: null when each is finite, else what is
    /// wrong. The model is disposed. A chain whose entries were moved around can load as another valid chain that asks
    /// for other input columns (or a model whose saved column names were changed): the schema check refusing the input
    /// in <c>Transform</c> (ML.NET's convention, an <see cref="ArgumentOutOfRangeException"/> naming the column) is an answer too.
    /// </summary>
    internal static string? Score<TRow, TOutput>(ITransformer model, IEnumerable<TRow> rows, Func<TOutput, float[]> scores)
        where TRow : class
        where TOutput : class, new()
    {
        try
        {
            var ml = new MLContext(1);
            var input = ml.Data.LoadFromEnumerable(rows);
            IEnumerable<TOutput> output;
            try
            {
                output = ml.Data.CreateEnumerable<TOutput>(model.Transform(input), reuseRowObject: false);
            }
            catch (Exception e) when (e is ArgumentOutOfRangeException
                || (e is InvalidOperationException && e.TargetSite?.DeclaringType?.Assembly is { } thrower
                    && thrower != typeof(Format.PeftLoadOptions).Assembly && thrower.GetName().Name!.StartsWith("Microsoft.ML", StringComparison.Ordinal)))
            {
                return null;
            }
            var values = output.Select(scores).ToList();
            int expected = rows.Count();
            if (values.Count != expected) return $"scored {values.Count} of {expected} rows";
            return values.Any(s => s.Length == 0 || s.Any(v => !float.IsFinite(v))) ? $"a non-finite score: [{string.Join(", ", values.SelectMany(s => s))}]" : null;
        }
        finally
        {
            Dispose(model);
        }
    }

    internal static string? ScoreText(ITransformer model) =>
        Score<SentenceRow, SentencePrediction>(model, Sentences.Select(s => new SentenceRow { Sentence = s, Label = "positive" }), p => p.Score);

    private static string? ScoreImages(ITransformer model) =>
        Score<ImageClassificationTests.ImageBytesRow, ImageClassificationTests.Prediction>(model, Images.Take(4), p => p.Score);

    private static string? ScoreRatings(ITransformer model) =>
        Score<RatingRow, RatingScore>(model, new[] { ("u1", "i1"), ("u2", "i3"), ("unknown", "i1"), ("u3", "nothing") }.Select(p => new RatingRow { User = p.Item1, Item = p.Item2 }),
            s => new[] { s.Score });

    private string work = null!;
    private static readonly List<ImageClassificationTests.ImageBytesRow> Images = Enumerable.Range(0, 16).Select(i => new ImageClassificationTests.ImageBytesRow
    {
        Image = ImageTestImages.Encode(ImageTestImages.Rgb(40, 36, (x, y) => i % 2 == 0 ? ((byte)(x * 6), (byte)(y * 7), 40) : (200, (byte)(x * y), (byte)(y * 5))), new PngEncoder()),
        Label = i % 2 == 0 ? "gradient" : "red",
    }).ToList();

    [OneTimeSetUp]
    public void MakeDirectory() => work = Directory.CreateTempSubdirectory("peft-fuzz-").FullName;

    [OneTimeTearDown]
    public void RemoveDirectory() => Directory.Delete(work, recursive: true);

    /// <summary>A torchvision-style ResNet of width 8 with one block per stage, written as safetensors.</summary>
    internal static string WriteTinyResNet(string directory)
    {
        var path = Path.Combine(directory, "tiny-resnet.safetensors");
        var backbone = ConvAdapterTests.TinyResNet();
        using (var scope = NewDisposeScope())
        {
            var state = backbone.Model.state_dict();
            Safetensors.SaveStateDict(path, state);
        }
        backbone.Model.Dispose();
        return path;
    }



    [Test]
    public void ImageClassifierZip()
    {
        var ml = new MLContext(1);
        var options = new PeftImageClassificationTrainer.Options
        {
            BaseModel = ImageBaseModelSource.FromTorchvision(WriteTinyResNet(work)),
            EmbedBaseModel = true,
            ImageSize = 32,
            MaxEpoch = 1,
            BatchSize = 8,
        };
        var data = ml.Data.LoadFromEnumerable(Images);
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftImageClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(data);
        var file = Path.Combine(work, "image.zip");
        ml.Model.Save(model, data.Schema, file);
        Dispose(model);
        Assert.That(ScoreImages(new MLContext(1).Model.LoadPeft(file, new Format.PeftLoadOptions(), out _)), Is.Null, "the unmutated model scores");
        var run = new FuzzRun("image classifier (tiny ResNet embedded)", seed: 13, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        ModelZipFuzzer.Fuzz(run, File.ReadAllBytes(file), ScoreImages);
        run.Finish();
    }

    [Test]
    public void MatrixFactorizationZip()
    {
        var ml = new MLContext(1);
        var random = new Random(3);
        var rows = Enumerable.Range(0, 200).Select(_ => new RatingRow { User = $"u{random.Next(12)}", Item = $"i{random.Next(9)}", Label = 1 + random.Next(5) }).ToList();
        var options = MatrixFactorizationTests.Options();
        options.NumberOfIterations = 3;
        var data = ml.Data.LoadFromEnumerable(rows);
        var model = ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item"))
            .Append(ml.Regression.Trainers.PeftMatrixFactorization(options)).Fit(data);
        var file = Path.Combine(work, "mf.zip");
        ml.Model.Save(model, data.Schema, file);
        Dispose(model);
        Assert.That(ScoreRatings(new MLContext(1).Model.LoadPeft(file, new Format.PeftLoadOptions(), out _)), Is.Null, "the unmutated model scores");
        var run = new FuzzRun("matrix factorisation recommender", seed: 14, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        ModelZipFuzzer.Fuzz(run, File.ReadAllBytes(file), ScoreRatings);
        run.Finish();
    }

    [Test]
    public void TextClassifierZip()
    {
        var asset = Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "format-v2", "tiny-classifier.zip");
        var original = File.ReadAllBytes(asset);
        Assert.That(ScoreText(new MLContext(1).Model.LoadPeft(asset, new Format.PeftLoadOptions(), out _)), Is.Null, "the unmutated model scores");
        var run = new FuzzRun("text classifier (format 2, base embedded)", seed: 12, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        ModelZipFuzzer.Fuzz(run, original, ScoreText);
        run.Finish();
    }
}
