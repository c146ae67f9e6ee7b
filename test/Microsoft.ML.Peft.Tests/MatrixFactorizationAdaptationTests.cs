using System.IO.Compression;
using Microsoft.ML.Peft.Tasks.Recommendation;
using NUnit.Framework;
using static Microsoft.ML.Peft.Tests.AdaptationTesting;

namespace Microsoft.ML.Peft.Tests;

/// <summary>PeftMatrixFactorizationAdaptation: drift, cold start, frozen and shared base, saving, bad input.</summary>
[TestFixture]
[NonParallelizable]
public class MatrixFactorizationAdaptationTests
{
    private const int Users = 40;
    private const int Items = 30;

    /// <summary>
    /// A rank-2 world observed twice. The base period: r(u, i) = 3 + 0.5 sin(u) + 0.4 cos(i) + a_u · b_i. The later period:
    /// every rating 0.6 higher (cut to the base's range), the users' tastes a_u turned by 90 degrees, and 10 new users (n0..n9). Returns the base
    /// ratings, the later ratings to adapt on, and later ratings held out (every user and item of them is rated in the
    /// adaptation set).
    /// </summary>
    private static (List<RatingRow> Base, List<RatingRow> Adapt, List<RatingRow> Test) Drift(int seed)
    {
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var a = Enumerable.Range(0, Users + 10).Select(_ => new[] { 0.8 * Normal(), 0.8 * Normal() }).ToArray();
        var b = Enumerable.Range(0, Items).Select(_ => new[] { 0.8 * Normal(), 0.8 * Normal() }).ToArray();
        return AdaptationTesting.Periods(random, Users, 10, Items,
            (u, i) => (float)(3 + 0.5 * Math.Sin(u) + 0.4 * Math.Cos(i) + a[u][0] * b[i][0] + a[u][1] * b[i][1]),
            (u, i) => (float)(3.6 + 0.5 * Math.Sin(u) + 0.4 * Math.Cos(i) - a[u][1] * b[i][0] + a[u][0] * b[i][1]));
    }

    private static PeftMatrixFactorizationTrainer.Options BaseOptions() => MatrixFactorizationTests.Options();

    private static PeftMatrixFactorizationAdaptationTrainer.Options AdaptOptions(MatrixFactorizationAdaptation method) => AdaptOptions<PeftMatrixFactorizationAdaptationTrainer.Options>(method, 60, 64);

