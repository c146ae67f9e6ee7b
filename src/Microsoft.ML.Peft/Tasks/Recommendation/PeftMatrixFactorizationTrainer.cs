using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Trains biased matrix factorisation on explicit ratings, in TorchSharp:
/// <c>Score(u, i) = mean + b_u + b_i + p_u · q_i</c> with factors of rank <see cref="Options.ApproximationRank"/>,
/// minimising the squared error plus <see cref="Options.Lambda"/> times the squared norms of each rated row's factors
/// and biases, with Adam on shuffled mini-batches. Create it with
/// <c>mlContext.Regression.Trainers.PeftMatrixFactorization(...)</c>. The options mirror ML.NET's
/// <c>MatrixFactorizationTrainer.Options</c>: the user column is <c>MatrixColumnIndexColumnName</c>, the item column
/// <c>MatrixRowIndexColumnName</c>, both key types (<c>MapValueToKey</c>), and the Single rating <c>LabelColumnName</c>.
/// </summary>
/// <remarks>
/// The output <c>Score</c> (Single, with ML.NET's regression annotations) is evaluated with ML.NET's
/// <c>mlContext.Regression.Evaluate</c> (RMSE, MAE). Users or items not seen in training (key 0, a key beyond the
/// training key count, or a key no training rating names: its row is zeroed after training) are scored from what is known: the item's bias for an unknown user, the user's bias for an
/// unknown item, the global mean for both. The trained tables are the base that adapters will later change.
/// </remarks>
public sealed class PeftMatrixFactorizationTrainer : IEstimator<PeftMatrixFactorizationTransformer>
{
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftMatrixFactorizationTrainer"/>; names follow ML.NET's <c>MatrixFactorizationTrainer.Options</c>.</summary>
    public sealed class Options
    {
        /// <summary>The user column (the matrix's column index): a key type, as <c>MapValueToKey</c> makes. Required.</summary>
        public string MatrixColumnIndexColumnName = "";

        /// <summary>The item column (the matrix's row index): a key type, as <c>MapValueToKey</c> makes. Required.</summary>
        public string MatrixRowIndexColumnName = "";

        /// <summary>The rating column (Single). Rows with a NaN rating are skipped and counted. Default <c>Label</c>.</summary>
        public string LabelColumnName = "Label";

        /// <summary>The output column of the predicted rating (Single). Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>
        /// Rank of the user and item factors. Default 64. The defaults are the best recipe measured on MovieLens-100K (random
        /// 80/20 split, seed 1): RMSE 0.912 (rank 32: 0.917, rank 128: 0.914 at LearningRate 0.003; user and item biases
        /// alone 0.945; the global mean 1.130).
        /// </summary>
        public int ApproximationRank = 64;

        /// <summary>
        /// L2 regularisation: the loss adds Lambda times the mean, over a batch's ratings, of the squared norms of the rated
        /// user's and item's factors and biases (so a row is regularised in proportion to its ratings). Default 0.1 (on
        /// MovieLens-100K at rank 64 with LearningRate 0.003: 0.07 gave RMSE 0.926, 0.1 0.915, 0.13 0.917, 0.2 0.937; at the
        /// default LearningRate, 0.05 gave 0.941).
        /// </summary>
        public double Lambda = 0.1;

        /// <summary>The learning rate of <see cref="Optimizer"/>. Default 0.001 (Adam; 0.003 and 0.01 gave RMSE 0.915 and 0.923 on MovieLens-100K).</summary>
        public double LearningRate = 0.001;

        /// <summary>
        /// The optimiser: <see cref="MatrixFactorizationOptimizer.Adam"/> (default) or plain mini-batch SGD. On MovieLens-100K
        /// SGD on the batch's mean loss converged far more slowly (RMSE 0.996 after 60 passes at rate 0.4, rank 64, Lambda
        /// 0.05) and diverged at rate 1, where the global mean's step overshoots.
        /// </summary>
        public MatrixFactorizationOptimizer Optimizer = MatrixFactorizationOptimizer.Adam;

        /// <summary>Passes over the training ratings. Default 30 (20 and 50 passes scored within 0.001 of 30 on MovieLens-100K).</summary>
        public int NumberOfIterations = 30;

        /// <summary>Ratings per training step, and per batch when scoring. Default 256.</summary>
        public int BatchSize = 256;

        /// <summary>Standard deviation of the factors' random initial values. Default 0.1.</summary>
        public double InitialStandardDeviation = 0.1;

        /// <summary>Clamp predictions to the range of the training ratings (for 1-5 stars: [1, 5]). Default true.</summary>
        public bool ClampScores = true;

        /// <summary>Seed of the initial factors and the order of the ratings: the same seed on the same data gives the same model.</summary>
        public int Seed = 1;

        /// <summary>Torch device to train on: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>. Not saved.</summary>
        public string Device = "cpu";

