using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Ranking;

/// <summary>Options of <c>mlContext.Regression.EvaluateRecommendations</c>: the columns, K and how the held-out items' competitors are drawn.</summary>
public sealed class RecommendationRankingOptions
{
    /// <summary>The user column of the training and test sets (as the trainers' <c>MatrixColumnIndexColumnName</c>). Required.</summary>
    public string MatrixColumnIndexColumnName = "";

    /// <summary>The item column of the training and test sets (as the trainers' <c>MatrixRowIndexColumnName</c>). Required.</summary>
    public string MatrixRowIndexColumnName = "";

    /// <summary>The model's output column that ranks items (Single or Double; higher is better). Default <c>Score</c>.</summary>
    public string ScoreColumnName = "Score";

    /// <summary>The cut-off of the top of the ranking (HR@K, NDCG@K). Default 10.</summary>
    public int K = 10;

    /// <summary>
    /// Items each held-out item is ranked against: drawn (with <see cref="Seed"/>, without repetition) from the items of
    /// the training and test sets that the user never interacted with in either. Default 99, the usual protocol. A user who
    /// left fewer such items is ranked against all of them.
    /// </summary>
    public int NegativeCount = 99;

    /// <summary>Rank each held-out item against every item its user never interacted with instead of <see cref="NegativeCount"/> sampled ones. Default false.</summary>
    public bool RankAllItems;

    /// <summary>Seed of the negatives' draw: the same seed on the same data draws the same items for every model.</summary>
    public int Seed = 1;

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(MatrixColumnIndexColumnName)) throw new ArgumentException($"{nameof(MatrixColumnIndexColumnName)} is empty: set it to the user column.", nameof(MatrixColumnIndexColumnName));
        if (string.IsNullOrWhiteSpace(MatrixRowIndexColumnName)) throw new ArgumentException($"{nameof(MatrixRowIndexColumnName)} is empty: set it to the item column.", nameof(MatrixRowIndexColumnName));
        if (MatrixColumnIndexColumnName == MatrixRowIndexColumnName)
            throw new ArgumentException($"{nameof(MatrixColumnIndexColumnName)} and {nameof(MatrixRowIndexColumnName)} are both '{MatrixRowIndexColumnName}'; users and items need two columns.", nameof(MatrixRowIndexColumnName));
        if (string.IsNullOrWhiteSpace(ScoreColumnName)) throw new ArgumentException($"{nameof(ScoreColumnName)} is empty.", nameof(ScoreColumnName));
        if (K < 1) throw new ArgumentOutOfRangeException(nameof(K), K, "K must be 1 or more.");
        if (NegativeCount < 1) throw new ArgumentOutOfRangeException(nameof(NegativeCount), NegativeCount, "NegativeCount must be 1 or more (or set RankAllItems).");
    }
}

