using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// The task's network: the text backbone (named <c>bert</c>) and mean pooling over the attention mask, then either a
/// one-output regression head (<c>classifier</c>, cross-encoder) giving [batch] outputs, or L2 normalisation (bi-encoder)
/// giving unit-norm [batch, hidden] embeddings.
/// </summary>
internal sealed class SentenceSimilarityNetwork : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private readonly ITextBackbone backbone;
    private readonly ClassificationHead? head;

    public SentenceSimilarityNetwork(ITextBackbone backbone, ClassificationHead? head) : base("sentence_similarity")
    {
        this.backbone = backbone;
        this.head = head;
        register_module(backbone.Name, backbone.Module);
        if (head is not null) register_module("classifier", head);
    }

    /// <summary>The regression head of a cross-encoder; null for a bi-encoder.</summary>
    public ClassificationHead? Head => head;

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var pooled = Pooling.Mean(backbone.Forward(inputIds, attentionMask, tokenTypeIds), attentionMask);
        var result = head is null ? nn.functional.normalize(pooled, 2.0, 1) : head.forward(pooled).squeeze(1);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A fine-tuned sentence-similarity model: the base model with its method applied, the head (cross-encoder), the
/// tokenizer and the saved settings. What the trainer fits and the transformer scores with; scoring changes no state.
/// </summary>
internal sealed class SentenceSimilarityModel : TextTaskModel
{
    public SentenceSimilarityModel(SentenceSimilaritySettings settings, LoadedBaseModel baseModel, PeftMethodOptions method,
        bool embedBaseModel, Device device, Generator? generator, float headDropout = 0)
        : base(baseModel, method, Checked(settings, baseModel).MaxSequenceLength, embedBaseModel, device, generator)
    {
        Settings = settings;
        SetNetwork(() => new SentenceSimilarityNetwork(Backbone,
                settings.Architecture == SimilarityArchitecture.CrossEncoder ? new ClassificationHead(Backbone.FeatureSize, 1, headDropout, generator) : null),
            network => network.Head);
    }

    public SentenceSimilaritySettings Settings { get; }
    public bool IsBiEncoder => Settings.Architecture == SimilarityArchitecture.BiEncoder;

    private static SentenceSimilaritySettings Checked(SentenceSimilaritySettings settings, LoadedBaseModel baseModel)
    {
        settings.Validate(baseModel.Config, "sentence similarity settings");
        return settings;
    }

    public new SentenceSimilarityNetwork Network => (SentenceSimilarityNetwork)base.Network;

    /// <summary>The cross-encoder's regression head; a bi-encoder has none.</summary>
    protected override string HeadName => "classifier";

    protected override (string Task, JsonObject Settings) TaskMetadata() => (SentenceSimilaritySettings.TaskName, Settings.ToJson());

    /// <summary>The network's output for a batch of encoded rows: cross-encoder outputs [rows] or bi-encoder embeddings [rows, hidden].</summary>
    public Tensor Forward(IReadOnlyList<EncodedRow> rows)
    {
        var (ids, mask, types) = ToTensors(Encoder.Pad(rows));
        using (ids)
        using (mask)
        using (types)
            return Network.forward(ids, mask, types);
    }

    /// <summary>
    /// Unit-norm embeddings of sentences (bi-encoder; inference mode, the network in evaluation mode). Rows are sorted by
    /// length and run <see cref="SentenceSimilaritySettings.BatchSize"/> at a time; <paramref name="truncated"/> marks
    /// sentences longer than the maximum length.
    /// </summary>
    public float[][] EmbedSentences(IReadOnlyList<string> sentences, out bool[] truncated)
    {
        var rows = Encoder.Tokenize(sentences);
        truncated = rows.Select(r => r.Truncated).ToArray();
        var result = new float[rows.Length][];
        int width = checked((int)Adapted.Backbone.FeatureSize);
        foreach (var chunk in LengthOrderedBatches(rows))
        {
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var flat = Forward(chunk.Select(i => rows[i]).ToList()).cpu().data<float>().ToArray();
            for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = flat.AsSpan(r * width, width).ToArray();
        }
        return result;
    }

    /// <summary>
    /// The score of each pair (inference mode, the network in evaluation mode), in the label's units: the de-standardised
    /// cross-encoder output, or the bi-encoder's cosine mapped to the training label range. Used for validation and by
    /// the transformer's cross-encoder; <paramref name="truncatedRows"/> counts pairs with a truncated text.
    /// </summary>
    public float[] Predict(IReadOnlyList<string> first, IReadOnlyList<string> second, out int truncatedRows)
    {
        if (IsBiEncoder)
        {
            // Each distinct sentence is embedded once.
            var distinct = first.Concat(second).Distinct(StringComparer.Ordinal).ToList();
            var embeddings = EmbedSentences(distinct, out var cut);
            var index = distinct.Select((s, i) => (s, i)).ToDictionary(p => p.s, p => p.i, StringComparer.Ordinal);
            truncatedRows = 0;
            var scores = new float[first.Count];
            for (int i = 0; i < scores.Length; i++)
            {
                int a = index[first[i]], b = index[second[i]];
                if (cut[a] || cut[b]) truncatedRows++;
                scores[i] = Settings.Score(Cosine(embeddings[a], embeddings[b]));
            }
            return scores;
        }
        // With both orders, rows n.. are the pairs reversed; a pair's score is the mean of its two outputs.
        int n = first.Count;
        var rows = Settings.BothOrders ? Encoder.Tokenize(first.Concat(second).ToList(), second.Concat(first).ToList()) : Encoder.Tokenize(first, second);
        truncatedRows = Enumerable.Range(0, n).Count(i => rows[i].Truncated);
        var outputs = new float[rows.Length];
        foreach (var chunk in LengthOrderedBatches(rows))
        {
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var values = Forward(chunk.Select(i => rows[i]).ToList()).cpu().data<float>().ToArray();
            for (int r = 0; r < chunk.Length; r++) outputs[chunk[r]] = values[r];
        }
        var result = new float[n];
        for (int i = 0; i < n; i++) result[i] = Settings.Score(Settings.BothOrders ? (outputs[i] + outputs[n + i]) / 2 : outputs[i]);
        return result;
    }

    /// <summary>The dot product of two unit-norm embeddings (their cosine), summed in double.</summary>
    public static float Cosine(float[] a, float[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += (double)a[i] * b[i];
        return (float)sum;
    }

    /// <summary>Row indices sorted by token count, cut into batches of <see cref="SentenceSimilaritySettings.BatchSize"/>.</summary>
    private IEnumerable<int[]> LengthOrderedBatches(EncodedRow[] rows) => LengthOrderedBatches(rows.Length, i => rows[i].Ids.Length, Settings.BatchSize);
}
