namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// A decoded image kept in memory between epochs: 8-bit RGB, interleaved (<c>R G B R G B ...</c>), row-major, top row
/// first, with no padding between rows. Alpha has already been composited on white and EXIF orientation applied.
/// </summary>
internal sealed class DecodedImage
{
    /// <summary>Wraps decoded pixels.</summary>
    /// <param name="width">Width in pixels (positive).</param>
    /// <param name="height">Height in pixels (positive).</param>
    /// <param name="rgb">RGB24 pixels, <c>width * height * 3</c> bytes; the array is kept, not copied.</param>
    /// <param name="source">What the image is, for messages (see <see cref="Source"/>).</param>
    public DecodedImage(int width, int height, byte[] rgb, string source)
    {
        ArgumentNullException.ThrowIfNull(rgb);
        ArgumentNullException.ThrowIfNull(source);
        if (width <= 0) throw new ArgumentOutOfRangeException(nameof(width), width, $"The image {source} has no width.");
        if (height <= 0) throw new ArgumentOutOfRangeException(nameof(height), height, $"The image {source} has no height.");
        if ((long)width * height * 3 != rgb.LongLength)
            throw new ArgumentException($"The image {source} is {width}x{height}, which takes {(long)width * height * 3} RGB bytes, but {rgb.LongLength} were given.", nameof(rgb));
        Width = width;
        Height = height;
        Rgb = rgb;
        Source = source;
    }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>Interleaved RGB24 pixels, row-major: pixel (x, y) channel c is at <c>(y * Width + x) * 3 + c</c>.</summary>
    public byte[] Rgb { get; }

    /// <summary>
    /// Where the image came from, worded to follow "The image" in a message: <c>'/data/cat.png'</c>,
    /// <c>in row 12 of column 'Image'</c>, or <c>'cat.png' (row 12 of column 'ImagePath')</c>.
    /// </summary>
    public string Source { get; }
}
