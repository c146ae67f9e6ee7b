using Microsoft.ML.Peft.Backbones;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.PromptTuning;

/// <summary>PEFT's <c>PromptEmbedding</c>: the trained virtual-token vectors [n, hidden] (parameter <c>embedding</c>).</summary>
internal sealed class PromptEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter embedding;

    public PromptEmbedding(long count, long width) : base("prompt_encoder")
    {
        embedding = new Parameter(zeros(count, width));
        RegisterComponents();
    }

    public Parameter Embedding => embedding;

    /// <summary>The vectors [n, hidden]; <paramref name="words"/> (the batch's word vectors) is not used.</summary>
    public override Tensor forward(Tensor words) => embedding.alias();
}

/// <summary>Prompt tuning on a backbone's prompt insertion point; trains only the vectors.</summary>
internal sealed class PromptTuningMethod : PeftMethod
{
    private readonly PromptTuningOptions options;
    private PromptTuningOptions? filled;
    private PromptEmbedding? prompt;

    public PromptTuningMethod(PromptTuningOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    /// <summary>The options with the base model's shape filled in, as PEFT saves them.</summary>
    public override PeftMethodOptions SavedOptions => filled ?? options;

    public override IReadOnlyList<string> Attach(IBackbone baseModel, Generator? generator)
    {
        var backbone = TextBackbone.Require(baseModel, "Prompt tuning");
        if (prompt is not null) throw new InvalidOperationException("The prompt is already attached.");
        filled = options.For(backbone);
        var module = new PromptEmbedding(options.NumVirtualTokens, backbone.FeatureSize);
        using (no_grad())
        {
            if (options.PromptTuningInit == PromptTuningOptions.SampleVocab)
            {
                using var drawn = randint(0, backbone.VocabularySize, new long[] { options.NumVirtualTokens }, dtype: ScalarType.Int64, generator: generator);
                using var ids = drawn.to(backbone.Module.parameters().First().device);
                using var rows = backbone.EmbedWords(ids);
                module.Embedding.copy_(rows);
            }
            else
            {
                module.Embedding.normal_(0, 1, generator);
            }
        }
        backbone.SetPrompt(PromptLearning.ModuleName, options.NumVirtualTokens, module);
        prompt = module;
        return new[] { PromptLearning.ModuleName };
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone) =>
        prompt is null ? Array.Empty<NamedParameter>() : new[] { new NamedParameter(PromptLearning.SavedKey, prompt.Embedding) { TopLevel = true } };
}
