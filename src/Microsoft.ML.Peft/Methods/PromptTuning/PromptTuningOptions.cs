using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods.PromptTuning;

/// <summary>
/// Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"): <c>n</c> trained
/// vectors in word-embedding space are prepended to every input's word embeddings; the whole encoder stays frozen. As
/// Hugging Face PEFT does on BERT, the virtual tokens take positions 0..n-1 (token type 0) before the embedding layer's
/// position and token-type embeddings, LayerNorm and dropout, the real tokens positions n onwards, so
/// <c>num_virtual_tokens</c> plus <c>MaxSequenceLength</c> may not exceed the base model's position table. The encoder's
/// features keep only the real tokens (the classifier mean-pools them). Saved with PEFT's <c>PromptTuningConfig</c>
/// field names; the vectors are PEFT's top-level <c>prompt_embeddings</c> [n, hidden].
/// </summary>
public sealed class PromptTuningOptions : PromptLearningOptions
{
    private protected override string MethodName => "Prompt tuning";

    /// <summary>Initialise the vectors from N(0, 1), as PyTorch's <c>nn.Embedding</c> does.</summary>
    public const string Random = "RANDOM";

    /// <summary>Initialise the vectors with the word embeddings of tokens drawn at random from the vocabulary.</summary>
    public const string SampleVocab = "SAMPLE_VOCAB";

    /// <inheritdoc/>
    public override string PeftType => "PROMPT_TUNING";

    /// <summary>
    /// How the vectors start: <see cref="SampleVocab"/> (default: rows of the word-embedding table drawn at random,
    /// on the embedding manifold) or <see cref="Random"/> (N(0, 1)). PEFT's <c>TEXT</c> initialisation is not supported.
    /// PEFT's own default is <c>RANDOM</c>.
    /// </summary>
    [JsonPropertyName("prompt_tuning_init")] public string PromptTuningInit { get; set; } = SampleVocab;

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateShared();
        if (PromptTuningInit is not (Random or SampleVocab))
            throw new ArgumentException($"Prompt tuning PromptTuningInit must be '{SampleVocab}' or '{Random}', not '{PromptTuningInit}' (TEXT is not supported).", nameof(PromptTuningInit));
    }

    /// <summary>These options with the base model's shape filled in (and checked against what was set).</summary>
    internal PromptTuningOptions For(ITextBackbone backbone) => FillFrom(backbone, new PromptTuningOptions { PromptTuningInit = PromptTuningInit });

    internal override PeftMethod Create(string adapterName) => new PromptTuningMethod(this, adapterName);
}
