using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Bottleneck;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Methods.PrefixTuning;
using Microsoft.ML.Peft.Methods.PromptTuning;
using Microsoft.ML.Peft.Methods.Vera;

namespace Peft.Bench;

/// <summary>One method of the comparison: its options and the learning rate it trains at.</summary>
internal sealed record MethodRecipe(string Name, string Description, float LearningRate, Func<PeftMethodOptions> Create)
{
    /// <summary>A variant run only when named (not one of the table's methods).</summary>
    public bool Extra { get; init; }
}

/// <summary>
/// The methods the comparison runs, by the command line's <c>--method</c> names, each at a learning rate suited to it
/// (the method's own papers and Hugging Face PEFT's examples; full fine-tuning at the usual 5e-5).
/// </summary>
internal static class MethodRecipes
{
    // The LoRA family at r=4 (alpha 8: LoRA's scaling 2, as the library's default r=8, alpha 16 has) on every Linear:
    // 0.74% of the parameters, under the 1% the comparison asks of a PEFT method.
    private static LoraOptions Lora() => new() { Rank = 4, Alpha = 8 };

    private static readonly MethodRecipe[] All =
    {
        new("lora", "r=4, alpha 8, all-linear", 2e-3f, Lora),
        new("rslora", "r=4, alpha 8, scaling alpha/sqrt(r)", 2e-3f, () => { var o = Lora(); o.UseRslora = true; return o; }),
        new("dora", "r=4, alpha 8, magnitude vectors", 2e-3f, () => { var o = Lora(); o.UseDora = true; return o; }),
        new("loraplus", "r=4, alpha 8, B at 16x the learning rate", 5e-4f, () => { var o = Lora(); o.LoraPlusLearningRateRatio = 16; return o; }),
        new("pissa", "r=4, alpha 8, principal singular vectors", 1e-3f, () => { var o = Lora(); o.InitLoraWeights = LoraInitialization.Pissa; return o; }),
        new("vera", "r=256, all-linear", 1e-2f, () => new VeraOptions()),
        new("ia3", "key, value, output.dense", 5e-3f, () => new IA3Options()),
        new("bitfit", "bias terms", 2e-3f, () => new BitFitOptions()),
        new("prompt", "20 virtual tokens", 2e-2f, () => new PromptTuningOptions()),
        new("prefix", "20 virtual tokens, table", 2e-2f, () => new PrefixTuningOptions()),
        new("bottleneck", "Pfeiffer, reduction 16", 2e-3f, () => new BottleneckOptions()),
        new("full", "every parameter", 5e-5f, () => new FullFineTuningOptions()),
        // Prefix tuning through Li and Liang's reparameterisation MLP (PrefixProjection), at two learning rates.
        new("prefix-mlp", "20 virtual tokens, reparameterised", 5e-3f, () => new PrefixTuningOptions { PrefixProjection = true }) { Extra = true },
        new("prefix-mlp-slow", "20 virtual tokens, reparameterised", 1e-3f, () => new PrefixTuningOptions { PrefixProjection = true }) { Extra = true },
    };

    /// <summary>The table's methods, in its order (what runs by default).</summary>
    public static readonly string[] Names = All.Where(r => !r.Extra).Select(r => r.Name).ToArray();

    /// <summary>Every recipe's name, variants included.</summary>
    public static readonly string[] AllNames = All.Select(r => r.Name).ToArray();

    public static string NamesText => string.Join(", ", AllNames);

    public static MethodRecipe Get(string name) => All.Single(r => r.Name == name);
}
