using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Recommendation.Ranking;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>A (user, item) pair with text ids: what a ranking scorer reads.</summary>
public sealed class PairInput
{
    public string User { get; set; } = "";
    public string Item { get; set; } = "";
}

/// <summary>An interaction with a time.</summary>
public sealed class InteractionRow
{
    public string User { get; set; } = "";
    public string Item { get; set; } = "";
    public float Timestamp { get; set; }
}

/// <summary>Hit rate and NDCG at K (hand-computed cases), the leave-last-out split and the evaluator's negatives.</summary>
[TestFixture]
public class RecommendationRankingTests
{
    private static readonly double Log2Of3 = Math.Log2(3);

    [Test]
    public void HitAndNdcgOfOneHeldOutItem()
    {
        // Rank 2 (one negative above): no hit at K = 1, a hit at K = 2, NDCG 1 / log2(3).
        var negatives = new[] { 0.9f, 0.1f, 0.2f };
        Assert.That(RecommendationRankingMetrics.Of(0.5f, negatives, 1), Is.EqualTo((0.0, 0.0)));
        var (hit, ndcg) = RecommendationRankingMetrics.Of(0.5f, negatives, 2);
        Assert.That(hit, Is.EqualTo(1.0));
        Assert.That(ndcg, Is.EqualTo(1 / Log2Of3).Within(1e-12));
        // Rank 1: NDCG 1.
        Assert.That(RecommendationRankingMetrics.Of(2f, negatives, 10), Is.EqualTo((1.0, 1.0)));
        // Rank 4 of 4: a hit at K = 4 with NDCG 1 / log2(5), nothing at K = 3.
        Assert.That(RecommendationRankingMetrics.Of(0f, negatives, 3), Is.EqualTo((0.0, 0.0)));
        Assert.That(RecommendationRankingMetrics.Of(0f, negatives, 4).Ndcg, Is.EqualTo(1 / Math.Log2(5)).Within(1e-12));
    }

    [Test]
    public void TiesCountAsRandomOrder()
    {
        // One negative above, one tied: rank 2 or 3 with equal chance.
        var negatives = new[] { 0.5f, 0.9f, 0.1f };
        var (hit, ndcg) = RecommendationRankingMetrics.Of(0.5f, negatives, 10);
        Assert.That(hit, Is.EqualTo(1.0));
        Assert.That(ndcg, Is.EqualTo((1 / Log2Of3 + 1 / 2.0) / 2).Within(1e-12));
        Assert.That(RecommendationRankingMetrics.Of(0.5f, negatives, 2).Hit, Is.EqualTo(0.5));
        // A constant scorer among 99 negatives: the hit rate of a random ranking, 10 / 100 at K = 10.
        var constant = RecommendationRankingMetrics.Of(1f, Enumerable.Repeat(1f, 99).ToArray(), 10);
        Assert.That(constant.Hit, Is.EqualTo(0.1).Within(1e-12));
        Assert.That(constant.Ndcg, Is.EqualTo(Enumerable.Range(1, 10).Sum(r => 1 / Math.Log2(r + 1)) / 100).Within(1e-12));
    }

    /// <summary>A scorer that ranks items by their number, i1 first: score = -n for item "in".</summary>
    private static ITransformer ByItemNumber(MLContext ml, IDataView data) =>
        ml.Transforms.CustomMapping<PairInput, PairScore>((input, output) => output.Score = -int.Parse(input.Item[1..]), contractName: null).Fit(data);

