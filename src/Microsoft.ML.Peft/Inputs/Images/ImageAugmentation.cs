namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// Random changes made to each training image every epoch, so that the model sees varied copies of a small data set.
/// Validation, test and prediction images are never augmented: they are resized and centre-cropped.
/// </summary>
public sealed class ImageAugmentation
{
    /// <summary>
    /// Whether each training image is a random crop (torchvision's <c>RandomResizedCrop</c>): a region covering
    /// between <see cref="MinCropScale"/> and all of the image's area, with an aspect ratio between 3/4 and 4/3, resized
    /// to the model's input size. When false, training images are resized and centre-cropped like the others.
    /// </summary>
    public bool RandomResizedCrop = true;

    /// <summary>
    /// The smallest share of the image's area that a random crop covers, in (0, 1]. Smaller values vary more but may
    /// crop out what shows the class; torchvision's default is 0.08, which suits large photos better than small images.
    /// </summary>
    public float MinCropScale = 0.35f;

    /// <summary>Whether each training image is mirrored left to right with probability one half. Turn it off when mirroring changes the class (text, digits, arrows).</summary>
    public bool HorizontalFlip = true;

    /// <summary>No augmentation: training images are resized and centre-cropped like the others. Each call returns a new instance.</summary>
    public static ImageAugmentation None => new() { RandomResizedCrop = false, HorizontalFlip = false };

    /// <summary>Whether anything random is done.</summary>
    internal bool IsEnabled => RandomResizedCrop || HorizontalFlip;

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="MinCropScale"/> is not in (0, 1].</exception>
    internal void Validate()
    {
        if (!(MinCropScale > 0 && MinCropScale <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinCropScale), MinCropScale, $"{nameof(ImageAugmentation)}.{nameof(MinCropScale)} must be in (0, 1].");
    }
}
