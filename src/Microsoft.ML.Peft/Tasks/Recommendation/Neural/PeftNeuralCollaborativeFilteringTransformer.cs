using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftNeuralCollaborativeFilteringTransformer), null, typeof(SignatureLoadModel),
    "PEFT neural collaborative filtering", PeftNeuralCollaborativeFilteringTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// A trained neural collaborative-filtering recommender (NeuMF). <see cref="Transform"/> adds <c>Score</c> (Single, with
/// ML.NET's regression annotations) lazily, one batch of rows at a time: for explicit feedback the predicted rating
/// (clamped to the training ratings' range unless <c>ClampScores</c> was false), for implicit feedback a relevance for
/// ranking a user's items (never clamped). It works with <c>PredictionEngine</c> and saves with
/// <c>mlContext.Model.Save</c> (every tensor of the network is in the file). A user or item the model was not trained on
/// is scored from what is known: global mean + item bias for an unknown user, global mean + user bias for an unknown
/// item, the global mean when both are unknown.
/// </summary>
public sealed class PeftNeuralCollaborativeFilteringTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftNeuralCF";

    private readonly NeuralCollaborativeFilteringModel model;

    internal PeftNeuralCollaborativeFilteringTransformer(IHostEnvironment env, NeuralCollaborativeFilteringModel model, TimeSpan trainingTime)
    {
        Environment = env.Register(nameof(PeftNeuralCollaborativeFilteringTransformer));
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

    /// <summary>Whether the model was trained on explicit ratings (its score is a rating) or implicit feedback (its score is a relevance for ranking).</summary>
    public RecommendationFeedback Feedback => model.Settings.Feedback;

    /// <summary>Users the model has rows for.</summary>
    public int UserCount => model.Settings.UserCount;

    /// <summary>Items the model has rows for.</summary>
    public int ItemCount => model.Settings.ItemCount;

    /// <summary>The ids of the users the model has rows for, in row order.</summary>
    public IReadOnlyList<string> UserIds => model.Users.Ids;

    /// <summary>The ids of the items the model has rows for, in row order.</summary>
    public IReadOnlyList<string> ItemIds => model.Items.Ids;

    /// <summary>The size of each embedding (of the GMF and of the MLP branch).</summary>
    public int ApproximationRank => model.Settings.Rank;

    /// <summary>Output sizes of the MLP's hidden layers, in order.</summary>
    public IReadOnlyList<int> HiddenLayerSizes => model.Settings.HiddenLayerSizes;

    /// <summary>The global term (for explicit ratings, the score when the user and the item are both unknown, before clamping).</summary>
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

    /// <summary>Whether scores are clamped to <see cref="TrainingRatingRange"/>.</summary>
    public bool ClampsScores => model.Settings.ClampScores;

    /// <summary>Parameters of the model: the four embedding tables (each with a zero row for unknown ids), the MLP, <c>predict</c>, the biases and the global mean.</summary>
    public long ParameterCount => model.Network.ParameterCount;

    /// <summary>The parameters training changed: all of them.</summary>
    public long TrainableParameterCount => model.Network.ParameterCount;

    /// <summary>Time spent training (zero for a loaded model).</summary>
    public TimeSpan TrainingTime { get; }

    internal NeuralCollaborativeFilteringModel Model => model;

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

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTNCFM", LoaderSignature, typeof(PeftNeuralCollaborativeFilteringTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftNeuralCollaborativeFilteringTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var (version, entries) = ModelFile.Load(ctx, NeuralCollaborativeFilteringModel.Source);
        var host = env.Register(nameof(PeftNeuralCollaborativeFilteringTransformer));
        using var ch = host.Start("Loading");
        var device = TorchBackend.LoadDevice(PeftLoadOptions.Current.Value?.Device, ch);
        return new PeftNeuralCollaborativeFilteringTransformer(env, NeuralCollaborativeFilteringModel.Load(version, entries, device), TimeSpan.Zero);
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}
