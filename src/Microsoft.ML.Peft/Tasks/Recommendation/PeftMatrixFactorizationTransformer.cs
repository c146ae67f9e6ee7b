using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftMatrixFactorizationTransformer), null, typeof(SignatureLoadModel),
    "PEFT matrix factorization", PeftMatrixFactorizationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// A trained matrix-factorisation recommender. <see cref="Transform"/> adds <c>Score</c> (Single, the predicted rating,
/// with ML.NET's regression annotations, clamped to the training ratings' range unless <c>ClampScores</c> was false)
/// lazily, one batch of rows at a time; it works with <c>PredictionEngine</c> and saves with <c>mlContext.Model.Save</c>
/// (the factor tables and biases are in the file). A user or item the model was not trained on (key 0, a key beyond
/// the training key count, or a key with no training rating) is scored from what is known: global mean + item bias for an unknown user, global mean +
/// user bias for an unknown item, the global mean when both are unknown.
/// </summary>
public sealed class PeftMatrixFactorizationTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftMatrixFactorization";

    private readonly MatrixFactorizationModel model;

    internal PeftMatrixFactorizationTransformer(IHostEnvironment env, MatrixFactorizationModel model, TimeSpan trainingTime)
    {
        Environment = env.Register(nameof(PeftMatrixFactorizationTransformer));
        this.model = model;
        TrainingTime = trainingTime;
    }

    /// <summary>The user key column (ML.NET's matrix column index).</summary>
    public string MatrixColumnIndexColumnName => model.Settings.UserColumnName;

    /// <summary>The item key column (ML.NET's matrix row index).</summary>
    public string MatrixRowIndexColumnName => model.Settings.ItemColumnName;

    /// <summary>The rating column the model was trained on.</summary>
    public string LabelColumnName => model.Settings.LabelColumnName;

    /// <summary>The output column of the predicted rating.</summary>
    public string ScoreColumnName => model.Settings.ScoreColumnName;

    /// <summary>Users the model has rows for (in an adapted model: the base's and the new ones).</summary>
    public int UserCount => model.Settings.UserCount;

    /// <summary>Items the model has rows for (in an adapted model: the base's and the new ones).</summary>
    public int ItemCount => model.Settings.ItemCount;

    /// <summary>The ids of the users the model has rows for, in row order.</summary>
    public IReadOnlyList<string> UserIds => model.Users.Ids;

    /// <summary>The ids of the items the model has rows for, in row order.</summary>
    public IReadOnlyList<string> ItemIds => model.Items.Ids;

    /// <summary>What this model's adapter changes; null for a base model (trained by <see cref="PeftMatrixFactorizationTrainer"/>).</summary>
    public MatrixFactorizationAdaptation? AdaptationMethod => model.Settings.Adaptation?.Method;

    /// <summary>Users of an adapted model that its base did not know (cold start): rows beyond the base's.</summary>
    public int NewUserCount => model.Settings.UserCount - (model.Settings.Adaptation?.BaseUserCount ?? model.Settings.UserCount);

    /// <summary>Items of an adapted model that its base did not know.</summary>
    public int NewItemCount => model.Settings.ItemCount - (model.Settings.Adaptation?.BaseItemCount ?? model.Settings.ItemCount);

    /// <summary>The parameters training changed: every parameter of a base model, the adapter's of an adapted one.</summary>
    public long TrainableParameterCount => model.Adapter?.TrainedParameterCount ?? model.Network.ParameterCount;

    /// <summary>SHA-256 of the base tables: equal for a base model and every adaptation of it.</summary>
    public string BaseModelSha256 => model.BaseSha256;

    /// <summary>The rank of the factors.</summary>
    public int ApproximationRank => model.Settings.Rank;

    /// <summary>The global mean rating (the score when the user and the item are both unknown, before clamping).</summary>
    public float GlobalMean
    {
        get
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            return model.Network.GlobalMean.cpu().item<float>();
        }
    }

    /// <summary>The smallest and largest training rating (scores are clamped to them when <see cref="ClampsScores"/>).</summary>
    public (float Minimum, float Maximum) TrainingRatingRange => (model.Settings.RatingMin, model.Settings.RatingMax);

    /// <summary>Whether the model was trained on explicit ratings (its score is a rating) or implicit feedback (its score is a relevance for ranking).</summary>
    public RecommendationFeedback Feedback => model.Settings.Feedback;

    /// <summary>Whether scores are clamped to <see cref="TrainingRatingRange"/>.</summary>
    public bool ClampsScores => model.Settings.ClampScores;

    /// <summary>Parameters of the model: the base's factor tables, biases and global mean (each table has a zero row for unknown ids), plus an adaptation's.</summary>
    public long ParameterCount => model.Network.ParameterCount + (model.Adapter?.TrainedParameterCount ?? 0);

    /// <summary>Time spent training (zero for a loaded model).</summary>
    public TimeSpan TrainingTime { get; }

    internal MatrixFactorizationModel Model => model;

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

    /// <summary>The predicted rating of each (user id, item id) pair; an id the model has no row for is unknown.</summary>
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

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTMFAC", LoaderSignature, typeof(PeftMatrixFactorizationTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftMatrixFactorizationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var (version, entries) = ModelFile.Load(ctx, MatrixFactorizationModel.Source);
        var host = env.Register(nameof(PeftMatrixFactorizationTransformer));
        using var ch = host.Start("Loading");
        var device = TorchBackend.LoadDevice(PeftLoadOptions.Current.Value?.Device, ch);
        if (LoadingBase.Value) return new PeftMatrixFactorizationTransformer(env, MatrixFactorizationModel.Load(version, entries, device, _ =>
            throw new InvalidDataException($"{MatrixFactorizationModel.Source} is an adaptation whose base is in another file; a base model (trained by PeftMatrixFactorization) is needed here, not an adaptation of one.")), TimeSpan.Zero);
        var given = PeftLoadOptions.Current.Value?.BaseModelPath;
        return new PeftMatrixFactorizationTransformer(env, MatrixFactorizationModel.Load(version, entries, device, adaptation =>
        {
            var path = given ?? adaptation.BasePath ?? throw new InvalidDataException($"{MatrixFactorizationModel.Source} is an adaptation with no base model file recorded.");
            var where = given is null ? $"its recorded base model file '{path}'" : $"the base model file '{path}'";
            if (!File.Exists(path))
                throw new FileNotFoundException($"{MatrixFactorizationModel.Source} is an adaptation; {where} does not exist. Pass the base's location with mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out schema).", path);
            return LoadFile(env, path, where, asBase: true).model;
        }), TimeSpan.Zero);
    }

    /// <summary>Set while the base model file of an adaptation loads: an adaptation found there is refused (no chains, no loops).</summary>
    private static readonly AsyncLocal<bool> LoadingBase = new();

    /// <summary>
    /// Loads an ML.NET model file and returns the PEFT matrix-factorisation transformer in it (alone or in a chain), or a
    /// clear error naming the file when it is not an ML.NET model or holds another kind of model.
    /// </summary>
    internal static PeftMatrixFactorizationTransformer LoadFile(IHostEnvironment env, string path, string what, bool asBase)
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
        var found = Find(loaded);
        if (found is null)
        {
            (loaded as IDisposable)?.Dispose();
            throw new InvalidDataException($"{what} is an ML.NET model of another kind ({Describe(loaded)}), not a PEFT matrix factorization model.");
        }
        return found;
    }

    private static PeftMatrixFactorizationTransformer? Find(ITransformer transformer) => transformer switch
    {
        PeftMatrixFactorizationTransformer mf => mf,
        IEnumerable<ITransformer> chain => chain.Select(Find).LastOrDefault(t => t is not null),
        _ => null,
    };

    private static string Describe(ITransformer transformer) => transformer is IEnumerable<ITransformer> chain
        ? string.Join(", ", chain.Select(t => t.GetType().Name).DefaultIfEmpty("an empty chain"))
        : transformer.GetType().Name;

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}
