using Microsoft.ML.Peft.Adapters;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Models;

// BERT-family encoder as TorchSharp modules. Field names are Hugging Face's parameter names, so the state dict reads
// embeddings.word_embeddings.weight, encoder.layer.0.attention.self.query.weight, and so on.

/// <summary>Token, position and token-type embeddings, summed and normalised.</summary>
internal sealed class BertEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // Hugging Face parameter names
    private readonly Embedding word_embeddings;
    private readonly Embedding position_embeddings;
    private readonly Embedding token_type_embeddings;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;
#pragma warning restore IDE1006

    public BertEmbeddings(BertConfig config) : base("embeddings")
    {
        word_embeddings = nn.Embedding(config.VocabSize, config.HiddenSize);
        position_embeddings = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = nn.Embedding(config.TypeVocabSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(new long[] { config.HiddenSize }, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var length = inputIds.shape[1];
        var positions = arange(length, dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        var sum = word_embeddings.forward(inputIds).add_(position_embeddings.forward(positions)).add_(token_type_embeddings.forward(tokenTypeIds));
        return dropout.forward(LayerNorm.forward(sum)).MoveToOuterDisposeScope();
    }
}

/// <summary>Multi-head self-attention projections (query, key, value) with scaled dot-product attention.</summary>
internal sealed class BertSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly PeftLinear query;
    private readonly PeftLinear key;
    private readonly PeftLinear value;
#pragma warning restore IDE1006
    private readonly int heads;
    private readonly int headSize;
    private readonly double attentionDropout;
    private Tensor? fusedWeight;
    private Tensor? fusedBias;

    public BertSelfAttention(BertConfig config) : base("self")
    {
        heads = config.NumAttentionHeads;
        headSize = config.HiddenSize / config.NumAttentionHeads;
        attentionDropout = config.AttentionProbsDropoutProb;
        query = new PeftLinear(config.HiddenSize, config.HiddenSize);
        key = new PeftLinear(config.HiddenSize, config.HiddenSize);
        value = new PeftLinear(config.HiddenSize, config.HiddenSize);
        RegisterComponents();
    }

    /// <summary>
    /// For inference with fixed weights: one [3·hidden, hidden] projection instead of three, a larger matrix product
    /// that uses the cores better. Must be redone (or cleared) whenever the weights change.
    /// </summary>
    public void FuseProjections()
    {
        ClearFusedProjections();
        using (no_grad())
        {
            fusedWeight = cat(new[] { query.Weight, key.Weight, value.Weight }, 0).detach().DetachFromDisposeScope();
            fusedBias = cat(new[] { query.Bias!, key.Bias!, value.Bias! }, 0).detach().DetachFromDisposeScope();
        }
    }

    public void ClearFusedProjections()
    {
        fusedWeight?.Dispose();
        fusedBias?.Dispose();
        fusedWeight = fusedBias = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ClearFusedProjections();
        base.Dispose(disposing);
    }

    /// <param name="hidden">[batch, length, hidden]</param>
    /// <param name="additiveMask">[batch, 1, 1, length]: 0 where attended, a large negative number at padding.</param>
    public override Tensor forward(Tensor hidden, Tensor additiveMask)
    {
        using var scope = NewDisposeScope();
        long batch = hidden.shape[0], length = hidden.shape[1];
        if (!training && fusedWeight is not null)
        {
            var qkv = nn.functional.linear(hidden, fusedWeight, fusedBias).view(batch, length, 3, heads, headSize).permute(2, 0, 3, 1, 4);
            var fused = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], additiveMask, 0.0);
            return fused.transpose(1, 2).reshape(batch, length, heads * headSize).MoveToOuterDisposeScope();
        }
        Tensor Split(PeftLinear projection) =>
            projection.forward(hidden).view(batch, length, heads, headSize).transpose(1, 2);
        var context = nn.functional.scaled_dot_product_attention(
            Split(query), Split(key), Split(value), additiveMask, training ? attentionDropout : 0.0);
        return context.transpose(1, 2).reshape(batch, length, heads * headSize).MoveToOuterDisposeScope();
    }
}

/// <summary>A dense projection, dropout, residual connection and layer normalisation.</summary>
internal sealed class BertResidualOutput : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly PeftLinear dense;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;
#pragma warning restore IDE1006

    public BertResidualOutput(long inFeatures, BertConfig config) : base("output")
    {
        dense = new PeftLinear(inFeatures, config.HiddenSize);
        LayerNorm = nn.LayerNorm(new long[] { config.HiddenSize }, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return LayerNorm.forward(dropout.forward(dense.forward(hidden)).add_(residual)).MoveToOuterDisposeScope();
    }
}

/// <summary>Self-attention followed by its output projection.</summary>
internal sealed class BertAttention : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly BertSelfAttention self;
    private readonly BertResidualOutput output;
