using System.Text;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using Microsoft.ML.Peft.Tasks.Recommendation.Ranking;
using Microsoft.ML.Runtime;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Implicit feedback for matrix factorisation and neural collaborative filtering: ranking quality, no label, saving, the negative sampler.</summary>
[TestFixture]
[NonParallelizable]
public class ImplicitFeedbackTests
{
    /// <summary>
    /// 30 users and 45 items in three groups of 10 and 15; each user interacts with 8 items of its own group, at times
    /// 1..8 in a random order. Random ranking among 20 negatives gives HR@5 = 5/21; ranking the user's group first, about 0.95
    /// (of 20 negatives drawn from 37 unseen items, 7 of them in the group, about 3.8 are in the group).
    /// </summary>
    private static List<InteractionRow> Groups(int seed)
    {
        var random = new Random(seed);
        var rows = new List<InteractionRow>();
        for (int u = 0; u < 30; u++)
        {
            int group = u % 3;
            var items = Enumerable.Range(0, 15).OrderBy(_ => random.Next()).Take(8).ToList();
            for (int t = 0; t < items.Count; t++) rows.Add(new InteractionRow { User = $"u{u}", Item = $"i{group * 15 + items[t]}", Timestamp = t + 1 });
        }
        return rows;
    }

    private static RecommendationRankingOptions Ranking() => new() { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", K = 5, NegativeCount = 20 };

    private static PeftMatrixFactorizationTrainer.Options MatrixFactorization(ImplicitFeedbackLoss loss) => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        Feedback = RecommendationFeedback.Implicit,
        ImplicitLoss = loss,
        ApproximationRank = 8,
        Lambda = 0.001,
        LearningRate = 0.02,
        NumberOfIterations = 30,
        BatchSize = 32,
    };

