using System.Globalization;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>
/// What <see cref="PeftExperiment"/> searches: methods, LoRA rank, alpha and target modules, the learning rate (as a factor
/// on each method's reference rate, so one range suits LoRA at 2e-3 and full fine-tuning at 5e-5), epochs, and the input
/// size (sequence length for text, image side for images). Null members take the task's defaults.
/// </summary>
public sealed class PeftSearchSpace
{
    /// <summary>Method names (<c>lora</c>, <c>rslora</c>, <c>dora</c>, <c>ia3</c>...: see <see cref="Methods.PeftMethodNames"/>).
    /// Default (null): for text lora, rslora, loraplus, ia3, bitfit, bottleneck; for images lora, rslora, loraplus, ia3, bitfit, full.</summary>
    public IReadOnlyList<string>? Methods;

    /// <summary>Ranks of LoRA-type methods. Default 4, 8, 16.</summary>
    public IReadOnlyList<int> Ranks = new[] { 4, 8, 16 };

    /// <summary>LoRA alpha as a multiple of the rank (the update is scaled by alpha/r). Default 1, 2, 4.</summary>
    public IReadOnlyList<float> AlphaOverRank = new[] { 1f, 2f, 4f };

    /// <summary>Target modules of LoRA-type methods, each a comma-separated list. Default (null): for text <c>query,value</c>,
    /// <c>query,key,value,dense</c> (attention) and <c>all-linear</c>; for images every convolution.</summary>
    public IReadOnlyList<string>? TargetModules;

    /// <summary>Smallest learning-rate factor (times the method's reference rate). Default 0.25.</summary>
    public float MinLearningRateFactor = 0.25f;

    /// <summary>Largest learning-rate factor. Default 4.</summary>
    public float MaxLearningRateFactor = 4f;

    /// <summary>Fewest epochs a trial trains. Default 1.</summary>
    public int MinEpochs = 1;

    /// <summary>Most epochs a trial trains. Default 3 (early termination stops poor trials sooner).</summary>
    public int MaxEpochs = 3;

    /// <summary>Sequence lengths (text) or image sides in pixels (images). Default (null): text 64 and 128; images 64 and 96.</summary>
    public IReadOnlyList<int>? InputSizes;

    internal void Validate()
    {
        static void NonEmpty<T>(IReadOnlyList<T>? list, string name)
        {
            if (list is not null && list.Count == 0) throw new ArgumentException($"{name} is empty; leave it null for the defaults.", name);
        }
        NonEmpty(Methods, nameof(Methods));
        NonEmpty(TargetModules, nameof(TargetModules));
        NonEmpty(InputSizes, nameof(InputSizes));
        if (Ranks is null || Ranks.Count == 0 || Ranks.Any(r => r < 1)) throw new ArgumentException("Ranks must hold ranks of at least 1.", nameof(Ranks));
        if (AlphaOverRank is null || AlphaOverRank.Count == 0 || AlphaOverRank.Any(a => !(a > 0) || !float.IsFinite(a)))
            throw new ArgumentException("AlphaOverRank must hold positive numbers.", nameof(AlphaOverRank));
        if (!(MinLearningRateFactor > 0) || !(MaxLearningRateFactor >= MinLearningRateFactor) || !float.IsFinite(MaxLearningRateFactor))
            throw new ArgumentException($"The learning-rate factors must satisfy 0 < {nameof(MinLearningRateFactor)} <= {nameof(MaxLearningRateFactor)}.", nameof(MinLearningRateFactor));
        if (MinEpochs < 1 || MaxEpochs < MinEpochs) throw new ArgumentException($"The epochs must satisfy 1 <= {nameof(MinEpochs)} <= {nameof(MaxEpochs)}.", nameof(MinEpochs));
        if (InputSizes is not null && InputSizes.Any(s => s < 3)) throw new ArgumentException("InputSizes must be at least 3.", nameof(InputSizes));
    }

    /// <summary>A stable text of the space, part of the trial log's fingerprint.</summary>
    internal static string Describe(IReadOnlyList<string> methods, IReadOnlyList<int> ranks, IReadOnlyList<float> alphas,
        IReadOnlyList<string> targets, float minFactor, float maxFactor, int minEpochs, int maxEpochs, IReadOnlyList<int> sizes) =>
        string.Join(";", new[]
        {
            string.Join(",", methods), string.Join(",", ranks), string.Join(",", alphas.Select(a => a.ToString("R", CultureInfo.InvariantCulture))),
            string.Join("|", targets), minFactor.ToString("R", CultureInfo.InvariantCulture), maxFactor.ToString("R", CultureInfo.InvariantCulture),
            minEpochs.ToString(CultureInfo.InvariantCulture), maxEpochs.ToString(CultureInfo.InvariantCulture), string.Join(",", sizes),
        });
}

/// <summary>The settings of one trial of a search.</summary>
/// <param name="Method">The method's name (<c>lora</c>, <c>ia3</c>...).</param>
/// <param name="Rank">LoRA rank (LoRA-type methods only; else null).</param>
/// <param name="Alpha">LoRA alpha (LoRA-type methods only; else null).</param>
/// <param name="TargetModules">Comma-separated target modules (LoRA-type methods on text only; else null).</param>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="Epochs">Epochs to train.</param>
/// <param name="InputSize">Sequence length (text) or image side (images).</param>
public sealed record PeftTrialParameters(string Method, int? Rank, float? Alpha, string? TargetModules, float LearningRate, int Epochs, int InputSize)
{
    /// <summary>The settings as name/value pairs, the ones that do not apply left out.</summary>
    public IReadOnlyList<(string Name, string Value)> ToPairs(string inputSizeName)
    {
        var pairs = new List<(string, string)> { ("method", Method) };
        if (Rank is int r) pairs.Add(("rank", r.ToString(CultureInfo.InvariantCulture)));
        if (Alpha is float a) pairs.Add(("alpha", a.ToString("0.##", CultureInfo.InvariantCulture)));
        if (TargetModules is not null) pairs.Add(("targets", TargetModules));
        pairs.Add(("learning rate", LearningRate.ToString("0.###E+0", CultureInfo.InvariantCulture)));
        pairs.Add(("epochs", Epochs.ToString(CultureInfo.InvariantCulture)));
        pairs.Add((inputSizeName, InputSize.ToString(CultureInfo.InvariantCulture)));
        return pairs;
    }

    /// <inheritdoc/>
    public override string ToString() => string.Join(", ", ToPairs("input size").Select(p => $"{p.Name} {p.Value}"));
}
