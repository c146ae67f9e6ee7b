using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// What every trained PEFT recommender (<see cref="PeftMatrixFactorizationTransformer"/>,
/// <see cref="Neural.PeftNeuralCollaborativeFilteringTransformer"/>) is: a base model or an adaptation of one.
/// <see cref="Transform"/> adds the score column (Single, with ML.NET's regression annotations) lazily, one batch of rows
/// at a time: for explicit feedback the predicted rating (clamped to the training ratings' range when
/// <see cref="ClampsScores"/>), for implicit feedback a relevance for ranking. It works with <c>PredictionEngine</c> and
/// saves with <c>mlContext.Model.Save</c>. Ids are matched by value (keys' values, text or integers).
/// </summary>
public abstract class PeftRecommenderTransformer : ITransformer, IDisposable, IRowScorer
{
    private readonly IRecommenderModel model;

    private protected PeftRecommenderTransformer(IHostEnvironment env, IRecommenderModel model, TimeSpan trainingTime, string name)
    {
        Environment = env.Register(name);
        this.model = model;
        TrainingTime = trainingTime;
    }

    /// <summary>The user column (ML.NET's matrix column index).</summary>
    public string MatrixColumnIndexColumnName => model.Settings.UserColumnName;

    /// <summary>The item column (ML.NET's matrix row index).</summary>
    public string MatrixRowIndexColumnName => model.Settings.ItemColumnName;

    /// <summary>The rating column the model was trained on (not read for implicit feedback).</summary>
    public string LabelColumnName => model.Settings.LabelColumnName;

    /// <summary>The output column of the score.</summary>
    public string ScoreColumnName => model.Settings.ScoreColumnName;

    /// <summary>Users the model has rows for (in an adapted model: the base's and the new ones).</summary>
    public int UserCount => model.Settings.UserCount;

    /// <summary>Items the model has rows for (in an adapted model: the base's and the new ones).</summary>
    public int ItemCount => model.Settings.ItemCount;

    /// <summary>The ids of the users the model has rows for, in row order.</summary>
    public IReadOnlyList<string> UserIds => model.Users.Ids;

    /// <summary>The ids of the items the model has rows for, in row order.</summary>
    public IReadOnlyList<string> ItemIds => model.Items.Ids;

    /// <summary>What this model's adapter changes; null for a base model.</summary>
    public MatrixFactorizationAdaptation? AdaptationMethod => model.Settings.Adaptation?.Method;

    /// <summary>Users of an adapted model that its base did not know (cold start): rows beyond the base's.</summary>
    public int NewUserCount => model.Settings.UserCount - (model.Settings.Adaptation?.BaseUserCount ?? model.Settings.UserCount);

    /// <summary>Items of an adapted model that its base did not know.</summary>
    public int NewItemCount => model.Settings.ItemCount - (model.Settings.Adaptation?.BaseItemCount ?? model.Settings.ItemCount);

    /// <summary>The parameters training changed: every parameter of a base model, the adapter's of an adapted one.</summary>
    public long TrainableParameterCount => model.Adapter?.TrainedParameterCount ?? model.Network.ParameterCount;

    /// <summary>Parameters of the model: the base's (each embedding table has a zero row for unknown ids), plus an adaptation's trained ones.</summary>
    public long ParameterCount => model.Network.ParameterCount + (model.Adapter?.TrainedParameterCount ?? 0);

    /// <summary>SHA-256 of the base's tensors: equal for a base model and every adaptation of it.</summary>
    public string BaseModelSha256 => model.BaseSha256;

    /// <summary>The width of the embeddings (the rank of the factors).</summary>
    public int ApproximationRank => model.Settings.Rank;

