using System.CommandLine;
using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.Cli;

/// <summary>How the text commands compute: <c>--precision</c> and <c>--attention-dropout</c> (PeftTextTrainerOptions).</summary>
internal sealed class ComputeChoices
{
    private readonly Option<string> precision = new Option<string>("--precision")
    {
        Description = "fp32 (default) or bf16: the frozen base model's matrix products in bfloat16, trained weights, LayerNorm, softmax and the loss in fp32. " +
            "Faster only where the processor multiplies bf16 faster than fp32 (see the performance benchmark's gemmBf16Gflops); saved with the model.",
        DefaultValueFactory = _ => "fp32",
    }.AcceptOnlyFromAmong("fp32", "bf16");

    private readonly Option<float?> attentionDropout = new("--attention-dropout")
    {
        Description = "Dropout on the attention probabilities while training (default: the base model's, 0.1 for MiniLM); 0 lets the fused attention kernel run and saves memory.",
    };

    public ComputeChoices()
    {
        attentionDropout.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<float?>() is { } value && !(value >= 0 && value < 1))
                result.AddError($"--attention-dropout must be at least 0 and below 1; got {value}.");
        });
    }

    /// <summary>Adds both options to <paramref name="command"/>.</summary>
    public void AddTo(System.CommandLine.Command command)
    {
        command.Options.Add(precision);
        command.Options.Add(attentionDropout);
    }

    /// <summary>The values given (or the defaults).</summary>
    public ComputeSettings Parse(ParseResult parse) =>
        new(parse.GetValue(precision) == "bf16" ? PeftPrecision.Bf16 : PeftPrecision.Fp32, parse.GetValue(attentionDropout));
}

/// <summary>What <see cref="ComputeChoices"/> parsed.</summary>
internal sealed record ComputeSettings(PeftPrecision Precision, float? AttentionDropout)
{
    /// <summary>Sets both on the trainer's options.</summary>
    public void ApplyTo(PeftTextTrainerOptions options)
    {
        options.Precision = Precision;
        options.AttentionDropout = AttentionDropout;
    }
}
