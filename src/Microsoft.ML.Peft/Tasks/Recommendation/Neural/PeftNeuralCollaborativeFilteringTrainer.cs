using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// Trains neural collaborative filtering (NeuMF, He et al. 2017) in TorchSharp: a generalised-matrix-factorisation branch
/// (the elementwise product of a user and an item embedding) and an MLP branch (the concatenated user and item embeddings
/// through ReLU layers of <see cref="Options.HiddenLayerSizes"/>), fused by a final linear layer, plus a global mean and
/// user and item biases. Create it with <c>mlContext.Regression.Trainers.PeftNeuralCollaborativeFiltering(...)</c>.
/// The options mirror ML.NET's <c>MatrixFactorizationTrainer.Options</c>: the user column is
/// <c>MatrixColumnIndexColumnName</c>, the item column <c>MatrixRowIndexColumnName</c> (keys, text or integers; ids are
/// matched by value), the Single rating <c>LabelColumnName</c>.
/// </summary>
/// <remarks>
/// <para><b>Explicit ratings</b> (<see cref="RecommendationFeedback.Explicit"/>, default): squared error plus
/// <see cref="Options.Lambda"/> times the squared norms of each rated row's embeddings and biases. The network starts as
/// a bias model: the global mean, and user and item biases set to shrunk mean residuals
/// (<c>b_i = Σ(r - μ) / (n_i + 25)</c>, then <c>b_u = Σ(r - μ - b_i) / (n_u + 10)</c>, as in Koren's baseline predictors),
/// with the final layer at zero; training then learns the interaction. Evaluate with <c>mlContext.Regression.Evaluate</c>.</para>
/// <para><b>Implicit feedback</b> (<see cref="RecommendationFeedback.Implicit"/>): every row is an interaction (the label
/// is not read); each is trained against <see cref="Options.NegativesPerPositive"/> items its user has not interacted with,
/// sampled with <see cref="Options.Seed"/>, with <see cref="Options.ImplicitLoss"/>; the score is a relevance for ranking.
/// Evaluate with <c>mlContext.Regression.EvaluateRecommendations</c> (hit rate and NDCG at K).</para>
/// <para>Users or items not seen in training are scored from what is known (see
/// <see cref="PeftNeuralCollaborativeFilteringTransformer"/>).</para>
/// </remarks>
public sealed class PeftNeuralCollaborativeFilteringTrainer : IEstimator<PeftNeuralCollaborativeFilteringTransformer>
{
    /// <summary>Shrinkage (in ratings) of the initial item biases.</summary>
    private const double ItemBiasShrinkage = 25;
    /// <summary>Shrinkage (in ratings) of the initial user biases.</summary>
    private const double UserBiasShrinkage = 10;

    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftNeuralCollaborativeFilteringTrainer"/>; names follow ML.NET's <c>MatrixFactorizationTrainer.Options</c>.</summary>
    public sealed class Options
    {
        /// <summary>The user column (the matrix's column index): a key, text or integer column. Required.</summary>
        public string MatrixColumnIndexColumnName = "";

        /// <summary>The item column (the matrix's row index): a key, text or integer column. Required.</summary>
        public string MatrixRowIndexColumnName = "";

        /// <summary>The rating column (Single) of explicit feedback; not read for implicit feedback. Rows with a NaN rating are skipped and counted. Default <c>Label</c>.</summary>
        public string LabelColumnName = "Label";

        /// <summary>The output column of the score (Single). Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>Size of the user and item embeddings of each branch (GMF and MLP). Default 32.</summary>
        public int ApproximationRank = 32;

        /// <summary>Output sizes of the MLP branch's hidden layers (each Linear + ReLU), in order; its input is the two concatenated MLP embeddings. Default 64, 32, 16.</summary>
        public int[] HiddenLayerSizes = { 64, 32, 16 };

        /// <summary>
        /// L2 regularisation: the loss adds Lambda times the mean, over a batch's scored pairs, of the squared norms of the
        /// pair's user and item embeddings (both branches) and biases. The MLP and the final layer are not regularised.
        /// Default 0.1. Explicit ratings on MovieLens-100K at 10 passes, RMSE on the random 80/20 split and the temporal split
        /// (earliest 80% to latest 10%): 0.930 and 1.028 at 0.1; 0.927 and 1.033 at 0.03; 0.925 and 1.043 at 0.3; 0.927 and
        /// 1.081 at 1 (the biases are shrunk too hard for users seen only later). At 0.01 and 20 passes the network
        /// over-fitted (1.021 on the random split, worse than user and item biases alone). For implicit feedback see
        /// <see cref="LearningRate"/>.
        /// </summary>
        public double Lambda = 0.1;

        /// <summary>
        /// Adam's learning rate. Default 0.001. For implicit feedback on MovieLens-100K (leave-last-out, validation split),
        /// 0.003 with <see cref="Lambda"/> 0.03 and <see cref="InitialStandardDeviation"/> 0.01 ranked best of the recipes
        /// tried (HR@10 0.676 against 0.648 with the defaults; see the <c>movielens-implicit</c> benchmark).
        /// </summary>
        public double LearningRate = 0.001;

