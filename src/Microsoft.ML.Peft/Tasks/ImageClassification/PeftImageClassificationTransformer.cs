using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftImageClassificationTransformer), null, typeof(SignatureLoadModel),
    "PEFT image classification", PeftImageClassificationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

/// <summary>
/// A fine-tuned image classifier in an ML.NET pipeline: adds <c>Score</c> (class probabilities, with the class names as
/// slot names) and <c>PredictedLabel</c> (a key with the training label's values). Saved with
/// <c>mlContext.Model.Save</c>, it stores the adapter, the head and the settings, not the base model (unless
/// <c>EmbedBaseModel</c> was set); loading finds the base model again and checks its hash.
/// </summary>
public sealed partial class PeftImageClassificationTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftImageClassifier";

    private readonly IHost host;
    private readonly ImageClassificationModel model;

    internal PeftImageClassificationTransformer(IHostEnvironment env, ImageClassificationModel model, IReadOnlyList<EpochMetrics> history)
    {
        host = env.Register(nameof(PeftImageClassificationTransformer));
        this.model = model;
        TrainingHistory = history;
        model.Network.eval();
        // The adapter is fixed from now on: fold it into the base weights unless they are shared with other loaded models.
        if (model.SharedBase is null) model.Adapted.Merge();
    }

    /// <summary>The PEFT method's type (<c>LORA</c>, <c>BITFIT</c>...).</summary>
    public string Method => model.Adapted.Method.Options.PeftType;

    /// <summary>Whether this model shares its frozen base weights with other loaded models of the same base.</summary>
    public bool SharesBaseModel => model.SharedBase is not null;

    /// <summary>Loss, speed and validation accuracy of each training epoch (empty for a loaded model).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Parameters trained: the method's, batch normalisation's when trained, and the head's.</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the network.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>Number of classes.</summary>
    public int ClassCount => model.Settings.ClassCount;

    /// <summary>The class names in score order.</summary>
    public IReadOnlyList<string> ClassNames => model.Label.ClassNames;

    /// <summary>The modules the method adapted.</summary>
    public IReadOnlyList<string> AdaptedModules => model.Adapted.AdaptedModules;

    /// <summary>The base model: its name, file and architecture.</summary>
    public string BaseModelDescription => $"{model.BaseModel.Source} {model.Settings.Backbone}";

    /// <summary>The image column read.</summary>
    public string ImageColumnName => model.Settings.ImageColumnName;

    /// <summary>Side of the square images are scored at.</summary>
    public int ImageSize => model.Settings.ImageSize;

    internal ImageClassificationModel Model => model;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var image = ImageColumn.Bind(row.Schema, model.Settings.ImageColumnName, "ImageColumnName", model.Settings.ImageFolder);
        var read = image.Getter(row, model.Preprocessor.ResizeSize);
        return () => read();
    }

    bool IRowScorer.SameInput(object a, object b) =>
        a is DecodedImage x && b is DecodedImage y && x.Width == y.Width && x.Height == y.Height && x.Rgb.AsSpan().SequenceEqual(y.Rgb);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs) => model.Predict(inputs.Cast<DecodedImage>().ToList());

    internal OutputColumns Bind(DataViewSchema input)
    {
        var settings = model.Settings;
        var image = ImageColumn.Bind(input, settings.ImageColumnName, "ImageColumnName", settings.ImageFolder);
        return ClassificationSchema.Bind(input, settings.Label, settings.ScoreColumnName, settings.PredictedLabelColumnName, new[] { image.Column });
    }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTIMGC", LoaderSignature, typeof(PeftImageClassificationTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    internal static PeftImageClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        var (version, entries) = ModelFile.Load(ctx, ImageClassificationLoader.Source);
        var host = env.Register(nameof(PeftImageClassificationTransformer));
        using var ch = host.Start("Loading");
        var model = ImageClassificationLoader.Load(version, entries, PeftLoadOptions.Current.Value, ch);
        return new PeftImageClassificationTransformer(env, model, Array.Empty<EpochMetrics>());
    }

    /// <summary>Releases the network's tensors.</summary>
    public void Dispose() => model.Dispose();
}
