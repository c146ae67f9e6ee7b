using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>Shape of a BERT-family encoder, with Hugging Face's <c>config.json</c> field names.</summary>
public sealed class BertConfig
{
    /// <summary>Number of tokens in the vocabulary.</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; } = 30522;
    /// <summary>Width of the hidden states.</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; } = 768;
    /// <summary>Number of transformer layers.</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; } = 12;
    /// <summary>Number of attention heads per layer.</summary>
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; } = 12;
    /// <summary>Width of the feed-forward layer.</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; } = 3072;
    /// <summary>Length of the position-embedding table: the longest sequence the model accepts.</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 512;
    /// <summary>Number of token types (segments).</summary>
    [JsonPropertyName("type_vocab_size")] public int TypeVocabSize { get; set; } = 2;
    /// <summary>Epsilon of the layer normalisations.</summary>
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; set; } = 1e-12;
    /// <summary>Dropout on hidden states during training.</summary>
    [JsonPropertyName("hidden_dropout_prob")] public double HiddenDropoutProb { get; set; } = 0.1;
    /// <summary>Dropout on attention probabilities during training.</summary>
    [JsonPropertyName("attention_probs_dropout_prob")] public double AttentionProbsDropoutProb { get; set; } = 0.1;
    /// <summary>Activation of the feed-forward layer; <c>gelu</c> (exact) and <c>relu</c> are supported.</summary>
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "gelu";

    /// <summary>Reads a Hugging Face <c>config.json</c>.</summary>
    public static BertConfig FromJson(string json, string source)
    {
        BertConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<BertConfig>(json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not a valid BERT config.json: {e.Message}", e);
        }
        if (config is null) throw new InvalidDataException($"'{source}' is empty.");
        config.Validate(source);
        return config;
    }

    /// <summary>Serialises with Hugging Face field names.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Checks that every size is positive and consistent; the message names <paramref name="source"/>.</summary>
    public void Validate(string source)
    {
        // Bounds well above any BERT-family encoder, so a damaged or hostile file cannot ask for absurd allocations.
        void InRange(int value, int max, string name)
        {
            if (value <= 0 || value > max) throw new InvalidDataException($"{source}: '{name}' must be from 1 to {max:N0}, found {value}.");
        }
        InRange(VocabSize, 1_000_000, "vocab_size");
        InRange(HiddenSize, 16_384, "hidden_size");
        InRange(NumHiddenLayers, 256, "num_hidden_layers");
        InRange(NumAttentionHeads, 1_024, "num_attention_heads");
        InRange(IntermediateSize, 131_072, "intermediate_size");
        InRange(MaxPositionEmbeddings, 65_536, "max_position_embeddings");
        InRange(TypeVocabSize, 1_024, "type_vocab_size");
        if (!(LayerNormEps > 0 && LayerNormEps < 1)) throw new InvalidDataException($"{source}: 'layer_norm_eps' must be in (0, 1), found {LayerNormEps}.");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException($"{source}: hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumAttentionHeads}.");
        if (HiddenAct is not ("gelu" or "relu" or "gelu_new"))
            throw new InvalidDataException($"{source}: hidden_act '{HiddenAct}' is not supported (gelu, gelu_new, relu).");
        if (HiddenDropoutProb is < 0 or >= 1 || AttentionProbsDropoutProb is < 0 or >= 1)
            throw new InvalidDataException($"{source}: dropout probabilities must be in [0, 1).");
    }
}
