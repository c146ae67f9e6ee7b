using System.Text;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>PeftNeuralCollaborativeFiltering on explicit ratings: learning, the bias-model start, saving, unknown ids, parameter names, bad input.</summary>
[TestFixture]
[NonParallelizable]
public class NeuralCollaborativeFilteringTests
{
    private const int Users = 40;
    private const int Items = 30;

    /// <summary>
    /// A nonlinear pattern: users and items each belong to one of three groups (drawn at random); a user rates items of
    /// its own group 4.5 and the others 1.5, plus N(0, 0.1²) noise. 70% of the cells, split 80/20 into train and test.
    /// </summary>
    private static (List<RatingRow> Train, List<RatingRow> Test) Groups(int seed)
    {
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var userGroup = Enumerable.Range(0, Users).Select(_ => random.Next(3)).ToArray();
        var itemGroup = Enumerable.Range(0, Items).Select(_ => random.Next(3)).ToArray();
        var train = new List<RatingRow>();
        var test = new List<RatingRow>();
        for (int u = 0; u < Users; u++)
        {
            for (int i = 0; i < Items; i++)
            {
                if (random.NextDouble() > 0.7) continue;
                var rating = (userGroup[u] == itemGroup[i] ? 4.5 : 1.5) + 0.1 * Normal();
                (random.NextDouble() < 0.8 ? train : test).Add(new RatingRow { User = $"u{u}", Item = $"i{i}", Label = (float)rating });
            }
        }
        return (train, test);
    }