/// <summary>
/// The leave-last-out ranking evaluation: every test row is a held-out interaction; its item and the negatives drawn
/// for its user are scored by the model (through <c>Transform</c>, on a data view of the user and item columns alone,
/// with the test set's column types and key values), and the held-out item's rank among them gives HR@K and NDCG@K.
/// </summary>
internal static class RecommendationRankingEvaluator
{
    public static RecommendationRankingMetrics Evaluate(IHostEnvironment env, ITransformer model, IDataView trainSet, IDataView testSet, RecommendationRankingOptions options)
    {
        if (model is null) throw new ArgumentNullException(nameof(model));
        if (trainSet is null) throw new ArgumentNullException(nameof(trainSet));
        if (testSet is null) throw new ArgumentNullException(nameof(testSet));
        if (options is null) throw new ArgumentNullException(nameof(options));
        options.Validate();
        var host = env.Register(nameof(RecommendationRankingEvaluator));
        using var ch = host.Start("Ranking evaluation");

        var trainUser = IdColumn.Find(trainSet.Schema, options.MatrixColumnIndexColumnName, nameof(options.MatrixColumnIndexColumnName), "user", "training set");
        var trainItem = IdColumn.Find(trainSet.Schema, options.MatrixRowIndexColumnName, nameof(options.MatrixRowIndexColumnName), "item", "training set");
        var testUser = IdColumn.Find(testSet.Schema, options.MatrixColumnIndexColumnName, nameof(options.MatrixColumnIndexColumnName), "user", "test set");
        var testItem = IdColumn.Find(testSet.Schema, options.MatrixRowIndexColumnName, nameof(options.MatrixRowIndexColumnName), "item", "test set");
        CheckSameType(trainUser, testUser, nameof(options.MatrixColumnIndexColumnName));
        CheckSameType(trainItem, testItem, nameof(options.MatrixRowIndexColumnName));

        // Every item with its raw value (to score it), in order of appearance; every user's items.
        var itemIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        var itemValues = new List<object>();
        var userItems = new Dictionary<string, HashSet<int>>(StringComparer.Ordinal);
        int ItemOf(string id, object raw)
        {
            if (itemIndex.TryGetValue(id, out var index)) return index;
            itemIndex[id] = itemValues.Count;
            itemValues.Add(raw);
            return itemValues.Count - 1;
        }
        void Interacted(string user, int item)
        {
            if (!userItems.TryGetValue(user, out var items)) userItems[user] = items = new HashSet<int>();
            items.Add(item);
        }
        long missing = 0;
        using (var cursor = trainSet.GetRowCursor(new[] { trainUser, trainItem }))
        {
            var user = IdColumn.Reader(cursor, trainUser);
            var item = IdColumn.Reader(cursor, trainItem);
            var itemRaw = RawValues.Reader(cursor, trainItem);
            while (cursor.MoveNext())
            {
                string? u = user(), i = item();
                if (u is null || i is null)
                {
                    missing++;
                    continue;
                }
                Interacted(u, ItemOf(i, itemRaw()));
            }
        }
        var heldOut = new List<(string User, object UserRaw, int Item)>();
        long missingTest = 0;
        using (var cursor = testSet.GetRowCursor(new[] { testUser, testItem }))
        {
            var user = IdColumn.Reader(cursor, testUser);
            var item = IdColumn.Reader(cursor, testItem);
            var userRaw = RawValues.Reader(cursor, testUser);
            var itemRaw = RawValues.Reader(cursor, testItem);
            while (cursor.MoveNext())
            {
                string? u = user(), i = item();
                if (u is null || i is null)
                {
                    missingTest++;
                    continue;
                }
                int index = ItemOf(i, itemRaw());
                Interacted(u, index);
                heldOut.Add((u, userRaw(), index));
            }
        }
        if (missing > 0) ch.Warning($"{missing} rows of the training set with a missing user or item were ignored.");
        if (missingTest > 0) ch.Warning($"{missingTest} rows of the test set with a missing user or item were not evaluated.");
        if (heldOut.Count == 0)
            throw new ArgumentException($"The test set has no row with a user in '{options.MatrixColumnIndexColumnName}' and an item in '{options.MatrixRowIndexColumnName}': nothing to rank.", nameof(testSet));

        // The candidates: each held-out item, then its negatives.
        var random = new Random(options.Seed);
        var negatives = heldOut.Select(h => Negatives(userItems[h.User], itemValues.Count, options, random)).ToList();
        int total = heldOut.Count + negatives.Sum(n => n.Length);
        var users = new object[total];
        var items = new object[total];
        int row = 0;
        for (int q = 0; q < heldOut.Count; q++)
        {
            users[row] = heldOut[q].UserRaw;
            items[row++] = itemValues[heldOut[q].Item];
            foreach (var n in negatives[q])
            {
                users[row] = heldOut[q].UserRaw;
                items[row++] = itemValues[n];
            }
        }
        ch.Info($"Ranking {heldOut.Count:N0} held-out interactions of {heldOut.Select(h => h.User).Distinct().Count():N0} users among {itemValues.Count:N0} items ({total:N0} scored pairs).");

        var scores = Scores(model.Transform(new PairDataView(testUser, testItem, users, items)), options.ScoreColumnName, total);
        var ranked = new List<(string User, float Positive, float[] Negatives)>(heldOut.Count);
        row = 0;
        for (int q = 0; q < heldOut.Count; q++)
        {
            float positive = scores[row++];
            var others = new float[negatives[q].Length];
            Array.Copy(scores, row, others, 0, others.Length);
            row += others.Length;
            if (float.IsNaN(positive) || others.Any(float.IsNaN))
                throw new InvalidOperationException($"The model scored NaN for user '{heldOut[q].User}' (held-out interaction {q + 1}); ranking needs numbers.");
            ranked.Add((heldOut[q].User, positive, others));
        }
        return RecommendationRankingMetrics.FromScores(ranked, options.K);
    }