    [Test]
    public void AdaptationFollowsTheDriftWithTheBaseFrozenAndGivesNewUsersRows()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, test) = Drift(seed: 3);
        using var baseModel = ml.Regression.Trainers.PeftMatrixFactorization(BaseOptions()).Fit(ml.Data.LoadFromEnumerable(before));
        var baseTables = baseModel.Model.Network.NamedParameters().Select(p => Values(p.Parameter)).ToList();
        string baseHash = baseModel.BaseModelSha256;

        double baseRmse = Rmse(ml, baseModel, test);
        var results = new Dictionary<MatrixFactorizationAdaptation, double>();
        foreach (var method in Enum.GetValues<MatrixFactorizationAdaptation>())
        {
            using var adapted = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, AdaptOptions(method)).Fit(ml.Data.LoadFromEnumerable(adapt));
            results[method] = Rmse(ml, adapted, test);
            Assert.That(adapted.AdaptationMethod, Is.EqualTo(method));
            Assert.That((adapted.NewUserCount, adapted.NewItemCount), Is.EqualTo((10, 0)), "the ten new users get rows; every item was known");
            Assert.That(adapted.UserIds.Take(baseModel.UserCount), Is.EqualTo(baseModel.UserIds), "the base's users keep their rows");
            Assert.That(adapted.BaseModelSha256, Is.EqualTo(baseHash));
            long expected = 1 + (adapted.UserCount + 1) + (adapted.ItemCount + 1) + method switch
            {
                MatrixFactorizationAdaptation.Lora => (adapted.UserCount + 1 + adapted.ItemCount + 1) * 2 + 2 * 2 * 4,
                MatrixFactorizationAdaptation.Full => (adapted.UserCount + 1 + adapted.ItemCount + 1) * 4,
                _ => 0,
            };
            Assert.That(adapted.TrainableParameterCount, Is.EqualTo(expected), $"{method}: global mean shift, bias offsets and the method's factor offsets");
        }
        TestContext.Out.WriteLine($"{test.Count} later ratings: base RMSE {baseRmse:F4}; " + string.Join(", ", results.Select(r => $"{r.Key} {r.Value:F4}")));
        // The base tables are untouched by three adaptations.
        Assert.That(baseModel.Model.Network.NamedParameters().Select(p => Values(p.Parameter)), Is.EqualTo(baseTables));
        Assert.That(baseModel.BaseModelSha256, Is.EqualTo(baseHash));
        // Biases follow the mean shift; factor offsets also follow the turned tastes, the dense ones at least as well.
        Assert.That(results[MatrixFactorizationAdaptation.Bias], Is.LessThan(0.95 * baseRmse));
        Assert.That(results[MatrixFactorizationAdaptation.Lora], Is.LessThan(0.7 * results[MatrixFactorizationAdaptation.Bias]));
        Assert.That(results[MatrixFactorizationAdaptation.Full], Is.LessThan(0.7 * results[MatrixFactorizationAdaptation.Bias]));
    }

    [Test]
    public void BiasAdaptationIsTheBasePlusItsOffsetsAndNewUsersStartFromTheMeanUser()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, _) = Drift(seed: 5);
        var options = BaseOptions();
        options.NumberOfIterations = 10;
        using var baseModel = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(ml.Data.LoadFromEnumerable(before));
        var adaptOptions = AdaptOptions(MatrixFactorizationAdaptation.Bias);
        adaptOptions.NumberOfIterations = 3;
        using var adapted = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, adaptOptions).Fit(ml.Data.LoadFromEnumerable(adapt));

        var network = baseModel.Model.Network;
        var adapter = adapted.Model.Adapter!;
        var p = Values(network.UserFactors);
        var q = Values(network.ItemFactors);
        var bu = Values(network.UserBias);
        var bi = Values(network.ItemBias);
        float mean = Values(network.GlobalMean)[0];
        var state = adapter.SavedParameters.ToDictionary(x => x.Key, x => Values(x.Parameter));
        float shift = state[MatrixFactorizationAdapter.GlobalMeanDeltaName][0];
        var dbu = state[MatrixFactorizationAdapter.UserBiasDeltaName];
        var dbi = state[MatrixFactorizationAdapter.ItemBiasDeltaName];
        Assert.That(shift, Is.GreaterThan(0.1), "the later ratings are higher");
        const int rank = 4;
        int userRow = adapted.UserIds.ToList().IndexOf("u7") + 1, itemRow = adapted.ItemIds.ToList().IndexOf("i2") + 1;
        int newRow = adapted.UserIds.ToList().IndexOf("n3") + 1;
        Assert.That(newRow, Is.GreaterThan(baseModel.UserCount));

        // The mean user: the mean of the base's user rows (row 0, the unknown user, excluded).
        var meanUser = Enumerable.Range(0, rank).Select(k => Enumerable.Range(1, baseModel.UserCount).Average(u => (double)p[u * rank + k])).ToArray();
        double meanUserBias = Enumerable.Range(1, baseModel.UserCount).Average(u => (double)bu[u]);
        Assert.That(state[MatrixFactorizationAdapter.UserMeanName], Is.EqualTo(meanUser.Append(meanUserBias).Select(x => (float)x).ToArray()).Within(1e-5));

        double Dot(IEnumerable<double> user, int item) => user.Select((x, k) => x * q[item * rank + k]).Sum();
        var scores = adapted.Predict(new[] { ("u7", "i2"), ("n3", "i2"), ("stranger", "i2") });
        Assert.That(scores[0], Is.EqualTo(mean + shift + bu[userRow] + dbu[userRow] + bi[itemRow] + dbi[itemRow] + Dot(Enumerable.Range(0, rank).Select(k => (double)p[userRow * rank + k]), itemRow)).Within(1e-4));
        Assert.That(scores[1], Is.EqualTo(mean + shift + meanUserBias + dbu[newRow] + bi[itemRow] + dbi[itemRow] + Dot(meanUser, itemRow)).Within(1e-4));
        // An unknown user is the mean new user of the adaptation: here (biases only) the mean user's factors with the mean of
        // the new users' biases. No item was new: an unknown item stays the base's unknown item (zero).
        var newRows = Enumerable.Range(baseModel.UserCount + 1, adapted.UserCount - baseModel.UserCount).ToList();
        double unknownBias = meanUserBias + newRows.Average(r => (double)dbu[r]);
        Assert.That(state[MatrixFactorizationAdapter.UnknownUserName], Is.EqualTo(meanUser.Append(unknownBias).Select(x => (float)x).ToArray()).Within(1e-5));
        Assert.That(state[MatrixFactorizationAdapter.UnknownItemName], Has.All.Zero);
        Assert.That(scores[2], Is.EqualTo(mean + shift + unknownBias + bi[itemRow] + dbi[itemRow] + Dot(meanUser, itemRow)).Within(1e-4));
        Assert.That(adapted.Predict(new[] { ("u7", "unseen item") })[0], Is.EqualTo(mean + shift + bu[userRow] + dbu[userRow]).Within(1e-4), "an unknown item: the user's adapted bias and the shifted mean");
    }

    [Test]
    public void AdaptedFilesHoldTheAdapterAloneAndShareTheirBaseWhenLoaded()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, test) = Drift(seed: 7);
        var dir = Directory.CreateTempSubdirectory("peft-mf-adapt-");
        try
        {
            var options = BaseOptions();
            options.NumberOfIterations = 10;
            var beforeView = ml.Data.LoadFromEnumerable(before);
            using var baseModel = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(beforeView);
            var basePath = Path.Combine(dir.FullName, "base.zip");
            ml.Model.Save(baseModel, beforeView.Schema, basePath);

            var adaptView = ml.Data.LoadFromEnumerable(adapt);
            var paths = new List<string>();
            var expected = new List<float[]>();
            foreach (var method in new[] { MatrixFactorizationAdaptation.Lora, MatrixFactorizationAdaptation.Bias })
            {
                var adaptOptions = AdaptOptions(method);
                adaptOptions.NumberOfIterations = 5;
                adaptOptions.BaseModelPath = basePath;
                using var adapted = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, adaptOptions).Fit(adaptView);
                var path = Path.Combine(dir.FullName, $"{method}.zip");
                ml.Model.Save(adapted, adaptView.Schema, path);
                paths.Add(path);
                expected.Add(adapted.Predict(test.Select(r => (r.User, r.Item)).ToList()));
            }
            var embeddedPath = Path.Combine(dir.FullName, "embedded.zip");
            using (var embedded = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, AdaptOptions(MatrixFactorizationAdaptation.Bias)).Fit(adaptView))
                ml.Model.Save(embedded, adaptView.Schema, embeddedPath);

            // The adapted files hold no tables: the bias adaptation's file is far smaller than the base's.
            using (var zip = ZipFile.OpenRead(paths[1]))
                Assert.That(zip.Entries.Any(e => e.FullName.EndsWith("BaseModel", StringComparison.Ordinal)), Is.False);
            Assert.That(new FileInfo(paths[1]).Length, Is.LessThan(new FileInfo(basePath).Length));
            Assert.That(new FileInfo(embeddedPath).Length, Is.GreaterThan(new FileInfo(basePath).Length), "without BaseModelPath the tables travel in the file");

            // Before any adaptation of this base is loaded (loaded bases are shared by hash): a moved base fails with the way
            // out, which LoadWithBaseModel takes; another base in its place is refused by hash.
            var moved = Path.Combine(dir.FullName, "moved.zip");
            File.Move(basePath, moved);
            var e = Assert.Throws<FileNotFoundException>(() => ml.Model.LoadPeft(paths[0], new Format.PeftLoadOptions(), out _))!;
            Assert.That(e.Message, Does.Contain("base.zip").And.Contain("LoadWithBaseModel"));
            options.Seed = 2;
            using (var other = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(beforeView))
            {
                var otherPath = Path.Combine(dir.FullName, "other.zip");
                ml.Model.Save(other, beforeView.Schema, otherPath);
                var wrong = Assert.Throws<InvalidDataException>(() => ml.Model.LoadWithBaseModel(paths[1], otherPath, out _))!;
                Assert.That(wrong.Message, Does.Contain("other tables"));
            }

            using var lora = (PeftMatrixFactorizationTransformer)ml.Model.LoadWithBaseModel(paths[0], moved, out _);
            File.Move(moved, basePath);
            using var bias = (PeftMatrixFactorizationTransformer)ml.Model.Load(paths[1], out _);
            using var self = (PeftMatrixFactorizationTransformer)ml.Model.Load(embeddedPath, out _);
            Assert.That(lora.Predict(test.Select(r => (r.User, r.Item)).ToList()), Is.EqualTo(expected[0]));
            Assert.That(bias.Predict(test.Select(r => (r.User, r.Item)).ToList()), Is.EqualTo(expected[1]));
            Assert.That(ReferenceEquals(lora.Model.Network, bias.Model.Network), Is.True, "two adaptations of one base share its tables");
            Assert.That(ReferenceEquals(self.Model.Network, bias.Model.Network), Is.True, "an embedded base with the same tables is shared too");
            using var engine = ml.Model.CreatePredictionEngine<RatingRow, RatingScore>(lora);
            Assert.That(engine.Predict(test[0]).Score, Is.EqualTo(expected[0][0]));

            // A file whose metadata claims tables far larger than its entries hold is refused before they are allocated.
            AdaptationTesting.AssertRefusesClaimsBeyondEntries(ml, paths[0], ("user_count", 40_000_000, "id lists"), ("rank", 4000, "too few"));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Test]
    public void BadAdaptationInputGivesClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, _) = Drift(seed: 9);
        var options = BaseOptions();
        options.NumberOfIterations = 2;
        var beforeView = ml.Data.LoadFromEnumerable(before);
        using var baseModel = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(beforeView);
        var trainer = ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, AdaptOptions(MatrixFactorizationAdaptation.Lora));

        AdaptationTesting.AssertRefusesBadData(ml, trainer.Fit, adapt, before.Max(r => r.Label));

        using var adapted = trainer.Fit(ml.Data.LoadFromEnumerable(adapt.Take(50).ToList()));
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(adapted))!;
        Assert.That(e.Message, Does.Contain("itself an adaptation"));

        // A model file of another kind given as the base.
        var dir = Directory.CreateTempSubdirectory("peft-mf-bad-");
        try
        {
            var withPath = AdaptOptions(MatrixFactorizationAdaptation.Bias);
            AdaptationTesting.AssertRefusesOtherFiles(ml, dir, beforeView, path =>
            {
                withPath.BaseModelPath = path;
                return ml.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, withPath).Fit(ml.Data.LoadFromEnumerable(adapt));
            });
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
