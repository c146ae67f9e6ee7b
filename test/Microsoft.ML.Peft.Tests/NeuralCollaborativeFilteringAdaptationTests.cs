using System.IO.Compression;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using NUnit.Framework;
using static Microsoft.ML.Peft.Tests.AdaptationTesting;

namespace Microsoft.ML.Peft.Tests;

/// <summary>PeftNeuralCollaborativeFilteringAdaptation: a nonlinear drift, cold start, the frozen and shared base, saving, bad input.</summary>
[TestFixture]
[NonParallelizable]
public class NeuralCollaborativeFilteringAdaptationTests
{
    private const int Users = 120;
    private const int Items = 60;
    private const int NewUsers = 10;

    /// <summary>
    /// A nonlinear world observed twice. Users and items each belong to one of three groups (drawn at random). In the base
    /// period a user rates items of its own group 4.5 and the others 1.5 (60% of the cells). In the later period every
    /// user has moved to the next group (g + 1 mod 3), and 10 new users (n0..n9) come, already in their later groups; N(0,
    /// 0.1²) noise throughout, cut to the base's range. Returns the base ratings, the later ratings to adapt on (40% of the
    /// cells) and later ratings held out (10%, every user and item of them rated in the adaptation set).
    /// </summary>
    private static (List<RatingRow> Base, List<RatingRow> Adapt, List<RatingRow> Test) Drift(int seed)
    {
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var userGroup = Enumerable.Range(0, Users + NewUsers).Select(_ => random.Next(3)).ToArray();
        var itemGroup = Enumerable.Range(0, Items).Select(_ => random.Next(3)).ToArray();
        float Rating(int group, int i) => (float)Math.Clamp((group == itemGroup[i] ? 4.5 : 1.5) + 0.1 * Normal(), 1, 5);
        return AdaptationTesting.Periods(random, Users, NewUsers, Items, (u, i) => Rating(userGroup[u], i), (u, i) => Rating((userGroup[u] + 1) % 3, i));
    }

    internal static PeftNeuralCollaborativeFilteringTrainer.Options BaseOptions() => new()
    {
        MatrixColumnIndexColumnName = "User",
        MatrixRowIndexColumnName = "Item",
        ApproximationRank = 16,
        HiddenLayerSizes = new[] { 32, 16 },
        Lambda = 0.001,
        LearningRate = 0.01,
        NumberOfIterations = 20,
        BatchSize = 128,
        ClampScores = false,
    };

    private static PeftNeuralCollaborativeFilteringAdaptationTrainer.Options AdaptOptions(MatrixFactorizationAdaptation method) => AdaptOptions<PeftNeuralCollaborativeFilteringAdaptationTrainer.Options>(method, 30, 128);

    /// <summary>A base trained briefly (for the tests that check arithmetic, files and errors rather than accuracy).</summary>
    private static PeftNeuralCollaborativeFilteringTransformer QuickBase(MLContext ml, IReadOnlyList<RatingRow> rows, int seed = 1)
    {
        var options = BaseOptions();
        options.NumberOfIterations = 3;
        options.Seed = seed;
        return ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(options).Fit(ml.Data.LoadFromEnumerable(rows));
    }

