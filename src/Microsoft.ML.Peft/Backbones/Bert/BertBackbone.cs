using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>A BERT-family text encoder as seen by methods and tasks: <see cref="BertModel"/> plus its imported weights' names.</summary>
internal sealed class BertBackbone : ITextBackbone
{
    public BertBackbone(LoadedBaseModel baseModel)
    {
        BertWeights.CheckSize(baseModel.Config, baseModel.Weights, baseModel.Source.ToString());
        Model = new BertModel(baseModel.Config);
        BertWeights.Load(Model, baseModel.Weights, baseModel.Source.ToString());
        SourceNames = baseModel.Weights.Where(w => w.Value.SourceName is not null)
            .ToDictionary(w => w.Key, w => (w.Value.SourceName!, w.Value.SourceTransposed));
    }

    /// <summary>Wraps a model built in memory (no imported file, so no source names).</summary>
    public BertBackbone(BertModel model)
    {
        Model = model;
        SourceNames = new Dictionary<string, (string, bool)>();
    }

    public BertModel Model { get; }

    public nn.Module Module => Model;

    public string Name => "bert";

    public long FeatureSize => Model.Config.HiddenSize;

    public int LayerCount => Model.Config.NumHiddenLayers;

    public int AttentionHeadCount => Model.Config.NumAttentionHeads;

    public int MaxPositions => Model.Config.MaxPositionEmbeddings;

    public int MaxInputLength => Model.MaxInputLength;

    public long VocabularySize => Model.Config.VocabSize;

    public IReadOnlyDictionary<string, (string Name, bool Transposed)> SourceNames { get; }

    public bool GradientCheckpointing
    {
        get => Model.GradientCheckpointing;
        set => Model.GradientCheckpointing = value;
    }

    public IEnumerable<(string Name, TunerLinear Module)> Linears() => Model.Linears();

    public Tensor EmbedWords(Tensor ids) => Model.EmbedWords(ids);

    public void InsertAdapter(int layer, AdapterSite site, string name, nn.Module<Tensor, Tensor> module)
    {
        if (layer < 0 || layer >= LayerCount) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"The encoder has layers 0 to {LayerCount - 1}.");
        Model.Layers[layer].InsertAdapter(site, name, module);
    }

    public void SetPrompt(string name, int count, nn.Module<Tensor, Tensor> module) => Model.SetPrompt(name, count, module);

    public void SetPrefix(string name, int count, nn.Module<Tensor, Tensor> module) => Model.SetPrefix(name, count, module);

    public Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) => Model.forward(inputIds, attentionMask, tokenTypeIds);

    public ScalarType? ComputeType { get; private set; }

    public void SetComputeType(ScalarType? type)
    {
        ComputeType = type;
        Model.SetComputeType(type);
    }

    public double AttentionDropout
    {
        get => Model.AttentionDropout;
        set => Model.AttentionDropout = value;
    }

    public void PrepareInference()
    {
        if (ComputeType is not null) Model.RefreshComputeWeights();
        Model.FuseProjections();
    }

    public void EndInference() => Model.ClearFusedProjections();
}
