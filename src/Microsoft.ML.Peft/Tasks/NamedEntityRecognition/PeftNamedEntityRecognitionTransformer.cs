using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftNamedEntityRecognitionTransformer), null, typeof(SignatureLoadModel),
    "PEFT named-entity recognition", PeftNamedEntityRecognitionTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// A fitted PEFT named-entity recognizer. <see cref="Transform"/> adds <c>PredictedLabel</c>: a vector with one tag per word
/// of the sentence column (a key of the training label's type, so <c>MapKeyToValue</c> gives the tag names), computed lazily
/// a batch of rows at a time. It works with <c>PredictionEngine</c> and saves with <c>mlContext.Model.Save</c> (adapter, head,
/// settings and a reference to the base model).
/// </summary>
public sealed partial class PeftNamedEntityRecognitionTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftNerTagger";

    private readonly IHost host;
    private readonly NerModel model;
    private readonly LabelInfo label;
    private long cutWords;

    internal PeftNamedEntityRecognitionTransformer(IHostEnvironment env, NerModel model, IReadOnlyList<EpochMetrics> history)
    {
        host = env.Register(nameof(PeftNamedEntityRecognitionTransformer));
        this.model = model;
        label = new LabelInfo(model.Settings.Tags.Count, "Text", model.Settings.Tags);
        TrainingHistory = history;
        model.PrepareForScoring();
    }

    /// <summary>The PEFT method (<c>LORA</c>, <c>BITFIT</c>, <c>FULL</c>...).</summary>
    public string Method => model.Adapted.Method.Options.PeftType;

    /// <summary>The metrics of each training epoch (empty for a loaded model).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Parameters that training updated (the method's and the head).</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the model, base encoder included.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>The tags in key order (key 1 is the first).</summary>
    public IReadOnlyList<string> Tags => model.Settings.Tags;

    /// <summary>Whether the head sees each word's case shape (see <see cref="PeftNamedEntityRecognitionTrainer.Options.CaseFeatures"/>).</summary>
    public bool CaseFeatures => model.Settings.CaseFeatures;

    /// <summary>The sentence column read when scoring.</summary>
    public string Sentence1ColumnName => model.Settings.SentenceColumnName;

    /// <summary>The output column of predicted tags.</summary>
    public string PredictionColumnName => model.Settings.PredictionColumnName;

    /// <summary>The base model this recognizer was trained on.</summary>
    public string BaseModelDescription => model.BaseModel.ToString();

    /// <summary>Words scored so far that had more WordPieces than a window holds (each kept its first pieces, where its tag is read).</summary>
    public long CutWordCount => Interlocked.Read(ref cutWords);

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    internal NerModel Model => model;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    /// <summary>The predicted tag names of each sentence's words (a sentence is a list of words).</summary>
    public IReadOnlyList<string[]> Predict(IReadOnlyList<IReadOnlyList<string>> sentences)
    {
        if (sentences is null) throw new ArgumentNullException(nameof(sentences));
        return PredictKeys(sentences).Select(keys => keys.Select(k => model.Settings.Tags[k]).ToArray()).ToList();
    }

    private int[][] PredictKeys(IReadOnlyList<IReadOnlyList<string>> sentences)
    {
        var result = model.Predict(sentences, out var cut);
        if (cut > 0 && Interlocked.Add(ref cutWords, cut) == cut)
        {
            using var ch = host.Start("Scoring");
            ch.Warning($"Some words have more WordPieces than a window of {model.Settings.MaxSequenceLength} tokens holds; they keep their first pieces. CutWordCount counts them.");
        }
        return result;
    }

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns) =>
        new SentenceColumn(row.Schema, model.Settings.SentenceColumnName, "Sentence1ColumnName", "input").Reader(row);

    bool IRowScorer.SameInput(object a, object b) => ((string[])a).AsSpan().SequenceEqual((string[])b);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs) =>
        PredictKeys(inputs.Cast<string[]>().ToList()).Select(keys => (object)keys.Select(k => (uint)(k + 1)).ToArray()).ToList();

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    private OutputColumns Bind(DataViewSchema input)
    {
        var sentence = new SentenceColumn(input, model.Settings.SentenceColumnName, "Sentence1ColumnName", "input");
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        var annotations = new DataViewSchema.Annotations.Builder();
        label.AddKeyValues(annotations);
        builder.AddColumn(model.Settings.PredictionColumnName, new VectorDataViewType(label.KeyType), annotations.ToAnnotations());
        return new OutputColumns(builder.ToSchema(), input.Count, new[] { sentence.Column }, (index, output) =>
        {
            ValueGetter<VBuffer<uint>> getter = (ref VBuffer<uint> dst) =>
            {
                var keys = (uint[])output();
                var editor = VBufferEditor.Create(ref dst, keys.Length);
                keys.CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return getter;
        });
    }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTNERT", LoaderSignature, typeof(PeftNamedEntityRecognitionTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftNamedEntityRecognitionTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        var (_, entries) = ModelFile.Load(ctx, NerLoader.Source);
        var host = env.Register(nameof(PeftNamedEntityRecognitionTransformer));
        using var ch = host.Start("Loading");
        var model = NerLoader.Load(entries, PeftLoadOptions.Current.Value, ch);
        return new PeftNamedEntityRecognitionTransformer(env, model, Array.Empty<EpochMetrics>());
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}

/// <summary>Rebuilds a <see cref="NerModel"/> from verified entries of a saved model.</summary>
internal static class NerLoader
{
    public const string Source = "The PEFT named-entity recognition model";

    public static NerModel Load(ModelEntries entries, PeftLoadOptions? options, IChannel ch) =>
        TextTaskLoader.Load<NerSettings, NerModel>(Source, NerSettings.TaskName, ModelMetadata.Parse(entries.MetadataBytes, Source), entries, options, ch,
            (settings, config) => settings.Validate(config, Source),
            (settings, baseModel, method, embed, device, generator) => new NerModel(settings, baseModel, method, embed, device, generator));
}