    [Test]
    public void EvaluatorRanksEachHeldOutItemAgainstTheItemsItsUserNeverSaw()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(new[]
        {
            new PairInput { User = "u1", Item = "i1" }, new PairInput { User = "u1", Item = "i2" },
            new PairInput { User = "u2", Item = "i3" }, new PairInput { User = "u2", Item = "i5" },
            new PairInput { User = "u3", Item = "i2" }, new PairInput { User = "u3", Item = "i4" },
        });
        var test = ml.Data.LoadFromEnumerable(new[]
        {
            new PairInput { User = "u1", Item = "i4" }, new PairInput { User = "u2", Item = "i1" }, new PairInput { User = "u3", Item = "i6" },
        });
        var options = new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", RankAllItems = true, K = 3 };
        // u1: i4 against i3, i5, i6 -> rank 2; u2: i1 against i2, i4, i6 -> rank 1; u3: i6 against i1, i3, i5 -> rank 4.
        var metrics = ml.Regression.EvaluateRecommendations(ByItemNumber(ml, train), train, test, options);
        Assert.That(metrics.HitRate, Is.EqualTo(2 / 3.0).Within(1e-12));
        Assert.That(metrics.Ndcg, Is.EqualTo((1 / Log2Of3 + 1) / 3).Within(1e-9));
        Assert.That((metrics.K, metrics.UserCount, metrics.InteractionCount), Is.EqualTo((3, 3, 3)));
        Assert.That(metrics.MeanNegativeCount, Is.EqualTo(3.0));
        options.K = 10;
        metrics = ml.Regression.EvaluateRecommendations(ByItemNumber(ml, train), train, test, options);
        Assert.That(metrics.HitRate, Is.EqualTo(1.0));
        Assert.That(metrics.Ndcg, Is.EqualTo((1 / Log2Of3 + 1 + 1 / Math.Log2(5)) / 3).Within(1e-9));
    }

    [Test]
    public void SampledNegativesAreNeverItemsTheUserInteractedWith()
    {
        // 20 users, 50 items; each user saw 40 items in training and one in the test set. The scorer gives seen pairs a
        // score above the held-out item's, so any seen item drawn as a negative would push the held-out item down.
        var ml = new MLContext(seed: 1);
        var random = new Random(4);
        var seen = new HashSet<(string, string)>();
        var trainRows = new List<PairInput>();
        var testRows = new List<PairInput>();
        for (int u = 0; u < 20; u++)
        {
            var items = Enumerable.Range(1, 50).OrderBy(_ => random.Next()).ToList();
            foreach (var i in items.Take(40))
            {
                trainRows.Add(new PairInput { User = $"u{u}", Item = $"i{i}" });
                seen.Add(($"u{u}", $"i{i}"));
            }
            testRows.Add(new PairInput { User = $"u{u}", Item = $"i{items[40]}" });
        }
        var heldOut = testRows.Select(r => (r.User, r.Item)).ToHashSet();
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        var scorer = ml.Transforms.CustomMapping<PairInput, PairScore>(
            (input, output) => output.Score = seen.Contains((input.User, input.Item)) ? 1000 : heldOut.Contains((input.User, input.Item)) ? 1 : 0, contractName: null).Fit(train);
        var metrics = ml.Regression.EvaluateRecommendations(scorer, train, test,
            new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", K = 1, NegativeCount = 5 });
        Assert.That(metrics.HitRate, Is.EqualTo(1.0));
        Assert.That(metrics.Ndcg, Is.EqualTo(1.0));
        Assert.That(metrics.MeanNegativeCount, Is.EqualTo(5.0));
        // 9 unseen items per user: asking for 99 ranks against all of them.
        metrics = ml.Regression.EvaluateRecommendations(scorer, train, test, new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item" });
        Assert.That(metrics.MeanNegativeCount, Is.EqualTo(9.0));
        Assert.That(metrics.HitRate, Is.EqualTo(1.0));
    }

    [Test]
    public void SameSeedDrawsTheSameNegatives()
    {
        var ml = new MLContext(seed: 1);
        var rows = Enumerable.Range(0, 30).Select(k => new PairInput { User = $"u{k % 5}", Item = $"i{k}" }).ToList();
        var train = ml.Data.LoadFromEnumerable(rows.Skip(5).ToList());
        var test = ml.Data.LoadFromEnumerable(rows.Take(5).ToList());
        var options = new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", NegativeCount = 4, K = 2 };
        var a = ml.Regression.EvaluateRecommendations(ByItemNumber(ml, train), train, test, options);
        var b = ml.Regression.EvaluateRecommendations(ByItemNumber(ml, train), train, test, options);
        Assert.That((a.HitRate, a.Ndcg), Is.EqualTo((b.HitRate, b.Ndcg)));
    }

    [Test]
    public void LeaveLastOutHoldsOutEachUsersLatestInteraction()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new InteractionRow { User = "u1", Item = "a", Timestamp = 1 },
            new InteractionRow { User = "u1", Item = "b", Timestamp = 3 },
            new InteractionRow { User = "u1", Item = "c", Timestamp = 2 },
            new InteractionRow { User = "u2", Item = "a", Timestamp = 5 },
            new InteractionRow { User = "u3", Item = "b", Timestamp = 2 },
            new InteractionRow { User = "u3", Item = "c", Timestamp = 2 },
        });
        var split = ml.Data.LeaveLastOutSplit(data, "User", "Timestamp");
        string Pairs(IDataView view) => string.Join(" ", ml.Data.CreateEnumerable<InteractionRow>(view, reuseRowObject: false).Select(r => r.User + r.Item));
        // u1's latest is b (time 3); u3's two rows share time 2, the later row (c) is held out; u2 has one row and stays.
        Assert.That(Pairs(split.TestSet), Is.EqualTo("u1b u3c"));
        Assert.That(Pairs(split.TrainSet), Is.EqualTo("u1a u1c u2a u3b"));
        Assert.That((split.TrainSet.GetRowCount(), split.TestSet.GetRowCount()), Is.EqualTo((4L, 2L)));
        Assert.That(split.TrainSet.Schema["Timestamp"].Type, Is.EqualTo(NumberDataViewType.Single));

        // Key-typed ids mapped before the split keep one mapping on both sides, and the evaluator accepts them.
        var keyed = ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item")).Fit(data).Transform(data);
        var keyedSplit = ml.Data.LeaveLastOutSplit(keyed, "User", "Timestamp");
        var unkeyed = ml.Transforms.Conversion.MapKeyToValue("Item").Append(ml.Transforms.Conversion.MapKeyToValue("User"));
        var scorer = unkeyed.Append(ml.Transforms.CustomMapping<PairInput, PairScore>((input, output) => output.Score = input.Item[0], contractName: null)).Fit(keyedSplit.TrainSet);
        // u1: b against nothing it has not seen -> no negatives, rank 1; u3: c against a -> 'c' > 'a', rank 1.
        var metrics = ml.Regression.EvaluateRecommendations(scorer, keyedSplit.TrainSet, keyedSplit.TestSet,
            new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", K = 1 });
        Assert.That((metrics.HitRate, metrics.UserCount, metrics.MeanNegativeCount), Is.EqualTo((1.0, 2, 0.5)));
    }

    [Test]
    public void BadInputGivesClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new InteractionRow { User = "u1", Item = "a", Timestamp = float.NaN }, new InteractionRow { User = "u1", Item = "b", Timestamp = 1 } });
        var e = Assert.Throws<ArgumentException>(() => ml.Data.LeaveLastOutSplit(data, "User", "Timestamp"))!;
        Assert.That(e.Message, Does.Contain("Row 1").And.Contain("missing timestamp").And.Contain("'Timestamp'"));
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Data.LeaveLastOutSplit(data, "User", "Item"))!.Message, Does.Contain("'Item' has type").And.Contain("DateTime"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => ml.Data.LeaveLastOutSplit(data, "Customer", "Timestamp"))!.Message, Does.Contain("no column 'Customer'"));

        var pairs = ml.Data.LoadFromEnumerable(new[] { new PairInput { User = "u1", Item = "i1" }, new PairInput { User = "u2", Item = "i2" } });
        var scorer = ByItemNumber(ml, pairs);
        var options = new RecommendationRankingOptions { MatrixColumnIndexColumnName = "User", MatrixRowIndexColumnName = "Item", K = 0 };
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.EvaluateRecommendations(scorer, pairs, pairs, options))!.ParamName, Is.EqualTo("K"));
        options.K = 10;
        options.ScoreColumnName = "Relevance";
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.EvaluateRecommendations(scorer, pairs, pairs, options))!.Message,
            Does.Contain("no column 'Relevance' (ScoreColumnName)"));
        options.ScoreColumnName = "Score";
        options.MatrixRowIndexColumnName = "Product";
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => ml.Regression.EvaluateRecommendations(scorer, pairs, pairs, options))!.Message,
            Does.Contain("no column 'Product' (MatrixRowIndexColumnName)"));

        // Train and test keyed by two different mappings: the key numbers would mean different items.
        options.MatrixRowIndexColumnName = "Item";
        var other = ml.Data.LoadFromEnumerable(new[] { new PairInput { User = "u2", Item = "i2" }, new PairInput { User = "u1", Item = "i1" } });
        var trainKeyed = ml.Transforms.Conversion.MapValueToKey("Item").Fit(pairs).Transform(pairs);
        var testKeyed = ml.Transforms.Conversion.MapValueToKey("Item").Fit(other).Transform(other);
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Regression.EvaluateRecommendations(scorer, trainKeyed, testKeyed, options))!.Message,
            Does.Contain("other key values in the training set than in the test set"));
        var empty = ml.Data.LoadFromEnumerable(new List<PairInput>());
        Assert.That(Assert.Throws<ArgumentException>(() => ml.Regression.EvaluateRecommendations(scorer, pairs, empty, options))!.Message, Does.Contain("nothing to rank"));
    }
}
