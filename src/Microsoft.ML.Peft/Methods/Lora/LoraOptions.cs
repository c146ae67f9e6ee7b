using System.Text.Json;
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

    /// <summary>
    /// rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"): scale the update by
    /// <c>Alpha / sqrt(Rank)</c> instead of <c>Alpha / Rank</c>, which keeps learning stable at large ranks. Default false.
    /// </summary>
    [JsonPropertyName("use_rslora")] public bool UseRslora { get; set; }

    /// <summary>
    /// DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): each adapted weight becomes a trained
    /// magnitude per output row times the row-normalised <c>W + scaling B A</c>. Adds one vector of the layer's output
    /// size per adapted layer (saved as <c>lora_magnitude_vector</c>). Default false.
    /// </summary>
    [JsonPropertyName("use_dora")] public bool UseDora { get; set; }

    /// <summary>
    /// LoRA+ (Hayou et al. 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models"): <c>B</c> (and, as Hugging Face
    /// PEFT's <c>create_loraplus_optimizer</c> groups them, every one-dimensional adapter parameter such as DoRA's
    /// magnitude) trains at this multiple of the learning rate. Null (default) trains everything at the learning rate;
    /// when set it must be at least 1 (the paper uses 16).
    /// </summary>
    [JsonPropertyName("loraplus_lr_ratio")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public float? LoraPlusLearningRateRatio { get; set; }

    /// <summary>
    /// How <c>A</c> and <c>B</c> start (Hugging Face PEFT's <c>init_lora_weights</c>): <see cref="LoraInitialization.KaimingUniform"/>
    /// (default, saved as <c>true</c>), <see cref="LoraInitialization.Gaussian"/> or <see cref="LoraInitialization.Pissa"/>.
    /// </summary>
    [JsonPropertyName("init_lora_weights")] public LoraInitialization InitLoraWeights { get; set; } = LoraInitialization.KaimingUniform;

    /// <inheritdoc/>
    public override void Validate()
    {
        if (Rank <= 0 || Rank > MaxRank) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"LoRA Rank must be an integer from 1 to {MaxRank}.");
        if (!(Alpha > 0) || float.IsInfinity(Alpha)) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "LoRA Alpha must be a positive finite number.");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "LoRA Dropout must be in [0, 1).");
        if (TargetModules is null || TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("LoRA TargetModules must name at least one module, with no empty entry.", nameof(TargetModules));
        if (LoraPlusLearningRateRatio is float ratio && !(ratio >= 1 && float.IsFinite(ratio)))
            throw new ArgumentOutOfRangeException(nameof(LoraPlusLearningRateRatio), ratio, "LoRA LoraPlusLearningRateRatio must be a finite number of at least 1 (or null for no LoRA+).");
        if (!Enum.IsDefined(InitLoraWeights))
            throw new ArgumentOutOfRangeException(nameof(InitLoraWeights), InitLoraWeights, "LoRA InitLoraWeights must be KaimingUniform, Gaussian or Pissa.");
        if (InitLoraWeights == LoraInitialization.Pissa)
        {
            if (UseDora) throw new ArgumentException("LoRA InitLoraWeights = Pissa cannot be combined with UseDora in this library: use one of them.", nameof(InitLoraWeights));
            if (Rank > MaxRank / 2)
                throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"LoRA Rank with PiSSA must be at most {MaxRank / 2}: the adapter is saved as a LoRA of twice the rank.");
        }
    }

    /// <summary>The largest <see cref="Rank"/> accepted.</summary>
    internal const int MaxRank = 4096;

    /// <summary>The scaling factor: <c>alpha / r</c>, or <c>alpha / sqrt(r)</c> with <see cref="UseRslora"/>.</summary>
    [JsonIgnore] public float Scaling => UseRslora ? (float)(Alpha / Math.Sqrt(Rank)) : Alpha / Rank;

    internal override PeftMethod Create(string adapterName) => new LoraMethod(this, adapterName);
}

/// <summary>How LoRA's <c>A</c> and <c>B</c> are initialised (Hugging Face PEFT's <c>init_lora_weights</c>).</summary>
[JsonConverter(typeof(LoraInitializationConverter))]
public enum LoraInitialization
{
    /// <summary><c>A</c> Kaiming-uniform, <c>B</c> zeros: the adapted layer starts equal to the base layer. Saved as <c>true</c>.</summary>
    KaimingUniform,

    /// <summary><c>A</c> drawn from N(0, 1/r²) (standard deviation 1/r), <c>B</c> zeros. Saved as <c>"gaussian"</c>.</summary>
    Gaussian,

    /// <summary>
    /// PiSSA (Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language
    /// Models"): <c>A</c> and <c>B</c> start from the top-r singular triplets of <c>W</c> and the frozen weight becomes
    /// the residual, so the adapted layer starts equal to the base layer. Saved as the equivalent LoRA of twice the rank
    /// on the original weights (Hugging Face PEFT's conversion). Saved as <c>"pissa"</c>.
    /// </summary>
    Pissa,
}

/// <summary>Reads and writes <see cref="LoraInitialization"/> as Hugging Face PEFT does: <c>true</c>, <c>"gaussian"</c> or <c>"pissa"</c>.</summary>
internal sealed class LoraInitializationConverter : JsonConverter<LoraInitialization>
{
    public override LoraInitialization Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.True) return LoraInitialization.KaimingUniform;
        if (reader.TokenType == JsonTokenType.String)
        {
            var value = reader.GetString();
            if (string.Equals(value, "gaussian", StringComparison.OrdinalIgnoreCase)) return LoraInitialization.Gaussian;
            if (string.Equals(value, "pissa", StringComparison.OrdinalIgnoreCase)) return LoraInitialization.Pissa;
            throw new JsonException($"init_lora_weights \"{value}\" is not supported (supported: true, \"gaussian\", \"pissa\").");
        }
        throw new JsonException($"init_lora_weights must be true, \"gaussian\" or \"pissa\" (found {reader.TokenType}).");
    }

    public override void Write(Utf8JsonWriter writer, LoraInitialization value, JsonSerializerOptions options)
    {
        switch (value)
        {
            case LoraInitialization.Gaussian: writer.WriteStringValue("gaussian"); break;
            case LoraInitialization.Pissa: writer.WriteStringValue("pissa"); break;
            default: writer.WriteBooleanValue(true); break;
        }
    }
}
