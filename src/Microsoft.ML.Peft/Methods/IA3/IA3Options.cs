using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Methods.IA3;

/// <summary>
/// (IA)³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"):
/// each targeted Linear layer learns one vector that rescales its output (attention projections) or, for feed-forward
/// layers, its input. Vectors start at one, so the model starts unchanged. Saved with Hugging Face PEFT's
/// <c>IA3Config</c> field names.
/// </summary>
public sealed class IA3Options : PeftMethodOptions
{
    /// <inheritdoc/>
    public override string PeftType => "IA3";

    /// <summary>
    /// Which Linear layers are adapted, matched as <see cref="Lora.LoraOptions.TargetModules"/> (last parts of names,
    /// full names, regular expressions over whole names, or <see cref="Lora.LoraOptions.AllLinear"/>). Default: PEFT's
    /// for BERT, <c>key</c>, <c>value</c> and <c>output.dense</c>.
    /// </summary>
    [JsonPropertyName("target_modules")] public IReadOnlyList<string> TargetModules { get; set; } = new[] { "key", "value", "output.dense" };

    /// <summary>
    /// Which of the targeted layers are feed-forward layers, whose input (not output) is rescaled; must be a subset of
    /// <see cref="TargetModules"/>. Default: PEFT's for BERT, <c>output.dense</c>.
    /// </summary>
    [JsonPropertyName("feedforward_modules")] public IReadOnlyList<string> FeedforwardModules { get; set; } = new[] { "output.dense" };

    /// <summary>Start the vectors at one (default true); false draws them from N(0, 1), as PEFT does, for tests.</summary>
    [JsonPropertyName("init_ia3_weights")] public bool InitIA3Weights { get; set; } = true;

    /// <inheritdoc/>
    public override void Validate()
    {
        if (TargetModules is null || TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("IA3 TargetModules must name at least one module, with no empty entry.", nameof(TargetModules));
        if (FeedforwardModules is null || FeedforwardModules.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("IA3 FeedforwardModules must be a list (possibly empty) with no empty entry.", nameof(FeedforwardModules));
        // PEFT's check: feed-forward patterns are a subset of the target patterns ('all-linear' targets every layer).
        if (!TargetModules.Contains(ModuleMatcher.AllLinear))
        {
            var extra = FeedforwardModules.Where(f => !TargetModules.Contains(f)).ToList();
            if (extra.Count > 0)
                throw new ArgumentException($"IA3 FeedforwardModules must be a subset of TargetModules; [{string.Join(", ", extra)}] are not in TargetModules [{string.Join(", ", TargetModules)}].", nameof(FeedforwardModules));
        }
    }

    internal override PeftMethod Create(string adapterName) => new IA3Method(this, adapterName);
}