    /// <summary>The base's global term (for explicit ratings, the base's score when the user and the item are both unknown, before clamping); an adaptation shifts it.</summary>
    public float GlobalMean
    {
        get
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            return model.Network.GlobalMean.cpu().item<float>();
        }
    }

    /// <summary>The smallest and largest training rating (explicit feedback; scores are clamped to them when <see cref="ClampsScores"/>); (0, 0) for implicit feedback.</summary>
    public (float Minimum, float Maximum) TrainingRatingRange => (model.Settings.RatingMin, model.Settings.RatingMax);

    /// <summary>Whether the model was trained on explicit ratings (its score is a rating) or implicit feedback (its score is a relevance for ranking).</summary>
    public RecommendationFeedback Feedback => model.Settings.Feedback;

    /// <summary>Whether scores are clamped to <see cref="TrainingRatingRange"/>.</summary>
    public bool ClampsScores => model.Settings.ClampScores;

    /// <summary>Time spent training (zero for a loaded model).</summary>
    public TimeSpan TrainingTime { get; }

    internal IRecommenderModel RecommenderModel => model;

    internal IHostEnvironment Environment { get; }

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema ?? throw new ArgumentNullException(nameof(inputSchema))).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema ?? throw new ArgumentNullException(nameof(inputSchema)));

    /// <summary>The score of each (user id, item id) pair; an id the model has no row for is unknown.</summary>
    public float[] Predict(IReadOnlyList<(string UserId, string ItemId)> pairs)
    {
        if (pairs is null) throw new ArgumentNullException(nameof(pairs));
        return model.Predict(pairs.Select(p => (model.Users.RowOf(p.UserId), model.Items.RowOf(p.ItemId))).ToList());
    }

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var user = model.Users.RowReader(row, columns.InputColumns[0]);
        var item = model.Items.RowReader(row, columns.InputColumns[1]);
        return () => (user(), item());
    }

    bool IRowScorer.SameInput(object a, object b) => a.Equals(b);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs) =>
        model.Predict(inputs.Cast<(int, int)>().ToList()).Select(s => (object)s).ToList();

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    private OutputColumns Bind(DataViewSchema input)
    {
        var settings = model.Settings;
        var keys = new List<DataViewSchema.Column>
        {
            IdColumn.Find(input, settings.UserColumnName, "MatrixColumnIndexColumnName", "user", "input"),
            IdColumn.Find(input, settings.ItemColumnName, "MatrixRowIndexColumnName", "item", "input"),
        };
        return SimilaritySchema.Bind(input, settings.ScoreColumnName, keys);
    }

    /// <summary>The ML.NET version stamp of this model kind.</summary>
    private protected abstract VersionInfo SavedVersion { get; }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(SavedVersion);
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Releases the model's tensors (an adaptation's own; a shared base stays with the models that use it).</summary>
    public void Dispose() => model.Dispose();
}

/// <summary>What the shared adaptation and loading code needs of a recommender transformer type: its names, and how it wraps a model.</summary>
internal interface IRecommenderTransformer<TTransformer, TModel> where TTransformer : PeftRecommenderTransformer
{
    /// <summary>The kind of model in messages ("PEFT matrix factorization").</summary>
    static abstract string Kind { get; }

    /// <summary>The trainer of a base model of this kind, in messages.</summary>
    static abstract string Trainer { get; }

    /// <summary>The transformer of <paramref name="model"/> (trained in <paramref name="trainingTime"/>; zero when loaded).</summary>
    static abstract TTransformer Wrap(IHostEnvironment env, TModel model, TimeSpan trainingTime);
}

/// <summary>
/// Loading recommender model files: an adaptation's base model file (found by the recorded path or the one given to
/// <c>LoadWithBaseModel</c>), and a model file of an expected kind with clear errors for anything else.
/// </summary>
internal static class RecommenderFiles
{
    /// <summary>Set while the base model file of an adaptation loads: an adaptation found there is refused (no chains, no loops).</summary>
    private static readonly AsyncLocal<bool> LoadingBase = new();

