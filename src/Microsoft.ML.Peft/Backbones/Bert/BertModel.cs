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
        return FromWordVectors(word_embeddings.forward(inputIds), tokenTypeIds, 0).MoveToOuterDisposeScope();
    }

    /// <summary>The word-embedding vectors of token ids ([..., hidden]); Hugging Face's <c>inputs_embeds</c>.</summary>
    public Tensor Words(Tensor inputIds) => word_embeddings.forward(inputIds);

    /// <summary>
    /// Hugging Face's embedding layer on <c>inputs_embeds</c> [batch, length, hidden]: adds the position embeddings of
    /// positions <paramref name="firstPosition"/> onwards and the token-type embeddings, then normalises and applies dropout.
    /// </summary>
    public Tensor FromWordVectors(Tensor words, Tensor tokenTypeIds, long firstPosition)
    {
        using var scope = NewDisposeScope();
        var length = words.shape[1];
        var positions = arange(firstPosition, firstPosition + length, dtype: ScalarType.Int64, device: words.device).unsqueeze(0);
        var sum = words.add(position_embeddings.forward(positions)).add_(token_type_embeddings.forward(tokenTypeIds));
        return dropout.forward(LayerNorm.forward(sum)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// BERT encoder: <c>forward(input_ids, attention_mask, token_type_ids)</c> returns <c>last_hidden_state</c>
/// [batch, length, hidden], as the ONNX exports of sentence-transformers models do. Insertion points for methods,
/// placed as Hugging Face PEFT places them on a BERT model: prompt vectors prepended to the word embeddings
/// (<see cref="SetPrompt"/>), key/value prefixes in every self-attention (<see cref="SetPrefix"/>), and bottleneck
/// adapters in each layer's attention output and feed-forward output (<see cref="BertLayer.InsertAdapter"/>).
/// </summary>
internal sealed class BertModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly BertEmbeddings embeddings;
    private readonly BertEncoder encoder;
#pragma warning restore IDE1006
    private nn.Module<Tensor, Tensor>? prompt;
    private nn.Module<Tensor, Tensor>? prefix;

    public BertModel(BertConfig config) : base("bert")
    {
        Config = config;
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        RegisterComponents();
    }

    public BertConfig Config { get; }

    public IReadOnlyList<BertLayer> Layers => encoder.Layers;

    /// <summary>Number of virtual tokens of the prompt or prefix (0 without one): they take the first positions.</summary>
    public int VirtualTokens { get; private set; }

    /// <summary>The prompt-tuning module (virtual-token vectors), or null.</summary>
    internal nn.Module<Tensor, Tensor>? PromptModule => prompt;

    /// <summary>The prefix-tuning module (key and value prefix table), or null.</summary>
    internal nn.Module<Tensor, Tensor>? PrefixModule => prefix;

    /// <summary>The longest input in tokens: the position table less the virtual tokens.</summary>
    public int MaxInputLength => Config.MaxPositionEmbeddings - VirtualTokens;

    /// <summary>Activation checkpointing of every layer while training.</summary>
    public bool GradientCheckpointing
    {
        get => encoder.GradientCheckpointing;
        set => encoder.GradientCheckpointing = value;
    }

    /// <summary>The word-embedding vectors of token ids ([..., hidden]).</summary>
    public Tensor EmbedWords(Tensor inputIds) => embeddings.Words(inputIds);

    /// <summary>
    /// Sets the module that gives <paramref name="count"/> virtual-token vectors [count, hidden] in word-embedding space
    /// (its input, the batch's word vectors [batch, length, hidden], only gives device and dtype). As PEFT does on BERT
    /// (prompt tuning), they are prepended to the word embeddings before the embedding layer: virtual tokens take
    /// positions 0..count-1 with token type 0, real tokens positions count onwards; the attention mask is extended with
    /// ones. The output keeps only the real tokens.
    /// </summary>
    public void SetPrompt(string name, int count, nn.Module<Tensor, Tensor> module)
    {
        CheckVirtualTokens(count);
        register_module(name, module);
        prompt = module;
        VirtualTokens = count;
    }

    /// <summary>
    /// Sets the module that gives the prefix table [count, layers·2·hidden] of prefix tuning (its input, the batch's word
    /// vectors, only gives device and dtype). As PEFT's <c>get_prompt</c> does, the table is viewed as [count, layers·2,
    /// heads, head size]; layer i takes row block 2i as its keys and 2i+1 as its values, prepended to the projected keys
    /// and values of every self-attention, attended by every token. Real tokens take positions count onwards, as Hugging
    /// Face's BERT offsets positions by the length of <c>past_key_values</c>.
    /// </summary>
    public void SetPrefix(string name, int count, nn.Module<Tensor, Tensor> module)
    {
        CheckVirtualTokens(count);
        register_module(name, module);
        prefix = module;
        VirtualTokens = count;
    }

    private void CheckVirtualTokens(int count)
    {
        if (prompt is not null || prefix is not null) throw new InvalidOperationException("The encoder already has a prompt or prefix module.");
        if (count < 1 || count > Config.MaxPositionEmbeddings - 2)
            throw new ArgumentOutOfRangeException(nameof(count), count,
                $"The number of virtual tokens must be from 1 to {Config.MaxPositionEmbeddings - 2} (the base model's {Config.MaxPositionEmbeddings} positions less two for [CLS] and [SEP]).");
    }

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        long batch = inputIds.shape[0], length = inputIds.shape[1], n = VirtualTokens;
        if (n > 0 && n + length > Config.MaxPositionEmbeddings)
            throw new ArgumentException(
                $"{n} virtual tokens and {length} input tokens exceed the base model's {Config.MaxPositionEmbeddings} positions: " +
                $"lower MaxSequenceLength to at most {Config.MaxPositionEmbeddings - n} or num_virtual_tokens.", nameof(inputIds));
        Tensor embedded;
        List<Tensor>? prefixes = null;
        if (prompt is not null)
        {
            var words = embeddings.Words(inputIds);
            var vectors = prompt.forward(words);
            CheckShape(vectors, n, Config.HiddenSize, "prompt");
            words = cat(new[] { vectors.to(words.dtype).unsqueeze(0).expand(batch, -1, -1), words }, 1);
            var types = cat(new[] { zeros(batch, n, dtype: tokenTypeIds.dtype, device: tokenTypeIds.device), tokenTypeIds }, 1);
            embedded = embeddings.FromWordVectors(words, types, 0);
        }
        else if (prefix is not null)
        {
            var words = embeddings.Words(inputIds);
            int layers = Config.NumHiddenLayers, heads = Config.NumAttentionHeads, headSize = Config.HiddenSize / heads;
            var table = prefix.forward(words);
            CheckShape(table, n, (long)layers * 2 * Config.HiddenSize, "prefix");
            // [n, layers·2·hidden] -> [layers·2, batch, heads, n, head size]; layer i: [2i, 2i+1].
            var perLayer = table.to(words.dtype).view(n, layers * 2, heads, headSize).permute(1, 2, 0, 3).unsqueeze(1).expand(-1, batch, -1, -1, -1);
            prefixes = Enumerable.Range(0, layers).Select(i => perLayer[TensorIndex.Slice(2 * i, 2 * i + 2)]).ToList();
            embedded = embeddings.FromWordVectors(words, tokenTypeIds, n);
        }
        else
        {
            embedded = embeddings.forward(inputIds, tokenTypeIds);
        }
        if (n > 0) attentionMask = cat(new[] { ones(batch, n, dtype: attentionMask.dtype, device: attentionMask.device), attentionMask }, 1);
        // With frozen embeddings nothing before the first layer needs a gradient, and a checkpointed layer whose input
        // needs none would not be differentiated at all: ask for one, as Hugging Face's enable_input_require_grads does.
        if (encoder.GradientCheckpointing && training && is_grad_enabled() && !embedded.requires_grad) embedded.requires_grad_(true);
        // [batch, 1, 1, keys] additive mask in the hidden states' dtype.
        var additive = attentionMask.to(embedded.dtype).neg().add_(1).mul_(-1e9f).unsqueeze(1).unsqueeze(1);
        var hidden = encoder.Forward(embedded, additive, prefixes);
        if (prompt is not null) hidden = hidden[.., (int)n.., ..];
        return hidden.MoveToOuterDisposeScope();
    }

    private static void CheckShape(Tensor output, long rows, long width, string what)
    {
        if (output.dim() != 2 || output.shape[0] != rows || output.shape[1] != width)
            throw new InvalidOperationException($"The {what} module returned [{string.Join(", ", output.shape)}], expected [{rows}, {width}].");
    }

    /// <summary>
    /// Sets the type of the frozen base products (bfloat16; attention stays fp32), or null for fp32, and makes every
    /// Linear layer's weight copy in it. Call again (or <see cref="RefreshComputeWeights"/>) after base weights change.
    /// </summary>
    public void SetComputeType(ScalarType? type)
    {
        foreach (var attention in modules().OfType<BertSelfAttention>()) attention.ComputeType = type;
        foreach (var (_, linear) in Linears()) linear.SetComputeType(type);
    }

    /// <summary>Remakes the reduced-precision weight copies from the current fp32 weights (and which are trained now).</summary>
    public void RefreshComputeWeights()
    {
        foreach (var (_, linear) in Linears()) linear.RefreshComputeWeight();
    }

    /// <summary>Dropout on the attention probabilities of every layer while training.</summary>
    public double AttentionDropout
    {
        get => modules().OfType<BertSelfAttention>().First().AttentionDropout;
        set
        {
            foreach (var attention in modules().OfType<BertSelfAttention>()) attention.AttentionDropout = value;
        }
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
