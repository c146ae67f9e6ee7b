using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods.PromptTuning;

/// <summary>The fields Hugging Face PEFT's prompt-learning configurations share: checks and filling from the base model.</summary>
internal static class PromptLearning
{
    /// <summary>The top-level key of the saved prompt vectors (prompt tuning) or prefix table (prefix tuning), as PEFT saves them.</summary>
    public const string SavedKey = "prompt_embeddings";

    /// <summary>The name of the prompt or prefix module under the backbone.</summary>
    public const string ModuleName = "prompt_encoder";

    public static void ValidateShape(int? tokenDim, int? submodules, int? heads, int? layers, string method)
    {
        if (tokenDim is < 1 or > 16_384) throw new ArgumentOutOfRangeException("TokenDim", tokenDim, $"{method} TokenDim must be the base model's hidden size, or null.");
        if (submodules is not (null or 1)) throw new ArgumentOutOfRangeException("NumTransformerSubmodules", submodules, $"{method} NumTransformerSubmodules must be 1 (an encoder), or null.");
        if (heads is < 1 or > 1_024) throw new ArgumentOutOfRangeException("NumAttentionHeads", heads, $"{method} NumAttentionHeads must be the base model's head count, or null.");
        if (layers is < 1 or > 256) throw new ArgumentOutOfRangeException("NumLayers", layers, $"{method} NumLayers must be the base model's layer count, or null.");
    }

    /// <summary>The base model's (hidden size, heads, layers); values that were set must match them.</summary>
    public static (int TokenDim, int Heads, int Layers) Shape(IBackbone backbone, int? tokenDim, int? submodules, int? heads, int? layers, string method)
    {
        ValidateShape(tokenDim, submodules, heads, layers, method);
        int hidden = (int)backbone.FeatureSize;
        void Match(int? value, int actual, string name)
        {
            if (value is not null && value != actual)
                throw new ArgumentOutOfRangeException(name, value, $"{method} {name} is {value}, but the base model has {actual}; leave it null to take the base model's.");
        }
        Match(tokenDim, hidden, "TokenDim");
        Match(heads, backbone.AttentionHeadCount, "NumAttentionHeads");
        Match(layers, backbone.LayerCount, "NumLayers");
        return (hidden, backbone.AttentionHeadCount, backbone.LayerCount);
    }
}
