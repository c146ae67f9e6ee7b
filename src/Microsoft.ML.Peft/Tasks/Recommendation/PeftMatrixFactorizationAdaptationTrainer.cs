using System.Diagnostics;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Adapts a trained matrix-factorisation model (<see cref="PeftMatrixFactorizationTransformer"/>) to new ratings with
/// the base frozen: it trains a small adapter (<see cref="Options.Method"/>: low-rank factor offsets with re-fitted
/// biases, biases alone, or dense offsets) on the new ratings only. Create it with
/// <c>mlContext.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, options)</c>; <see cref="Fit"/>
/// returns a <see cref="PeftMatrixFactorizationTransformer"/> that scores like any other and saves only its adapter
/// (with the base model file's location and hash) when <see cref="Options.BaseModelPath"/> is set.
/// </summary>
/// <remarks>
/// <para>The new data has the base's columns. Ids are matched by value, so the data may be keyed by another key mapping
/// than the base's, or carry text ids.</para>
/// <para><b>Cold start.</b> A user (or item) the base never saw but the new ratings name gets a row of its own in the
/// adapter. It starts as the base's mean user: the mean of the base's factor rows and biases. The adaptation then learns
/// its offset from that mean, under the same regularisation as everyone's offsets. A user known to neither (an id
/// first seen when scoring) is taken to be the mean of the new users the adaptation trained: the newcomers of the
/// adaptation's period are the best guess of who comes next. Without new users in the adaptation data, an unknown user
/// scores as in the base (the item's adapted bias plus the shifted global mean). Items likewise.</para>
/// <para>The adapted model uses the base transformer's tables in memory (they are not copied): keep the base alive while
/// the adapted model is in use. Adapted models loaded from files share one copy of their base's tables.</para>
/// </remarks>
public sealed class PeftMatrixFactorizationAdaptationTrainer : IEstimator<PeftMatrixFactorizationTransformer>
{
    private readonly IHost host;
    private readonly PeftMatrixFactorizationTransformer baseModel;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftMatrixFactorizationAdaptationTrainer"/>.</summary>
    public sealed class Options
    {
        /// <summary>What the adaptation trains. Default <see cref="MatrixFactorizationAdaptation.Lora"/>.</summary>
        public MatrixFactorizationAdaptation Method = MatrixFactorizationAdaptation.Lora;

        /// <summary>Rank of the low-rank factor offsets (LoRA's r) for <see cref="MatrixFactorizationAdaptation.Lora"/>. Default 4.</summary>
        public int AdaptationRank = 4;

        /// <summary>
        /// L2 regularisation of the offsets: the loss adds Lambda times the mean, over a batch's ratings, of the squared
        /// norms of the rated user's and item's factor and bias offsets, so the model moves from its base only as far as
        /// the new ratings justify. Default 1 (on the MovieLens-100K temporal benchmark, 0.1 over-fitted the 10,000 new
        /// ratings: RMSE 1.041 against 1.025 at 1 and 1.026 at 3, before the cold-start policy).
        /// </summary>
        public double Lambda = 1;

        /// <summary>The learning rate of <see cref="Optimizer"/>. Default 0.001 (0.003 and 0.0005 scored within 0.001).</summary>
        public double LearningRate = 0.001;

        /// <summary>The optimiser: Adam (default) or plain mini-batch SGD on the batch's mean loss (far worse on MovieLens: RMSE 1.115).</summary>
        public MatrixFactorizationOptimizer Optimizer = MatrixFactorizationOptimizer.Adam;

        /// <summary>Passes over the new ratings. Default 20 (10 scored within 0.001).</summary>
        public int NumberOfIterations = 20;

        /// <summary>Ratings per training step. Default 256.</summary>
        public int BatchSize = 256;

        /// <summary>Standard deviation of LoRA's B matrices at the start (A starts at zero). Default 0.1.</summary>
        public double InitialStandardDeviation = 0.1;

