using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Recommendation;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>A rating as the tests feed it to ML.NET: text ids, mapped to keys by MapValueToKey.</summary>
public sealed class RatingRow
{
    public string User { get; set; } = "";
    public string Item { get; set; } = "";
    public float Label { get; set; }
}

/// <summary>What a PredictionEngine returns for a (user, item) row.</summary>
public sealed class RatingScore
{
    public float Score { get; set; }
}

/// <summary>PeftMatrixFactorization: recovery of low-rank ratings, saving, PredictionEngine, unknown keys, bad input.</summary>
[TestFixture]
[NonParallelizable]
public class MatrixFactorizationTests
{
    private const int Users = 40;
    private const int Items = 30;

    /// <summary>
    /// Ratings of a rank-2 matrix with biases: r(u, i) = 3 + 0.5 sin(u) + 0.4 cos(i) + a_u · b_i with a_u, b_i drawn from
    /// N(0, 0.8²), no noise; 70% of the cells, split by <paramref name="seed"/> into train (80%) and test.
    /// </summary>
    private static (List<RatingRow> Train, List<RatingRow> Test) LowRank(int seed)
    {
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var a = Enumerable.Range(0, Users).Select(_ => new[] { 0.8 * Normal(), 0.8 * Normal() }).ToArray();
        var b = Enumerable.Range(0, Items).Select(_ => new[] { 0.8 * Normal(), 0.8 * Normal() }).ToArray();
        var train = new List<RatingRow>();
        var test = new List<RatingRow>();
        for (int u = 0; u < Users; u++)
        {
            for (int i = 0; i < Items; i++)
            {
                if (random.NextDouble() > 0.7) continue;
                var rating = 3 + 0.5 * Math.Sin(u) + 0.4 * Math.Cos(i) + a[u][0] * b[i][0] + a[u][1] * b[i][1];
                var row = new RatingRow { User = $"u{u}", Item = $"i{i}", Label = (float)rating };
                (random.NextDouble() < 0.8 ? train : test).Add(row);
            }
        }
        return (train, test);
    }

