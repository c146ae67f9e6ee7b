using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.LinearProbe;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>A sentence pair with a similarity score, as the tests feed it to ML.NET.</summary>
public sealed class PairRow
{
    public string Sentence1 { get; set; } = "";
    public string Sentence2 { get; set; } = "";
    public float Label { get; set; }
}

/// <summary>What a PredictionEngine returns for a sentence pair.</summary>
public sealed class PairScore
{
    public float Score { get; set; }
}

/// <summary>PeftSentenceSimilarity on the tiny BERT: both architectures, saving, scoring, bad input; and the correlation metrics.</summary>
[TestFixture]
[NonParallelizable]
public class SentenceSimilarityTests
{
    private static readonly string[] Words = "the a movie film plot actor fun boring good bad great awful".Split(' ');
    private string tinyBert = "";

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void DeleteTinyBert()
    {
        if (Directory.Exists(tinyBert)) Directory.Delete(tinyBert, recursive: true);
    }

    /// <summary>Pairs of four-word sentences; the second keeps k of the first's words (k = 0..4) and the label is 5k/4.</summary>
    internal static List<PairRow> TinyPairs(int count, int seed)
    {
        var random = new Random(seed);
        var rows = new List<PairRow>();
        for (int i = 0; i < count; i++)
        {
            var a = Enumerable.Range(0, 4).Select(_ => Words[random.Next(Words.Length)]).ToArray();
            int kept = i % 5;
            var b = a.Select((w, j) => j < kept ? w : Words[random.Next(Words.Length)]).ToArray();
            rows.Add(new PairRow { Sentence1 = string.Join(' ', a), Sentence2 = string.Join(' ', b), Label = 5f * kept / 4 });
        }
        return rows;
    }

    private PeftSentenceSimilarityTrainer.Options Options(SimilarityArchitecture architecture) => new()
    {
        BaseModel = BaseModelSource.FromHuggingFace(tinyBert),
        Architecture = architecture,
        MaxEpoch = 3,
        BatchSize = 8,
        MaxSequenceLength = 16,
        LearningRate = 5e-3f,
    };

    private static float[] Scores(IDataView scored) =>
        scored.GetColumn<float>("Score").ToArray();

    // ---- Pearson and Spearman, by hand ----

    [Test]
    public void PearsonAndSpearmanMatchHandComputedValues()
    {
        double[] x = { 1, 2, 3, 4, 5 };
        double[] y = { 2, 4, 5, 4, 5 };
        // Pearson: deviations x -2,-1,0,1,2 and y -2,0,1,0,1: sxy = 6, sxx = 10, syy = 6, r = 6 / sqrt(60).
        Assert.That(Correlation.Pearson(x, y), Is.EqualTo(6 / Math.Sqrt(60)).Within(1e-12));
        // Spearman: y's ranks with ties averaged are 1, 2.5, 4.5, 2.5, 4.5 (mean 3): deviations -2,-0.5,1.5,-0.5,1.5,
        // against x's ranks 1..5: sxy = 4 + 0.5 + 0 - 0.5 + 3 = 7, syy = 9, sxx = 10, rho = 7 / sqrt(90).
        Assert.That(Correlation.Spearman(x, y), Is.EqualTo(7 / Math.Sqrt(90)).Within(1e-12));
        Assert.That(Correlation.Ranks(new double[] { 3, 1, 3, 2 }), Is.EqualTo(new[] { 3.5, 1, 3.5, 2 }));
        Assert.That(Correlation.Ranks(new double[] { 7, 7, 7 }), Is.EqualTo(new[] { 2.0, 2, 2 }));

        // A monotone but not linear relation: Spearman 1, Pearson below 1; reversed, -1.
        double[] squares = { 1, 4, 9, 16, 100 };
        Assert.That(Correlation.Spearman(x, squares), Is.EqualTo(1).Within(1e-12));
        Assert.That(Correlation.Pearson(x, squares), Is.LessThan(0.95));
        Assert.That(Correlation.Spearman(x, squares.Reverse().ToArray()), Is.EqualTo(-1).Within(1e-12));
        Assert.That(Correlation.Pearson(x, x.Select(v => 3 - 2 * v).ToArray()), Is.EqualTo(-1).Within(1e-12));
        // A constant series has no correlation.
        Assert.That(Correlation.Pearson(x, new double[] { 2, 2, 2, 2, 2 }), Is.NaN);
        Assert.Throws<ArgumentException>(() => Correlation.Pearson(x, new double[] { 1, 2 }));
    }