    /// <summary>
    /// The transformer of a file ML.NET is loading (after its version stamp was checked), on the device the load options
    /// ask for: the base of an adaptation that refers to a file is loaded from the path given to <c>LoadWithBaseModel</c>,
    /// or else from the recorded one; while loading an adaptation's base, an adaptation is refused.
    /// </summary>
    public static TTransformer Load<TTransformer, TModel, TSettings, TNetwork>(IHostEnvironment env, ModelLoadContext ctx)
        where TTransformer : PeftRecommenderTransformer, IRecommenderTransformer<TTransformer, TModel>
        where TModel : RecommenderModel<TModel, TSettings, TNetwork>, IRecommenderKind<TModel, TSettings, TNetwork>
        where TSettings : RecommenderSettings
        where TNetwork : TorchSharp.torch.nn.Module, IRecommenderNetwork
    {
        var (version, entries) = ModelFile.Load(ctx, TModel.Source);
        var host = env.Register("RecommenderLoading");
        TorchSharp.torch.Device device;
        using (var ch = host.Start("Loading")) device = TorchBackend.LoadDevice(PeftLoadOptions.Current.Value?.Device, ch);
        var given = PeftLoadOptions.Current.Value?.BaseModelPath;
        var model = RecommenderModel<TModel, TSettings, TNetwork>.Load(version, entries, device, adaptation =>
        {
            if (LoadingBase.Value)
                throw new InvalidDataException($"{TModel.Source} is an adaptation whose base is in another file; a base model (trained by {TTransformer.Trainer}) is needed here, not an adaptation of one.");
            var path = given ?? adaptation.BasePath ?? throw new InvalidDataException($"{TModel.Source} is an adaptation with no base model file recorded.");
            var where = given is null ? $"its recorded base model file '{path}'" : $"the base model file '{path}'";
            if (!File.Exists(path))
                throw new FileNotFoundException($"{TModel.Source} is an adaptation; {where} does not exist. Pass the base's location with mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out schema).", path);
            return (TModel)LoadFile<TTransformer, TModel>(env, path, where, asBase: true).RecommenderModel;
        });
        return TTransformer.Wrap(env, model, TimeSpan.Zero);
    }

    /// <summary>
    /// Loads an ML.NET model file and returns the <typeparamref name="TTransformer"/> in it (alone or the last in a chain),
    /// or a clear error naming the file when it is not an ML.NET model or holds another kind of model
    /// . With <paramref name="asBase"/> the file is an adaptation's base:
    /// it loads on the CPU unless a device was asked for, and an adaptation in it is refused.
    /// </summary>
    public static TTransformer LoadFile<TTransformer, TModel>(IHostEnvironment env, string path, string what, bool asBase)
        where TTransformer : PeftRecommenderTransformer, IRecommenderTransformer<TTransformer, TModel>
    {
        var info = new FileInfo(path);
        if (!info.Exists || info.Attributes.HasFlag(FileAttributes.Device) || info.Length == 0)
            throw new FileNotFoundException($"{what} is not a regular, non-empty file.", path);
        var previous = (PeftLoadOptions.Current.Value, LoadingBase.Value);
        if (asBase) PeftLoadOptions.Current.Value = new PeftLoadOptions { Device = previous.Item1?.Device ?? "cpu" };
        LoadingBase.Value = asBase;
        ITransformer loaded;
        try
        {
            using var stream = File.OpenRead(path);
            loaded = new MLContext().Model.Load(stream, out _);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not InvalidDataException)
        {
            Exception inner = e;
            while (inner is System.Reflection.TargetInvocationException { InnerException: { } wrapped }) inner = wrapped;
            if (inner is InvalidDataException or FileNotFoundException) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner).Throw();
            throw new InvalidDataException($"{what} cannot be loaded as an ML.NET model: {inner.Message}", inner);
        }
        finally
        {
            (PeftLoadOptions.Current.Value, LoadingBase.Value) = previous;
        }
        var found = Find<TTransformer>(loaded);
        if (found is null)
        {
            (loaded as IDisposable)?.Dispose();
            throw new InvalidDataException($"{what} is an ML.NET model of another kind ({Describe(loaded)}), not a {TTransformer.Kind} model.");
        }
        return found;
    }

    private static TTransformer? Find<TTransformer>(ITransformer transformer) where TTransformer : class, ITransformer => transformer switch
    {
        TTransformer found => found,
        IEnumerable<ITransformer> chain => chain.Select(Find<TTransformer>).LastOrDefault(t => t is not null),
        _ => null,
    };

    private static string Describe(ITransformer transformer) => transformer is IEnumerable<ITransformer> chain
        ? string.Join(", ", chain.Select(t => t.GetType().Name).DefaultIfEmpty("an empty chain"))
        : transformer.GetType().Name;
}
