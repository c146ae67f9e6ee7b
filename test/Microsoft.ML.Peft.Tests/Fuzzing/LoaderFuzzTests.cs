using NUnit.Framework;

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

    /// <summary>Scores a few sentences; null when every score is finite.</summary>
    internal static string? ScoreText(ITransformer model)
    {
        try
        {
            var ml = new MLContext(1);
            var data = ml.Data.LoadFromEnumerable(Sentences.Select(s => new SentenceRow { Sentence = s, Label = "positive" }));
            var scores = ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Score).ToList();
            if (scores.Count != Sentences.Length) return $"scored {scores.Count} of {Sentences.Length} rows";
            return scores.Any(s => s.Length == 0 || s.Any(v => !float.IsFinite(v))) ? $"a non-finite score: [{string.Join(", ", scores.SelectMany(s => s))}]" : null;
        }
        catch (ArgumentOutOfRangeException e) when (e.TargetSite?.Name == "CheckInput" || e.Message.Contains("column", StringComparison.OrdinalIgnoreCase))
        {
            // Entries moved between the chain's transforms can make another valid chain, which asks for other input columns:
            // ML.NET's schema check says which, before anything is scored.
            return null;
        }
        finally
        {
            Dispose(model);
        }
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