        /// <summary>
        /// Explicit ratings (default) or implicit feedback: every row is an interaction (the label column is not read and may
        /// be absent), the factors are trained with <see cref="ImplicitLoss"/> against sampled negatives, and the score is a
        /// relevance for ranking (never clamped; <see cref="ClampScores"/> does not apply).
        /// </summary>
        public RecommendationFeedback Feedback = RecommendationFeedback.Explicit;

        /// <summary>The ranking loss of implicit feedback. Default <see cref="ImplicitFeedbackLoss.Bpr"/>.</summary>
        public ImplicitFeedbackLoss ImplicitLoss = ImplicitFeedbackLoss.Bpr;

        /// <summary>Implicit feedback: negatives drawn (with <see cref="Seed"/>) per interaction, from the items its user has not interacted with. Default 4.</summary>
        public int NegativesPerPositive = 4;

        internal void Validate()
        {
            RecommenderOptionChecks.ColumnsAndRank(MatrixColumnIndexColumnName, MatrixRowIndexColumnName, LabelColumnName, ScoreColumnName, ApproximationRank);
            RecommenderOptionChecks.Training(Lambda, LearningRate, Optimizer, NumberOfIterations, BatchSize, InitialStandardDeviation);
            ImplicitLoop.Validate(Feedback, ImplicitLoss, NegativesPerPositive);
        }
    }

    internal PeftMatrixFactorizationTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftMatrixFactorizationTrainer));
    }

    /// <summary>The training loss (mean squared error of the training ratings, or the mean ranking loss of implicit feedback, without the regularisation) after each pass, in order.</summary>
    public event EventHandler<(int Iteration, double TrainingMse)>? IterationCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => RecommenderSchema.OutputShape(inputSchema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName,
        options.Feedback == RecommendationFeedback.Explicit ? options.LabelColumnName : null, options.ScoreColumnName);

    /// <inheritdoc/>
    public PeftMatrixFactorizationTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");
        if (options.Feedback == RecommendationFeedback.Implicit)
            return ImplicitMatrixFactorization.Fit(host, ch, options, input, device, (pass, loss) => IterationCompleted?.Invoke(this, (pass, loss)));
        IdColumn.Announce(ch, input.Schema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName);
        var data = RatingData.Read(input, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, options.LabelColumnName, "training data");
        data.CheckUsable(ch, options.LabelColumnName, "training data");

        double mean = data.Ratings.Average(r => (double)r);
        var settings = new MatrixFactorizationSettings
        {
            UserColumnName = options.MatrixColumnIndexColumnName,
            ItemColumnName = options.MatrixRowIndexColumnName,
            LabelColumnName = options.LabelColumnName,
            ScoreColumnName = options.ScoreColumnName,
            UserCount = data.UserCount,
            ItemCount = data.ItemCount,
            Rank = options.ApproximationRank,
            BatchSize = options.BatchSize,
            RatingMin = data.Ratings.Min(),
            RatingMax = data.Ratings.Max(),
            ClampScores = options.ClampScores,
        };
        if ((long)(settings.UserCount + 1L + settings.ItemCount + 1L) * settings.Rank > 1L << 31)
            throw new ArgumentException($"{settings.UserCount:N0} users and {settings.ItemCount:N0} items at rank {settings.Rank} make tables of more than 2^31 values; lower ApproximationRank.", nameof(Options.ApproximationRank));
        ch.Info($"{data.Count:N0} ratings of {settings.UserCount:N0} users and {settings.ItemCount:N0} items, from {settings.RatingMin:G4} to {settings.RatingMax:G4} (mean {mean:G4}); rank {settings.Rank}.");

        var model = MatrixFactorizationModel.NewBase(settings, data.UserIds, data.ItemIds, device);
        try
        {
            var clock = Stopwatch.StartNew();
            using (var generator = new Generator((ulong)options.Seed, CPU))
            {
                model.Network.Initialise(mean, options.InitialStandardDeviation, generator);
                Train(model.Network, data, generator, device);
            }
            ch.Info($"Trained {options.NumberOfIterations} passes in {clock.Elapsed.TotalSeconds:F1} s.");
            return new PeftMatrixFactorizationTransformer(host, model, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private void Train(MatrixFactorizationNetwork network, RatingData data, Generator generator, Device device) =>
        RatingLoop.Run(host, data, device, generator, network.NamedParameters().Select(p => p.Parameter).ToList(),
            new RatingLoop.Settings(options.Optimizer, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize),
            network.forward, network.Regularisation, (pass, mse) => IterationCompleted?.Invoke(this, (pass, mse)));
}

/// <summary>How <see cref="PeftMatrixFactorizationTrainer"/> updates the factors.</summary>
public enum MatrixFactorizationOptimizer
{
    /// <summary>Adam over every parameter (rows not in a batch move by their moment estimates).</summary>
    Adam,

    /// <summary>Plain stochastic gradient descent on the batch's mean loss (the learning rate applies to that mean).</summary>
    Sgd,
}
