using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

// The parts of a BERT layer. Field names are Hugging Face's parameter names (encoder.layer.0.attention.self.query.weight).

/// <summary>
/// Multi-head self-attention projections (query, key, value) with scaled dot-product attention. Prefix tuning's
/// per-layer key and value prefixes are concatenated before the projected keys and values, in every path (plain,
/// dropout on the attention probabilities while training, fused projections at inference).
/// </summary>
/// <remarks>
/// Attention runs through libtorch's <c>scaled_dot_product_attention</c> (its fused, memory-efficient CPU kernel keeps
/// neither the scores nor the probabilities for the backward pass) except while training with attention dropout: that
/// path computes <c>softmax(QK^T/sqrt(d) + mask)</c> explicitly so the dropout masks come from the run's generator, in
/// <see cref="DropoutAttention"/>, which keeps only the inputs and a one-byte keep mask and computes the probabilities
/// again in the backward pass.
/// With a <see cref="ComputeType"/> (bfloat16) the projections run in that type (the fused inference projection too),
/// but attention itself stays fp32: libtorch's bfloat16 attention kernels measured slower than fp32 on CPUs (the
/// backward pass about four times slower), and the softmax keeps full precision.
/// </remarks>
internal sealed class BertSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly TunerLinear query;
    private readonly TunerLinear key;
    private readonly TunerLinear value;
    private readonly RunDropout dropout;
