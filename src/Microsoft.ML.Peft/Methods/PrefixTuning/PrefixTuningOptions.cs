using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods.PromptTuning;

namespace Microsoft.ML.Peft.Methods.PrefixTuning;

/// <summary>
/// Prefix tuning (Li and Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"), as Hugging Face
/// PEFT applies it to BERT: every self-attention layer attends to <c>n</c> trained key and value vectors before the real
/// tokens' keys and values; the encoder stays frozen. The real tokens take positions n onwards (as Hugging Face's BERT
/// offsets positions by the length of <c>past_key_values</c>), so <c>num_virtual_tokens</c> plus
/// <c>MaxSequenceLength</c> may not exceed the base model's position table. With <see cref="PrefixProjection"/> the
/// prefixes are computed while training by PEFT's reparameterisation (an embedding [n, hidden], then
/// Linear(hidden, encoder_hidden_size), tanh, Linear(encoder_hidden_size, layers·2·hidden)); as PEFT saves a model for
/// inference, the saved model holds only the computed table (top-level <c>prompt_embeddings</c> [n, layers·2·hidden])
/// and options with <c>prefix_projection</c> false. Saved with PEFT's <c>PrefixTuningConfig</c> field names.
/// </summary>
public sealed class PrefixTuningOptions : PromptLearningOptions
{
    private protected override string MethodName => "Prefix tuning";

    /// <inheritdoc/>
    public override string PeftType => "PREFIX_TUNING";

    /// <summary>
    /// Train the prefixes through Li and Liang's two-layer reparameterisation instead of as a table. Default false, as
    /// in PEFT: on SST-2 with MiniLM the table at a learning rate of 2e-2 learned, while the reparameterised prefixes at
    /// 5e-3 stayed at chance and reached 0.77 at 1e-3 on 2,000 rows (<c>bench/README.md</c>).
    /// </summary>
    [JsonPropertyName("prefix_projection")] public bool PrefixProjection { get; set; }

    /// <summary>Width of the reparameterisation's hidden layer; null (default) for the base model's hidden size.</summary>
    [JsonPropertyName("encoder_hidden_size")] public int? EncoderHiddenSize { get; set; }

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateShared();
        if (EncoderHiddenSize is < 1 or > 65_536)
            throw new ArgumentOutOfRangeException(nameof(EncoderHiddenSize), EncoderHiddenSize, "Prefix tuning EncoderHiddenSize must be from 1 to 65536, or null for the base model's hidden size.");
    }

    /// <summary>These options with the base model's shape filled in (and checked against what was set).</summary>
    internal PrefixTuningOptions For(ITextBackbone backbone) =>
        FillFrom(backbone, new PrefixTuningOptions { PrefixProjection = PrefixProjection, EncoderHiddenSize = EncoderHiddenSize ?? (int)backbone.FeatureSize });

    internal override PeftMethod Create(string adapterName) => new PrefixTuningMethod(this, adapterName);
}