    /// <summary>A quick recipe for the small synthetic tables of these tests.</summary>
    internal static PeftMatrixFactorizationTrainer.Options Options() => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        ApproximationRank = 4,
        Lambda = 0.001,
        LearningRate = 0.02,
        NumberOfIterations = 60,
        BatchSize = 64,
        ClampScores = false,
    };

    private static ITransformer Keys(MLContext ml, IDataView data) =>
        ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item")).Fit(data);

    private static float[] Scores(MLContext ml, ITransformer model, IDataView data) =>
        ml.Data.CreateEnumerable<RatingScore>(model.Transform(data), reuseRowObject: false).Select(s => s.Score).ToArray();

    private static double Rmse(IReadOnlyList<float> scores, IReadOnlyList<RatingRow> rows) =>
        Math.Sqrt(scores.Zip(rows, (s, r) => (double)(s - r.Label) * (s - r.Label)).Average());

    [Test]
    public void RecoversLowRankRatingsFarBelowTheGlobalMeanBaseline()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = LowRank(seed: 3);
        var trainView = ml.Data.LoadFromEnumerable(train);
        var keys = Keys(ml, trainView);
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(Options()).Fit(keys.Transform(trainView));
        // Test rows whose user and item were both seen in training (the others fall back to biases).
        var seenUsers = train.Select(r => r.User).ToHashSet();
        var seenItems = train.Select(r => r.Item).ToHashSet();
        var known = test.Where(r => seenUsers.Contains(r.User) && seenItems.Contains(r.Item)).ToList();
        var scores = Scores(ml, model, keys.Transform(ml.Data.LoadFromEnumerable(known)));

        double mean = train.Average(r => r.Label);
        double baseline = Math.Sqrt(known.Average(r => (r.Label - mean) * (r.Label - mean)));
        double rmse = Rmse(scores, known);
        TestContext.Out.WriteLine($"{known.Count} test ratings: global mean RMSE {baseline:F4}, matrix factorization RMSE {rmse:F4}");
        Assert.That(baseline, Is.GreaterThan(0.8), "the synthetic ratings vary");
        Assert.That(rmse, Is.LessThan(0.35 * baseline));
        Assert.That(model.GlobalMean, Is.EqualTo(mean).Within(0.3));

        // ML.NET's regression evaluator reads the Score column: its RMSE and MAE are those of the scores.
        var metrics = ml.Regression.Evaluate(model.Transform(keys.Transform(ml.Data.LoadFromEnumerable(known))));
        Assert.That(metrics.RootMeanSquaredError, Is.EqualTo(rmse).Within(1e-4));
        Assert.That(metrics.MeanAbsoluteError, Is.EqualTo(scores.Zip(known, (s, r) => Math.Abs((double)s - r.Label)).Average()).Within(1e-4));
    }

    [Test]
    public void SavedModelScoresIdenticallyAndWorksInAPredictionEngine()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = LowRank(seed: 5);
        var trainView = ml.Data.LoadFromEnumerable(train);
        var options = Options();
        options.NumberOfIterations = 5;
        options.ClampScores = true;
        var pipeline = ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item"))
            .Append(ml.Regression.Trainers.PeftMatrixFactorization(options));
        var model = pipeline.Fit(trainView);
        var testView = ml.Data.LoadFromEnumerable(test);
        var before = Scores(ml, model, testView);

        var path = Path.Combine(Path.GetTempPath(), $"mf-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, trainView.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            var after = Scores(ml, loaded, testView);
            Assert.That(after, Is.EqualTo(before));
            var mf = ((TransformerChain<ITransformer>)loaded).OfType<PeftMatrixFactorizationTransformer>().Single();
            Assert.That((mf.ApproximationRank, mf.MatrixColumnIndexColumnName, mf.MatrixRowIndexColumnName), Is.EqualTo((4, "User", "Item")));
            Assert.That(mf.ParameterCount, Is.EqualTo((mf.UserCount + 1) * 5 + (mf.ItemCount + 1) * 5 + 1));
            var range = mf.TrainingRatingRange;
            Assert.That(after, Has.All.InRange(range.Minimum, range.Maximum), "scores are clamped to the training range");

            using var engine = ml.Model.CreatePredictionEngine<RatingRow, RatingScore>(loaded);
            for (int k = 0; k < 5; k++) Assert.That(engine.Predict(test[k]).Score, Is.EqualTo(before[k]));
            mf.Dispose();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void ClampedScoresAreTheUnclampedOnesCutToTheTrainingRange()
    {
        var ml = new MLContext(seed: 1);
        // Training ratings cut to [2, 4]: the model still learns the structure, so cells rated outside it are predicted outside it.
        var (all, test) = LowRank(seed: 13);
        var train = all.Where(r => r.Label >= 2 && r.Label <= 4).ToList();
        var trainView = ml.Data.LoadFromEnumerable(train);
        var keys = Keys(ml, trainView);
        var options = Options();
        options.NumberOfIterations = 20;
        using var free = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(trainView));
        options.ClampScores = true;
        using var clamped = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(trainView));
        var testView = keys.Transform(ml.Data.LoadFromEnumerable(test));
        var unclamped = Scores(ml, free, testView);
        float low = train.Min(r => r.Label), high = train.Max(r => r.Label);
        Assert.That(clamped.TrainingRatingRange, Is.EqualTo((low, high)));
        Assert.That(unclamped.Count(s => s < low || s > high), Is.GreaterThan(0), "some predictions leave the training range");
        Assert.That(Scores(ml, clamped, testView), Is.EqualTo(unclamped.Select(s => Math.Min(Math.Max(s, low), high)).ToArray()));
    }

    [Test]
    public void UnknownUsersAndItemsFallBackToBiasesAndTheGlobalMean()
    {
        var ml = new MLContext(seed: 1);
        var (train, _) = LowRank(seed: 7);
        var trainView = ml.Data.LoadFromEnumerable(train);
        // "ghost" has a key (its only rating is missing), but no training rating: it is scored as unknown too.
        var keys = Keys(ml, ml.Data.LoadFromEnumerable(train.Append(new RatingRow { User = "ghost", Item = "i3", Label = float.NaN })));
        var options = Options();
        options.NumberOfIterations = 3;
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(trainView));

        float[] Table(Tensor t) => t.detach().cpu().data<float>().ToArray();
        var network = model.Model.Network;
        float mean = Table(network.GlobalMean)[0];
        var userBias = Table(network.UserBias);
        var itemBias = Table(network.ItemBias);
        var userFactors = Table(network.UserFactors);
        var itemFactors = Table(network.ItemFactors);
        int rank = model.ApproximationRank;
        Assert.That(userBias[0], Is.Zero);
        Assert.That(itemFactors.Take(rank), Has.All.Zero);

        // A user id the key mapping never saw becomes key 0: global mean + the item's bias.
        var rows = new List<RatingRow> { new() { User = "stranger", Item = "i3" }, new() { User = "u2", Item = "unseen" }, new() { User = "nobody", Item = "nothing" }, new() { User = "ghost", Item = "i3" } };
        var scores = Scores(ml, model, keys.Transform(ml.Data.LoadFromEnumerable(rows)));
        int item3 = model.ItemIds.ToList().IndexOf("i3") + 1, user2 = model.UserIds.ToList().IndexOf("u2") + 1;
        Assert.That(scores[0], Is.EqualTo(mean + itemBias[item3]).Within(1e-5));
        Assert.That(scores[1], Is.EqualTo(mean + userBias[user2]).Within(1e-5));
        Assert.That(scores[2], Is.EqualTo(mean).Within(1e-6));
        // "ghost" has a key but no training rating: the model has no row for it, and it scores as unknown.
        Assert.That(model.UserIds, Does.Not.Contain("ghost"));
        Assert.That(model.UserCount, Is.EqualTo(train.Select(r => r.User).Distinct().Count()));
        Assert.That(scores[3], Is.EqualTo(scores[0]));

        // Ids are matched by value: the same scores from text ids with no key mapping, and from Predict.
        Assert.That(Scores(ml, model, ml.Data.LoadFromEnumerable(rows)), Is.EqualTo(scores));
        var direct = model.Predict(new[] { ("stranger", "i3"), ("u2", "unseen"), ("u2", "i3") });
        Assert.That(direct[0], Is.EqualTo(scores[0]));
        Assert.That(direct[1], Is.EqualTo(scores[1]));
        double dot = Enumerable.Range(0, rank).Sum(k => (double)userFactors[user2 * rank + k] * itemFactors[item3 * rank + k]);
        Assert.That(direct[2], Is.EqualTo(mean + userBias[user2] + itemBias[item3] + dot).Within(1e-4));
    }

    [Test]
    public void TextIdsAreConvertedWithAMessageAndKeyedIdsWithout()
    {
        var ml = new MLContext(seed: 1);
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var (train, test) = LowRank(seed: 4);
        var view = ml.Data.LoadFromEnumerable(train);
        var options = Options();
        options.NumberOfIterations = 1;
        using var fromText = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(view);
        Assert.That(messages, Has.Some.Contains("The user column 'User' holds text").And.Some.Contains("The item column 'Item' holds text"));
        messages.Clear();
        var keys = Keys(ml, view);
        using var fromKeys = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(view));
        Assert.That(messages, Has.None.Contains("holds text"));
        // The same ids give the same model either way.
        Assert.That(Scores(ml, fromKeys, keys.Transform(ml.Data.LoadFromEnumerable(test))), Is.EqualTo(Scores(ml, fromText, ml.Data.LoadFromEnumerable(test))));
    }

    [Test]
    public void NaNRatingsAreSkippedAndGiveTheSameModel()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = LowRank(seed: 9);
        var withNaN = train.Concat(new[] { new RatingRow { User = "u1", Item = "i1", Label = float.NaN }, new RatingRow { User = "u3", Item = "i2", Label = float.NaN } }).ToList();
        var keys = Keys(ml, ml.Data.LoadFromEnumerable(withNaN));
        var options = Options();
        options.NumberOfIterations = 3;
        using var clean = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(ml.Data.LoadFromEnumerable(train)));
        using var skipped = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(ml.Data.LoadFromEnumerable(withNaN)));
        var testView = keys.Transform(ml.Data.LoadFromEnumerable(test));
        Assert.That(Scores(ml, skipped, testView), Is.EqualTo(Scores(ml, clean, testView)));
    }

    /// <summary>Ids loaded as numbers, not keys.</summary>
    public sealed class NumericRatingRow
    {
        public float User { get; set; }
        public float Item { get; set; }
        public float Label { get; set; }
    }

    [Test]
    public void BadInputGivesClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var numeric = ml.Data.LoadFromEnumerable(new[] { new NumericRatingRow { User = 1, Item = 2, Label = 4 } });
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorization(Options()).Fit(numeric))!;
        Assert.That(e.Message, Does.Contain("'User' (MatrixColumnIndexColumnName)").And.Contain("Single").And.Contain("MapValueToKey"));

        var ids = ml.Data.LoadFromEnumerable(new[] { new RatingRow { User = "a", Item = "b", Label = float.NaN }, new RatingRow { User = "c", Item = "b", Label = float.NaN } });
        var keyed = Keys(ml, ids).Transform(ids);
        e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorization(Options()).Fit(keyed))!;
        Assert.That(e.Message, Does.Contain("no row with a rating").And.Contain("2 rows have a missing (NaN) rating"));

        var empty = ml.Data.LoadFromEnumerable(new List<RatingRow>());
        e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorization(Options()).Fit(Keys(ml, ids).Transform(empty)))!;
        Assert.That(e.Message, Does.Contain("it is empty"));

        var noUser = Options();
        noUser.MatrixColumnIndexColumnName = "";
        e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorization(noUser))!;
        Assert.That(e.Message, Does.Contain("MatrixColumnIndexColumnName is empty").And.Contain("user key column"));
        var rank = Options();
        rank.ApproximationRank = 0;
        Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.Trainers.PeftMatrixFactorization(rank));

        // A learning rate far too large for SGD makes the loss overflow: a clear error, not a model of NaNs.
        var (ratings, _) = LowRank(seed: 11);
        var ratingView = ml.Data.LoadFromEnumerable(ratings);
        var diverging = Options();
        diverging.Optimizer = MatrixFactorizationOptimizer.Sgd;
        diverging.LearningRate = 100;
        var ex = Assert.Throws<InvalidOperationException>(() => ml.Regression.Trainers.PeftMatrixFactorization(diverging).Fit(Keys(ml, ratingView).Transform(ratingView)))!;
        Assert.That(ex.Message, Does.Contain("diverged").And.Contain("LearningRate"));

        // Scoring needs key columns as well.
        var options = Options();
        options.NumberOfIterations = 1;
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(Keys(ml, ratingView).Transform(ratingView));
        e = Assert.Throws<ArgumentException>(() => model.Transform(numeric))!;
        Assert.That(e.Message, Does.Contain("MapValueToKey"));
    }
}