#pragma warning restore IDE1006

    public BertAttention(BertConfig config) : base("attention")
    {
        self = new BertSelfAttention(config);
        output = new BertResidualOutput(config.HiddenSize, config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor additiveMask)
    {
        using var context = self.forward(hidden, additiveMask);
        return output.forward(context, hidden);
    }
}

/// <summary>The feed-forward expansion with its activation.</summary>
internal sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly PeftLinear dense;
#pragma warning restore IDE1006
    private readonly string activation;

    public BertIntermediate(BertConfig config) : base("intermediate")
    {
        dense = new PeftLinear(config.HiddenSize, config.IntermediateSize);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var projected = dense.forward(hidden);
        return activation switch
        {
            "relu" => nn.functional.relu(projected),
            "gelu_new" => nn.functional.gelu(projected, approximate: TorchSharp.Modules.GELU.Approximate.tanh),
            _ => nn.functional.gelu(projected),
        };
    }
}

/// <summary>One transformer layer.</summary>
internal sealed class BertLayer : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly BertAttention attention;
    private readonly BertIntermediate intermediate;
    private readonly BertResidualOutput output;
#pragma warning restore IDE1006

    public BertLayer(BertConfig config) : base("layer")
    {
        attention = new BertAttention(config);
        intermediate = new BertIntermediate(config);
        output = new BertResidualOutput(config.IntermediateSize, config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor additiveMask)
    {
        using var attended = attention.forward(hidden, additiveMask);
        using var expanded = intermediate.forward(attended);
        return output.forward(expanded, attended);
    }
}

/// <summary>The stack of transformer layers, optionally with activation checkpointing.</summary>
internal sealed class BertEncoder : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly ModuleList<BertLayer> layer;
#pragma warning restore IDE1006

    public BertEncoder(BertConfig config) : base("encoder")
    {
        layer = new ModuleList<BertLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new BertLayer(config)).ToArray());
        RegisterComponents();
    }

    /// <summary>Recompute each layer's activations in the backward pass instead of keeping them (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    public override Tensor forward(Tensor hidden, Tensor additiveMask)
    {
        var current = hidden;
        bool checkpoint = GradientCheckpointing && training && is_grad_enabled();
        foreach (var l in layer)
        {
            var next = checkpoint ? LayerCheckpoint.Run(l, current, additiveMask) : l.forward(current, additiveMask);
            if (!ReferenceEquals(current, hidden)) current.Dispose();
            current = next;
        }
        return ReferenceEquals(current, hidden) ? hidden.alias() : current;
    }
}

/// <summary>
/// BERT encoder: <c>forward(input_ids, attention_mask, token_type_ids)</c> returns <c>last_hidden_state</c>
/// [batch, length, hidden], as the ONNX exports of sentence-transformers models do.
/// </summary>
internal sealed class BertModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly BertEmbeddings embeddings;
    private readonly BertEncoder encoder;
#pragma warning restore IDE1006

    public BertModel(BertConfig config) : base("bert")
    {
        Config = config;
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        RegisterComponents();
    }

    public BertConfig Config { get; }

    /// <summary>Activation checkpointing of every layer while training.</summary>
    public bool GradientCheckpointing
    {
        get => encoder.GradientCheckpointing;
        set => encoder.GradientCheckpointing = value;
    }

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var embedded = embeddings.forward(inputIds, tokenTypeIds);
        // With frozen embeddings nothing before the first layer needs a gradient, and a checkpointed layer whose input
        // needs none would not be differentiated at all: ask for one, as Hugging Face's enable_input_require_grads does.
        if (encoder.GradientCheckpointing && training && is_grad_enabled() && !embedded.requires_grad) embedded.requires_grad_(true);
        // [batch, 1, 1, length] additive mask in the hidden states' dtype.
        var additive = attentionMask.to(embedded.dtype).neg().add_(1).mul_(-1e9f).unsqueeze(1).unsqueeze(1);
        return encoder.forward(embedded, additive).MoveToOuterDisposeScope();
    }

    /// <summary>Fuses each layer's query/key/value projections for inference (weights must not change afterwards).</summary>
    public void FuseProjections()
    {
        foreach (var attention in modules().OfType<BertSelfAttention>()) attention.FuseProjections();
    }

    /// <summary>Drops the fused projections (training or changed weights).</summary>
    public void ClearFusedProjections()
    {
        foreach (var attention in modules().OfType<BertSelfAttention>()) attention.ClearFusedProjections();
    }

    /// <summary>Every Linear layer of the encoder with its full module name.</summary>
    public IEnumerable<(string Name, PeftLinear Layer)> Linears() =>
        named_modules().Where(m => m.module is PeftLinear).Select(m => (m.name, (PeftLinear)m.module));
}