        /// <summary>
        /// Passes over the training rows. Default 10 (explicit ratings on MovieLens-100K: 20 passes over-fitted, RMSE 0.982
        /// against 0.930 at Lambda 0.1; 5 passes under-fitted, 0.943).
        /// </summary>
        public int NumberOfIterations = 10;

        /// <summary>Rows (ratings, or interactions with their negatives) per training step, and per batch when scoring. Default 256.</summary>
        public int BatchSize = 256;

        /// <summary>Standard deviation of the embeddings' random initial values. Default 0.1.</summary>
        public double InitialStandardDeviation = 0.1;

        /// <summary>Explicit feedback: clamp predictions to the range of the training ratings. Default true. Implicit scores are never clamped.</summary>
        public bool ClampScores = true;

        /// <summary>Explicit ratings (default) or implicit feedback (see the trainer's remarks).</summary>
        public RecommendationFeedback Feedback = RecommendationFeedback.Explicit;

        /// <summary>The ranking loss of implicit feedback. Default <see cref="ImplicitFeedbackLoss.BinaryCrossEntropy"/>, as in NeuMF.</summary>
        public ImplicitFeedbackLoss ImplicitLoss = ImplicitFeedbackLoss.BinaryCrossEntropy;

        /// <summary>Implicit feedback: negatives drawn per interaction from the items its user has not interacted with. Default 4.</summary>
        public int NegativesPerPositive = 4;

        /// <summary>Seed of the initial parameters, the order of the rows and the negatives: the same seed on the same data gives the same model.</summary>
        public int Seed = 1;

        /// <summary>Torch device to train on: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>. Not saved.</summary>
        public string Device = "cpu";

        internal void Validate()
        {
            RecommenderOptionChecks.ColumnsAndRank(MatrixColumnIndexColumnName, MatrixRowIndexColumnName, LabelColumnName, ScoreColumnName, ApproximationRank);
            if (HiddenLayerSizes is null || HiddenLayerSizes.Length == 0 || HiddenLayerSizes.Length > NeuralCollaborativeFilteringSettings.MaxHiddenLayers)
                throw new ArgumentOutOfRangeException(nameof(HiddenLayerSizes), HiddenLayerSizes?.Length, $"HiddenLayerSizes must list 1 to {NeuralCollaborativeFilteringSettings.MaxHiddenLayers} layer sizes.");
            for (int k = 0; k < HiddenLayerSizes.Length; k++)
                if (HiddenLayerSizes[k] <= 0 || HiddenLayerSizes[k] > NeuralCollaborativeFilteringSettings.MaxLayerSize)
                    throw new ArgumentOutOfRangeException(nameof(HiddenLayerSizes), HiddenLayerSizes[k], $"HiddenLayerSizes[{k}] is {HiddenLayerSizes[k]}; sizes must be from 1 to {NeuralCollaborativeFilteringSettings.MaxLayerSize}.");
            RecommenderOptionChecks.Training(Lambda, LearningRate, MatrixFactorizationOptimizer.Adam, NumberOfIterations, BatchSize, InitialStandardDeviation);
            ImplicitLoop.Validate(Feedback, ImplicitLoss, NegativesPerPositive);
        }
    }

    internal PeftNeuralCollaborativeFilteringTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftNeuralCollaborativeFilteringTrainer));
    }

    /// <summary>The training loss after each pass, in order: the mean squared error of explicit ratings, the mean ranking loss of implicit feedback (without the regularisation).</summary>
    public event EventHandler<(int Iteration, double TrainingLoss)>? IterationCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => RecommenderSchema.OutputShape(inputSchema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName,
        options.Feedback == RecommendationFeedback.Explicit ? options.LabelColumnName : null, options.ScoreColumnName);

    /// <inheritdoc/>
    public PeftNeuralCollaborativeFilteringTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");
        return options.Feedback == RecommendationFeedback.Implicit ? FitImplicit(ch, input, device) : FitExplicit(ch, input, device);
    }

    private NeuralCollaborativeFilteringSettings Settings(int userCount, int itemCount, float ratingMin, float ratingMax)
    {
        if (!NeuralCollaborativeFilteringSettings.TablesFit(userCount, itemCount, options.ApproximationRank))
            throw new ArgumentException($"{userCount:N0} users and {itemCount:N0} items at rank {options.ApproximationRank} make tables of more than 2^31 values; lower ApproximationRank.", nameof(Options.ApproximationRank));
        return new NeuralCollaborativeFilteringSettings
        {
            UserColumnName = options.MatrixColumnIndexColumnName,
            ItemColumnName = options.MatrixRowIndexColumnName,
            LabelColumnName = options.LabelColumnName,
            ScoreColumnName = options.ScoreColumnName,
            UserCount = userCount,
            ItemCount = itemCount,
            Rank = options.ApproximationRank,
            HiddenLayerSizes = options.HiddenLayerSizes.ToArray(),
            BatchSize = options.BatchSize,
            Feedback = options.Feedback,
            RatingMin = ratingMin,
            RatingMax = ratingMax,
            ClampScores = options.Feedback == RecommendationFeedback.Explicit && options.ClampScores,
        };
    }

    private PeftNeuralCollaborativeFilteringTransformer FitExplicit(IChannel ch, IDataView input, Device device)
    {
        IdColumn.Announce(ch, input.Schema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName);
        var data = RatingData.Read(input, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, options.LabelColumnName, "training data");
        data.CheckUsable(ch, options.LabelColumnName, "training data");
        double mean = data.Ratings.Average(r => (double)r);
        var settings = Settings(data.UserCount, data.ItemCount, data.Ratings.Min(), data.Ratings.Max());
        ch.Info($"{data.Count:N0} ratings of {settings.UserCount:N0} users and {settings.ItemCount:N0} items, from {settings.RatingMin:G4} to {settings.RatingMax:G4} (mean {mean:G4}); " +
            $"embeddings {settings.Rank}, MLP {string.Join('-', settings.HiddenLayerSizes)}.");
        var (userBias, itemBias) = BaselineBiases(data, mean);
        return Train(settings, data.UserIds, data.ItemIds, device, ch, (network, generator) =>
        {
            network.Initialise(mean, userBias, itemBias, options.InitialStandardDeviation, generator);
            RatingLoop.Run(host, data, device, generator, network.NamedParameters().Select(p => p.Parameter).ToList(),
                new RatingLoop.Settings(MatrixFactorizationOptimizer.Adam, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize),
                network.forward, network.Regularisation, (pass, loss) => IterationCompleted?.Invoke(this, (pass, loss)));
        });
    }

    private PeftNeuralCollaborativeFilteringTransformer FitImplicit(IChannel ch, IDataView input, Device device)
    {
        IdColumn.Announce(ch, input.Schema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName);
        var data = InteractionData.Read(input, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, "training data");
        data.CheckUsable(ch, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, "training data");
        var settings = Settings(data.UserCount, data.ItemCount, 0, 0);
        ch.Info($"{data.Count:N0} interactions of {settings.UserCount:N0} users and {settings.ItemCount:N0} items (implicit feedback, {options.ImplicitLoss}, " +
            $"{options.NegativesPerPositive} negatives each); embeddings {settings.Rank}, MLP {string.Join('-', settings.HiddenLayerSizes)}.");
        return Train(settings, data.UserIds, data.ItemIds, device, ch, (network, generator) =>
        {
            network.Initialise(0, null, null, options.InitialStandardDeviation, generator);
            ImplicitLoop.Run(host, ch, data, device, generator, network.NamedParameters().Select(p => p.Parameter).ToList(),
                new ImplicitLoop.Settings(options.ImplicitLoss, options.NegativesPerPositive, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize, options.Seed),
                network.forward, network.Regularisation, (pass, loss) => IterationCompleted?.Invoke(this, (pass, loss)));
        });
    }

    private PeftNeuralCollaborativeFilteringTransformer Train(NeuralCollaborativeFilteringSettings settings, IdVocabulary users, IdVocabulary items, Device device, IChannel ch,
        Action<NeuralCollaborativeFilteringNetwork, Generator> train)
    {
        var model = NeuralCollaborativeFilteringModel.NewBase(settings, users, items, device);
        try
        {
            var clock = Stopwatch.StartNew();
            using (var generator = new Generator((ulong)options.Seed, CPU)) train(model.Network, generator);
            ch.Info($"Trained {options.NumberOfIterations} passes in {clock.Elapsed.TotalSeconds:F1} s ({model.Network.ParameterCount:N0} parameters).");
            return new PeftNeuralCollaborativeFilteringTransformer(host, model, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Koren's baseline biases (index 0, the unknown row, stays zero): item biases are the item's residuals from the mean
    /// shrunk by <see cref="ItemBiasShrinkage"/>, user biases the user's residuals from mean and item bias shrunk by
    /// <see cref="UserBiasShrinkage"/>.
    /// </summary>
    internal static (float[] User, float[] Item) BaselineBiases(RatingData data, double mean)
    {
        var itemSum = new double[data.ItemCount + 1];
        var itemCount = new int[data.ItemCount + 1];
        for (int r = 0; r < data.Count; r++)
        {
            itemSum[data.Items[r]] += data.Ratings[r] - mean;
            itemCount[data.Items[r]]++;
        }
        var item = new float[data.ItemCount + 1];
        for (int i = 1; i <= data.ItemCount; i++) item[i] = (float)(itemSum[i] / (itemCount[i] + ItemBiasShrinkage));
        var userSum = new double[data.UserCount + 1];
        var userCount = new int[data.UserCount + 1];
        for (int r = 0; r < data.Count; r++)
        {
            userSum[data.Users[r]] += data.Ratings[r] - mean - item[data.Items[r]];
            userCount[data.Users[r]]++;
        }
        var user = new float[data.UserCount + 1];
        for (int u = 1; u <= data.UserCount; u++) user[u] = (float)(userSum[u] / (userCount[u] + UserBiasShrinkage));
        return (user, item);
    }
}