    [Test]
    public void AdaptationFollowsANonlinearDriftWithFewParametersAndTheBaseFrozen()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, test) = Drift(seed: 3);
        using var baseModel = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(BaseOptions()).Fit(ml.Data.LoadFromEnumerable(before));
        var baseTensors = baseModel.Model.Network.NamedParameters().Select(p => Values(p.Parameter)).ToList();
        string baseHash = baseModel.BaseModelSha256;
        double baseRmse = Rmse(ml, baseModel, test);

        var losses = new List<double>();
        var trainer = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, AdaptOptions(MatrixFactorizationAdaptation.Lora));
        trainer.IterationCompleted += (_, e) => losses.Add(e.TrainingMse);
        using var lora = trainer.Fit(ml.Data.LoadFromEnumerable(adapt));
        using var bias = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, AdaptOptions(MatrixFactorizationAdaptation.Bias)).Fit(ml.Data.LoadFromEnumerable(adapt));
        double loraRmse = Rmse(ml, lora, test), biasRmse = Rmse(ml, bias, test);
        TestContext.Out.WriteLine($"{test.Count} later ratings: base RMSE {baseRmse:F4} ({baseModel.ParameterCount} parameters); " +
            $"LoRA {loraRmse:F4} ({lora.TrainableParameterCount} trained); biases {biasRmse:F4} ({bias.TrainableParameterCount} trained)");

        // Everyone moved to the next group: the frozen base is wrong by about 3 on most cells, re-fitted biases cannot
        // express a change of the interaction, low-rank offsets of the embeddings and layers can.
        Assert.That(baseRmse, Is.GreaterThan(1.5));
        Assert.That(biasRmse, Is.GreaterThan(0.8 * baseRmse));
        Assert.That(loraRmse, Is.LessThan(0.2 * baseRmse));
        Assert.That(losses, Has.Count.EqualTo(30));
        Assert.That(losses[^1], Is.LessThan(losses[0] / 10));

        // Trained: the global mean's shift; per user (130 rows + the unknown row) and item (60 + 1) a bias offset and a rank-2
        // A row for each of the two embedding tables; B (2 x 16) per table; LoRA on mlp.0 (32 -> 32, r 2), mlp.1 (32 -> 16,
        // r 2) and predict (16 + 16 -> 1, r 1).
        Assert.That((lora.NewUserCount, lora.NewItemCount), Is.EqualTo((NewUsers, 0)));
        Assert.That(lora.UserIds.Take(baseModel.UserCount), Is.EqualTo(baseModel.UserIds), "the base's users keep their rows");
        long users = Users + NewUsers + 1, items = Items + 1;
        long expected = 1 + (users + items) + 2 * (users + items) * 2 + 4 * 2 * 16 + 2 * (32 + 32) + 2 * (32 + 16) + 1 * (32 + 1);
        Assert.That(lora.TrainableParameterCount, Is.EqualTo(expected));
        Assert.That(bias.TrainableParameterCount, Is.EqualTo(1 + users + items));
        Assert.That(lora.TrainableParameterCount, Is.LessThan(baseModel.ParameterCount / 5), "far fewer trained numbers than the base holds");
        Assert.That(lora.ParameterCount, Is.EqualTo(baseModel.ParameterCount + expected));
        Assert.That(lora.AdaptationMethod, Is.EqualTo(MatrixFactorizationAdaptation.Lora));
        Assert.That(baseModel.AdaptationMethod, Is.Null);

        // The base's tensors are untouched by two adaptations, and adapted models name the same base.
        Assert.That(baseModel.Model.Network.NamedParameters().Select(p => Values(p.Parameter)), Is.EqualTo(baseTensors));
        Assert.That(baseModel.BaseModelSha256, Is.EqualTo(baseHash));
        Assert.That(lora.BaseModelSha256, Is.EqualTo(baseHash));
        Assert.That(ReferenceEquals(lora.Model.Network, baseModel.Model.Network), Is.True, "the adaptation uses the base's network, not a copy");
    }

    [Test]
    public void AnAdaptationStartsAsTheBaseAndBiasOffsetsAddToItsScores()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, _) = Drift(seed: 5);
        using var baseModel = QuickBase(ml, before);
        var known = new[] { ("u7", "i2"), ("u30", "i11"), ("u99", "i59") };

        // LoRA's A (embeddings) and B (layers) start at zero: before training, the adapted model is the base.
        var still = AdaptOptions(MatrixFactorizationAdaptation.Lora);
        still.LearningRate = 1e-12;
        still.NumberOfIterations = 1;
        using (var untrained = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, still).Fit(ml.Data.LoadFromEnumerable(adapt)))
            Assert.That(untrained.Predict(known), Is.EqualTo(baseModel.Predict(known)).Within(1e-5));

        var options = AdaptOptions(MatrixFactorizationAdaptation.Bias);
        options.NumberOfIterations = 3;
        using var adapted = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt));
        var state = adapted.Model.Adapter!.SavedParameters.ToDictionary(p => p.Key, p => Values(p.Parameter));
        float shift = state["global_mean_delta"][0];
        var dbu = state["user_bias_delta"];
        var dbi = state["item_bias_delta"];
        int Row(IReadOnlyList<string> ids, string id) => ids.ToList().IndexOf(id) + 1;

        // Biases alone: the base's score plus the shift and the pair's two offsets.
        var expected = baseModel.Predict(known).Select((b, k) => b + shift + dbu[Row(adapted.UserIds, known[k].Item1)] + dbi[Row(adapted.ItemIds, known[k].Item2)]).ToArray();
        Assert.That(adapted.Predict(known), Is.EqualTo(expected).Within(1e-4));
        // An unknown item (no item was new, so it stays the base's unknown item): the base's score plus the user's offsets.
        var unknownItem = new[] { ("u7", "no such item") };
        Assert.That(adapted.Predict(unknownItem)[0], Is.EqualTo(baseModel.Predict(unknownItem)[0] + shift + dbu[Row(adapted.UserIds, "u7")]).Within(1e-4));

        // The mean user: the mean of the base's rows 1..n of the GMF and MLP user embeddings, then of the user biases.
        var network = baseModel.Model.Network;
        var gmf = Values(network.UserEmbeddingGmf);
        var mlp = Values(network.UserEmbeddingMlp);
        var bu = Values(network.UserBias);
        const int rank = 16;
        double Mean(float[] table, int k) => Enumerable.Range(1, baseModel.UserCount).Average(u => (double)table[u * rank + k]);
        var meanUser = Enumerable.Range(0, rank).Select(k => Mean(gmf, k)).Concat(Enumerable.Range(0, rank).Select(k => Mean(mlp, k)))
            .Append(Enumerable.Range(1, baseModel.UserCount).Average(u => (double)bu[u])).Select(x => (float)x).ToArray();
        Assert.That(state["user_mean"], Is.EqualTo(meanUser).Within(1e-5));

        // New users share the mean user's embeddings (biases alone trained): they differ by their bias offsets only. An unknown
        // user takes the adaptation's mean newcomer's bias (the mean user's plus the new users' mean offset) and, as in the
        // base, no interaction: the base's score (mean + item bias) plus the shift, the item's offset and that bias.
        var newRows = Enumerable.Range(baseModel.UserCount + 1, NewUsers).ToList();
        double meanOffset = newRows.Average(r => (double)dbu[r]);
        int n3 = Row(adapted.UserIds, "n3"), n5 = Row(adapted.UserIds, "n5"), i4 = Row(adapted.ItemIds, "i4");
        var scores = adapted.Predict(new[] { ("n3", "i4"), ("n5", "i4"), ("a stranger", "i4") });
        Assert.That(scores[1] - scores[0], Is.EqualTo(dbu[n5] - dbu[n3]).Within(1e-4));
        var stranger = new[] { ("a stranger", "i4") };
        Assert.That(scores[2], Is.EqualTo(baseModel.Predict(stranger)[0] + shift + dbi[i4] + meanUser[^1] + meanOffset).Within(1e-4));
        Assert.That(state["unknown_user"][^1], Is.EqualTo(meanUser[^1] + meanOffset).Within(1e-5));
        Assert.That(state["unknown_item"], Has.All.Zero, "no item was new: an unknown item stays the base's");

        // Without the newcomer policy an unknown user stays the base's: the item's adapted bias and the shifted mean.
        options.UnknownIdsAsNewcomers = false;
        using var plain = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt));
        var plainState = plain.Model.Adapter!.SavedParameters.ToDictionary(p => p.Key, p => Values(p.Parameter));
        Assert.That(plain.Predict(stranger)[0], Is.EqualTo(baseModel.Predict(stranger)[0] + plainState["global_mean_delta"][0] + plainState["item_bias_delta"][i4]).Within(1e-4));
    }

    [Test]
    public void AdaptedFilesHoldTheAdapterAloneAndShareTheirBaseWhenLoaded()
    {
        var ml = new MLContext(seed: 1);
        var (before, adapt, test) = Drift(seed: 7);
        var pairs = test.Select(r => (r.User, r.Item)).Append(("a stranger", "i1")).Append(("u1", "no such item")).ToList();
        var dir = Directory.CreateTempSubdirectory("peft-ncf-adapt-");
        try
        {
            var beforeView = ml.Data.LoadFromEnumerable(before);
            using var baseModel = QuickBase(ml, before);
            var basePath = Path.Combine(dir.FullName, "base.zip");
            ml.Model.Save(baseModel, beforeView.Schema, basePath);

            var adaptView = ml.Data.LoadFromEnumerable(adapt);
            var paths = new Dictionary<MatrixFactorizationAdaptation, string>();
            var expected = new Dictionary<MatrixFactorizationAdaptation, float[]>();
            foreach (var method in Enum.GetValues<MatrixFactorizationAdaptation>())
            {
                var options = AdaptOptions(method);
                options.NumberOfIterations = 3;
                // The dense (full) adaptation embeds the base; the others refer to its file.
                options.BaseModelPath = method == MatrixFactorizationAdaptation.Full ? null : basePath;
                using var adapted = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(adaptView);
                paths[method] = Path.Combine(dir.FullName, $"{method}.zip");
                ml.Model.Save(adapted, adaptView.Schema, paths[method]);
                expected[method] = adapted.Predict(pairs);
            }

            // The files that refer to the base hold no base-model entry; the embedded one does.
            using (var zip = ZipFile.OpenRead(paths[MatrixFactorizationAdaptation.Lora]))
                Assert.That(zip.Entries.Any(e => e.FullName.EndsWith("BaseModel", StringComparison.Ordinal)), Is.False);
            Assert.That(new FileInfo(paths[MatrixFactorizationAdaptation.Bias]).Length, Is.LessThan(new FileInfo(basePath).Length / 2));
            Assert.That(new FileInfo(paths[MatrixFactorizationAdaptation.Full]).Length, Is.GreaterThan(new FileInfo(basePath).Length), "without BaseModelPath the base travels in the file");

            // A moved base fails with the way out, which LoadWithBaseModel takes.
            var moved = Path.Combine(dir.FullName, "moved.zip");
            File.Move(basePath, moved);
            var e = Assert.Throws<FileNotFoundException>(() => ml.Model.LoadPeft(paths[MatrixFactorizationAdaptation.Lora], new Format.PeftLoadOptions(), out _))!;
            Assert.That(e.Message, Does.Contain("base.zip").And.Contain("LoadWithBaseModel"));
            using var lora = (PeftNeuralCollaborativeFilteringTransformer)ml.Model.LoadWithBaseModel(paths[MatrixFactorizationAdaptation.Lora], moved, out _);
            File.Move(moved, basePath);
            using var bias = ml.Model.LoadNeuralCollaborativeFiltering(paths[MatrixFactorizationAdaptation.Bias]);
            using var full = (PeftNeuralCollaborativeFilteringTransformer)ml.Model.Load(paths[MatrixFactorizationAdaptation.Full], out _);

            // Loaded adaptations score as they did, and hold one base between them.
            Assert.That(lora.Predict(pairs), Is.EqualTo(expected[MatrixFactorizationAdaptation.Lora]));
            Assert.That(bias.Predict(pairs), Is.EqualTo(expected[MatrixFactorizationAdaptation.Bias]));
            Assert.That(full.Predict(pairs), Is.EqualTo(expected[MatrixFactorizationAdaptation.Full]));
            Assert.That((lora.AdaptationMethod, bias.AdaptationMethod, full.AdaptationMethod),
                Is.EqualTo(((MatrixFactorizationAdaptation?)MatrixFactorizationAdaptation.Lora, (MatrixFactorizationAdaptation?)MatrixFactorizationAdaptation.Bias, (MatrixFactorizationAdaptation?)MatrixFactorizationAdaptation.Full)));
            Assert.That(ReferenceEquals(lora.Model.Network, bias.Model.Network), Is.True, "two adaptations of one base share its network");
            Assert.That(ReferenceEquals(full.Model.Network, bias.Model.Network), Is.True, "an embedded base with the same tensors is shared too");
            Assert.That(lora.Model.Network.NamedParameters().All(p => !p.Parameter.requires_grad), Is.True, "the shared base is frozen");
            using var engine = ml.Model.CreatePredictionEngine<RatingRow, RatingScore>(lora);
            Assert.That(engine.Predict(test[0]).Score, Is.EqualTo(expected[MatrixFactorizationAdaptation.Lora][0]).Within(1e-5), "one row alone (matrix products of another size)");
            Assert.That(Rmse(ml, lora, test), Is.LessThan(Rmse(ml, baseModel, test)));

            // A file whose metadata claims more than its entries hold is refused before anything that size is allocated.
            AdaptationTesting.AssertRefusesClaimsBeyondEntries(ml, paths[MatrixFactorizationAdaptation.Lora], ("user_count", 40_000_000, "id lists"), ("rank", 4000, "too few"));
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
        var beforeView = ml.Data.LoadFromEnumerable(before);
        using var baseModel = QuickBase(ml, before);
        var trainer = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, AdaptOptions(MatrixFactorizationAdaptation.Lora));

        AdaptationTesting.AssertRefusesBadData(ml, trainer.Fit, adapt, before.Max(r => r.Label));

        var options = AdaptOptions(MatrixFactorizationAdaptation.Bias);
        options.NumberOfIterations = 1;
        using var adapted = ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt.Take(50).ToList()));
        var e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(adapted))!;
        Assert.That(e.Message, Does.Contain("itself an adaptation"));

        var implicitOptions = BaseOptions();
        implicitOptions.Feedback = RecommendationFeedback.Implicit;
        implicitOptions.NumberOfIterations = 1;
        using (var implicitBase = ml.Regression.Trainers.PeftNeuralCollaborativeFiltering(implicitOptions).Fit(beforeView))
        {
            e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(implicitBase))!;
            Assert.That(e.Message, Does.Contain("implicit feedback"));
        }

        // Base model files of another kind (a matrix-factorisation model, a key mapping, not a model), or an adaptation.
        var dir = Directory.CreateTempSubdirectory("peft-ncf-bad-");
        try
        {
            var mfPath = Path.Combine(dir.FullName, "mf.zip");
            var mfOptions = MatrixFactorizationTests.Options();
            mfOptions.NumberOfIterations = 1;
            using (var mf = ml.Regression.Trainers.PeftMatrixFactorization(mfOptions).Fit(beforeView))
                ml.Model.Save(mf, beforeView.Schema, mfPath);
            AdaptationTesting.AssertRefusesOtherFiles(ml, dir, beforeView, path =>
            {
                options.BaseModelPath = path;
                return ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt));
            });
            options.BaseModelPath = mfPath;
            var kind = Assert.Throws<InvalidDataException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt)))!;
            Assert.That(kind.Message, Does.Contain("mf.zip").And.Contain("another kind").And.Contain("PeftMatrixFactorizationTransformer"));
            var adaptedPath = Path.Combine(dir.FullName, "adapted.zip");
            ml.Model.Save(adapted, beforeView.Schema, adaptedPath);
            var other = Assert.Throws<InvalidDataException>(() => ml.Model.LoadNeuralCollaborativeFiltering(mfPath))!;
            Assert.That(other.Message, Does.Contain("another kind").And.Contain("not a PEFT neural collaborative filtering model"));
            options.BaseModelPath = adaptedPath;
            e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt)))!;
            Assert.That(e.Message, Does.Contain("adapted.zip").And.Contain("holds an adaptation"));
            // Another base of the same kind in BaseModelPath: other tensors, refused by hash.
            var otherBasePath = Path.Combine(dir.FullName, "other.zip");
            using (var otherBase = QuickBase(ml, before, seed: 2))
                ml.Model.Save(otherBase, beforeView.Schema, otherBasePath);
            options.BaseModelPath = otherBasePath;
            e = Assert.Throws<ArgumentException>(() => ml.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options).Fit(ml.Data.LoadFromEnumerable(adapt)))!;
            Assert.That(e.Message, Does.Contain("other tables"));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
