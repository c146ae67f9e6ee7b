using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Methods.Vera;

/// <summary>
/// VeRA (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation"): one pair of frozen random matrices
/// <c>A</c> (r x in) and <c>B</c> (out x r) is shared by every targeted Linear layer, and each layer trains only two
/// vectors: <c>W + diag(lambda_b) B diag(lambda_d) A</c>. Saved with Hugging Face PEFT's <c>VeraConfig</c> field names.
/// </summary>
public sealed class VeraOptions : PeftMethodOptions
{
    /// <inheritdoc/>
    public override string PeftType => "VERA";

    /// <summary>Rank <c>r</c> of the shared random projections. Default 256 (VeRA trains r + out values per layer, so large ranks are cheap).</summary>
    [JsonPropertyName("r")] public int Rank { get; set; } = 256;

    /// <summary>
    /// Which Linear layers are adapted, as <see cref="Lora.LoraOptions.TargetModules"/>: last parts of module names, full
    /// names, regular expressions over whole names, or <see cref="Lora.LoraOptions.AllLinear"/>. Default: every Linear.
    /// </summary>
    [JsonPropertyName("target_modules")] public IReadOnlyList<string> TargetModules { get; set; } = new[] { ModuleMatcher.AllLinear };

    /// <summary>Seed of the generator that draws the shared projections (Kaiming-uniform, <c>A</c> then <c>B</c>, as PEFT draws them). Default 0.</summary>
    [JsonPropertyName("projection_prng_key")] public long ProjectionPrngKey { get; set; }

    /// <summary>
    /// Save the shared projections with the adapter (default true). When false they are drawn again from
    /// <see cref="ProjectionPrngKey"/> on load, which gives the same values with this library's generator.
    /// </summary>
    [JsonPropertyName("save_projection")] public bool SaveProjection { get; set; } = true;

    /// <summary>Dropout applied to the input of the VeRA branch during training. Default 0.</summary>
    [JsonPropertyName("vera_dropout")] public float Dropout { get; set; }

    /// <summary>Initial value of every entry of <c>lambda_d</c> (<c>lambda_b</c> starts at zero). Default 0.1.</summary>
    [JsonPropertyName("d_initial")] public float DInitial { get; set; } = 0.1f;

    /// <inheritdoc/>
    public override void Validate()
    {
        if (Rank <= 0 || Rank > 4096) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, "VeRA Rank must be an integer from 1 to 4096.");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "VeRA Dropout must be in [0, 1).");
        if (!float.IsFinite(DInitial)) throw new ArgumentOutOfRangeException(nameof(DInitial), DInitial, "VeRA DInitial must be a finite number.");
        if (ProjectionPrngKey < 0) throw new ArgumentOutOfRangeException(nameof(ProjectionPrngKey), ProjectionPrngKey, "VeRA ProjectionPrngKey must be zero or positive.");
        if (TargetModules is null || TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("VeRA TargetModules must name at least one module, with no empty entry.", nameof(TargetModules));
    }

    internal override PeftMethod Create(string adapterName) => new VeraMethod(this, adapterName);
}
