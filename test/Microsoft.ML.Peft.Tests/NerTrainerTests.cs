using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Named-entity recognition on a tiny BERT: learning, windows, saving, prediction engines, seeds and bad input.</summary>
[TestFixture]
public class NerTrainerTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    public sealed class TaggedRow
    {
        public string Sentence { get; set; } = "";
        [VectorType] public string[] Label { get; set; } = Array.Empty<string>();
    }

    public sealed class WordsRow
    {
        [VectorType] public string[] Sentence { get; set; } = Array.Empty<string>();
    }

    public sealed class TagsPrediction
    {
        [VectorType] public string[] PredictedTags { get; set; } = Array.Empty<string>();
    }

    private static readonly string[] Filler = { "the", "a", "is", "was", "good", "bad", "plot", "and", "it", "this", "of", "to" };

    /// <summary>Sentences of filler words with "actor fun" (a PER entity, B-PER I-PER) and "movie" (B-ORG) inserted at random.</summary>
    internal static List<TaggedRow> Rows(int count, int seed, int length = 6)
    {
        var random = new Random(seed);
        var rows = new List<TaggedRow>();
        for (int i = 0; i < count; i++)
        {
            var words = new List<(string Word, string Tag)>();
            for (int w = 0; w < length; w++) words.Add((Filler[random.Next(Filler.Length)], "O"));
            int at = random.Next(words.Count + 1);
            words.InsertRange(at, new[] { ("actor", "B-PER"), ("fun", "I-PER") });
            if (random.Next(2) == 0) words.Insert(random.Next(words.Count + 1), ("movie", "B-ORG"));
            // Keep "movie" from splitting the PER entity.
            var text = words.Select(w => w.Word).ToList();
            int actor = text.IndexOf("actor");
            if (text[actor + 1] != "fun") continue;
            rows.Add(new TaggedRow { Sentence = string.Join(' ', text), Label = words.Select(w => w.Tag).ToArray() });
        }
        return rows;
    }

    private PeftNamedEntityRecognitionTrainer.Options Options() => new()
    {
        BaseModel = BaseModelSource.FromHuggingFace(tinyBert),
        MaxEpoch = 6,
        BatchSize = 8,
        MaxSequenceLength = 24,
        WindowOverlap = 6,
        LearningRate = 5e-3f,
    };

    private static IEstimator<ITransformer> Pipeline(MLContext ml, PeftNamedEntityRecognitionTrainer.Options options) =>
        ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options));

    private static string[][] Tags(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<TagsPrediction>(
            ml.Transforms.Conversion.MapKeyToValue("PredictedTags", "PredictedLabel").Fit(model.Transform(data)).Transform(model.Transform(data)),
            reuseRowObject: false).Select(p => p.PredictedTags).ToArray();

    [Test]
    public void LearnsEntitiesAndTagsEveryWord()
    {
        var ml = new MLContext(1);
        var train = ml.Data.LoadFromEnumerable(Rows(200, seed: 1));
        var model = Pipeline(ml, Options()).Fit(train);
        var testRows = Rows(60, seed: 2);
        var predicted = Tags(ml, model, ml.Data.LoadFromEnumerable(testRows));
        Assert.That(predicted.Select(p => p.Length), Is.EqualTo(testRows.Select(r => r.Label.Length)));
        var metrics = EntityScoring.Compute(testRows.Select((r, i) => ((IReadOnlyList<string>)r.Label, (IReadOnlyList<string>)predicted[i])));
        TestContext.Out.WriteLine($"tiny BERT synthetic entity F1 {metrics.F1:F3}");
        Assert.That(metrics.F1, Is.GreaterThan(0.8));
    }

    [Test]
    public void LongSentencesAreCutIntoWindowsAndNoWordIsDropped()
    {
        var ml = new MLContext(1);
        var options = Options();
        options.MaxEpoch = 4;
        var model = Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(Rows(160, seed: 3)));
        // 60 filler words plus the entities: several windows of 24 tokens.
        var longRows = Rows(4, seed: 4, length: 60);
        var predicted = Tags(ml, model, ml.Data.LoadFromEnumerable(longRows));
        for (int i = 0; i < longRows.Count; i++)
        {
            Assert.That(predicted[i], Has.Length.EqualTo(longRows[i].Label.Length));
            int actor = longRows[i].Sentence.Split(' ').ToList().IndexOf("actor");
            Assert.That(predicted[i][actor], Is.EqualTo("B-PER"), $"sentence {i}: the entity deep inside a long sentence is found");
        }
    }

    [Test]
    public void WindowsCoverEveryWordOnceWithinTheLength()
    {
        var vocab = System.Text.Encoding.UTF8.GetBytes(string.Join('\n', TinyBert.Vocabulary) + "\n");
        var encoder = new TextEncoder(vocab, lowerCase: true, maxLength: 10);
        // "abc" is three pieces (a ##b ##c); the budget is 8 pieces a window.
        var words = Enumerable.Range(0, 15).Select(i => i % 3 == 0 ? "abc" : "the").ToArray();
        var tokens = WordWindows.Tokenize(encoder, words);
        var windows = WordWindows.Split(0, tokens, encoder, overlap: 3);
        Assert.That(windows, Has.Count.GreaterThan(2));
        Assert.That(windows.SelectMany(w => w.Words).OrderBy(w => w), Is.EqualTo(Enumerable.Range(0, words.Length)), "each word scored exactly once");
        foreach (var window in windows)
        {
            Assert.That(window.Row.Ids, Has.Length.LessThanOrEqualTo(10));
            Assert.That(window.Row.Ids[0], Is.EqualTo(encoder.ClassificationTokenId));
            Assert.That(window.Row.Ids[^1], Is.EqualTo(encoder.SeparatorTokenId));
            for (int i = 0; i < window.Words.Length; i++)
                Assert.That(window.Row.Ids[window.FirstPiecePositions[i]], Is.EqualTo(tokens.Pieces[window.Words[i]][0]), "position of the word's first piece");
        }
        // A word longer than a window keeps its first pieces and is counted.
        var cut = WordWindows.Tokenize(encoder, new[] { "abcdefghijkl" });
        Assert.That(cut.CutWords, Is.EqualTo(1));
        Assert.That(cut.Pieces[0], Has.Length.EqualTo(8));
    }

    [TestCase("word", 1)]
    [TestCase("Word", 2)]
    [TestCase("WORD", 3)]
    [TestCase("I", 2)]
    [TestCase("McDonald", 4)]
    [TestCase("1996-08-22", 0)]
    [TestCase("U.S.", 3)]
    public void CaseShapes(string word, int shape) => Assert.That(WordWindows.CaseShape(word), Is.EqualTo(shape));

    [Test]
    public void SavedModelPredictsTheSameAndWorksWithPredictionEngineOnPretokenisedWords()
    {
        var ml = new MLContext(1);
        var options = Options();
        options.MaxEpoch = 2;
        options.Sentence1ColumnName = "Sentence";
        var rows = Rows(80, seed: 5);
        var train = ml.Data.LoadFromEnumerable(rows.Select(r => new { Sentence = r.Sentence.Split(' '), r.Label }).Select(r => new WordsAndTags { Sentence = r.Sentence, Label = r.Label }));
        var model = Pipeline(ml, options).Fit(train);
        var tagger = ((IEnumerable<ITransformer>)model).OfType<PeftNamedEntityRecognitionTransformer>().Single();
        var path = Path.Combine(Path.GetTempPath(), $"ner-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(tagger, train.Schema, path);
            Assert.That(new FileInfo(path).Length, Is.LessThan(new FileInfo(Path.Combine(tinyBert, "model.safetensors")).Length / 2 + 200_000));
            using var loaded = (PeftNamedEntityRecognitionTransformer)ml.Model.Load(path, out _);
            var sentences = rows.Take(10).Select(r => (IReadOnlyList<string>)r.Sentence.Split(' ')).ToList();
            Assert.That(loaded.Predict(sentences), Is.EqualTo(tagger.Predict(sentences)));
            Assert.That(loaded.Tags, Is.EqualTo(tagger.Tags));

            var engine = ml.Model.CreatePredictionEngine<WordsRow, KeysPrediction>(loaded);
            var one = engine.Predict(new WordsRow { Sentence = sentences[0].ToArray() });
            Assert.That(one.PredictedLabel.Select(k => loaded.Tags[(int)k - 1]), Is.EqualTo(tagger.Predict(sentences.Take(1).ToList())[0]));
            Assert.That(engine.Predict(new WordsRow { Sentence = Array.Empty<string>() }).PredictedLabel, Is.Empty, "an empty sentence has no tags");
        }
        finally
        {
            File.Delete(path);
            tagger.Dispose();
        }
    }

    public sealed class WordsAndTags
    {
        [VectorType] public string[] Sentence { get; set; } = Array.Empty<string>();
        [VectorType] public string[] Label { get; set; } = Array.Empty<string>();
    }

    public sealed class KeysPrediction
    {
        [VectorType] public uint[] PredictedLabel { get; set; } = Array.Empty<uint>();
    }

    [Test]
    public void SameSeedSameModel()
    {
        var rows = Rows(60, seed: 6);
        string[][] Run()
        {
            var ml = new MLContext(1);
            var options = Options();
            options.MaxEpoch = 1;
            return Tags(ml, Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(rows)), ml.Data.LoadFromEnumerable(rows.Take(20)));
        }
        Assert.That(Run(), Is.EqualTo(Run()));
    }

    private Exception FitError(IEnumerable<TaggedRow> rows, Action<PeftNamedEntityRecognitionTrainer.Options>? change = null)
    {
        var ml = new MLContext(1);
        var options = Options();
        options.MaxEpoch = 1;
        change?.Invoke(options);
        return Assert.Catch(() => Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(rows)))!;
    }

    [Test]
    public void LabelCountNotMatchingTheWordsNamesTheRow()
    {
        var rows = Rows(5, seed: 7);
        rows[3].Label = rows[3].Label.Skip(1).ToArray();
        var e = FitError(rows);
        Assert.That(e.Message, Does.Contain("Row 4").And.Contain("'Label'").And.Contain("words"));
    }

    [Test]
    public void TagSetWithoutONamesTheTags()
    {
        var rows = Rows(5, seed: 8);
        foreach (var row in rows) row.Label = row.Label.Select(t => t == "O" ? "B-MISC" : t).ToArray();
        var e = FitError(rows);
        Assert.That(e, Is.InstanceOf<ArgumentException>());
        Assert.That(e.Message, Does.Contain("O"));
    }

    [Test]
    public void UnknownTagInTheValidationSetNamesRowAndWord()
    {
        var ml = new MLContext(1);
        var train = ml.Data.LoadFromEnumerable(Rows(20, seed: 9));
        var mapper = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var validationRows = Rows(3, seed: 10);
        validationRows[1].Label[0] = "B-LOC";
        var options = Options();
        options.MaxEpoch = 1;
        options.ValidationSet = mapper.Transform(ml.Data.LoadFromEnumerable(validationRows));
        var e = Assert.Catch(() => ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options).Fit(mapper.Transform(train)))!;
        Assert.That(e.Message, Does.Contain("Row 2 of the validation set").And.Contain("word 1"));
    }

    [Test]
    public void LabelThatIsNotAVectorOfKeysSaysHowToFixIt()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(5, seed: 11));
        var options = Options();
        var e = Assert.Catch(() => ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options).Fit(data))!;
        Assert.That(e.Message, Does.Contain("MapValueToKey").And.Contain("'Label'"));
    }

    [Test]
    public void EmptySentencesAreSkippedInTrainingAndGiveNoTags()
    {
        var ml = new MLContext(1);
        var rows = Rows(30, seed: 12);
        rows.Add(new TaggedRow { Sentence = "   ", Label = Array.Empty<string>() });
        var options = Options();
        options.MaxEpoch = 1;
        var model = Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(rows));
        var predicted = Tags(ml, model, ml.Data.LoadFromEnumerable(rows.TakeLast(2)));
        Assert.That(predicted[1], Is.Empty);
        Assert.That(predicted[0], Has.Length.EqualTo(rows[^2].Label.Length));
    }

    [Test]
    public void CasedVocabularyKeepsTheCaseAndNeedsNoCaseFeatures()
    {
        var cased = TinyBert.WriteDirectory();
        try
        {
            File.WriteAllText(Path.Combine(cased, "tokenizer_config.json"), "{\"do_lower_case\": false}");
            var ml = new MLContext(1);
            var options = Options();
            options.BaseModel = BaseModelSource.FromHuggingFace(cased);
            options.MaxEpoch = 1;
            using var uncasedModel = (PeftNamedEntityRecognitionTransformer)((IEnumerable<ITransformer>)Pipeline(ml, Options()).Fit(ml.Data.LoadFromEnumerable(Rows(20, seed: 13)))).Last();
            using var casedModel = (PeftNamedEntityRecognitionTransformer)((IEnumerable<ITransformer>)Pipeline(ml, options).Fit(ml.Data.LoadFromEnumerable(Rows(20, seed: 13)))).Last();
            Assert.That(uncasedModel.CaseFeatures, Is.True, "uncased vocabulary: the head gets the case shapes");
            Assert.That(casedModel.CaseFeatures, Is.False, "cased vocabulary: the tokens keep the case");
            // The tiny vocabulary has lower-case entries only: a cased tokenizer maps "Actor" to [UNK], an uncased one to "actor".
            var casedEncoder = casedModel.Model.Encoder;
            var uncasedEncoder = uncasedModel.Model.Encoder;
            Assert.That(casedEncoder.Tokens("Actor"), Is.Not.EqualTo(uncasedEncoder.Tokens("Actor")));
            Assert.That(uncasedEncoder.Tokens("Actor"), Is.EqualTo(uncasedEncoder.Tokens("actor")));
        }
        finally
        {
            Directory.Delete(cased, recursive: true);
        }
    }
}