    [Test]
    public void PearsonSquaredIsMLNetsRSquaredOfTheLeastSquaresLine()
    {
        // ML.NET's regression evaluator has no correlation, but R² of the least-squares line through (score, label) is r².
        var random = new Random(3);
        var scores = Enumerable.Range(0, 200).Select(_ => random.NextDouble() * 5).ToArray();
        var labels = scores.Select(s => 0.5 * s + Math.Sin(7 * s) + random.NextDouble()).ToArray();
        double meanS = scores.Average(), meanL = labels.Average();
        double slope = scores.Zip(labels, (s, l) => (s - meanS) * (l - meanL)).Sum() / scores.Sum(s => (s - meanS) * (s - meanS));
        double intercept = meanL - slope * meanS;
        var ml = new MLContext(1);
        var fitted = ml.Data.LoadFromEnumerable(scores.Zip(labels, (s, l) => new PairRow { Label = (float)l, Sentence1 = "", Sentence2 = "" })
            .Select((r, i) => new LabelScore { Label = r.Label, Score = (float)(intercept + slope * scores[i]) }));
        var rSquared = ml.Regression.Evaluate(fitted).RSquared;
        double r = Correlation.Pearson(scores, labels.Select(l => (double)(float)l).ToArray());
        Assert.That(r * r, Is.EqualTo(rSquared).Within(1e-5));

        var raw = ml.Data.LoadFromEnumerable(scores.Select((s, i) => new LabelScore { Label = (float)labels[i], Score = (float)s }));
        var metrics = ml.Regression.EvaluateSentenceSimilarity(raw);
        Assert.That(metrics.Pearson, Is.EqualTo(r).Within(1e-6));
        Assert.That(metrics.RowCount, Is.EqualTo(200));
    }

    private sealed class LabelScore
    {
        public float Label { get; set; }
        public float Score { get; set; }
    }