    private static PeftNeuralCollaborativeFilteringTrainer.Options Options() => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        ApproximationRank = 8,
        HiddenLayerSizes = new[] { 16, 8 },
        Lambda = 0.001,
        LearningRate = 0.01,
        NumberOfIterations = 40,
        BatchSize = 64,
        ClampScores = false,
    };

    private static float[] Scores(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<RatingScore>(model.Transform(data), reuseRowObject: false).Select(s => s.Score).ToArray();

    private static double Rmse(IReadOnlyList<double> predictions, IReadOnlyList<RatingRow> rows) =>
        Math.Sqrt(predictions.Zip(rows, (p, r) => (p - r.Label) * (p - r.Label)).Average());

    [Test]
    public void LearnsANonlinearGroupPatternFarBetterThanTheMeanAndBiases()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = Groups(seed: 3);
        var seenUsers = train.Select(r => r.User).ToHashSet();
        var seenItems = train.Select(r => r.Item).ToHashSet();
        var known = test.Where(r => seenUsers.Contains(r.User) && seenItems.Contains(r.Item)).ToList();
        var losses = new List<double>();
        var trainer = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(Options());
        trainer.IterationCompleted += (_, e) => losses.Add(e.TrainingLoss);
        using var model = trainer.Fit(ml.Data.LoadFromEnumerable(train));
        var scores = Scores(ml, model, ml.Data.LoadFromEnumerable(known));

        // Baselines computed here: the global mean, and the best user + item bias model (alternating least squares on the training ratings).
        double mean = train.Average(r => r.Label);
        var userBias = seenUsers.ToDictionary(u => u, _ => 0.0);
        var itemBias = seenItems.ToDictionary(i => i, _ => 0.0);
        for (int sweep = 0; sweep < 20; sweep++)
        {
            foreach (var g in train.GroupBy(r => r.Item)) itemBias[g.Key] = g.Average(r => r.Label - mean - userBias[r.User]);
            foreach (var g in train.GroupBy(r => r.User)) userBias[g.Key] = g.Average(r => r.Label - mean - itemBias[r.Item]);
        }
        double meanRmse = Rmse(known.Select(_ => mean).ToList(), known);
        double biasRmse = Rmse(known.Select(r => mean + userBias[r.User] + itemBias[r.Item]).ToList(), known);
        double rmse = Rmse(scores.Select(s => (double)s).ToList(), known);
        TestContext.Out.WriteLine($"{known.Count} test ratings: global mean RMSE {meanRmse:F4}, biases {biasRmse:F4}, NCF {rmse:F4}; training loss {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.That(losses, Has.Count.EqualTo(40));
        Assert.That(losses[^1], Is.LessThan(losses[0] / 4));
        Assert.That(biasRmse, Is.GreaterThan(1.0), "user and item biases cannot express the group pattern");
        Assert.That(rmse, Is.LessThan(0.4 * biasRmse));
        Assert.That(rmse, Is.LessThan(0.4 * meanRmse));
        Assert.That(model.Feedback, Is.EqualTo(RecommendationFeedback.Explicit));
    }

    [Test]
    public void StartsAsTheShrunkBaselineBiasModel()
    {
        // mean = 13/4 = 3.25; item biases (residual sums / (n + 25)): i1 (1.75 + 0.75) / 27 = 0.0925926, i2 -2.5 / 27 = -0.0925926;
        // user biases ((r - mean - b_i) sums / (n + 10)): u1 (1.6574074 - 0.1574074) / 12 = 0.125, u2 0.6574074 / 11 = 0.0597643,
        // u3 -2.1574074 / 11 = -0.1961279.
        var ml = new MLContext(seed: 1);
        var rows = new[]
        {
            new RatingRow { User = "u1", Item = "i1", Label = 5 }, new RatingRow { User = "u1", Item = "i2", Label = 3 },
            new RatingRow { User = "u2", Item = "i1", Label = 4 }, new RatingRow { User = "u3", Item = "i2", Label = 1 },
        };
        var options = Options();
        options.LearningRate = 1e-12;
        options.NumberOfIterations = 1;
        using var model = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(ml.Data.LoadFromEnumerable(rows));
        var scores = model.Predict(new[] { ("u1", "i1"), ("u2", "i2"), ("u3", "i1"), ("u3", "i2"), ("nobody", "i2"), ("u1", "nothing"), ("nobody", "nothing") });
        Assert.That(scores[0], Is.EqualTo(3.25 + 0.125 + 0.0925926).Within(1e-5));
        Assert.That(scores[1], Is.EqualTo(3.25 + 0.0597643 - 0.0925926).Within(1e-5));
        Assert.That(scores[2], Is.EqualTo(3.25 - 0.1961279 + 0.0925926).Within(1e-5));
        Assert.That(scores[3], Is.EqualTo(3.25 - 0.1961279 - 0.0925926).Within(1e-5));
        Assert.That(scores[4], Is.EqualTo(3.25 - 0.0925926).Within(1e-5), "unknown user: mean + item bias");
        Assert.That(scores[5], Is.EqualTo(3.25 + 0.125).Within(1e-5), "unknown item: mean + user bias");
        Assert.That(scores[6], Is.EqualTo(3.25).Within(1e-6), "both unknown: the mean");
        Assert.That(model.GlobalMean, Is.EqualTo(3.25).Within(1e-6));
    }

    [Test]
    public void SavedModelScoresIdenticallyAndWorksInAPredictionEngine()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = Groups(seed: 5);
        var trainView = ml.Data.LoadFromEnumerable(train);
        var options = Options();
        options.ApproximationRank = 4;
        options.HiddenLayerSizes = new[] { 6, 3 };
        options.NumberOfIterations = 3;
        options.ClampScores = true;
        var pipeline = ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item"))
            .Append(ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options));
        var model = pipeline.Fit(trainView);
        var testView = ml.Data.LoadFromEnumerable(test);
        var before = Scores(ml, model, testView);

        var path = Path.Combine(Path.GetTempPath(), $"ncf-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, trainView.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            var after = Scores(ml, loaded, testView);
            Assert.That(after, Is.EqualTo(before));
            var ncf = ((TransformerChain<ITransformer>)loaded).OfType<PeftNeuralCollaborativeFilteringTransformer>().Single();
            Assert.That((ncf.ApproximationRank, ncf.MatrixColumnIndexColumnName, ncf.MatrixRowIndexColumnName, ncf.Feedback), Is.EqualTo((4, "User", "Item", RecommendationFeedback.Explicit)));
            Assert.That(ncf.HiddenLayerSizes, Is.EqualTo(new[] { 6, 3 }));
            // Four embedding tables with a zero row each, mlp.0 (8 -> 6), mlp.1 (6 -> 3), predict (4 + 3 -> 1, no bias), biases, mean.
            long users = ncf.UserCount + 1, items = ncf.ItemCount + 1;
            Assert.That(ncf.ParameterCount, Is.EqualTo(2 * users * 4 + 2 * items * 4 + (8 * 6 + 6) + (6 * 3 + 3) + 7 + users + items + 1));
            var range = ncf.TrainingRatingRange;
            Assert.That(after, Has.All.InRange(range.Minimum, range.Maximum), "scores are clamped to the training range");

            using var engine = ml.Model.CreatePredictionEngine<RatingRow, RatingScore>(loaded);
            for (int k = 0; k < 5; k++) Assert.That(engine.Predict(test[k]).Score, Is.EqualTo(before[k]));
            ncf.Dispose();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void SavedTensorsAreNamedForAdapters()
    {
        var ml = new MLContext(seed: 1);
        var (train, _) = Groups(seed: 7);
        var options = Options();
        options.HiddenLayerSizes = new[] { 16, 8, 4 };
        options.NumberOfIterations = 1;
        using var model = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(ml.Data.LoadFromEnumerable(train));
        var entries = model.Model.ToEntries();
        // The safetensors header: 8 bytes of length, then JSON keyed by tensor name.
        var bytes = entries.BaseModelBytes!;
        int length = (int)BitConverter.ToUInt64(bytes, 0);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, length));
        var names = header.RootElement.EnumerateObject().Select(p => p.Name).Where(n => n != "__metadata__").Order(StringComparer.Ordinal).ToList();
        Assert.That(names, Is.EqualTo(new[]
        {
            "global_mean", "item_bias", "item_embedding_gmf", "item_embedding_mlp",
            "mlp.0.bias", "mlp.0.weight", "mlp.1.bias", "mlp.1.weight", "mlp.2.bias", "mlp.2.weight",
            "predict.weight", "user_bias", "user_embedding_gmf", "user_embedding_mlp",
        }));
        Assert.That(header.RootElement.GetProperty("mlp.0.weight").GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()), Is.EqualTo(new[] { 16, 16 }));
        Assert.That(header.RootElement.GetProperty("predict.weight").GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()), Is.EqualTo(new[] { 1, 8 + 4 }));
        Assert.That(model.Model.Network.MlpLayers, Has.Count.EqualTo(3));
    }

    [Test]
    public void SavedSettingsAreCheckedOnLoad()
    {
        var settings = new NeuralCollaborativeFilteringSettings
        {
            UserColumnName = "User", ItemColumnName = "Item", LabelColumnName = "Label", ScoreColumnName = "Score",
            UserCount = 3, ItemCount = 4, Rank = 2, HiddenLayerSizes = new[] { 4, 2 }, BatchSize = 8, RatingMin = 1, RatingMax = 5, ClampScores = true,
        };
        var json = Encoding.UTF8.GetString(settings.ToUtf8());
        Assert.That(NeuralCollaborativeFilteringSettings.Parse(Encoding.UTF8.GetBytes(json), "test").HiddenLayerSizes, Is.EqualTo(new[] { 4, 2 }));
        foreach (var (from, to) in new[]
        {
            ("\"hidden_layers\":[4,2]", "\"hidden_layers\":[]"), ("\"hidden_layers\":[4,2]", "\"hidden_layers\":[4,0]"),
            ("\"feedback\":\"Explicit\"", "\"feedback\":\"Implicit\""), ("\"feedback\":\"Explicit\"", "\"feedback\":9"),
            ("\"rank\":2", "\"rank\":0"), ("\"task\":\"recommendation-neural-collaborative-filtering\"", "\"task\":\"recommendation-matrix-factorization\""),
        })
        {
            Assert.That(json, Does.Contain(from));
            Assert.Throws<InvalidDataException>(() => NeuralCollaborativeFilteringSettings.Parse(Encoding.UTF8.GetBytes(json.Replace(from, to)), "test"), to);
        }
    }

    [Test]
    public void BadInputGivesClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var noLayers = Options();
        noLayers.HiddenLayerSizes = Array.Empty<int>();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(noLayers))!;
        Assert.That(e.ParamName, Is.EqualTo("HiddenLayerSizes"));
        var badLayer = Options();
        badLayer.HiddenLayerSizes = new[] { 8, 0 };
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(badLayer))!;
        Assert.That(e.Message, Does.Contain("HiddenLayerSizes[1] is 0"));
        var negatives = Options();
        negatives.NegativesPerPositive = 0;
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(negatives))!;
        Assert.That(e.ParamName, Is.EqualTo("NegativesPerPositive"));
        var feedback = Options();
        feedback.Feedback = (RecommendationFeedback)7;
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(feedback))!;
        Assert.That(e.ParamName, Is.EqualTo("Feedback"));
        var same = Options();
        same.MatrixRowIndexColumnName = "User";
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(same))!.Message, Does.Contain("users and items need two columns"));

        // Explicit feedback reads the rating; without it the error names the column and the option.
        var idsOnly = ml.Data.LoadFromEnumerable(new[] { new PairInput { User = "a", Item = "b" } });
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(Options()).Fit(idsOnly))!;
        Assert.That(missing.Message, Does.Contain("'Label' (LabelColumnName)"));
        var nan = ml.Data.LoadFromEnumerable(new[] { new RatingRow { User = "a", Item = "b", Label = float.NaN } });
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(Options()).Fit(nan))!.Message,
            Does.Contain("1 rows have a missing (NaN) rating"));
    }
}
