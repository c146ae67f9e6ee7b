using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks;

/// <summary>
/// What every task over a text encoder shares: the base model with its method applied, the tokenizer, the device, the
/// head's parameters next to the method's (trainable, saved, in the optimizer), saving into the model format, and
/// sharing frozen base weights between loaded models. A task adds its network (backbone plus head) and its settings.
/// </summary>
internal abstract class TextTaskModel : IDisposable
{
    private nn.Module? network;
    private nn.Module? head;

    /// <summary>Loads the backbone and applies <paramref name="method"/>; the subclass then calls <see cref="SetNetwork"/>.</summary>
    protected TextTaskModel(LoadedBaseModel baseModel, PeftMethodOptions method, int maxSequenceLength, bool embedBaseModel, Device device, Generator? generator)
    {
        BaseModel = BaseModelReference.From(baseModel);
        BaseModelFile = embedBaseModel ? baseModel.File : null;
        Vocab = baseModel.Vocab;
        Device = device;
        Config = baseModel.Config;
        LowerCase = baseModel.Source.LowerCase;
        Encoder = new TextEncoder(baseModel.Vocab, baseModel.Source.LowerCase, maxSequenceLength);
        Backbone = (ITextBackbone)baseModel.CreateBackbone();
        try
        {
            Adapted = new AdaptedBackbone(Backbone, method, generator);
            if (maxSequenceLength > Backbone.MaxInputLength)
                throw new ArgumentOutOfRangeException("MaxSequenceLength", maxSequenceLength,
                    $"MaxSequenceLength and the method's {Backbone.MaxPositions - Backbone.MaxInputLength} virtual tokens exceed the base model's " +
                    $"{Backbone.MaxPositions} positions: lower MaxSequenceLength to at most {Backbone.MaxInputLength}, or num_virtual_tokens.");
        }
        catch
        {
            Backbone.Module.Dispose();
            throw;
        }
    }

    public BaseModelReference BaseModel { get; }
    public Backbones.Bert.BertConfig Config { get; }
    public ITextBackbone Backbone { get; }
    public AdaptedBackbone Adapted { get; }
    public TextEncoder Encoder { get; }
    /// <summary>Whether the base model's vocabulary is uncased (text is lower-cased before WordPiece).</summary>
    public bool LowerCase { get; }
    public byte[] Vocab { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }

    /// <summary>The number format of the frozen base products (<see cref="ConfigureCompute"/>); saved with the model.</summary>
    public Training.PeftPrecision Precision { get; private set; }

    /// <summary>The attention dropout set on the backbone, or null for the base model's own value; saved with the model.</summary>
    public double? AttentionDropout { get; private set; }

    /// <summary>
    /// Sets the precision of the frozen base products and the attention dropout (null: the base model's). Call once the
    /// method is applied and the weights are loaded (the reduced-precision copies are made from the frozen weights).
    /// </summary>
    public void ConfigureCompute(Training.PeftPrecision precision, double? attentionDropout)
    {
        if (attentionDropout is { } dropout) Backbone.AttentionDropout = dropout;
        AttentionDropout = attentionDropout;
        Backbone.SetComputeType(precision == Training.PeftPrecision.Bf16 ? ScalarType.BFloat16 : null);
        Precision = precision;
    }

    /// <summary>The task network: the backbone registered under its name, and the head.</summary>
    public nn.Module Network => network ?? throw new InvalidOperationException("The task network is not set.");

    /// <summary>The saved name of the head module (its parameters save as <c>name.parameter</c>); unused without a head.</summary>
    protected abstract string HeadName { get; }

    /// <summary>The task's saved name and settings, for the metadata.</summary>
    protected abstract (string Task, JsonObject Settings) TaskMetadata();

    /// <summary>
    /// Sets the network (which registers the backbone) and its head (null for a task without one), and moves it to the
    /// device; disposes the backbone on failure.
    /// </summary>
    protected void SetNetwork<TNetwork>(Func<TNetwork> create, Func<TNetwork, nn.Module?> headOf) where TNetwork : nn.Module
    {
        try
        {
            var created = create();
            network = created;
            head = headOf(created);
            network.to(Device);
        }
        catch
        {
            network?.Dispose();
            Backbone.Module.Dispose();
            throw;
        }
    }

