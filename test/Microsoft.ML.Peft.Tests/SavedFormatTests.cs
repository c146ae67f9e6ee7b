using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Keeps a small model file saved by each format version (tiny BERT, base model embedded) with the scores it gave when
/// saved, so later versions of the library prove they still load it and predict the same.
/// </summary>
[TestFixture]
public class SavedFormatTests
{
    private static string AssetDirectory(int version) => Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", $"format-v{version}");
    private static string ModelPath => ModelPathOf(1);
    private static string ExpectedPath => ExpectedPathOf(1);
    private static string ModelPathOf(int version) => Path.Combine(AssetDirectory(version), "tiny-classifier.zip");
    private static string ExpectedPathOf(int version) => Path.Combine(AssetDirectory(version), "expected-scores.json");

    private sealed record Expected(List<string> Sentences, List<string> PredictedLabels, List<float[]> Scores);

    private static readonly string[] Sentences = { "the movie was good", "awful plot and boring actor", "it is not fun", "", "great great great" };

    [TestCase(1)]
    [TestCase(2)]
    public void ModelFileOfEachFormatVersionStillLoadsAndPredictsTheSame(int version)
    {
        Assert.That(File.Exists(ModelPathOf(version)), $"missing asset {ModelPathOf(version)}");
        var expected = JsonSerializer.Deserialize<Expected>(File.ReadAllText(ExpectedPathOf(version)))!;
        var ml = new MLContext(1);
        var model = ml.Model.Load(ModelPathOf(version), out _);
        var scored = Score(ml, model, expected.Sentences);
        for (int i = 0; i < expected.Sentences.Count; i++)
        {
            Assert.That(scored[i].PredictedLabel, Is.EqualTo(expected.PredictedLabels[i]), expected.Sentences[i]);
            Assert.That(scored[i].Score, Is.EqualTo(expected.Scores[i]).Within(1e-5f), expected.Sentences[i]);
        }
    }

    [Test]
    public void Version1ModelTrainedWithCudaLoadsOnTheCpu()
    {
        // Version 1 saved the training device; a file trained on a GPU must load where there is none.
        var copy = Path.Combine(Path.GetTempPath(), $"peft-v1-cuda-{Guid.NewGuid():N}.zip");
        File.Copy(ModelPath, copy);
        try
        {
            using (var zip = System.IO.Compression.ZipFile.Open(copy, System.IO.Compression.ZipArchiveMode.Update))
            {
                var entry = zip.Entries.Single(e => e.FullName.EndsWith("Metadata.json", StringComparison.Ordinal));
                string json;
                using (var reader = new BinaryReader(entry.Open())) json = reader.ReadString();
                Assert.That(json, Does.Contain("\"Device\":\"cpu\""));
                json = json.Replace("\"Device\":\"cpu\"", "\"Device\":\"cuda\"", StringComparison.Ordinal);
                var name = entry.FullName;
                entry.Delete();
                using var writer = new BinaryWriter(zip.CreateEntry(name).Open());
                writer.Write(json);
            }
            var expected = JsonSerializer.Deserialize<Expected>(File.ReadAllText(ExpectedPath))!;
            var ml = new MLContext(1);
            var scored = Score(ml, ml.Model.Load(copy, out _), expected.Sentences);
            for (int i = 0; i < expected.Sentences.Count; i++)
                Assert.That(scored[i].Score, Is.EqualTo(expected.Scores[i]).Within(1e-5f), expected.Sentences[i]);
        }
        finally
        {
            File.Delete(copy);
        }
    }

    private static List<SentencePrediction> Score(MLContext ml, ITransformer model, IEnumerable<string> sentences) =>
        ml.Data.CreateEnumerable<SentencePrediction>(
            model.Transform(ml.Data.LoadFromEnumerable(sentences.Select(s => new SentenceRow { Sentence = s, Label = "positive" }))),
            reuseRowObject: false).ToList();

    /// <summary>Writes the asset of the current format version. Run by hand only when a new format version is introduced (keep the old ones).</summary>
    [Test, Explicit("writes the current version's asset into the source tree")]
    public void RegenerateCurrentVersionAsset()
    {
        var tiny = TinyBert.WriteDirectory(seed: 11);
        try
        {
            var ml = new MLContext(1);
            var options = TinyTraining.Options(tiny);
            options.EmbedBaseModel = true;
            var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(64, 12));
            var model = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(data);
            int version = Microsoft.ML.Peft.Format.ModelFile.Version;
            Directory.CreateDirectory(AssetDirectory(version));
            ml.Model.Save(model, data.Schema, ModelPathOf(version));
            var scored = Score(ml, model, Sentences);
            var expected = new Expected(Sentences.ToList(), scored.Select(s => s.PredictedLabel).ToList(), scored.Select(s => s.Score).ToList());
            File.WriteAllText(ExpectedPathOf(version), JsonSerializer.Serialize(expected, new JsonSerializerOptions { WriteIndented = true }));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }
}