#pragma warning restore IDE1006
    private readonly int heads;
    private readonly int headSize;
    private Tensor? fusedWeight;
    private Tensor? fusedBias;

    public BertSelfAttention(BertConfig config) : base("self")
    {
        heads = config.NumAttentionHeads;
        headSize = config.HiddenSize / config.NumAttentionHeads;
        query = new TunerLinear(config.HiddenSize, config.HiddenSize);
        key = new TunerLinear(config.HiddenSize, config.HiddenSize);
        value = new TunerLinear(config.HiddenSize, config.HiddenSize);
        dropout = new RunDropout(config.AttentionProbsDropoutProb);
        RegisterComponents();
    }

    /// <summary>Dropout on the attention probabilities while training; 0 lets training use the fused kernel.</summary>
    public double AttentionDropout
    {
        get => dropout.Probability;
        set => dropout.Probability = value;
    }

    /// <summary>The type the fused inference projection runs in (bfloat16), or null for fp32; the separate projections follow their own layers'.</summary>
    public ScalarType? ComputeType { get; set; }

    /// <summary>
    /// For inference with fixed weights: one [3·hidden, hidden] projection instead of three, a larger matrix product
    /// that uses the cores better. Must be redone (or cleared) whenever the weights change.
    /// </summary>
    public void FuseProjections()
    {
        ClearFusedProjections();
        // An unmerged adapter on a projection changes its output: the fused product of the base weights would skip it.
        if (new[] { query, key, value }.Any(p => p.ActiveAdapter is not null && !p.Merged)) return;
        using (no_grad())
        {
            using var weight = cat(new[] { query.Weight, key.Weight, value.Weight }, 0);
            using var bias = cat(new[] { query.Bias!, key.Bias!, value.Bias! }, 0);
            var type = ComputeType ?? weight.dtype;
            fusedWeight = weight.detach().to(type).DetachFromDisposeScope();
            fusedBias = bias.detach().to(type).DetachFromDisposeScope();
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
    public override Tensor forward(Tensor hidden, Tensor additiveMask) => Forward(hidden, additiveMask, null);

    /// <param name="hidden">[batch, length, hidden]</param>
    /// <param name="additiveMask">[batch, 1, 1, keys]: 0 where attended, a large negative number at padding; keys = n + length with a prefix.</param>
    /// <param name="prefix">Null, or [2, batch, heads, n, head size]: the key (0) and value (1) prefixes of prefix tuning.</param>
    public Tensor Forward(Tensor hidden, Tensor additiveMask, Tensor? prefix)
    {
        using var scope = NewDisposeScope();
        long batch = hidden.shape[0], length = hidden.shape[1];
        Tensor q, k, v;
        bool fused = !training && fusedWeight is not null;
        if (fused)
        {
            var qkv = nn.functional.linear(hidden.to(fusedWeight!.dtype), fusedWeight!, fusedBias).to(hidden.dtype)
                .view(batch, length, 3, heads, headSize).permute(2, 0, 3, 1, 4);
            (q, k, v) = (qkv[0], qkv[1], qkv[2]);
        }
        else
        {
            Tensor Split(TunerLinear projection) => projection.forward(hidden).view(batch, length, heads, headSize).transpose(1, 2);
            (q, k, v) = (Split(query), Split(key), Split(value));
        }
        if (prefix is not null)
        {
            k = cat(new[] { prefix[0].to(k.dtype), k }, 2);
            v = cat(new[] { prefix[1].to(v.dtype), v }, 2);
        }
        Tensor context;
        // Training with attention dropout takes the explicit path; everything else the fused kernel.
        if (!fused && training && dropout.Probability > 0)
        {
            // Dropout on the attention probabilities, with masks from the run's generator; the backward pass computes
            // the probabilities again rather than keeping them.
            var keep = dropout.KeepMask(new[] { q.shape[0], q.shape[1], q.shape[2], k.shape[2] }, q.device);
            context = DropoutAttention.Run(q, k, v, additiveMask, keep, dropout.Probability);
        }
        else
        {
            context = nn.functional.scaled_dot_product_attention(q, k, v, additiveMask, 0.0);
        }
        return context.transpose(1, 2).reshape(batch, length, heads * headSize).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A dense projection, dropout, residual connection and layer normalisation, with an insertion point for a bottleneck
/// adapter between the dropout and the residual addition (Houlsby et al. 2019, figure 2).
/// </summary>
internal sealed class BertResidualOutput : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly TunerLinear dense;
    private readonly LayerNorm LayerNorm;
    private readonly RunDropout dropout;
#pragma warning restore IDE1006
    private nn.Module<Tensor, Tensor>? adapter;

    public BertResidualOutput(long inFeatures, BertConfig config) : base("output")
    {
        dense = new TunerLinear(inFeatures, config.HiddenSize);
        LayerNorm = nn.LayerNorm(new long[] { config.HiddenSize }, config.LayerNormEps);
        dropout = new RunDropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <summary>
    /// Sets the module applied to the projected output (after the dense projection and its dropout, [batch, length,
    /// hidden] to the same) before the residual is added and the result normalised. One per site.
    /// </summary>
    public void InsertAdapter(string name, nn.Module<Tensor, Tensor> module)
    {
        if (adapter is not null) throw new InvalidOperationException("This sub-layer already has an adapter.");
        register_module(name, module);
        adapter = module;
    }

    public override Tensor forward(Tensor hidden, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var projected = dropout.forward(dense.forward(hidden));
        if (adapter is not null) projected = adapter.forward(projected);
        return LayerNorm.forward(projected.add_(residual)).MoveToOuterDisposeScope();
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

    /// <summary>The attention's output sub-layer (projection, adapter site, residual, LayerNorm).</summary>
    public BertResidualOutput Output => output;

    public override Tensor forward(Tensor hidden, Tensor additiveMask) => Forward(hidden, additiveMask, null);

    /// <inheritdoc cref="BertSelfAttention.Forward"/>
    public Tensor Forward(Tensor hidden, Tensor additiveMask, Tensor? prefix)
    {
        using var context = self.Forward(hidden, additiveMask, prefix);
        return output.forward(context, hidden);
    }
}

/// <summary>The feed-forward expansion with its activation.</summary>
internal sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly TunerLinear dense;
#pragma warning restore IDE1006
    private readonly string activation;

    public BertIntermediate(BertConfig config) : base("intermediate")
    {
        dense = new TunerLinear(config.HiddenSize, config.IntermediateSize);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        // A frozen projection in reduced precision stays in it through the activation (the next projection casts anyway).
        using var projected = dense.LowPrecisionForward(hidden) ?? dense.forward(hidden);
        return activation switch
        {
            "relu" => nn.functional.relu(projected),
            "gelu_new" => nn.functional.gelu(projected, approximate: TorchSharp.Modules.GELU.Approximate.tanh),
            _ => nn.functional.gelu(projected),
        };
    }
}

/// <summary>One transformer layer, with adapter sites in its attention output and feed-forward output.</summary>
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

    /// <summary>Sets the bottleneck adapter of one of the layer's two sites.</summary>
    public void InsertAdapter(AdapterSite site, string name, nn.Module<Tensor, Tensor> module)
    {
        switch (site)
        {
            case AdapterSite.AttentionOutput: attention.Output.InsertAdapter(name, module); break;
            case AdapterSite.FeedForwardOutput: output.InsertAdapter(name, module); break;
            default: throw new ArgumentOutOfRangeException(nameof(site), site, "Unknown adapter site.");
        }
    }

    public override Tensor forward(Tensor hidden, Tensor additiveMask) => Forward(hidden, additiveMask, null);

    /// <inheritdoc cref="BertSelfAttention.Forward"/>
    public Tensor Forward(Tensor hidden, Tensor additiveMask, Tensor? prefix)
    {
        using var attended = attention.Forward(hidden, additiveMask, prefix);
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

    public IReadOnlyList<BertLayer> Layers => layer.ToList();

    /// <summary>Recompute each layer's activations in the backward pass instead of keeping them (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    public override Tensor forward(Tensor hidden, Tensor additiveMask) => Forward(hidden, additiveMask, null);

    /// <param name="hidden">[batch, length, hidden]</param>
    /// <param name="additiveMask">[batch, 1, 1, keys]</param>
    /// <param name="prefixes">Null, or one [2, batch, heads, n, head size] key/value prefix per layer (prefix tuning).</param>
    public Tensor Forward(Tensor hidden, Tensor additiveMask, IReadOnlyList<Tensor>? prefixes)
    {
        var current = hidden;
        bool checkpoint = GradientCheckpointing && training && is_grad_enabled();
        int index = 0;
        foreach (var l in layer)
        {
            var prefix = prefixes?[index++];
            var next = checkpoint ? LayerCheckpoint.Run(l, current, additiveMask, prefix) : l.Forward(current, additiveMask, prefix);
            if (!ReferenceEquals(current, hidden)) current.Dispose();
            current = next;
        }
        return ReferenceEquals(current, hidden) ? hidden.alias() : current;
    }
}
