using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftSentenceSimilarityTransformer), null, typeof(SignatureLoadModel),
    "PEFT sentence similarity", PeftSentenceSimilarityTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// A fitted PEFT sentence-similarity model. <see cref="Transform"/> adds <c>Score</c> (Single, in the training label's
/// units, not clamped to its range) lazily, one forward pass per batch of rows; it works with <c>PredictionEngine</c> and
/// saves with <c>mlContext.Model.Save</c> (adapter, head, settings and a reference to the base model, or the base model
/// itself with <c>EmbedBaseModel</c>). A bi-encoder keeps the embeddings of recently scored sentences (a bounded cache), so
/// a sentence that recurs is encoded once, and gives embeddings for search with <see cref="Embed"/>.
/// </summary>
public sealed partial class PeftSentenceSimilarityTransformer : ITransformer, IDisposable, IRowScorer
{
    internal const string LoaderSignature = "PeftSentenceSimilarity";

    /// <summary>Sentences whose embeddings a bi-encoder keeps (384 floats each for MiniLM: about 25 MB).</summary>
    internal const int EmbeddingCacheCapacity = 16_384;

    private readonly IHost host;
    private readonly SentenceSimilarityModel model;
    private long truncatedRows;

    internal PeftSentenceSimilarityTransformer(IHostEnvironment env, SentenceSimilarityModel model, IReadOnlyList<EpochMetrics> history)
    {
        host = env.Register(nameof(PeftSentenceSimilarityTransformer));
        this.model = model;
        TrainingHistory = history;
        Cache = new EmbeddingCache(model.IsBiEncoder ? EmbeddingCacheCapacity : 0);
        // The adapter is fixed from now on: folded into the base weights so scoring costs no extra matmuls, unless the
        // base weights are shared with other loaded models (then they must not change).
        model.PrepareForScoring();
    }

    /// <summary>The PEFT method (<c>LORA</c>, <c>BITFIT</c>, <c>FULL</c>...).</summary>
    public string Method => model.Adapted.Method.Options.PeftType;

    /// <summary>Whether the pair is read as one sequence or each sentence alone.</summary>
    public SimilarityArchitecture Architecture => model.Settings.Architecture;

    /// <summary>Whether this model shares its base model's frozen weights with other loaded models (its adapter is then unmerged).</summary>
    public bool SharesBaseModel => model.SharedBase is not null;

    /// <summary>The metrics of each training epoch (empty for a loaded model: training history is not saved).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Parameters that training updated (the method's, and the cross-encoder's head).</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the model, base encoder included.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>The full names of the modules the method adapted.</summary>
    public IReadOnlyList<string> AdaptedModules => model.Adapted.AdaptedModules;

    /// <summary>The base model this model was trained on.</summary>
    public string BaseModelDescription => model.BaseModel.ToString();

    /// <summary>The smallest training label. A bi-encoder maps cosine 0 to it; scores may still fall below it.</summary>
    public double TrainingLabelMinimum => model.Settings.LabelMin;

    /// <summary>The largest training label. A bi-encoder maps cosine 1 to it; a cross-encoder's scores may exceed it.</summary>
    public double TrainingLabelMaximum => model.Settings.LabelMax;

    /// <summary>The first sentence's column.</summary>
    public string Sentence1ColumnName => model.Settings.Sentence1ColumnName;

    /// <summary>The second sentence's column.</summary>
    public string Sentence2ColumnName => model.Settings.Sentence2ColumnName;

    /// <summary>The output column of the score.</summary>
    public string ScoreColumnName => model.Settings.ScoreColumnName;

    /// <summary>Rows scored so far with a text longer than the maximum sequence length (truncated).</summary>
    public long TruncatedRowCount => Interlocked.Read(ref truncatedRows);

    internal SentenceSimilarityModel Model => model;

    internal EmbeddingCache Cache { get; }

    int IRowScorer.BatchSize => model.Settings.BatchSize;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    /// <summary>
    /// Unit-norm sentence embeddings of a bi-encoder (the mean-pooled last hidden states, L2-normalised): the cosine of
    /// two sentences is the dot product of their embeddings, and <c>Score = TrainingLabelMinimum + cosine *
    /// (TrainingLabelMaximum - TrainingLabelMinimum)</c>. Compute a corpus's embeddings once and compare queries by dot
    /// products. A null sentence is encoded as empty text. Each call returns new arrays.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model is a cross-encoder, which has no per-sentence embedding.</exception>
    public float[][] Embed(IReadOnlyList<string> sentences)
    {
        if (sentences is null) throw new ArgumentNullException(nameof(sentences));
        if (!model.IsBiEncoder)
            throw new InvalidOperationException("A cross-encoder reads the two sentences together and has no per-sentence embedding; train with Architecture = BiEncoder to embed sentences.");
        var texts = sentences.Select(s => s ?? "").ToList();
        var found = Embeddings(texts);
        return texts.Select(s => (float[])found[s].Vector.Clone()).ToArray();
    }

