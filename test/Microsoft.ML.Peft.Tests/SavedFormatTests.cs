using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Keeps a small model file saved by format version 1 (tiny BERT, base model embedded) with the scores it gave when
/// saved, so later versions of the library prove they still load it and predict the same.
/// </summary>
[TestFixture]
public class SavedFormatTests
{
    private static string AssetDirectory => Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "format-v1");
    private static string ModelPath => Path.Combine(AssetDirectory, "tiny-classifier.zip");
    private static string ExpectedPath => Path.Combine(AssetDirectory, "expected-scores.json");

    private sealed record Expected(List<string> Sentences, List<string> PredictedLabels, List<float[]> Scores);

    private static readonly string[] Sentences = { "the movie was good", "awful plot and boring actor", "it is not fun", "", "great great great" };

    [Test]
    public void Version1ModelFileStillLoadsAndPredictsTheSame()
    {
        Assert.That(File.Exists(ModelPath), $"missing asset {ModelPath}");
        var expected = JsonSerializer.Deserialize<Expected>(File.ReadAllText(ExpectedPath))!;
        var ml = new MLContext(1);
        var model = ml.Model.Load(ModelPath, out _);
        var scored = Score(ml, model, expected.Sentences);
        for (int i = 0; i < expected.Sentences.Count; i++)
        {
            Assert.That(scored[i].PredictedLabel, Is.EqualTo(expected.PredictedLabels[i]), expected.Sentences[i]);
            Assert.That(scored[i].Score, Is.EqualTo(expected.Scores[i]).Within(1e-5f), expected.Sentences[i]);
        }
    }

    private static List<SentencePrediction> Score(MLContext ml, ITransformer model, IEnumerable<string> sentences) =>
        ml.Data.CreateEnumerable<SentencePrediction>(
            model.Transform(ml.Data.LoadFromEnumerable(sentences.Select(s => new SentenceRow { Sentence = s, Label = "positive" }))),
            reuseRowObject: false).ToList();

    /// <summary>Writes the asset anew. Run by hand only when a new format version is introduced (keep the old one).</summary>
    [Test, Explicit("writes the version-1 asset into the source tree")]
    public void RegenerateVersion1Asset()
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
            Directory.CreateDirectory(AssetDirectory);
            ml.Model.Save(model, data.Schema, ModelPath);
            var scored = Score(ml, model, Sentences);
            var expected = new Expected(Sentences.ToList(), scored.Select(s => s.PredictedLabel).ToList(), scored.Select(s => s.Score).ToList());
            File.WriteAllText(ExpectedPath, JsonSerializer.Serialize(expected, new JsonSerializerOptions { WriteIndented = true }));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }
}