    private static PeftNeuralCollaborativeFilteringTrainer.Options Neural() => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        Feedback = RecommendationFeedback.Implicit,
        ApproximationRank = 8,
        HiddenLayerSizes = new[] { 16, 8 },
        Lambda = 0.001,
        LearningRate = 0.01,
        NumberOfIterations = 30,
        BatchSize = 32,
    };

    [TestCase(ImplicitFeedbackLoss.Bpr)]
    [TestCase(ImplicitFeedbackLoss.BinaryCrossEntropy)]
    public void MatrixFactorizationRanksHeldOutItemsFarAboveChance(ImplicitFeedbackLoss loss)
    {
        var ml = new MLContext(seed: 1);
        // No label column: the rows are (user, item, time) only.
        var split = ml.Data.LeaveLastOutSplit(ml.Data.LoadFromEnumerable(Groups(seed: 2)), "User", "Timestamp");
        var losses = new List<double>();
        var trainer = ml.Regression.Trainers.PeftMatrixFactorization(MatrixFactorization(loss));
        trainer.IterationCompleted += (_, e) => losses.Add(e.TrainingMse);
        using var model = trainer.Fit(split.TrainSet);
        var metrics = ml.Regression.EvaluateRecommendations(model, split.TrainSet, split.TestSet, Ranking());
        TestContext.Out.WriteLine($"MF {loss}: HR@5 {metrics.HitRate:F3}, NDCG@5 {metrics.Ndcg:F3}; loss {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.That(metrics.UserCount, Is.EqualTo(30));
        Assert.That(metrics.MeanNegativeCount, Is.EqualTo(20));
        Assert.That(metrics.HitRate, Is.GreaterThan(2.5 * 5 / 21.0));
        Assert.That(losses[^1], Is.LessThan(losses[0] * 0.7));
        Assert.That(model.Feedback, Is.EqualTo(RecommendationFeedback.Implicit));
        Assert.That(model.ClampsScores, Is.False);
    }

    [Test]
    public void NeuralCollaborativeFilteringRanksHeldOutItemsFarAboveChance()
    {
        var ml = new MLContext(seed: 1);
        var split = ml.Data.LeaveLastOutSplit(ml.Data.LoadFromEnumerable(Groups(seed: 2)), "User", "Timestamp");
        using var model = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(Neural()).Fit(split.TrainSet);
        var metrics = ml.Regression.EvaluateRecommendations(model, split.TrainSet, split.TestSet, Ranking());
        TestContext.Out.WriteLine($"NCF: HR@5 {metrics.HitRate:F3}, NDCG@5 {metrics.Ndcg:F3}");
        Assert.That(metrics.HitRate, Is.GreaterThan(2.5 * 5 / 21.0));
        Assert.That(metrics.Ndcg, Is.GreaterThan(0.4));
        Assert.That(model.Feedback, Is.EqualTo(RecommendationFeedback.Implicit));
    }

    [Test]
    public void ImplicitModelsSaveTheirFeedbackKindAndScoreUnclamped()
    {
        var ml = new MLContext(seed: 1);
        var rows = Groups(seed: 3);
        var data = ml.Data.LoadFromEnumerable(rows);
        var mfOptions = MatrixFactorization(ImplicitFeedbackLoss.Bpr);
        mfOptions.NumberOfIterations = 3;
        mfOptions.ClampScores = true; // does not apply to implicit feedback
        var ncfOptions = Neural();
        ncfOptions.NumberOfIterations = 3;
        var models = new ITransformer[]
        {
            ml.Regression.Trainers.PeftMatrixFactorization(mfOptions).Fit(data),
            ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(ncfOptions).Fit(data),
        };
        var probe = ml.Data.LoadFromEnumerable(rows.Take(20).ToList());
        foreach (var model in models)
        {
            var path = Path.Combine(Path.GetTempPath(), $"implicit-{Guid.NewGuid():N}.zip");
            try
            {
                ml.Model.Save(model, data.Schema, path);
                var loaded = ml.Model.Load(path, out _);
                var before = ml.Data.CreateEnumerable<PairScore>(model.Transform(probe), reuseRowObject: false).Select(s => s.Score).ToArray();
                var after = ml.Data.CreateEnumerable<PairScore>(loaded.Transform(probe), reuseRowObject: false).Select(s => s.Score).ToArray();
                Assert.That(after, Is.EqualTo(before));
                var feedback = loaded switch
                {
                    PeftMatrixFactorizationTransformer mf => (mf.Feedback, mf.ClampsScores),
                    PeftNeuralCollaborativeFilteringTransformer ncf => (ncf.Feedback, ncf.ClampsScores),
                    _ => throw new AssertionException($"loaded {loaded.GetType().Name}"),
                };
                Assert.That(feedback, Is.EqualTo((RecommendationFeedback.Implicit, false)));
            }
            finally
            {
                File.Delete(path);
                (model as IDisposable)?.Dispose();
            }
        }
    }

    [Test]
    public void AnImplicitMatrixFactorizationIsNotAdaptedWithRatings()
    {
        var ml = new MLContext(seed: 1);
        var options = MatrixFactorization(ImplicitFeedbackLoss.Bpr);
        options.NumberOfIterations = 1;
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(ml.Data.LoadFromEnumerable(Groups(seed: 5)));
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(model))!;
        Assert.That(e.Message, Does.Contain("implicit feedback"));
    }

    [Test]
    public void SameSeedGivesTheSameModelAndAnotherSeedAnother()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Groups(seed: 4));
        var options = Neural();
        options.NumberOfIterations = 2;
        var pairs = new[] { ("u1", "i3"), ("u2", "i20"), ("u7", "i40") };
        using var a = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(data);
        using var b = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(data);
        options.Seed = 2;
        using var c = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(data);
        Assert.That(b.Predict(pairs), Is.EqualTo(a.Predict(pairs)));
        Assert.That(c.Predict(pairs), Is.Not.EqualTo(a.Predict(pairs)));
    }

    [Test]
    public void NegativesAreUniformOverTheItemsTheUserNeverSaw()
    {
        var ml = new MLContext(seed: 1);
        // u1 saw items 1-3 of 10 (rejection sampling); u2 saw 8 of 10 (drawn from the list of the other two); u3 saw the two u2 did not.
        var rows = Enumerable.Range(1, 3).Select(i => new PairInput { User = "u1", Item = $"i{i}" })
            .Concat(Enumerable.Range(1, 10).Where(i => i != 4 && i != 9).Select(i => new PairInput { User = "u2", Item = $"i{i}" }))
            .Concat(new[] { new PairInput { User = "u3", Item = "i4" }, new PairInput { User = "u3", Item = "i9" } }).ToList();
        var data = InteractionData.Read(ml.Data.LoadFromEnumerable(rows), "User", "Item", "test data");
        var sampler = new ImplicitLoop.NegativeSampler(data);
        var random = new Random(1);
        foreach (var (user, unseen) in new[] { ("u1", Enumerable.Range(4, 7)), ("u2", new[] { 4, 9 }) })
        {
            int row = data.UserIds.RowOf(user);
            var expected = unseen.Select(i => data.ItemIds.RowOf($"i{i}")).Order().ToArray();
            Assert.That(expected, Has.None.Zero.And.Length.EqualTo(unseen.Count()));
            var counts = Enumerable.Range(0, 7000).Select(_ => sampler.Sample(row, random)).GroupBy(i => i).ToDictionary(g => g.Key, g => g.Count());
            Assert.That(counts.Keys.Order(), Is.EqualTo(expected), user);
            // Each of n items about 7000 / n times (binomial standard deviation < 40).
            Assert.That(counts.Values, Has.All.InRange(7000 / expected.Length - 160, 7000 / expected.Length + 160), user);
        }
    }

    [Test]
    public void UsersWhoSawEveryItemAreSkippedWithAWarning()
    {
        var ml = new MLContext(seed: 1);
        var warnings = new StringBuilder();
        ml.Log += (_, e) => { if (e.Kind == ChannelMessageKind.Warning) warnings.AppendLine(e.Message); };
        var options = MatrixFactorization(ImplicitFeedbackLoss.Bpr);
        options.NumberOfIterations = 1;
        var all = new[] { new PairInput { User = "u1", Item = "a" }, new PairInput { User = "u1", Item = "b" } };
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(ml.Data.LoadFromEnumerable(all)))!;
        Assert.That(e.Message, Does.Contain("no negative can be sampled"));
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(ml.Data.LoadFromEnumerable(all.Append(new PairInput { User = "u2", Item = "a" }).ToList()));
        Assert.That(warnings.ToString(), Does.Contain("2 interactions of 1 users who interacted with every item were skipped"));
        var single = new[] { new PairInput { User = "u1", Item = "a" } };
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(Neural()).Fit(ml.Data.LoadFromEnumerable(single)))!.Message,
            Does.Contain("single item"));
    }

    [Test]
    public void SettingsWithoutFeedbackReadAsExplicitAndUnknownKindsAreRefused()
    {
        var settings = new MatrixFactorizationSettings
        {
            UserColumnName = "User", ItemColumnName = "Item", LabelColumnName = "Label", ScoreColumnName = "Score",
            UserCount = 3, ItemCount = 4, Rank = 2, BatchSize = 8, RatingMin = 1, RatingMax = 5, ClampScores = true,
        };
        var json = Encoding.UTF8.GetString(settings.ToUtf8());
        Assert.That(json, Does.Contain("\"feedback\":\"Explicit\""));
        var old = json.Replace(",\"feedback\":\"Explicit\"", "");
        Assert.That(old, Does.Not.Contain("feedback"));
        Assert.That(MatrixFactorizationSettings.Parse(Encoding.UTF8.GetBytes(old), "test").Feedback, Is.EqualTo(RecommendationFeedback.Explicit));
        Assert.Throws<InvalidDataException>(() => MatrixFactorizationSettings.Parse(Encoding.UTF8.GetBytes(json.Replace("\"Explicit\"", "7")), "test"));
        // An implicit model never clamps.
        Assert.Throws<InvalidDataException>(() => MatrixFactorizationSettings.Parse(Encoding.UTF8.GetBytes(json.Replace("\"Explicit\"", "\"Implicit\"")), "test"));
    }
}
