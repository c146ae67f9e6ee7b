using System.Diagnostics;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Options of the adaptation of a trained recommender (<see cref="PeftMatrixFactorizationAdaptationTrainer.Options"/>,
/// <see cref="Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer.Options"/>): what the adapter trains and how.
/// </summary>
public abstract class RecommendationAdaptationOptions
{
    private protected RecommendationAdaptationOptions() { }

    /// <summary>What the adaptation trains. Default <see cref="MatrixFactorizationAdaptation.Lora"/>.</summary>
    public MatrixFactorizationAdaptation Method = MatrixFactorizationAdaptation.Lora;

    /// <summary>Rank of the low-rank offsets (LoRA's r) for <see cref="MatrixFactorizationAdaptation.Lora"/>. Default 4.</summary>
    public int AdaptationRank = 4;

    /// <summary>
    /// L2 regularisation of the offsets: the loss adds Lambda times the mean, over a batch's ratings, of the squared
    /// norms of the rated user's and item's embedding and bias offsets (and for neural collaborative filtering Lambda
    /// times the squared norms of the layers' weight changes), so the model moves from its base only as far as
    /// the new ratings justify. Default 1 (on the MovieLens-100K temporal benchmark with matrix factorisation, 0.1
    /// over-fitted the 10,000 new ratings: RMSE 1.041 against 1.025 at 1 and 1.026 at 3, before the cold-start policy).
    /// </summary>
    public double Lambda = 1;

    /// <summary>The learning rate of <see cref="Optimizer"/>. Default 0.001 (0.003 and 0.0005 scored within 0.001 with matrix factorisation).</summary>
    public double LearningRate = 0.001;

    /// <summary>The optimiser: Adam (default) or plain mini-batch SGD on the batch's mean loss (far worse on MovieLens: RMSE 1.115).</summary>
    public MatrixFactorizationOptimizer Optimizer = MatrixFactorizationOptimizer.Adam;

    /// <summary>Passes over the new ratings. Default 20 (10 scored within 0.001 with matrix factorisation).</summary>
    public int NumberOfIterations = 20;

    /// <summary>Ratings per training step. Default 256.</summary>
    public int BatchSize = 256;

    /// <summary>Standard deviation of the embedding offsets' LoRA B matrices at the start (A starts at zero). Default 0.1.</summary>
    public double InitialStandardDeviation = 0.1;

    /// <summary>
    /// Score ids the adapted model does not know as the mean of the new users (items) the adaptation trained, rather
    /// than as the base's unknown user (zero offsets): in matrix factorisation the mean newcomer's factors and bias, in
    /// neural collaborative filtering its bias (the interaction of unknown ids stays zero, as in the base). Default true:
    /// on the MovieLens-100K temporal benchmark, where 71% of the test ratings are by users unseen in all training data, it
    /// lowered the matrix-factorisation adaptations' RMSE by about 0.005 (the NCF bias adaptation's by 0.001).
    /// </summary>
    public bool UnknownIdsAsNewcomers = true;

    /// <summary>Seed of the initial values and the order of the ratings.</summary>
    public int Seed = 1;

    /// <summary>
    /// Where the base model file is. When set, the adapted model file refers to it (by path and the hash of its
    /// tensors) instead of holding them, and loading the adapted model reads it from there (or from the path given
    /// to <c>mlContext.Model.LoadWithBaseModel</c>). When null (default), the adapted file embeds the base's tensors.
    /// </summary>
    public string? BaseModelPath;

    internal void Validate()
    {
        if (!Enum.IsDefined(Method)) throw new ArgumentOutOfRangeException(nameof(Method), Method, "Method must be Lora, Bias or Full.");
        if (AdaptationRank <= 0 || AdaptationRank > MatrixFactorizationSettings.MaxRank)
            throw new ArgumentOutOfRangeException(nameof(AdaptationRank), AdaptationRank, $"AdaptationRank must be from 1 to {MatrixFactorizationSettings.MaxRank}.");
        RecommenderOptionChecks.Training(Lambda, LearningRate, Optimizer, NumberOfIterations, BatchSize, InitialStandardDeviation);
        if (BaseModelPath is not null && string.IsNullOrWhiteSpace(BaseModelPath)) throw new ArgumentException("BaseModelPath is empty; leave it null to embed the base.", nameof(BaseModelPath));
    }
}

/// <summary>
/// The adaptation of a trained recommender of any kind, with its base frozen: the new ratings are read against the
/// base's ids (known ids keep their rows, new ids get rows after them), checked, and an adapter of the base's kind is
/// trained on them alone (<see cref="RatingLoop"/>), then the unknown rows are fixed by the cold-start policy. The
/// trainers of each kind (<see cref="PeftMatrixFactorizationAdaptationTrainer"/>,
/// <see cref="Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer"/>) wrap it.
/// </summary>
internal sealed class RecommenderAdaptation<TModel, TSettings, TNetwork, TTransformer> : IRecommenderAdaptation<TTransformer>
    where TModel : RecommenderModel<TModel, TSettings, TNetwork>, IRecommenderKind<TModel, TSettings, TNetwork>
    where TSettings : RecommenderSettings
    where TNetwork : nn.Module, IRecommenderNetwork
    where TTransformer : PeftRecommenderTransformer, IRecommenderTransformer<TTransformer, TModel>
{
    private readonly IHost host;
    private readonly TModel baseModel;
    private readonly RecommendationAdaptationOptions options;

    /// <param name="env">The environment.</param>
    /// <param name="name">The trainer's name (its host's).</param>
    /// <param name="baseModel">The base model's model (checked here: a base of explicit ratings).</param>
    /// <param name="options">The adaptation's options (validated here).</param>
    public RecommenderAdaptation(IHostEnvironment env, string name, TModel? baseModel, RecommendationAdaptationOptions options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.baseModel = baseModel ?? throw new ArgumentNullException(nameof(baseModel));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        if (baseModel.Adapter is not null)
            throw new ArgumentException("The base model is itself an adaptation; adapt the base model it was adapted from.", nameof(baseModel));
        if (baseModel.Settings.Feedback == RecommendationFeedback.Implicit)
            throw new ArgumentException("The base model was trained on implicit feedback; adaptation trains on explicit ratings and cannot adapt it.", nameof(baseModel));
        host = env.Register(name);
    }

    /// <summary>The output of the adaptation: the base's score column over the base's user, item and rating columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var settings = baseModel.Settings;
        return RecommenderSchema.OutputShape(inputSchema, settings.UserColumnName, settings.ItemColumnName, settings.LabelColumnName, settings.ScoreColumnName);
    }

    /// <summary>Trains an adapter on <paramref name="input"/>; returns the adapted model (sharing the base's network).</summary>
    public TTransformer Fit(IDataView input, Action<int, double> passCompleted)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        var baseSettings = baseModel.Settings;
        using var ch = host.Start("Adapting");
        string? basePath = options.BaseModelPath is null ? null : Path.GetFullPath(options.BaseModelPath);
        if (basePath is not null && BaseFileSha256(basePath) != baseModel.BaseSha256)
            throw new ArgumentException($"The base model file '{options.BaseModelPath}' (BaseModelPath) holds other tables than the base model being adapted.", nameof(RecommendationAdaptationOptions.BaseModelPath));
        IdColumn.Announce(ch, input.Schema, baseSettings.UserColumnName, baseSettings.ItemColumnName);
        var data = RatingData.Read(input, baseSettings.UserColumnName, baseSettings.ItemColumnName, baseSettings.LabelColumnName, "adaptation data", baseModel.Users, baseModel.Items);
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

        var settings = baseSettings.Copy<TSettings>();
        settings.UserCount = data.UserCount;
        settings.ItemCount = data.ItemCount;
        settings.Adaptation = new AdaptationSettings
        {
            Method = options.Method,
            LoraRank = options.Method == MatrixFactorizationAdaptation.Lora ? options.AdaptationRank : 0,
            BaseUserCount = baseSettings.UserCount,
            BaseItemCount = baseSettings.ItemCount,
            BaseSha256 = baseModel.BaseSha256,
            BasePath = basePath,
        };
        settings.Validate("adapted settings");
        ch.Info($"Adapting with {options.Method}: {data.Count:N0} new ratings; {data.UserCount - data.KnownUserCount:N0} new users and {data.ItemCount - data.KnownItemCount:N0} new items get rows of their own; " +
            $"{data.Count - knownUserRatings:N0} ratings are by new users, {data.Count - knownItemRatings:N0} of new items.");

        var device = baseModel.Device;
        var model = RecommenderModel<TModel, TSettings, TNetwork>.NewAdapted(settings, data.UserIds, data.ItemIds, baseModel.Network, baseModel.BaseSha256, device);
        try
        {
            var clock = Stopwatch.StartNew();
            var adapter = model.Adapter!;
            using (var generator = new Generator((ulong)options.Seed, CPU))
            {
                adapter.Initialise(options.InitialStandardDeviation, generator);
                RatingLoop.Run(host, data, device, generator, adapter.TrainedParameters.Select(p => p.Parameter).ToList(),
                    new RatingLoop.Settings(options.Optimizer, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize),
                    model.Forward, adapter.Regularisation, passCompleted);
                if (options.UnknownIdsAsNewcomers) adapter.FixUnknownRows();
            }
            ch.Info($"Adapted in {clock.Elapsed.TotalSeconds:F1} s: {adapter.TrainedParameterCount:N0} trained parameters beside the base's {model.Network.ParameterCount:N0}.");
            return TTransformer.Wrap(host, model, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private string BaseFileSha256(string path)
    {
        using var onDisk = RecommenderFiles.LoadFile<TTransformer, TModel>(host, path, $"The base model file '{options.BaseModelPath}' (BaseModelPath)", asBase: true);
        if (onDisk.AdaptationMethod is not null)
            throw new ArgumentException($"The base model file '{options.BaseModelPath}' (BaseModelPath) holds an adaptation ({onDisk.AdaptationMethod}), not the base model itself.", nameof(RecommendationAdaptationOptions.BaseModelPath));
        return onDisk.BaseModelSha256;
    }
}

/// <summary>What a recommender adaptation trainer (<see cref="PeftRecommenderAdaptationTrainer{TTransformer}"/>) does, whatever the model kind.</summary>
internal interface IRecommenderAdaptation<TTransformer>
{
    SchemaShape GetOutputSchema(SchemaShape inputSchema);
    TTransformer Fit(IDataView input, Action<int, double> passCompleted);
}

/// <summary>
/// An adaptation trainer of a recommender (<see cref="PeftMatrixFactorizationAdaptationTrainer"/>,
/// <see cref="Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer"/>): it trains a small adapter beside the frozen
/// base on new ratings only, and returns an adapted <typeparamref name="TTransformer"/>.
/// </summary>
/// <typeparam name="TTransformer">The transformer of the model kind.</typeparam>
public abstract class PeftRecommenderAdaptationTrainer<TTransformer> : IEstimator<TTransformer> where TTransformer : PeftRecommenderTransformer
{
    private readonly IRecommenderAdaptation<TTransformer> adaptation;

    private protected PeftRecommenderAdaptationTrainer(IRecommenderAdaptation<TTransformer> adaptation) => this.adaptation = adaptation;

    /// <summary>The training loss (mean squared error of the new ratings, without the regularisation) after each pass.</summary>
    public event EventHandler<(int Iteration, double TrainingMse)>? IterationCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => adaptation.GetOutputSchema(inputSchema);

    /// <inheritdoc/>
    public TTransformer Fit(IDataView input) => adaptation.Fit(input, (pass, mse) => IterationCompleted?.Invoke(this, (pass, mse)));
}

/// <summary>Checks of the training options the recommender trainers share; the messages name the option.</summary>
internal static class RecommenderOptionChecks
{
    /// <summary>The column names and rank every recommender trainer takes, as ML.NET's matrix factorisation names them.</summary>
    public static void ColumnsAndRank(string user, string item, string label, string score, int rank)
    {
        foreach (var (value, name) in new[] { (user, "MatrixColumnIndexColumnName"), (item, "MatrixRowIndexColumnName"), (label, "LabelColumnName"), (score, "ScoreColumnName") })
            if (string.IsNullOrWhiteSpace(value))
                throw new ArgumentException($"{name} is empty" + (name.StartsWith("Matrix", StringComparison.Ordinal)
                    ? $": set it to the {(name == "MatrixColumnIndexColumnName" ? "user" : "item")} key column (or a text or integer id column)." : "."), name);
        if (user == item)
            throw new ArgumentException($"MatrixColumnIndexColumnName and MatrixRowIndexColumnName are both '{item}'; users and items need two columns.", "MatrixRowIndexColumnName");
        if (rank <= 0 || rank > MatrixFactorizationSettings.MaxRank)
            throw new ArgumentOutOfRangeException("ApproximationRank", rank, $"ApproximationRank must be from 1 to {MatrixFactorizationSettings.MaxRank}.");
    }

    public static void Training(double lambda, double learningRate, MatrixFactorizationOptimizer optimizer, int iterations, int batchSize, double initialStandardDeviation)
    {
        if (!(lambda >= 0) || double.IsInfinity(lambda)) throw new ArgumentOutOfRangeException("Lambda", lambda, "Lambda must be a finite number, 0 or more.");
        if (!(learningRate > 0) || double.IsInfinity(learningRate)) throw new ArgumentOutOfRangeException("LearningRate", learningRate, "LearningRate must be a positive finite number.");
        if (!Enum.IsDefined(optimizer)) throw new ArgumentOutOfRangeException("Optimizer", optimizer, "Optimizer must be Adam or Sgd.");
        if (iterations <= 0) throw new ArgumentOutOfRangeException("NumberOfIterations", iterations, "NumberOfIterations must be positive.");
        if (batchSize <= 0 || batchSize > 1 << 20) throw new ArgumentOutOfRangeException("BatchSize", batchSize, "BatchSize must be from 1 to 1048576.");
        if (!(initialStandardDeviation >= 0) || double.IsInfinity(initialStandardDeviation))
            throw new ArgumentOutOfRangeException("InitialStandardDeviation", initialStandardDeviation, "InitialStandardDeviation must be a finite number, 0 or more.");
    }
}
