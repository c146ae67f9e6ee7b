namespace Microsoft.ML.Peft.Training;

/// <summary>
/// The number format of the frozen base model's matrix products, for training and for scoring (saved with the model).
/// </summary>
public enum PeftPrecision
{
    /// <summary>Everything in 32-bit floating point (the default).</summary>
    Fp32,

    /// <summary>
    /// Mixed precision: the frozen base weights' matrix products in bfloat16 (on bfloat16 copies of the weights); the
    /// trained parameters (adapters, head, any base parameter the method trains), attention, LayerNorm and the loss stay
    /// in fp32. Faster only where the processor's bfloat16 matrix rate exceeds its fp32 rate (AMD Zen 4 and later with
    /// AVX-512 BF16, Intel with AMX); compare <c>gemmBf16Gflops</c> with <c>gemmGflops</c> in the performance benchmark.
    /// Probabilities differ from fp32 by about 1e-3.
    /// </summary>
    Bf16,
}

/// <summary>The saved names of <see cref="PeftPrecision"/>.</summary>
internal static class PeftPrecisionNames
{
    public static string ToName(PeftPrecision precision) => precision switch
    {
        PeftPrecision.Fp32 => "fp32",
        PeftPrecision.Bf16 => "bf16",
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "Unknown precision."),
    };

    /// <summary>Reads a saved name; null (models saved before the option existed) is fp32.</summary>
    public static PeftPrecision Parse(string? name, string source) => name switch
    {
        null or "fp32" => PeftPrecision.Fp32,
        "bf16" => PeftPrecision.Bf16,
        _ => throw new InvalidDataException($"{source}: the saved precision '{name}' is not known (fp32, bf16)."),
    };
}
