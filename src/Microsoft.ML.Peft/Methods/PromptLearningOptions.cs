using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// What Hugging Face PEFT's prompt-learning methods (prompt tuning, prefix tuning) share, under PEFT's
/// <c>PromptLearningConfig</c> field names: the number of virtual tokens and the base model's shape, which is filled
/// from the base model when left null and must match it when set.
/// </summary>
public abstract class PromptLearningOptions : PeftMethodOptions
{
    /// <summary>Number of virtual tokens <c>n</c>. Default 20; at most the base model's positions less two.</summary>
    [JsonPropertyName("num_virtual_tokens")] public int NumVirtualTokens { get; set; } = 20;

    /// <summary>Width of the virtual tokens' vectors (the base model's hidden size); filled from the base model when null.</summary>
    [JsonPropertyName("token_dim")] public int? TokenDim { get; set; }

    /// <summary>Number of transformer stacks the virtual tokens feed: 1 for an encoder. Filled when null.</summary>
    [JsonPropertyName("num_transformer_submodules")] public int? NumTransformerSubmodules { get; set; }

    /// <summary>The base model's attention heads per layer, as PEFT saves it; filled when null.</summary>
    [JsonPropertyName("num_attention_heads")] public int? NumAttentionHeads { get; set; }

    /// <summary>The base model's number of layers, as PEFT saves it; filled when null.</summary>
    [JsonPropertyName("num_layers")] public int? NumLayers { get; set; }

    /// <summary>The method's name in messages.</summary>
    private protected abstract string MethodName { get; }

    /// <summary>Checks the shared fields, naming the one at fault.</summary>
    private protected void ValidateShared()
    {
        if (NumVirtualTokens < 1 || NumVirtualTokens > 65_536)
            throw new ArgumentOutOfRangeException(nameof(NumVirtualTokens), NumVirtualTokens, $"{MethodName} NumVirtualTokens must be from 1 to the base model's positions less two.");
        if (TokenDim is < 1 or > 16_384) throw new ArgumentOutOfRangeException(nameof(TokenDim), TokenDim, $"{MethodName} TokenDim must be the base model's hidden size, or null.");
        if (NumTransformerSubmodules is not (null or 1))
            throw new ArgumentOutOfRangeException(nameof(NumTransformerSubmodules), NumTransformerSubmodules, $"{MethodName} NumTransformerSubmodules must be 1 (an encoder), or null.");
        if (NumAttentionHeads is < 1 or > 1_024) throw new ArgumentOutOfRangeException(nameof(NumAttentionHeads), NumAttentionHeads, $"{MethodName} NumAttentionHeads must be the base model's head count, or null.");
        if (NumLayers is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(NumLayers), NumLayers, $"{MethodName} NumLayers must be the base model's layer count, or null.");
    }

    /// <summary>Fills the shared fields of <paramref name="target"/> from the base model, checking what was set here against it.</summary>
    private protected T FillFrom<T>(ITextBackbone backbone, T target) where T : PromptLearningOptions
    {
        ValidateShared();
        int hidden = (int)backbone.FeatureSize;
        void Match(int? value, int actual, string name)
        {
            if (value is not null && value != actual)
                throw new ArgumentOutOfRangeException(name, value, $"{MethodName} {name} is {value}, but the base model has {actual}; leave it null to take the base model's.");
        }
        Match(TokenDim, hidden, nameof(TokenDim));
        Match(NumAttentionHeads, backbone.AttentionHeadCount, nameof(NumAttentionHeads));
        Match(NumLayers, backbone.LayerCount, nameof(NumLayers));
        if (NumVirtualTokens > backbone.MaxPositions - 2)
            throw new ArgumentOutOfRangeException(nameof(NumVirtualTokens), NumVirtualTokens,
                $"{MethodName} NumVirtualTokens must be at most {backbone.MaxPositions - 2}: the base model has {backbone.MaxPositions} positions, shared by virtual and real tokens.");
        target.NumVirtualTokens = NumVirtualTokens;
        target.TokenDim = hidden;
        target.NumTransformerSubmodules = 1;
        target.NumAttentionHeads = backbone.AttentionHeadCount;
        target.NumLayers = backbone.LayerCount;
        return target;
    }
}
