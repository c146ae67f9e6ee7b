using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;

namespace Peft.Bench;

/// <summary>One method of the comparison: its options and the learning rate it trains at.</summary>
internal sealed record MethodRecipe(string Name, string Description, float LearningRate, Func<PeftMethodOptions> Create);

/// <summary>
/// The methods the comparison runs, by the command line's <c>--method</c> names, each at a learning rate suited to it
/// (the method's own papers and Hugging Face PEFT's examples; full fine-tuning at the usual 5e-5).
/// </summary>
internal static class MethodRecipes
{
    private static readonly MethodRecipe[] All =
    {
        new("lora", "r=8, alpha 16, all-linear", 2e-3f, () => new LoraOptions()),
        new("bitfit", "bias terms", 2e-3f, () => new BitFitOptions()),
        new("full", "every parameter", 5e-5f, () => new FullFineTuningOptions()),
    };

    public static readonly string[] Names = All.Select(r => r.Name).ToArray();

    public static string NamesText => string.Join(", ", Names);

    public static MethodRecipe Get(string name) => All.Single(r => r.Name == name);
}
