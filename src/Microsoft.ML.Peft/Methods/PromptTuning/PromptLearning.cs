namespace Microsoft.ML.Peft.Methods.PromptTuning;

/// <summary>Names prompt tuning and prefix tuning share.</summary>
internal static class PromptLearning
{
    /// <summary>The top-level key of the saved prompt vectors (prompt tuning) or prefix table (prefix tuning), as PEFT saves them.</summary>
    public const string SavedKey = "prompt_embeddings";

    /// <summary>The name of the prompt or prefix module under the backbone.</summary>
    public const string ModuleName = "prompt_encoder";
}
