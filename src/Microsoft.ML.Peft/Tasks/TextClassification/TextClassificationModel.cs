using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>The task's network: the text backbone (named <c>bert</c>), mean pooling over the attention mask, and a classification head (<c>classifier</c>).</summary>
internal sealed class TextClassificationNetwork : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private readonly ITextBackbone backbone;
    private readonly ClassificationHead head;

    public TextClassificationNetwork(ITextBackbone backbone, ClassificationHead head) : base("text_classification")
    {
        this.backbone = backbone;
        this.head = head;
        register_module(backbone.Name, backbone.Module);
        register_module("classifier", head);
    }

    public ClassificationHead Head => head;

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var hidden = backbone.Forward(inputIds, attentionMask, tokenTypeIds);
        return head.forward(Pooling.Mean(hidden, attentionMask)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A fine-tuned text classifier: the base model with its method applied, the head, the tokenizer and the saved
/// settings. What the trainer fits and the transformer scores with. Scoring needs no lock: forward passes in
/// inference mode change no state, so several cursors or prediction engines may score at once.
/// </summary>
internal sealed class TextClassificationModel : IDisposable
{
    public TextClassificationModel(TextClassificationSettings settings, LoadedBaseModel baseModel, PeftMethodOptions method,
        bool embedBaseModel, Device device, Generator? generator, float headDropout = 0)
    {
        settings.Validate(baseModel.Config, "text classification settings");
        Settings = settings;
        BaseModel = BaseModelReference.From(baseModel);
        BaseModelFile = embedBaseModel ? baseModel.File : null;
        Vocab = baseModel.Vocab;
        Device = device;
        Encoder = new TextEncoder(baseModel.Vocab, baseModel.Source.LowerCase, settings.MaxSequenceLength);
        var backbone = (ITextBackbone)baseModel.CreateBackbone();
        Config = baseModel.Config;
        try
        {
            Adapted = new AdaptedBackbone(backbone, method, generator);
            if (settings.MaxSequenceLength > backbone.MaxInputLength)
                throw new ArgumentOutOfRangeException(nameof(settings.MaxSequenceLength), settings.MaxSequenceLength,
                    $"MaxSequenceLength and the method's {backbone.MaxPositions - backbone.MaxInputLength} virtual tokens exceed the base model's " +
                    $"{backbone.MaxPositions} positions: lower MaxSequenceLength to at most {backbone.MaxInputLength}, or num_virtual_tokens.");
            Network = new TextClassificationNetwork(backbone, new ClassificationHead(backbone.FeatureSize, settings.ClassCount, headDropout, generator));
            Network.to(device);
        }
        catch
        {
            backbone.Module.Dispose();
            throw;
        }
    }

    public TextClassificationSettings Settings { get; }
    public BaseModelReference BaseModel { get; }
    public Backbones.Bert.BertConfig Config { get; }
    public AdaptedBackbone Adapted { get; }
    public TextClassificationNetwork Network { get; }
    public TextEncoder Encoder { get; }
    public byte[] Vocab { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }
    public LabelInfo Label => Settings.Label;

    /// <summary>The method's parameters and the head's, under their saved keys.</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters() =>
        Adapted.Parameters().Concat(HeadParameters()).ToList();

    /// <summary>What a saved model's adapter entry fills: the trainable parameters and the method's frozen saved tensors.</summary>
    public IReadOnlyList<NamedParameter> LoadedParameters() =>
        TrainableParameters().Concat(Adapted.FrozenState()).ToList();

    private IEnumerable<NamedParameter> HeadParameters() =>
        Network.Head.named_parameters().Select(p => new NamedParameter("classifier." + p.name, p.parameter));

    /// <summary>The tensors saved for the model (the caller disposes them): the method's saved state and the head.</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Adapted.SavedState().Concat(HeadParameters().Select(p => new NamedTensor(p.Key, p.Parameter.detach()))).ToList();

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.Parameter.numel());

    public long TotalParameterCount => Network.parameters().Sum(p => p.numel());

    /// <summary>Optimizer groups: the method's, then the head at the trainer's rate.</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups() =>
        Adapted.Method.ParameterGroups(Adapted.Method.Parameters(Adapted.Backbone))
            .Append(new ParameterGroup(Network.Head.parameters().ToList(), 1.0)).ToList();

    /// <summary>Tensors of a batch on the model's device: input ids, attention mask, token types.</summary>
    public (Tensor Ids, Tensor Mask, Tensor Types) ToTensors(EncodedBatch batch)
    {
        var shape = new long[] { batch.Rows, batch.Length };
        return (tensor(batch.InputIds, shape).to(Device), tensor(batch.AttentionMask, shape).to(Device), tensor(batch.TokenTypeIds, shape).to(Device));
    }

    /// <summary>Logits of a batch of encoded rows (training or evaluation, as the network's mode is).</summary>
    public Tensor Logits(IReadOnlyList<EncodedRow> rows)
    {
        var (ids, mask, types) = ToTensors(Encoder.Pad(rows));
        return Network.forward(ids, mask, types);
    }

    /// <summary>
    /// Class probabilities of each row (inference mode; the network must be in evaluation mode). Rows are sorted by
    /// length and scored <see cref="TextClassificationSettings.BatchSize"/> at a time, so short rows are not padded to long ones.
    /// </summary>
    public float[][] Predict(IReadOnlyList<string> first, IReadOnlyList<string>? second, out int truncatedRows)
    {
        var rows = Encoder.Tokenize(first, second);
        truncatedRows = rows.Count(r => r.Truncated);
        var order = Enumerable.Range(0, rows.Length).OrderBy(i => rows[i].Ids.Length).ToArray();
        var result = new float[rows.Length][];
        int classes = Settings.ClassCount;
        for (int start = 0; start < order.Length; start += Settings.BatchSize)
        {
            var chunk = order.AsSpan(start, Math.Min(Settings.BatchSize, order.Length - start)).ToArray();
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var flat = nn.functional.softmax(Logits(chunk.Select(i => rows[i]).ToList()), 1).cpu().data<float>().ToArray();
            for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = flat.AsSpan(r * classes, classes).ToArray();
        }
        return result;
    }

    /// <summary>The model's entries for saving.</summary>
    public ModelEntries ToEntries()
    {
        var state = SavedState();
        try
        {
            return ToEntries(state);
        }
        finally
        {
            foreach (var t in state) t.Value.Dispose();
        }
    }

    private ModelEntries ToEntries(IReadOnlyList<NamedTensor> state) => new()
    {
        MetadataBytes = new ModelMetadata
        {
            Task = TextClassificationSettings.TaskName,
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

    /// <summary>The shared base weights this model uses, or null when it owns its base weights.</summary>
    public SharedBaseWeights? SharedBase { get; private set; }

    /// <summary>Shares the frozen base weights with other loaded models of the same base (see <see cref="SharedBaseWeights"/>).</summary>
    public void ShareBaseWeights(string sha256) => SharedBase = SharedBaseWeights.Share(Adapted, sha256, Device);

    public void Dispose() => Network.Dispose();
}