        /// <summary>
        /// Score ids the adapted model does not know as the mean of the new users (items) the adaptation trained, rather
        /// than as the base's unknown user (zero offsets). Default true: on the MovieLens-100K temporal benchmark, where
        /// 71% of the test ratings are by users unseen in all training data, it lowered the adaptations' RMSE by about 0.005.
        /// </summary>
        public bool UnknownIdsAsNewcomers = true;

        /// <summary>Seed of the initial values and the order of the ratings.</summary>
        public int Seed = 1;

        /// <summary>
        /// Where the base model file is. When set, the adapted model file refers to it (by path and the hash of its
        /// tables) instead of holding the tables, and loading the adapted model reads it from there (or from the path given
        /// to <c>mlContext.Model.LoadWithBaseModel</c>). When null (default), the adapted file embeds the base's tables.
        /// </summary>
        public string? BaseModelPath;

        internal void Validate()
        {
            if (!Enum.IsDefined(Method)) throw new ArgumentOutOfRangeException(nameof(Method), Method, "Method must be Lora, Bias or Full.");
            if (AdaptationRank <= 0 || AdaptationRank > MatrixFactorizationSettings.MaxRank)
                throw new ArgumentOutOfRangeException(nameof(AdaptationRank), AdaptationRank, $"AdaptationRank must be from 1 to {MatrixFactorizationSettings.MaxRank}.");
            if (!(Lambda >= 0) || double.IsInfinity(Lambda)) throw new ArgumentOutOfRangeException(nameof(Lambda), Lambda, "Lambda must be a finite number, 0 or more.");
            if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be a positive finite number.");
            if (!Enum.IsDefined(Optimizer)) throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, "Optimizer must be Adam or Sgd.");
            if (NumberOfIterations <= 0) throw new ArgumentOutOfRangeException(nameof(NumberOfIterations), NumberOfIterations, "NumberOfIterations must be positive.");
            if (BatchSize <= 0 || BatchSize > 1 << 20) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be from 1 to 1048576.");
            if (!(InitialStandardDeviation >= 0) || double.IsInfinity(InitialStandardDeviation))
                throw new ArgumentOutOfRangeException(nameof(InitialStandardDeviation), InitialStandardDeviation, "InitialStandardDeviation must be a finite number, 0 or more.");
            if (BaseModelPath is not null && string.IsNullOrWhiteSpace(BaseModelPath)) throw new ArgumentException("BaseModelPath is empty; leave it null to embed the base.", nameof(BaseModelPath));
        }
    }

    internal PeftMatrixFactorizationAdaptationTrainer(IHostEnvironment env, PeftMatrixFactorizationTransformer baseModel, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.baseModel = baseModel ?? throw new ArgumentNullException(nameof(baseModel));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        if (baseModel.AdaptationMethod is not null)
            throw new ArgumentException("The base model is itself an adaptation; adapt the base model it was adapted from.", nameof(baseModel));
        if (baseModel.Feedback == RecommendationFeedback.Implicit)
            throw new ArgumentException("The base model was trained on implicit feedback; adaptation trains on explicit ratings and cannot adapt it.", nameof(baseModel));
        host = env.Register(nameof(PeftMatrixFactorizationAdaptationTrainer));
    }

    /// <summary>The training loss (mean squared error of the new ratings, without the regularisation) after each pass.</summary>
    public event EventHandler<(int Iteration, double TrainingMse)>? IterationCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) =>
        new PeftMatrixFactorizationTrainer(host, new PeftMatrixFactorizationTrainer.Options
        {
            MatrixColumnIndexColumnName = baseModel.MatrixColumnIndexColumnName,
            MatrixRowIndexColumnName = baseModel.MatrixRowIndexColumnName,
            LabelColumnName = baseModel.LabelColumnName,
            ScoreColumnName = baseModel.ScoreColumnName,
        }).GetOutputSchema(inputSchema);

    /// <inheritdoc/>
    public PeftMatrixFactorizationTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        var baseSettings = baseModel.Model.Settings;
        using var ch = host.Start("Adapting");
        string? basePath = options.BaseModelPath is null ? null : Path.GetFullPath(options.BaseModelPath);
        if (basePath is not null)
        {
            var onDisk = PeftMatrixFactorizationTransformer.LoadFile(host, basePath, $"The base model file '{options.BaseModelPath}' (BaseModelPath)", asBase: true);
            if (onDisk.BaseModelSha256 != baseModel.BaseModelSha256)
                throw new ArgumentException($"The base model file '{options.BaseModelPath}' (BaseModelPath) holds other tables than the base model being adapted.", nameof(Options.BaseModelPath));
            onDisk.Dispose();
        }
        var data = RatingData.Read(input, baseSettings.UserColumnName, baseSettings.ItemColumnName, baseSettings.LabelColumnName, "adaptation data",
            baseModel.Model.Users, baseModel.Model.Items);
        data.CheckUsable(ch, baseSettings.LabelColumnName, "adaptation data");
        for (int k = 0; k < data.Count; k++)
        {
            if (data.Ratings[k] < baseSettings.RatingMin || data.Ratings[k] > baseSettings.RatingMax)
                throw new ArgumentException($"The adaptation data's rating column '{baseSettings.LabelColumnName}' holds {data.Ratings[k]:G6} (user '{data.UserIds.Ids[data.Users[k] - 1]}', item '{data.ItemIds.Ids[data.Items[k] - 1]}'), " +
                    $"outside the range the base model was trained on [{baseSettings.RatingMin:G6}, {baseSettings.RatingMax:G6}]. Rescale the ratings to the base's scale, or train a new base.", nameof(input));
        }
        int knownUserRatings = data.Users.Count(u => u <= data.KnownUserCount);
        int knownItemRatings = data.Items.Count(i => i <= data.KnownItemCount);
        if (knownUserRatings == 0 && knownItemRatings == 0)
            throw new ArgumentException($"None of the adaptation data's {data.Count:N0} ratings names a user (column '{baseSettings.UserColumnName}') or an item (column '{baseSettings.ItemColumnName}') that the base model knows: " +
                "there is nothing to adapt. Check the id columns (the same ids as the base's training data?), or train a new base model on this data.", nameof(input));

        var settings = MatrixFactorizationSettings.Parse(baseSettings.ToUtf8(), "base settings");
        settings.UserCount = data.UserCount;
        settings.ItemCount = data.ItemCount;
        settings.Adaptation = new AdaptationSettings
        {
            Method = options.Method,
            LoraRank = options.Method == MatrixFactorizationAdaptation.Lora ? options.AdaptationRank : 0,
            BaseUserCount = baseSettings.UserCount,
            BaseItemCount = baseSettings.ItemCount,
            BaseSha256 = baseModel.BaseModelSha256,
            BasePath = basePath,
        };
        settings.Validate("adapted settings");
        ch.Info($"Adapting with {options.Method}: {data.Count:N0} new ratings; {data.UserCount - data.KnownUserCount:N0} new users and {data.ItemCount - data.KnownItemCount:N0} new items get rows of their own; " +
            $"{data.Count - knownUserRatings:N0} ratings are by new users, {data.Count - knownItemRatings:N0} of new items.");

        var device = baseModel.Model.Device;
        var model = new MatrixFactorizationModel(settings, data.UserIds, data.ItemIds, baseModel.Model.Network, baseModel.BaseModelSha256, device);
        try
        {
            var clock = Stopwatch.StartNew();
            var adapter = model.Adapter!;
            using (var generator = new Generator((ulong)options.Seed, CPU))
            {
                adapter.Initialise(model.Network, options.InitialStandardDeviation, generator);
                RatingLoop.Run(host, data, device, generator, adapter.TrainedParameters.Select(p => p.Parameter).ToList(),
                    new RatingLoop.Settings(options.Optimizer, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize),
                    model.Forward, adapter.Regularisation, (pass, mse) => IterationCompleted?.Invoke(this, (pass, mse)));
                if (options.UnknownIdsAsNewcomers) adapter.FixUnknownRows(model.Network);
            }
            ch.Info($"Adapted in {clock.Elapsed.TotalSeconds:F1} s: {adapter.TrainedParameterCount:N0} trained parameters beside the base's {model.Network.ParameterCount:N0}.");
            return new PeftMatrixFactorizationTransformer(host, model, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
