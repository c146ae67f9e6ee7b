namespace Microsoft.ML.Peft.Tasks.Recommendation.Ranking;

/// <summary>
/// Top-K ranking quality of a recommender under the leave-last-out protocol (He et al. 2017): each held-out interaction's
/// item is ranked, by the model's score for its user, among items that user never interacted with (99 sampled ones, or
/// all). Returned by <c>mlContext.Regression.EvaluateRecommendations</c>.
/// </summary>
/// <remarks>
/// For one held-out item at 1-based rank r: the hit is 1 when r ≤ K, else 0; the NDCG is 1 / log2(r + 1) when r ≤ K, else 0
/// (one relevant item, so the ideal DCG is 1). Items scored exactly as the held-out item are counted as if ties were
/// broken at random: the hit and NDCG of a held-out item tied with t others, below g higher-scored ones, are their means
/// over ranks g + 1 to g + t + 1 (a model that scores every item alike gets the hit rate of a random ranking, not 1).
/// Both metrics are means over the held-out interactions.
/// </remarks>
public sealed class RecommendationRankingMetrics
{
    internal RecommendationRankingMetrics(double hitRate, double ndcg, int k, int userCount, int interactionCount, double meanNegativeCount)
    {
        HitRate = hitRate;
        Ndcg = ndcg;
        K = k;
        UserCount = userCount;
        InteractionCount = interactionCount;
        MeanNegativeCount = meanNegativeCount;
    }

    /// <summary>HR@K: the share of held-out items ranked in the top <see cref="K"/>.</summary>
    public double HitRate { get; }

    /// <summary>NDCG@K: the mean of 1 / log2(rank + 1) over held-out items ranked in the top <see cref="K"/> (0 for the others).</summary>
    public double Ndcg { get; }

    /// <summary>The cut-off of the top of the ranking.</summary>
    public int K { get; }

    /// <summary>Distinct users with a held-out interaction evaluated.</summary>
    public int UserCount { get; }

    /// <summary>Held-out interactions ranked (one per user under leave-last-out).</summary>
    public int InteractionCount { get; }

    /// <summary>Items each held-out item was ranked against, on average (99 under the usual protocol, fewer for users who interacted with nearly every item).</summary>
    public double MeanNegativeCount { get; }

    /// <summary>The hit (0 to 1) and NDCG at <paramref name="k"/> of one held-out item scored <paramref name="positive"/> among <paramref name="negatives"/>, ties broken at random in expectation.</summary>
    internal static (double Hit, double Ndcg) Of(float positive, ReadOnlySpan<float> negatives, int k)
    {
        if (float.IsNaN(positive)) throw new ArgumentException("The held-out item's score is NaN.", nameof(positive));
        int greater = 0, tied = 0;
        foreach (var s in negatives)
        {
            if (float.IsNaN(s)) throw new ArgumentException("A negative item's score is NaN.", nameof(negatives));
            if (s > positive) greater++;
            else if (s == positive) tied++;
        }
        double hit = 0, ndcg = 0;
        for (int rank = greater + 1; rank <= greater + tied + 1 && rank <= k; rank++)
        {
            hit += 1;
            ndcg += 1 / Math.Log2(rank + 1);
        }
        return (hit / (tied + 1), ndcg / (tied + 1));
    }

    /// <summary>The metrics of held-out items: each with its user, its score and its negatives' scores.</summary>
    internal static RecommendationRankingMetrics FromScores(IReadOnlyList<(string User, float Positive, float[] Negatives)> heldOut, int k)
    {
        if (heldOut.Count == 0) throw new ArgumentException("There is no held-out interaction to rank.", nameof(heldOut));
        double hits = 0, ndcg = 0, negatives = 0;
        foreach (var (_, positive, scores) in heldOut)
        {
            var (hit, gain) = Of(positive, scores, k);
            hits += hit;
            ndcg += gain;
            negatives += scores.Length;
        }
        int n = heldOut.Count;
        return new RecommendationRankingMetrics(hits / n, ndcg / n, k, heldOut.Select(h => h.User).Distinct(StringComparer.Ordinal).Count(), n, negatives / n);
    }
}
