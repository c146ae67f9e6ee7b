using Microsoft.ML.Peft.Adapters;
using Microsoft.ML.Peft.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.TextClassification;

/// <summary>
/// Encoder plus classification head: the last hidden states are mean-pooled over the attention mask (as
/// sentence-transformers models are trained), then dropout and a Linear layer give one logit per class.
/// </summary>
internal sealed class SequenceClassifier : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly BertModel bert;
    private readonly Dropout dropout;
    private readonly Linear classifier;
#pragma warning restore IDE1006

    public SequenceClassifier(BertConfig config, int classes, float headDropout) : base("classifier_model")
    {
        bert = new BertModel(config);
        dropout = nn.Dropout(headDropout);
        classifier = nn.Linear(config.HiddenSize, classes);
        RegisterComponents();
    }

    public BertModel Bert => bert;

    public Linear Head => classifier;

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var hidden = bert.forward(inputIds, attentionMask, tokenTypeIds);
        var mask = attentionMask.unsqueeze(-1).to(hidden.dtype);
        var pooled = hidden.mul(mask).sum(1).div_(mask.sum(1).clamp_min(1e-9));
        return classifier.forward(dropout.forward(pooled)).MoveToOuterDisposeScope();
    }

    /// <summary>Every Linear of the encoder that carries a LoRA layer.</summary>
    public IEnumerable<(string Name, PeftLinear Layer)> Adapted() => bert.Linears().Where(l => l.Layer.Lora is not null);

    /// <summary>Freezes the encoder except its LoRA layers; the head stays trainable.</summary>
    public void FreezeBase()
    {
        foreach (var (name, parameter) in bert.named_parameters())
            parameter.requires_grad = name.Contains(".lora.", StringComparison.Ordinal);
        foreach (var parameter in classifier.parameters()) parameter.requires_grad = true;
    }

    /// <summary>Folds the adapters into the base weights and fuses the attention projections, for inference.</summary>
    public void MergeAdapters()
    {
        foreach (var (_, layer) in Adapted()) layer.Merge();
        bert.FuseProjections();
    }

    public void UnmergeAdapters()
    {
        bert.ClearFusedProjections();
        foreach (var (_, layer) in Adapted()) layer.Unmerge();
    }
}
