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
        _ = env.Register(nameof(PeftMatrixFactorizationTransformer));
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

    /// <summary>Users the model has rows for: keys 1 to UserCount.</summary>
    public int UserCount => model.Settings.UserCount;

    /// <summary>Items the model has rows for: keys 1 to ItemCount.</summary>
    public int ItemCount => model.Settings.ItemCount;

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

    /// <summary>Whether scores are clamped to <see cref="TrainingRatingRange"/>.</summary>
    public bool ClampsScores => model.Settings.ClampScores;

    /// <summary>Parameters of the model: factor tables, biases and the global mean (each table has a zero row for unknown keys).</summary>
    public long ParameterCount => model.Network.ParameterCount;

    /// <summary>Time spent training (zero for a loaded model).</summary>
    public TimeSpan TrainingTime { get; }

    internal MatrixFactorizationModel Model => model;

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema ?? throw new ArgumentNullException(nameof(inputSchema))).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema ?? throw new ArgumentNullException(nameof(inputSchema)));

    /// <summary>The predicted rating of each (user key, item key) pair; keys are ML.NET's (1-based, 0 for missing).</summary>
    public float[] Predict(IReadOnlyList<(uint UserKey, uint ItemKey)> pairs)
    {
        if (pairs is null) throw new ArgumentNullException(nameof(pairs));
        return model.Predict(pairs.Select(p => ((ulong)p.UserKey, (ulong)p.ItemKey)).ToList());
    }

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var user = RatingData.KeyReader(row, columns.InputColumns[0]);
        var item = RatingData.KeyReader(row, columns.InputColumns[1]);
        return () => (user(), item());
    }

    bool IRowScorer.SameInput(object a, object b) => a.Equals(b);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs) =>
        model.Predict(inputs.Cast<(ulong, ulong)>().ToList()).Select(s => (object)s).ToList();

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    private OutputColumns Bind(DataViewSchema input)
    {
        var settings = model.Settings;
        var keys = new List<DataViewSchema.Column>
        {
            RatingData.KeyColumn(input, settings.UserColumnName, "MatrixColumnIndexColumnName", "user", "input"),
            RatingData.KeyColumn(input, settings.ItemColumnName, "MatrixRowIndexColumnName", "item", "input"),
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
        return new PeftMatrixFactorizationTransformer(env, MatrixFactorizationModel.Load(version, entries, device), TimeSpan.Zero);
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}