    private static void CheckSameType(DataViewSchema.Column train, DataViewSchema.Column test, string option)
    {
        if (!train.Type.Equals(test.Type))
            throw new ArgumentException($"The column '{train.Name}' ({option}) has type {train.Type} in the training set and {test.Type} in the test set; give both the same type (and key mapping).", option);
        if (train.Type is KeyDataViewType && !(IdColumn.KeyValues(train) ?? Array.Empty<string>()).SequenceEqual(IdColumn.KeyValues(test) ?? Array.Empty<string>()))
            throw new ArgumentException($"The key column '{train.Name}' ({option}) has other key values in the training set than in the test set; map both with one MapValueToKey fitted before the split, or pass the raw ids.", option);
    }

    /// <summary>The negatives of a user (item indices): all items the user never interacted with, or <see cref="RecommendationRankingOptions.NegativeCount"/> of them drawn without repetition.</summary>
    private static int[] Negatives(HashSet<int> interacted, int itemCount, RecommendationRankingOptions options, Random random)
    {
        int available = itemCount - interacted.Count;
        if (options.RankAllItems || available <= 2 * options.NegativeCount)
        {
            var all = Enumerable.Range(0, itemCount).Where(i => !interacted.Contains(i)).ToArray();
            if (options.RankAllItems || all.Length <= options.NegativeCount) return all;
            // A partial Fisher-Yates shuffle: the first NegativeCount of a random order.
            for (int k = 0; k < options.NegativeCount; k++)
            {
                int j = random.Next(k, all.Length);
                (all[k], all[j]) = (all[j], all[k]);
            }
            return all[..options.NegativeCount];
        }
        var drawn = new List<int>(options.NegativeCount);
        var chosen = new HashSet<int>();
        while (drawn.Count < options.NegativeCount)
        {
            int item = random.Next(itemCount);
            if (!interacted.Contains(item) && chosen.Add(item)) drawn.Add(item);
        }
        return drawn.ToArray();
    }

    private static float[] Scores(IDataView scored, string scoreColumnName, int expected)
    {
        var column = ColumnChecks.Find(scored.Schema, scoreColumnName, nameof(RecommendationRankingOptions.ScoreColumnName), "model's output");
        var result = new float[expected];
        int n = 0;
        using var cursor = scored.GetRowCursor(new[] { column });
        Func<float> read;
        if (column.Type == NumberDataViewType.Single)
        {
            var getter = cursor.GetGetter<float>(column);
            float v = 0;
            read = () => { getter(ref v); return v; };
        }
        else if (column.Type == NumberDataViewType.Double)
        {
            var getter = cursor.GetGetter<double>(column);
            double v = 0;
            read = () => { getter(ref v); return (float)v; };
        }
        else
        {
            throw new ArgumentException($"The score column '{scoreColumnName}' has type {column.Type}; a Single or Double score is needed.", nameof(RecommendationRankingOptions.ScoreColumnName));
        }
        while (cursor.MoveNext())
        {
            if (n >= expected) throw new InvalidOperationException($"The model returned more rows than the {expected} it was given.");
            result[n++] = read();
        }
        if (n != expected) throw new InvalidOperationException($"The model returned {n} rows for the {expected} it was given (a filter in the pipeline?); ranking needs a score for every pair.");
        return result;
    }
}