    [Test]
    public void EvaluatorSkipsMissingValuesAndNamesBadColumns()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new LabelScore { Label = 1, Score = 10 },
            new LabelScore { Label = float.NaN, Score = 0 },
            new LabelScore { Label = 2, Score = 30 },
            new LabelScore { Label = 3, Score = 20 },
            new LabelScore { Label = 4, Score = float.NaN },
        });
        var metrics = ml.Regression.EvaluateSentenceSimilarity(data);
        Assert.That(metrics.RowCount, Is.EqualTo(3));
        Assert.That(metrics.SkippedRowCount, Is.EqualTo(2));
        // Labels 1,2,3 against scores 10,30,20: ranks 1,3,2; rho = 1 - 6*(0+1+1)/(3*8) = 0.5.
        Assert.That(metrics.Spearman, Is.EqualTo(0.5).Within(1e-12));
        Assert.That(metrics.Pearson, Is.EqualTo(0.5).Within(1e-12));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.EvaluateSentenceSimilarity(data, scoreColumnName: "Nope"));
        Assert.That(e!.Message, Does.Contain("Nope").And.Contain("scoreColumnName"));
    }

    [Test]
    public void SettingsMapLabelsToTargetsAndBackWithoutClamping()
    {
        var cross = new SentenceSimilaritySettings { Architecture = SimilarityArchitecture.CrossEncoder, LabelMean = 2, LabelStd = 0.5, LabelMin = 0, LabelMax = 5 };
        Assert.That(cross.Target(3), Is.EqualTo(2f));
        Assert.That(cross.Score(2), Is.EqualTo(3f));
        Assert.That(cross.Score(8), Is.EqualTo(6f), "above the training range is allowed");
        var bi = new SentenceSimilaritySettings { Architecture = SimilarityArchitecture.BiEncoder, LabelMean = 2, LabelStd = 1, LabelMin = 1, LabelMax = 5 };
        Assert.That(bi.Target(5), Is.EqualTo(1f));
        Assert.That(bi.Target(3), Is.EqualTo(0.5f));
        Assert.That(bi.Score(0.25f), Is.EqualTo(2f));
        Assert.That(bi.Score(-0.5f), Is.EqualTo(-1f), "a negative cosine maps below the smallest training label");
    }

    // ---- Training, scoring, saving ----

    [TestCase(SimilarityArchitecture.CrossEncoder)]
    [TestCase(SimilarityArchitecture.BiEncoder)]
    public void TrainsScoresAndRoundTripsThroughModelSave(SimilarityArchitecture architecture)
    {
        var ml = new MLContext(1);
        var train = ml.Data.LoadFromEnumerable(TinyPairs(80, 1));
        var test = ml.Data.LoadFromEnumerable(TinyPairs(30, 2));
        var options = Options(architecture);
        options.MaxEpoch = 4;
        options.ValidationSet = test;
        var trainer = ml.Regression.Trainers.PeftSentenceSimilarity(options);
        var epochs = new List<Training.EpochMetrics>();
        trainer.EpochCompleted += (_, m) => epochs.Add(m);
        using var model = trainer.Fit(train);

        Assert.That(epochs, Has.Count.EqualTo(4));
        Assert.That(epochs.All(m => m.MetricName == "spearman" && m.ValidationMetric is >= -1 and <= 1));
        Assert.That(epochs[^1].TrainingLoss, Is.LessThan(epochs[0].TrainingLoss), "the loss falls");
        Assert.That(model.Architecture, Is.EqualTo(architecture));
        Assert.That(model.TrainableParameterCount, Is.GreaterThan(0).And.LessThan(model.TotalParameterCount));
        Assert.That((model.TrainingLabelMinimum, model.TrainingLabelMaximum), Is.EqualTo((0.0, 5.0)));

        var scored = model.Transform(test);
        Assert.That(scored.Schema["Score"].Type, Is.EqualTo(NumberDataViewType.Single));
        var before = Scores(scored);
        Assert.That(before, Has.Length.EqualTo(30));
        Assert.That(before.All(float.IsFinite));
        Assert.That(before.Distinct().Count(), Is.GreaterThan(1));

        // PredictionEngine scores one row at a time, the same.
        var engine = ml.Model.CreatePredictionEngine<PairRow, PairScore>(model);
        var rows = TinyPairs(30, 2);
        for (int i = 0; i < 5; i++) Assert.That(engine.Predict(rows[i]).Score, Is.EqualTo(before[i]).Within(1e-4));

        var path = Path.Combine(Path.GetTempPath(), $"peft-ssim-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, train.Schema, path);
            var loaded = new MLContext(7).Model.Load(path, out var schema);
            try
            {
                var peft = (PeftSentenceSimilarityTransformer)loaded;
                Assert.That(peft.Architecture, Is.EqualTo(architecture));
                Assert.That(peft.TrainingHistory, Is.Empty);
                Assert.That(Scores(loaded.Transform(test)), Is.EqualTo(before).Within(1e-4));
                Assert.That(schema.GetColumnOrNull("Label"), Is.Not.Null);
            }
            finally
            {
                (loaded as IDisposable)?.Dispose();
            }
            using var zip = System.IO.Compression.ZipFile.OpenRead(path);
            Assert.That(zip.Entries.Any(e => e.FullName.EndsWith("Model.key") && new StreamReader(e.Open()).ReadToEnd().Contains("PEFTSSIM")));
            var adapter = zip.Entries.Single(e => e.FullName.EndsWith("Adapter.safetensors"));
            Assert.That(adapter.Length, Is.LessThan(model.TotalParameterCount * 4 / 2), "the adapters only, not the base model");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestCase(SimilarityArchitecture.CrossEncoder)]
    [TestCase(SimilarityArchitecture.BiEncoder)]
    public void TheSameSeedGivesTheSameScores(SimilarityArchitecture architecture)
    {
        float[] Run(int seed)
        {
            var ml = new MLContext(1);
            var options = Options(architecture);
            options.MaxEpoch = 1;
            options.Seed = seed;
            using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(40, 1)));
            return Scores(model.Transform(ml.Data.LoadFromEnumerable(TinyPairs(10, 2))));
        }
        var first = Run(1);
        Assert.That(Run(1), Is.EqualTo(first));
        Assert.That(Run(2), Is.Not.EqualTo(first));
    }

    [Test]
    public void BiEncoderEmbeddingsAreUnitNormAndGiveTheScoreAndRepeatedSentencesComeFromTheCache()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.BiEncoder);
        options.MaxEpoch = 1;
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(40, 1)));
        var embeddings = model.Embed(new[] { "the good movie", "a bad plot", "the good movie" });
        Assert.That(embeddings, Has.Length.EqualTo(3));
        foreach (var e in embeddings)
            Assert.That(Math.Sqrt(e.Sum(v => (double)v * v)), Is.EqualTo(1).Within(1e-5));
        Assert.That(embeddings[2], Is.EqualTo(embeddings[0]));
        Assert.That(embeddings[2], Is.Not.SameAs(embeddings[0]), "callers get their own arrays");

        double dot = embeddings[0].Zip(embeddings[1], (a, b) => (double)a * b).Sum();
        var expected = model.TrainingLabelMinimum + dot * (model.TrainingLabelMaximum - model.TrainingLabelMinimum);
        long hits = model.Cache.Hits;
        var pairs = new[]
        {
            new PairRow { Sentence1 = "the good movie", Sentence2 = "a bad plot" },
            new PairRow { Sentence1 = "the good movie", Sentence2 = "fun actor" },
        };
        var scores = Scores(model.Transform(ml.Data.LoadFromEnumerable(pairs)));
        Assert.That(scores[0], Is.EqualTo(expected).Within(1e-5));
        Assert.That(model.Cache.Hits - hits, Is.EqualTo(2), "both sentences embedded before come from the cache");
        Assert.That(model.Cache.Count, Is.EqualTo(3));
    }

    [Test]
    public void TheEmbeddingCacheIsBoundedAndDropsTheLeastRecentlyUsed()
    {
        var cache = new EmbeddingCache(2);
        cache.Add("a", new[] { 1f }, false);
        cache.Add("b", new[] { 2f }, true);
        Assert.That(cache.TryGet("a", out _, out _), Is.True); // a is now the most recent
        cache.Add("c", new[] { 3f }, false);
        Assert.That(cache.Count, Is.EqualTo(2));
        Assert.That(cache.TryGet("b", out _, out _), Is.False, "b was the least recently used");
        Assert.That(cache.TryGet("c", out var c, out _) && c[0] == 3f);
        Assert.That(cache.TryGet("a", out var a, out _) && a[0] == 1f);
        Assert.That((cache.Hits, cache.Misses), Is.EqualTo((3L, 1L)));
    }

    [Test]
    public void CrossEncoderOnBothOrdersScoresSymmetricallyAndSavesTheSetting()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.CrossEncoder);
        options.MaxEpoch = 1;
        var rows = TinyPairs(24, 1);
        var swapped = rows.Select(r => new PairRow { Sentence1 = r.Sentence2, Sentence2 = r.Sentence1, Label = r.Label }).ToList();
        using (var oneOrder = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(rows)))
        {
            // One order: the encoder reads "[CLS] a [SEP] b [SEP]" with token types, so swapping the sentences changes the score.
            Assert.That(Scores(oneOrder.Transform(ml.Data.LoadFromEnumerable(swapped))), Is.Not.EqualTo(Scores(oneOrder.Transform(ml.Data.LoadFromEnumerable(rows)))));
        }
        options.BothOrders = true;
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(rows));
        var forward = Scores(model.Transform(ml.Data.LoadFromEnumerable(rows)));
        Assert.That(Scores(model.Transform(ml.Data.LoadFromEnumerable(swapped))), Is.EqualTo(forward).Within(1e-4));
        var path = Path.Combine(Path.GetTempPath(), $"sim-both-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, null, path);
            using var loaded = (PeftSentenceSimilarityTransformer)ml.Model.Load(path, out _);
            Assert.That(Scores(loaded.Transform(ml.Data.LoadFromEnumerable(swapped))), Is.EqualTo(forward).Within(1e-4));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void CoSentPenalisesPairsOrderedAgainstTheirLabels()
    {
        float Loss(float[] cosine, float[] labels)
        {
            using var c = TorchSharp.torch.tensor(cosine);
            using var l = TorchSharp.torch.tensor(labels);
            using var loss = PeftSentenceSimilarityTrainer.CoSent(c, l);
            return loss.item<float>();
        }
        // One ordered couple (label 1 > label 0): log(1 + exp(20 (cos_1 - cos_0))).
        Assert.That(Loss(new[] { 0.9f, 0.1f }, new[] { 1f, 0f }), Is.EqualTo(Math.Log(1 + Math.Exp(-16))).Within(1e-6));
        Assert.That(Loss(new[] { 0.1f, 0.9f }, new[] { 1f, 0f }), Is.EqualTo(Math.Log(1 + Math.Exp(16))).Within(1e-4));
        // Equal labels give no term: log(1) = 0.
        Assert.That(Loss(new[] { 0.1f, 0.9f }, new[] { 2f, 2f }), Is.EqualTo(0).Within(1e-7));
        // Three pairs, labels 3 > 2 > 1: the couples (0,1), (0,2), (1,2).
        var cos = new[] { 0.5f, 0.6f, 0.2f };
        double expected = Math.Log(1 + Math.Exp(20 * (0.6 - 0.5)) + Math.Exp(20 * (0.2 - 0.5)) + Math.Exp(20 * (0.2 - 0.6)));
        Assert.That(Loss(cos, new[] { 3f, 2f, 1f }), Is.EqualTo(expected).Within(1e-4));
    }

    [Test]
    public void CrossEncoderHasNoEmbeddings()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.CrossEncoder);
        options.MaxEpoch = 1;
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(24, 1)));
        var e = Assert.Throws<InvalidOperationException>(() => model.Embed(new[] { "a" }));
        Assert.That(e!.Message, Does.Contain("BiEncoder"));
    }

    [Test]
    public void FullFineTuningTrainsEveryParameterOfABiEncoder()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.BiEncoder);
        options.MaxEpoch = 1;
        options.Method = new FullFineTuningOptions();
        options.LearningRate = 1e-4f;
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(24, 1)));
        Assert.That(model.TrainableParameterCount, Is.EqualTo(model.TotalParameterCount));
    }

    [Test]
    public void CancellingStopsTraining()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.CrossEncoder);
        options.MaxEpoch = 50;
        var trainer = ml.Regression.Trainers.PeftSentenceSimilarity(options);
        int epochs = 0;
        trainer.EpochCompleted += (_, _) =>
        {
            if (++epochs == 1) ml.CancelExecution();
        };
        Assert.Catch<OperationCanceledException>(() => trainer.Fit(ml.Data.LoadFromEnumerable(TinyPairs(32, 1))));
        Assert.That(epochs, Is.EqualTo(1));
    }

    // ---- Bad input ----

    private sealed class TextLabelRow
    {
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private sealed class OneSentenceRow
    {
        public string Sentence1 { get; set; } = "";
        public float Label { get; set; }
    }

    /// <summary>ML.NET's <c>SchemaShape.Create</c>, internal to it, as every estimator's <c>Fit</c> calls it.</summary>
    private static SchemaShape ShapeOf(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic, [typeof(DataViewSchema)])!
            .Invoke(null, [schema])!;

    [Test]
    public void MissingOrMistypedColumnsNameTheOption()
    {
        var ml = new MLContext(1);
        var trainer = ml.Regression.Trainers.PeftSentenceSimilarity(Options(SimilarityArchitecture.CrossEncoder));
        var noSecond = ml.Data.LoadFromEnumerable(new[] { new OneSentenceRow { Sentence1 = "a", Label = 1 } });
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(noSecond));
        Assert.That(e1!.Message, Does.Contain("Sentence2").And.Contain("Sentence2ColumnName"));
        Assert.Throws<ArgumentOutOfRangeException>(() => trainer.GetOutputSchema(ShapeOf(noSecond.Schema)));

        var textLabel = ml.Data.LoadFromEnumerable(new[] { new TextLabelRow { Sentence1 = "a", Sentence2 = "b", Label = "3.5" } });
        var e2 = Assert.Throws<ArgumentException>(() => trainer.Fit(textLabel));
        Assert.That(e2!.Message, Does.Contain("LabelColumnName").And.Contain("Single").And.Contain("ConvertType"));
        Assert.Throws<ArgumentException>(() => trainer.GetOutputSchema(ShapeOf(textLabel.Schema)));

        var options = Options(SimilarityArchitecture.CrossEncoder);
        options.Sentence2ColumnName = "Sentence1";
        var e3 = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftSentenceSimilarity(options));
        Assert.That(e3!.ParamName, Is.EqualTo("Sentence2ColumnName"));
    }

    [Test]
    public void NaNLabelsAreSkippedAndCountedAndASingleLabelValueIsAnError()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var rows = TinyPairs(20, 1);
        rows[3].Label = float.NaN;
        rows[7].Label = float.NaN;
        var options = Options(SimilarityArchitecture.BiEncoder);
        options.MaxEpoch = 1;
        using (ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(rows)))
        {
        }
        Assert.That(log, Has.Some.Contain("2 training rows with a missing (NaN) label were skipped"));

        var same = TinyPairs(10, 1).Select(r => new PairRow { Sentence1 = r.Sentence1, Sentence2 = r.Sentence2, Label = 2.5f }).ToList();
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(same)));
        Assert.That(e!.Message, Does.Contain("2.5").And.Contain("two distinct"));

        var allMissing = same.Select(r => new PairRow { Sentence1 = r.Sentence1, Sentence2 = r.Sentence2, Label = float.NaN }).ToList();
        var e2 = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(allMissing)));
        Assert.That(e2!.Message, Does.Contain("no row with a label").And.Contain("10 rows"));

        rows[3].Label = float.PositiveInfinity;
        var e3 = Assert.Throws<InvalidDataException>(() => ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(rows)));
        Assert.That(e3!.Message, Does.Contain("Row 4"));
    }

    [Test]
    public void AMethodThatTrainsNothingOfABiEncoderIsRefused()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.BiEncoder);
        options.Method = new LinearProbeOptions();
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(10, 1))));
        Assert.That(e!.ParamName, Is.EqualTo("Method"));
    }

    [Test]
    public void ScoringInputWithoutTheSecondColumnNamesIt()
    {
        var ml = new MLContext(1);
        var options = Options(SimilarityArchitecture.CrossEncoder);
        options.MaxEpoch = 1;
        using var model = ml.Regression.Trainers.PeftSentenceSimilarity(options).Fit(ml.Data.LoadFromEnumerable(TinyPairs(16, 1)));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Transform(ml.Data.LoadFromEnumerable(new[] { new OneSentenceRow { Sentence1 = "a" } })));
        Assert.That(e!.Message, Does.Contain("Sentence2ColumnName"));
    }
}
