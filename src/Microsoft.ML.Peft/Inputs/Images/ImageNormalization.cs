namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// How 8-bit pixels become a model's input values: channel <c>c</c> of the output is
/// <c>(byte * Scale - Mean[c]) / Std[c]</c>, with the channels in RGB order, or BGR when <see cref="Bgr"/>.
/// <see cref="Mean"/> and <see cref="Std"/> are in the model's channel order (BGR models give them as B, G, R).
/// </summary>
/// <param name="Bgr">Whether the model takes its channels as blue, green, red (Caffe-style) instead of red, green, blue.</param>
/// <param name="Scale">What a byte is multiplied by first (1/255 for inputs in [0, 1], 1 for [0, 255]).</param>
/// <param name="Mean">Per-channel value subtracted after scaling, three values in the model's channel order.</param>
/// <param name="Std">Per-channel divisor, three non-zero values in the model's channel order.</param>
internal sealed record ImageNormalization(bool Bgr, float Scale, float[] Mean, float[] Std)
{
    /// <summary>torchvision's ImageNet normalisation: RGB, scaled to [0, 1], mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).</summary>
    public static ImageNormalization ImageNet { get; } = new(false, 1f / 255f, [0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>Checks that there are three means and three non-zero, finite standard deviations.</summary>
    /// <exception cref="ArgumentException">They are not.</exception>
    public void Validate()
    {
        if (Mean is null || Mean.Length != 3) throw new ArgumentException($"The image normalisation needs 3 means (one per channel), not {Mean?.Length ?? 0}.");
        if (Std is null || Std.Length != 3) throw new ArgumentException($"The image normalisation needs 3 standard deviations (one per channel), not {Std?.Length ?? 0}.");
        if (!float.IsFinite(Scale) || Scale == 0) throw new ArgumentException($"The image normalisation's scale must be finite and non-zero, not {Scale}.");
        for (int c = 0; c < 3; c++)
        {
            if (!float.IsFinite(Mean[c])) throw new ArgumentException($"The image normalisation's mean of channel {c} is {Mean[c]}; it must be finite.");
            if (!float.IsFinite(Std[c]) || Std[c] == 0) throw new ArgumentException($"The image normalisation's standard deviation of channel {c} is {Std[c]}; it must be finite and non-zero.");
        }
    }
}