    /// <summary>The embedding of each distinct sentence, from the cache or computed (and then cached).</summary>
    private Dictionary<string, (float[] Vector, bool Truncated)> Embeddings(IEnumerable<string> sentences)
    {
        var result = new Dictionary<string, (float[] Vector, bool Truncated)>(StringComparer.Ordinal);
        var missing = new List<string>();
        foreach (var sentence in sentences)
        {
            if (result.ContainsKey(sentence)) continue;
            if (Cache.TryGet(sentence, out var vector, out var truncated))
            {
                result[sentence] = (vector, truncated);
            }
            else
            {
                result[sentence] = (Array.Empty<float>(), false);
                missing.Add(sentence);
            }
        }
        if (missing.Count > 0)
        {
            var computed = model.EmbedSentences(missing, out var cut);
            for (int i = 0; i < missing.Count; i++)
            {
                result[missing[i]] = (computed[i], cut[i]);
                Cache.Add(missing[i], computed[i], cut[i]);
            }
        }
        return result;
    }

    internal float[] Score(IReadOnlyList<string> first, IReadOnlyList<string> second)
    {
        float[] result;
        int truncated;
        if (model.IsBiEncoder)
        {
            var embeddings = Embeddings(first.Concat(second));
            result = new float[first.Count];
            truncated = 0;
            for (int i = 0; i < result.Length; i++)
            {
                var (a, b) = (embeddings[first[i]], embeddings[second[i]]);
                if (a.Truncated || b.Truncated) truncated++;
                result[i] = model.Settings.Score(SentenceSimilarityModel.Cosine(a.Vector, b.Vector));
            }
        }
        else
        {
            result = model.Predict(first, second, out truncated);
        }
        if (truncated > 0 && Interlocked.Add(ref truncatedRows, truncated) == truncated)
        {
            using var ch = host.Start("Scoring");
            ch.Warning($"Some rows are longer than MaxSequenceLength={model.Settings.MaxSequenceLength} tokens and are truncated; TruncatedRowCount counts them.");
        }
        return result;
    }

    Func<object> IRowScorer.InputReader(DataViewRow row, OutputColumns columns)
    {
        var first = row.GetGetter<ReadOnlyMemory<char>>(columns.InputColumns[0]);
        var second = row.GetGetter<ReadOnlyMemory<char>>(columns.InputColumns[1]);
        return () =>
        {
            ReadOnlyMemory<char> value = default;
            first(ref value);
            var a = value.ToString();
            second(ref value);
            return (a, value.ToString());
        };
    }

    bool IRowScorer.SameInput(object a, object b) => a.Equals(b);

    IReadOnlyList<object> IRowScorer.Score(IReadOnlyList<object> inputs)
    {
        var pairs = inputs.Cast<(string First, string Second)>().ToList();
        return Score(pairs.Select(p => p.First).ToList(), pairs.Select(p => p.Second).ToList()).Select(s => (object)s).ToList();
    }

    OutputColumns IRowScorer.Bind(DataViewSchema input) => Bind(input);

    private OutputColumns Bind(DataViewSchema input)
    {
        var settings = model.Settings;
        var text = new List<DataViewSchema.Column>
        {
            ColumnChecks.FindText(input, settings.Sentence1ColumnName, "Sentence1ColumnName", "input"),
            ColumnChecks.FindText(input, settings.Sentence2ColumnName, "Sentence2ColumnName", "input"),
        };
        return SimilaritySchema.Bind(input, settings.ScoreColumnName, text);
    }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTSSIM", LoaderSignature, typeof(PeftSentenceSimilarityTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        ModelFile.Save(ctx, model.ToEntries());
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftSentenceSimilarityTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        var (version, entries) = ModelFile.Load(ctx, "The PEFT sentence similarity model");
        var host = env.Register(nameof(PeftSentenceSimilarityTransformer));
        using var ch = host.Start("Loading");
        var model = SentenceSimilarityLoader.Load(version, entries, PeftLoadOptions.Current.Value, ch);
        return new PeftSentenceSimilarityTransformer(env, model, Array.Empty<EpochMetrics>());
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}
