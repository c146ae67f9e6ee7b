using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>Token, position and token-type embeddings, summed and normalised.</summary>
internal sealed class BertEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // Hugging Face parameter names
    private readonly EmbeddingTable word_embeddings;
    private readonly EmbeddingTable position_embeddings;
    private readonly EmbeddingTable token_type_embeddings;
    private readonly LayerNorm LayerNorm;
    private readonly RunDropout dropout;
#pragma warning restore IDE1006

    public BertEmbeddings(BertConfig config) : base("embeddings")
    {
        word_embeddings = new EmbeddingTable(config.VocabSize, config.HiddenSize);
        position_embeddings = new EmbeddingTable(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = new EmbeddingTable(config.TypeVocabSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(new long[] { config.HiddenSize }, config.LayerNormEps);
        dropout = new RunDropout(config.HiddenDropoutProb);
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

/// <summary>
/// BERT encoder: <c>forward(input_ids, attention_mask, token_type_ids)</c> returns <c>last_hidden_state</c>
/// [batch, length, hidden], as the ONNX exports of sentence-transformers models do. Insertion points for methods:
/// a prompt module whose vectors are prepended to the embedded tokens (<see cref="SetPrompt"/>), and modules after any
/// layer's output (<see cref="BertLayer.InsertAfterOutput"/>).
/// </summary>
internal sealed class BertModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly BertEmbeddings embeddings;
    private readonly BertEncoder encoder;
#pragma warning restore IDE1006
    private nn.Module<Tensor, Tensor>? prompt;

    public BertModel(BertConfig config) : base("bert")
    {
        Config = config;
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        RegisterComponents();
    }

    public BertConfig Config { get; }

    public IReadOnlyList<BertLayer> Layers => encoder.Layers;

    /// <summary>Activation checkpointing of every layer while training.</summary>
    public bool GradientCheckpointing
    {
        get => encoder.GradientCheckpointing;
        set => encoder.GradientCheckpointing = value;
    }

    /// <summary>
    /// Sets the module that maps the embedded tokens [batch, length, hidden] to virtual-token vectors [batch, n, hidden]
    /// prepended to them (prompt tuning). The virtual tokens are attended to; the output keeps only the real tokens.
    /// </summary>
    public void SetPrompt(string name, nn.Module<Tensor, Tensor> module)
    {
        if (prompt is not null) throw new InvalidOperationException("The encoder already has a prompt module.");
        register_module(name, module);
        prompt = module;
    }

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var embedded = embeddings.forward(inputIds, tokenTypeIds);
        long virtualTokens = 0;
        if (prompt is not null)
        {
            var prefix = prompt.forward(embedded);
            virtualTokens = prefix.shape[1];
            embedded = cat(new[] { prefix, embedded }, 1);
            attentionMask = cat(new[] { ones(attentionMask.shape[0], virtualTokens, dtype: attentionMask.dtype, device: attentionMask.device), attentionMask }, 1);
        }
        // With frozen embeddings nothing before the first layer needs a gradient, and a checkpointed layer whose input
        // needs none would not be differentiated at all: ask for one, as Hugging Face's enable_input_require_grads does.
        if (encoder.GradientCheckpointing && training && is_grad_enabled() && !embedded.requires_grad) embedded.requires_grad_(true);
        // [batch, 1, 1, length] additive mask in the hidden states' dtype.
        var additive = attentionMask.to(embedded.dtype).neg().add_(1).mul_(-1e9f).unsqueeze(1).unsqueeze(1);
        var hidden = encoder.forward(embedded, additive);
        if (virtualTokens > 0) hidden = hidden[.., (int)virtualTokens.., ..];
        return hidden.MoveToOuterDisposeScope();
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
    public IEnumerable<(string Name, TunerLinear Layer)> Linears() =>
        named_modules().Where(m => m.module is TunerLinear).Select(m => (m.name, (TunerLinear)m.module));
}
