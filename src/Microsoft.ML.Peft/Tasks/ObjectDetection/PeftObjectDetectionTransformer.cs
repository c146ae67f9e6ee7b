using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftObjectDetectionTransformer), null, typeof(SignatureLoadModel),
    "PEFT object detection", PeftObjectDetectionTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// A fine-tuned object detector in an ML.NET pipeline: adds <c>PredictedLabel</c> (a vector of keys of the training
/// label's key type, one per detection), <c>Score</c> (vector of Single, best first) and <c>PredictedBoundingBoxes</c>
/// (vector of Single, xmin, ymin, xmax, ymax per detection, in pixels of the original image). Saved with
/// <c>mlContext.Model.Save</c>, it stores the adapter, the feature pyramid, the head and the settings, not the base model
/// (unless <c>EmbedBaseModel</c> was set); loading finds the base model again and checks its hash.
/// </summary>
public sealed class PeftObjectDetectionTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftObjectDetector";

    private readonly IHost host;
    private readonly ObjectDetectionModel model;

    internal PeftObjectDetectionTransformer(IHostEnvironment env, ObjectDetectionModel model, IReadOnlyList<EpochMetrics> history)
    {
        host = env.Register(nameof(PeftObjectDetectionTransformer));
        this.model = model;
        TrainingHistory = history;
        model.Network.eval();
        // The adapter is fixed from now on: fold it into the base weights unless they are shared with other loaded models.
        if (model.SharedBase is null) model.Adapted.Merge();
    }

    /// <summary>The PEFT method's type (<c>LORA</c>, <c>BITFIT</c>, <c>LINEAR_PROBE</c>...).</summary>
    public string Method => model.Adapted.Method.Options.PeftType;

    /// <summary>Whether this model shares its frozen base weights with other loaded models of the same base.</summary>
    public bool SharesBaseModel => model.SharedBase is not null;

    /// <summary>Loss, speed and validation mAP@0.5 of each training epoch (empty for a loaded model).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Parameters trained: the method's, the feature pyramid's and the head's.</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the network.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>Number of object classes.</summary>
    public int ClassCount => model.Settings.ClassCount;

    /// <summary>The class names by class index (key - 1).</summary>
    public IReadOnlyList<string> ClassNames => model.Settings.Label.ClassNames;

    /// <summary>The modules the method adapted.</summary>
    public IReadOnlyList<string> AdaptedModules => model.Adapted.AdaptedModules;

    /// <summary>The base model: its name, file and architecture.</summary>
    public string BaseModelDescription => $"{model.BaseModel.Source} {model.Settings.Backbone}";

    /// <summary>The image column read.</summary>
    public string ImageColumnName => model.Settings.ImageColumnName;

    /// <summary>Side of the square canvas images are letterboxed to.</summary>
    public int ImageSize => model.Settings.ImageSize;

    /// <summary>Detections scored below this are dropped.</summary>
    public float ScoreThreshold => model.Settings.ScoreThreshold;

    internal ObjectDetectionModel Model => model;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    /// <summary>The detections of images, in their original pixels, best first.</summary>
    internal DetectionBox[][] Detect(IReadOnlyList<CachedImage> images) => model.Predict(images);

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var image = ImageColumn.Bind(row.Schema, model.Settings.ImageColumnName, "ImageColumnName", model.Settings.ImageFolder);
        var read = image.Getter(row, int.MaxValue);
        return () => CachedImage.Read(read, model.Settings.ImageSize);
    }

    bool IRowScorer.SameInput(object a, object b) =>
        a is CachedImage x && b is CachedImage y && x.OriginalWidth == y.OriginalWidth && x.OriginalHeight == y.OriginalHeight &&
        x.Image.Width == y.Image.Width && x.Image.Height == y.Image.Height && x.Image.Rgb.AsSpan().SequenceEqual(y.Image.Rgb);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs) => model.Predict(inputs.Cast<CachedImage>().ToList());

    internal OutputColumns Bind(DataViewSchema input)
    {
        var settings = model.Settings;
        var label = settings.Label;
        var image = ImageColumn.Bind(input, settings.ImageColumnName, "ImageColumnName", settings.ImageFolder);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        var keyValues = new DataViewSchema.Annotations.Builder();
        label.AddKeyValues(keyValues);
        builder.AddColumn(settings.PredictedLabelColumnName, new VectorDataViewType(label.KeyType), keyValues.ToAnnotations());
        builder.AddColumn(settings.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single));
        builder.AddColumn(settings.PredictedBoundingBoxColumnName, new VectorDataViewType(NumberDataViewType.Single));
        int labelIndex = input.Count, scoreIndex = input.Count + 1;
        return new OutputColumns(builder.ToSchema(), input.Count, new[] { image.Column }, (index, output) =>
        {
            if (index == labelIndex)
            {
                ValueGetter<VBuffer<uint>> keys = (ref VBuffer<uint> dst) => Fill(ref dst, (DetectionBox[])output(), 1, (b, values) => values[0] = (uint)(b.Class + 1));
                return keys;
            }
            if (index == scoreIndex)
            {
                ValueGetter<VBuffer<float>> scores = (ref VBuffer<float> dst) => Fill(ref dst, (DetectionBox[])output(), 1, (b, values) => values[0] = b.Score);
                return scores;
            }
            ValueGetter<VBuffer<float>> boxes = (ref VBuffer<float> dst) => Fill(ref dst, (DetectionBox[])output(), 4, (b, values) =>
            {
                values[0] = b.XMin;
                values[1] = b.YMin;
                values[2] = b.XMax;
                values[3] = b.YMax;
            });
            return boxes;
        });
    }

    private delegate void Writer<T>(DetectionBox box, Span<T> values);

    private static void Fill<T>(ref VBuffer<T> dst, DetectionBox[] boxes, int per, Writer<T> write)
    {
        var editor = VBufferEditor.Create(ref dst, boxes.Length * per);
        for (int i = 0; i < boxes.Length; i++) write(boxes[i], editor.Values.Slice(i * per, per));
        dst = editor.Commit();
    }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTODET", LoaderSignature, typeof(PeftObjectDetectionTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftObjectDetectionTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        var (_, entries) = ModelFile.Load(ctx, ObjectDetectionLoader.Source);
        var host = env.Register(nameof(PeftObjectDetectionTransformer));
        using var ch = host.Start("Loading");
        var model = ObjectDetectionLoader.Load(entries, PeftLoadOptions.Current.Value, ch);
        return new PeftObjectDetectionTransformer(env, model, Array.Empty<EpochMetrics>());
    }

    /// <summary>Releases the network's tensors.</summary>
    public void Dispose() => model.Dispose();
}
