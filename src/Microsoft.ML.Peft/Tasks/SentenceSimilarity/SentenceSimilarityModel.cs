using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
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
internal sealed class SentenceSimilarityModel : IDisposable
{
    public SentenceSimilarityModel(SentenceSimilaritySettings settings, LoadedBaseModel baseModel, PeftMethodOptions method,
        bool embedBaseModel, Device device, Generator? generator, float headDropout = 0)
    {
        settings.Validate(baseModel.Config, "sentence similarity settings");
        Settings = settings;
        BaseModel = BaseModelReference.From(baseModel);
        BaseModelFile = embedBaseModel ? baseModel.File : null;
        Vocab = baseModel.Vocab;
        Device = device;
        Config = baseModel.Config;
        Encoder = new TextEncoder(baseModel.Vocab, baseModel.Source.LowerCase, settings.MaxSequenceLength);
        var backbone = (ITextBackbone)baseModel.CreateBackbone();
        try
        {
            Adapted = new AdaptedBackbone(backbone, method, generator);
            if (settings.MaxSequenceLength > backbone.MaxInputLength)
                throw new ArgumentOutOfRangeException(nameof(settings.MaxSequenceLength), settings.MaxSequenceLength,
                    $"MaxSequenceLength and the method's {backbone.MaxPositions - backbone.MaxInputLength} virtual tokens exceed the base model's " +
                    $"{backbone.MaxPositions} positions: lower MaxSequenceLength to at most {backbone.MaxInputLength}, or num_virtual_tokens.");
            var head = settings.Architecture == SimilarityArchitecture.CrossEncoder ? new ClassificationHead(backbone.FeatureSize, 1, headDropout, generator) : null;
            Network = new SentenceSimilarityNetwork(backbone, head);
            Network.to(device);
        }
        catch
        {
            backbone.Module.Dispose();
            throw;
        }
    }

    public SentenceSimilaritySettings Settings { get; }
    public BaseModelReference BaseModel { get; }
    public Backbones.Bert.BertConfig Config { get; }
    public AdaptedBackbone Adapted { get; }
    public SentenceSimilarityNetwork Network { get; }
    public TextEncoder Encoder { get; }
    public byte[] Vocab { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }
    public bool IsBiEncoder => Settings.Architecture == SimilarityArchitecture.BiEncoder;

    /// <summary>The method's parameters and the head's (cross-encoder), under their saved keys.</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters() => Adapted.Parameters().Concat(HeadParameters()).ToList();

    /// <summary>What a saved model's adapter entry fills: the trainable parameters and the method's frozen saved tensors.</summary>
    public IReadOnlyList<NamedParameter> LoadedParameters() => TrainableParameters().Concat(Adapted.FrozenState()).ToList();

    private IEnumerable<NamedParameter> HeadParameters() =>
        Network.Head?.named_parameters().Select(p => new NamedParameter("classifier." + p.name, p.parameter)) ?? Enumerable.Empty<NamedParameter>();

    /// <summary>The tensors saved for the model (the caller disposes them): the method's saved state and the head.</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Adapted.SavedState().Concat(HeadParameters().Select(p => new NamedTensor(p.Key, p.Parameter.detach()))).ToList();

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.Parameter.numel());

    public long TotalParameterCount => Network.parameters().Sum(p => p.numel());

    /// <summary>Optimizer groups: the method's, then the head (cross-encoder) at the trainer's rate.</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups()
    {
        var groups = Adapted.Method.ParameterGroups(Adapted.Method.Parameters(Adapted.Backbone)).ToList();
        if (Network.Head is not null) groups.Add(new ParameterGroup(Network.Head.parameters().ToList(), 1.0));
        return groups;
    }

    /// <summary>The network's output for a batch of encoded rows: cross-encoder outputs [rows] or bi-encoder embeddings [rows, hidden].</summary>
    public Tensor Forward(IReadOnlyList<EncodedRow> rows)
    {
        var batch = Encoder.Pad(rows);
        var shape = new long[] { batch.Rows, batch.Length };
        using var ids = tensor(batch.InputIds, shape).to(Device);
        using var mask = tensor(batch.AttentionMask, shape).to(Device);
        using var types = tensor(batch.TokenTypeIds, shape).to(Device);
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
        var rows = Encoder.Tokenize(first, second);
        truncatedRows = rows.Count(r => r.Truncated);
        var result = new float[rows.Length];
        foreach (var chunk in LengthOrderedBatches(rows))
        {
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var outputs = Forward(chunk.Select(i => rows[i]).ToList()).cpu().data<float>().ToArray();
            for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = Settings.Score(outputs[r]);
        }
        return result;
    }

    /// <summary>The dot product of two unit-norm embeddings (their cosine), summed in double.</summary>
    public static float Cosine(float[] a, float[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += (double)a[i] * b[i];
        return (float)sum;
    }

    /// <summary>Row indices sorted by token count, cut into batches, so short rows are not padded to long ones.</summary>
    private IEnumerable<int[]> LengthOrderedBatches(EncodedRow[] rows)
    {
        var order = Enumerable.Range(0, rows.Length).OrderBy(i => rows[i].Ids.Length).ToArray();
        for (int start = 0; start < order.Length; start += Settings.BatchSize)
            yield return order.AsSpan(start, Math.Min(Settings.BatchSize, order.Length - start)).ToArray();
    }

    /// <summary>The model's entries for saving.</summary>
    public ModelEntries ToEntries()
    {
        var state = SavedState();
        try
        {
            return new ModelEntries
            {
                MetadataBytes = new ModelMetadata
                {
                    Task = SentenceSimilaritySettings.TaskName,
                    BaseModel = BaseModel,
                    BaseModelEmbedded = BaseModelFile is not null,
                    Config = Config,
                    Method = MethodRegistry.ToJson(Adapted.Method.SavedOptions),
                    AdapterName = Adapted.Method.AdapterName,
                    AdaptedModules = Adapted.AdaptedModules.ToList(),
                    TaskSettings = Settings.ToJson(),
                }.ToUtf8(),
                VocabBytes = Vocab,
                AdapterBytes = AdapterState.Save(state),
                BaseModelBytes = BaseModelFile,
            };
        }
        finally
        {
            foreach (var t in state) t.Value.Dispose();
        }
    }

    /// <summary>The shared base weights this model uses, or null when it owns its base weights.</summary>
    public SharedBaseWeights? SharedBase { get; private set; }

    /// <summary>Shares the frozen base weights with other loaded models of the same base (see <see cref="SharedBaseWeights"/>).</summary>
    public void ShareBaseWeights(string sha256) => SharedBase = SharedBaseWeights.Share(Adapted, sha256, Device);

    public void Dispose() => Network.Dispose();
}
