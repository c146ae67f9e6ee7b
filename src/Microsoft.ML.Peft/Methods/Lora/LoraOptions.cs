using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>
/// LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): each targeted Linear layer <c>W</c>
/// becomes <c>W + (alpha / r) B A</c> with <c>A</c> (r x in) and <c>B</c> (out x r) trained and <c>W</c> frozen.
/// Saved with Hugging Face PEFT's <c>LoraConfig</c> field names.
/// </summary>
public sealed class LoraOptions : PeftMethodOptions
{
    /// <summary>The name that selects every Linear layer of the encoder in <see cref="TargetModules"/>.</summary>
    public const string AllLinear = ModuleMatcher.AllLinear;

    /// <inheritdoc/>
    public override string PeftType => "LORA";

    /// <summary>Rank <c>r</c> of the update. Default 8.</summary>
    [JsonPropertyName("r")] public int Rank { get; set; } = 8;

    /// <summary>Scaling numerator: the update is multiplied by <c>Alpha / Rank</c>. Default 16.</summary>
    [JsonPropertyName("lora_alpha")] public float Alpha { get; set; } = 16;

    /// <summary>Dropout applied to the input of the low-rank branch during training. Default 0.1.</summary>
    [JsonPropertyName("lora_dropout")] public float Dropout { get; set; } = 0.1f;

    /// <summary>
    /// Which Linear layers get an adapter: each entry is either the last part of a module name (<c>query</c>
    /// matches <c>encoder.layer.0.attention.self.query</c>), a full module name, or a regular expression that must
    /// match a whole module name (<c>encoder\.layer\.[0-2]\..*\.query</c>). <see cref="AllLinear"/> selects every
    /// Linear of the encoder. Default: <see cref="AllLinear"/> (on SST-2 it beat <c>query</c> and <c>value</c> by 0.015
    /// accuracy for 4.5 times the trainable parameters, still 1.5% of the encoder's; see <c>bench/README.md</c>).
    /// </summary>
    [JsonPropertyName("target_modules")] public IReadOnlyList<string> TargetModules { get; set; } = new[] { AllLinear };

    /// <inheritdoc/>
    public override void Validate()
    {
        if (Rank <= 0 || Rank > 4096) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, "LoRA Rank must be an integer from 1 to 4096.");
        if (!(Alpha > 0) || float.IsInfinity(Alpha)) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "LoRA Alpha must be a positive finite number.");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "LoRA Dropout must be in [0, 1).");
        if (TargetModules is null || TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("LoRA TargetModules must name at least one module, with no empty entry.", nameof(TargetModules));
    }

    /// <summary>The scaling factor <c>alpha / r</c>.</summary>
    [JsonIgnore] public float Scaling => Alpha / Rank;

    internal override PeftMethod Create(string adapterName) => new LoraMethod(this, adapterName);
}
