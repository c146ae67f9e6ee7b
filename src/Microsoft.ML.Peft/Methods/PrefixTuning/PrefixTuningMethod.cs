using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods.Bottleneck;
using Microsoft.ML.Peft.Methods.PromptTuning;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.PrefixTuning;

/// <summary>
/// PEFT's <c>PrefixEncoder</c>: the table [n, layers·2·hidden] of key and value prefixes, either a trained embedding
/// of that shape, or (with projection) a trained embedding [n, hidden] through Linear(hidden, encoder hidden), tanh and
/// Linear(encoder hidden, layers·2·hidden), named <c>embedding</c> and <c>transform.0</c>, <c>transform.2</c> as in PEFT.
/// </summary>
internal sealed class PrefixEncoder : nn.Module<Tensor, Tensor>
{
    private readonly Parameter embedding;
    private readonly ModuleList<nn.Module<Tensor, Tensor>>? transform;

    public PrefixEncoder(long count, long hidden, long encoderHidden, long width, bool projection, Generator? generator) : base("prompt_encoder")
    {
        // PyTorch's defaults, as PEFT leaves them: nn.Embedding N(0, 1), nn.Linear U(-1/sqrt(in), 1/sqrt(in)).
        embedding = new Parameter(zeros(count, projection ? hidden : width));
        using (no_grad()) embedding.normal_(0, 1, generator);
        if (projection)
        {
            transform = new ModuleList<nn.Module<Tensor, Tensor>>(
                new DenseLayer(hidden, encoderHidden).InitialiseAsTorch(generator),
                nn.Tanh(),
                new DenseLayer(encoderHidden, width).InitialiseAsTorch(generator));
        }
        RegisterComponents();
    }

    public Parameter Embedding => embedding;

    /// <summary>The table [n, layers·2·hidden]; <paramref name="words"/> (the batch's word vectors) is not used.</summary>
    public override Tensor forward(Tensor words)
    {
        if (transform is null) return embedding.alias();
        using var scope = NewDisposeScope();
        Tensor result = embedding;
        foreach (var layer in transform) result = layer.forward(result);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>Prefix tuning on a backbone's prefix insertion point; trains the prefix encoder.</summary>
internal sealed class PrefixTuningMethod : PeftMethod
{
    private readonly PrefixTuningOptions options;
    private PrefixTuningOptions? filled;
    private PrefixEncoder? encoder;

    public PrefixTuningMethod(PrefixTuningOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    /// <summary>As PEFT saves for inference: the computed table as a plain embedding, so <c>prefix_projection</c> is false.</summary>
    public override PeftMethodOptions SavedOptions
    {
        get
        {
            var saved = filled ?? options;
            return new PrefixTuningOptions
            {
                NumVirtualTokens = saved.NumVirtualTokens,
                PrefixProjection = false,
                EncoderHiddenSize = saved.EncoderHiddenSize,
                TokenDim = saved.TokenDim,
                NumTransformerSubmodules = saved.NumTransformerSubmodules,
                NumAttentionHeads = saved.NumAttentionHeads,
                NumLayers = saved.NumLayers,
            };
        }
    }

    public override IReadOnlyList<string> Attach(IBackbone baseModel, Generator? generator)
    {
        var backbone = TextBackbone.Require(baseModel, "Prefix tuning");
        if (encoder is not null) throw new InvalidOperationException("The prefix is already attached.");
        filled = options.For(backbone);
        long hidden = backbone.FeatureSize, width = (long)backbone.LayerCount * 2 * hidden;
        var module = new PrefixEncoder(options.NumVirtualTokens, hidden, filled.EncoderHiddenSize!.Value, width, options.PrefixProjection, generator);
        backbone.SetPrefix(PromptLearning.ModuleName, options.NumVirtualTokens, module);
        encoder = module;
        return new[] { PromptLearning.ModuleName };
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone)
    {
        if (encoder is null) return Array.Empty<NamedParameter>();
        if (!options.PrefixProjection) return new[] { new NamedParameter(PromptLearning.SavedKey, encoder.Embedding) { TopLevel = true } };
        // Trained but not saved (SavedState saves the table they compute): keyed by their place in the module tree.
        return encoder.named_parameters().Select(p => new NamedParameter($"{PromptLearning.ModuleName}.{p.name}", p.parameter)).ToList();
    }

    public override IReadOnlyList<NamedTensor> SavedState(IBackbone backbone)
    {
        if (encoder is null || !options.PrefixProjection) return base.SavedState(backbone);
        using var mode = no_grad();
        using var words = empty(0, 0, backbone.FeatureSize);
        using var table = encoder.forward(words);
        return new[] { new NamedTensor(PromptLearning.SavedKey, table.detach().clone()) { TopLevel = true } };
    }
}