    private IEnumerable<NamedParameter> HeadParameters() =>
        head?.named_parameters().Select(p => new NamedParameter(HeadName + "." + p.name, p.parameter)) ?? Enumerable.Empty<NamedParameter>();

    /// <summary>The method's parameters and the head's, under their saved keys.</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters() => Adapted.Parameters().Concat(HeadParameters()).ToList();

    /// <summary>What a saved model's adapter entry fills: the trainable parameters and the method's frozen saved tensors.</summary>
    public IReadOnlyList<NamedParameter> LoadedParameters() => TrainableParameters().Concat(Adapted.FrozenState()).ToList();

    /// <summary>The tensors saved for the model (the caller disposes them): the method's saved state and the head.</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Adapted.SavedState().Concat(HeadParameters().Select(p => new NamedTensor(p.Key, p.Parameter.detach()))).ToList();

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.Parameter.numel());

    public long TotalParameterCount => Network.parameters().Sum(p => p.numel());

    /// <summary>Optimizer groups: the method's, then the head (if the task has one) at the trainer's rate.</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups()
    {
        var groups = Adapted.Method.ParameterGroups(Adapted.Method.Parameters(Adapted.Backbone)).ToList();
        if (head is not null) groups.Add(new ParameterGroup(head.parameters().ToList(), 1.0));
        return groups;
    }

    /// <summary>Tensors of a padded batch on the model's device: input ids, attention mask, token types.</summary>
    public (Tensor Ids, Tensor Mask, Tensor Types) ToTensors(EncodedBatch batch)
    {
        var shape = new long[] { batch.Rows, batch.Length };
        return (tensor(batch.InputIds, shape).to(Device), tensor(batch.AttentionMask, shape).to(Device), tensor(batch.TokenTypeIds, shape).to(Device));
    }

    /// <summary>
    /// The indices of <paramref name="count"/> rows sorted by <paramref name="length"/> (stable) and cut into batches of
    /// <paramref name="batchSize"/>, so short rows are not padded to long ones.
    /// </summary>
    protected static IEnumerable<int[]> LengthOrderedBatches(int count, Func<int, int> length, int batchSize)
    {
        var order = Enumerable.Range(0, count).OrderBy(length).ToArray();
        for (int start = 0; start < order.Length; start += batchSize)
            yield return order.AsSpan(start, Math.Min(batchSize, order.Length - start)).ToArray();
    }

    /// <summary>The model's entries for saving.</summary>
    public ModelEntries ToEntries()
    {
        var state = SavedState();
        try
        {
            var (task, settings) = TaskMetadata();
            return new ModelEntries
            {
                MetadataBytes = new ModelMetadata
                {
                    Task = task,
                    BaseModel = BaseModel,
                    BaseModelEmbedded = BaseModelFile is not null,
                    Config = Config,
                    Method = MethodRegistry.ToJson(Adapted.Method.SavedOptions),
                    AdapterName = Adapted.Method.AdapterName,
                    AdaptedModules = Adapted.AdaptedModules.ToList(),
                    TaskSettings = settings,
                    Precision = Precision == Training.PeftPrecision.Fp32 ? null : Training.PeftPrecisionNames.ToName(Precision),
                    AttentionDropout = AttentionDropout,
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

    /// <summary>
    /// Whether <see cref="PrepareForScoring"/> keeps a copy of the base weights so the adapter can be unmerged and changed
    /// after training (tests that move a trained adapter do); off by default, as nothing else unmerges a scoring model.
    /// </summary>
    public bool KeepBaseForUnmerge { get; set; }

    /// <summary>The shared base weights this model uses, or null when it owns its base weights.</summary>
    public SharedBaseWeights? SharedBase { get; private set; }

    /// <summary>Shares the frozen base weights with other loaded models of the same base (see <see cref="SharedBaseWeights"/>).</summary>
    public void ShareBaseWeights(string sha256) => SharedBase = SharedBaseWeights.Share(Adapted, sha256, Device);

    /// <summary>
    /// Fixes the adapter for scoring: merged into the base weights (for good: nothing unmerges a scoring model, so no
    /// copy of the base is kept), unless those are shared with other models.
    /// </summary>
    public void PrepareForScoring()
    {
        Network.eval();
        if (SharedBase is null) Adapted.Merge(keepBase: KeepBaseForUnmerge);
        else Adapted.Backbone.PrepareInference();
    }

    public void Dispose() => network?.Dispose();
}
