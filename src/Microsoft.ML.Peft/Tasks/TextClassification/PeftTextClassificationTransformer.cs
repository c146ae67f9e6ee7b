using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftTextClassificationTransformer), null, typeof(SignatureLoadModel),
    "PEFT text classification", PeftTextClassificationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>
/// A fitted PEFT text classifier. <see cref="Transform"/> adds <c>Score</c> (class probabilities) and
/// <c>PredictedLabel</c> (a key of the training label's type) lazily, one forward pass per batch of rows; it works with
/// <c>PredictionEngine</c> and saves with <c>mlContext.Model.Save</c> (adapter, head, configuration and a reference to the
/// base model, or the base model itself with <c>EmbedBaseModel</c>).
/// </summary>
public sealed partial class PeftTextClassificationTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftTextClassifier";

    private readonly IHost host;
    private readonly TextClassificationModel model;
    private long truncatedRows;

    internal PeftTextClassificationTransformer(IHostEnvironment env, TextClassificationModel model, IReadOnlyList<EpochMetrics> history)
    {
        host = env.Register(nameof(PeftTextClassificationTransformer));
        this.model = model;
        TrainingHistory = history;
        // The adapter is fixed from now on: folded into the base weights so scoring costs no extra matmuls, unless the
        // base weights are shared with other loaded models (then they must not change).
        model.PrepareForScoring();
    }

    /// <summary>The PEFT method (<c>LORA</c>, <c>BITFIT</c>, <c>FULL</c>...).</summary>
    public string Method => model.Adapted.Method.Options.PeftType;

    /// <summary>
    /// Whether this model shares its base model's frozen weights with the other models loaded from the same base file
    /// (<see cref="Format.PeftLoadOptions.ShareBaseModel"/>); a shared model scores with its adapter unmerged.
    /// </summary>
    public bool SharesBaseModel => model.SharedBase is not null;

    /// <summary>The metrics of each training epoch (empty for a loaded model: training history is not saved).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Parameters that training updated (the method's and the head).</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the model, base encoder included.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>Number of classes.</summary>
    public int ClassCount => model.Settings.ClassCount;

    /// <summary>The full names of the modules the method adapted (for LoRA, the Linear layers that carry an adapter).</summary>
    public IReadOnlyList<string> AdaptedModules => model.Adapted.AdaptedModules;

    /// <summary>The base model this classifier was trained on.</summary>
    public string BaseModelDescription => model.BaseModel.ToString();

    /// <summary>The text column read when scoring.</summary>
    public string Sentence1ColumnName => model.Settings.Sentence1ColumnName;

    /// <summary>The second text column of sentence-pair models, or null.</summary>
    public string? Sentence2ColumnName => model.Settings.Sentence2ColumnName;

    /// <summary>The output column of class probabilities.</summary>
    public string ScoreColumnName => model.Settings.ScoreColumnName;

    /// <summary>The output column of the predicted key.</summary>
    public string PredictedLabelColumnName => model.Settings.PredictedLabelColumnName;

    /// <summary>The class names in score order: the label's key values, or the key numbers 1..N without them.</summary>
    public IReadOnlyList<string> ClassNames => model.Label.ClassNames;

    /// <summary>Rows scored so far whose text was longer than the maximum sequence length and was truncated.</summary>
    public long TruncatedRowCount => Interlocked.Read(ref truncatedRows);

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    internal TextClassificationModel Model => model;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    internal float[][] Score(IReadOnlyList<string> first, IReadOnlyList<string>? second)
    {
        var result = model.Predict(first, second, out var truncated);
        if (truncated > 0 && Interlocked.Add(ref truncatedRows, truncated) == truncated)
        {
            using var ch = host.Start("Scoring");
            ch.Warning($"Some rows are longer than MaxSequenceLength={model.Settings.MaxSequenceLength} tokens and are truncated; TruncatedRowCount counts them.");
        }
        return result;
    }

    /// <summary>Checks the input's text columns and builds the output schema.</summary>
    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var first = row.GetGetter<ReadOnlyMemory<char>>(columns.InputColumns[0]);
        var second = columns.InputColumns.Count > 1 ? row.GetGetter<ReadOnlyMemory<char>>(columns.InputColumns[1]) : null;
        return () =>
        {
            ReadOnlyMemory<char> value = default;
            first(ref value);
            var a = value.ToString();
            if (second is null) return (a, (string?)null);
            second(ref value);
            return (a, (string?)value.ToString());
        };
    }

    bool IRowScorer.SameInput(object a, object b) => a.Equals(b);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs)
    {
        var pairs = inputs.Cast<(string First, string? Second)>().ToList();
        return Score(pairs.Select(p => p.First).ToList(), model.Settings.Sentence2ColumnName is null ? null : pairs.Select(p => p.Second ?? "").ToList());
    }

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    internal OutputColumns Bind(DataViewSchema input)
    {
        var meta = model.Settings;
        var text = new List<DataViewSchema.Column> { ColumnChecks.FindText(input, meta.Sentence1ColumnName, "Sentence1ColumnName", "input") };
        if (meta.Sentence2ColumnName is not null) text.Add(ColumnChecks.FindText(input, meta.Sentence2ColumnName, "Sentence2ColumnName", "input"));
        return ClassificationSchema.Bind(input, meta.Label, meta.ScoreColumnName, meta.PredictedLabelColumnName, text);
    }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTTXTC", LoaderSignature, typeof(PeftTextClassificationTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftTextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        var (version, entries) = ModelFile.Load(ctx, "The PEFT text classification model");
        var host = env.Register(nameof(PeftTextClassificationTransformer));
        using var ch = host.Start("Loading");
        var model = TextClassificationLoader.Load(version, entries, PeftLoadOptions.Current.Value, ch);
        return new PeftTextClassificationTransformer(env, model, Array.Empty<EpochMetrics>());
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}
