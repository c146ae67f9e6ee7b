using Microsoft.ML.Peft.Tasks.Recommendation;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>What the tests of the recommender adaptations share: two periods of ratings, RMSE, and the bad-input checks every adaptation trainer must pass.</summary>
internal static class AdaptationTesting
{
    /// <summary>
    /// Ratings of two periods: users 0..users-1 (<c>u0</c>, ...) rate 60% of the items (<c>i0</c>, ...) in the base period
    /// with <paramref name="before"/>(user, item); in the later period they and <paramref name="newUsers"/> new users
    /// (<c>n0</c>, ...) rate with <paramref name="later"/>, 40% of the cells to adapt on and 10% held out (cut to the base's
    /// range; held-out ratings only of users and items the adaptation set rates). The functions may draw from
    /// <paramref name="random"/>: it is called in a fixed order.
    /// </summary>
    public static (List<RatingRow> Base, List<RatingRow> Adapt, List<RatingRow> Test) Periods(Random random, int users, int newUsers, int items,
        Func<int, int, float> before, Func<int, int, float> later)
    {
        string Name(int u) => u < users ? $"u{u}" : $"n{u - users}";
        var first = new List<RatingRow>();
        var adapt = new List<RatingRow>();
        var test = new List<RatingRow>();
        for (int u = 0; u < users + newUsers; u++)
        {
            for (int i = 0; i < items; i++)
            {
                if (u < users && random.NextDouble() < 0.6) first.Add(new RatingRow { User = Name(u), Item = $"i{i}", Label = before(u, i) });
                double roll = random.NextDouble();
                if (roll > 0.5) continue;
                var row = new RatingRow { User = Name(u), Item = $"i{i}", Label = later(u, i) };
                (roll < 0.4 ? adapt : test).Add(row);
            }
        }
        // Later ratings stay on the base's scale (an adaptation refuses ratings outside the range its base was trained on).
        float low = first.Min(r => r.Label), high = first.Max(r => r.Label);
        foreach (var r in adapt.Concat(test)) r.Label = Math.Clamp(r.Label, low, high);
        var adaptUsers = adapt.Select(r => r.User).ToHashSet();
        var adaptItems = adapt.Select(r => r.Item).ToHashSet();
        return (first, adapt, test.Where(r => adaptUsers.Contains(r.User) && adaptItems.Contains(r.Item)).ToList());
    }

    /// <summary>The quick recipe of these tests' small synthetic worlds: rank 2, little regularisation, a high learning rate.</summary>
    public static T AdaptOptions<T>(MatrixFactorizationAdaptation method, int iterations, int batchSize) where T : RecommendationAdaptationOptions, new() => new()
    {
        Method = method,
        AdaptationRank = 2,
        Lambda = 0.001,
        LearningRate = 0.02,
        NumberOfIterations = iterations,
        BatchSize = batchSize,
    };

    public static double Rmse(MLContext ml, ITransformer model, IReadOnlyList<RatingRow> rows)
    {
        var scores = ml.Data.CreateEnumerable<RatingScore>(model.Transform(ml.Data.LoadFromEnumerable(rows)), reuseRowObject: false).Select(s => s.Score).ToArray();
        return Math.Sqrt(scores.Zip(rows, (s, r) => (double)(s - r.Label) * (s - r.Label)).Average());
    }

    public static float[] Values(Tensor t) => t.detach().cpu().data<float>().ToArray();

    /// <summary>
    /// An adaptation (<paramref name="fit"/>) refuses: an empty set, ratings none of whose users and items the base knows,
    /// and a rating above the base's range (<paramref name="high"/>), each with a message naming what is wrong.
    /// </summary>
    public static void AssertRefusesBadData(MLContext ml, Func<IDataView, IDisposable> fit, IReadOnlyList<RatingRow> adapt, float high)
    {
        var e = Assert.Throws<ArgumentException>(() => fit(ml.Data.LoadFromEnumerable(new List<RatingRow>())))!;
        Assert.That(e.Message, Does.Contain("adaptation data").And.Contain("it is empty"));

        var strangers = new[] { new RatingRow { User = "x1", Item = "y1", Label = 3 }, new RatingRow { User = "x2", Item = "y2", Label = 4 } };
        e = Assert.Throws<ArgumentException>(() => fit(ml.Data.LoadFromEnumerable(strangers)))!;
        Assert.That(e.Message, Does.Contain("None of the adaptation data's 2 ratings").And.Contain("'User'").And.Contain("'Item'"));

        var outOfRange = adapt.Take(5).Append(new RatingRow { User = "u1", Item = "i1", Label = high + 2 }).ToList();
        e = Assert.Throws<ArgumentException>(() => fit(ml.Data.LoadFromEnumerable(outOfRange)))!;
        Assert.That(e.Message, Does.Contain("rating column 'Label'").And.Contain("user 'u1', item 'i1'").And.Contain("outside the range"));
    }

    /// <summary>
    /// An adaptation given a base model file (<paramref name="fitWithBasePath"/>) that holds an ML.NET model of another
    /// kind (a key mapping), or that is no model at all, refuses it with a message naming the file and what it holds.
    /// </summary>
    public static void AssertRefusesOtherFiles(MLContext ml, DirectoryInfo dir, IDataView data, Func<string, IDisposable> fitWithBasePath)
    {
        var keysPath = Path.Combine(dir.FullName, "keys.zip");
        ml.Model.Save(ml.Transforms.Conversion.MapValueToKey("User").Fit(data), data.Schema, keysPath);
        var kind = Assert.Throws<InvalidDataException>(() => fitWithBasePath(keysPath))!;
        Assert.That(kind.Message, Does.Contain("keys.zip").And.Contain("another kind").And.Contain("ValueToKeyMappingTransformer"));
        var notAModel = Path.Combine(dir.FullName, "notes.zip");
        File.WriteAllText(notAModel, "not a zip");
        kind = Assert.Throws<InvalidDataException>(() => fitWithBasePath(notAModel))!;
        Assert.That(kind.Message, Does.Contain("notes.zip").And.Contain("cannot be loaded as an ML.NET model"));
    }

    /// <summary>
    /// A saved adaptation whose metadata is edited to claim more (each key set to its value) is refused, with an
    /// InvalidDataException saying so, before anything that size is allocated.
    /// </summary>
    public static void AssertRefusesClaimsBeyondEntries(MLContext ml, string path, params (string Key, int Value, string Message)[] edits)
    {
        foreach (var (key, value, message) in edits)
        {
            var tampered = SafeLoadingTests.RewriteEntry(path, "Metadata.json", b => SafeLoadingTests.EditMetadata(b, json => json[key] = value));
            try
            {
                var error = Assert.Catch(() => ml.Model.LoadPeft(tampered, new Format.PeftLoadOptions(), out _))!;
                Assert.That(error, Is.InstanceOf<InvalidDataException>(), error.ToString());
                Assert.That(error.Message, Does.Contain(message), key);
            }
            finally
            {
                File.Delete(tampered);
            }
        }
    }
}
