using Microsoft.ML.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// Turns encoded images (bytes, files) and ML.NET <see cref="MLImage"/> values into <see cref="DecodedImage"/>s:
/// 8-bit RGB, EXIF orientation applied, alpha composited on white, shrunk when larger than needed.
/// </summary>
/// <remarks>
/// <para>Formats: whatever ImageSharp reads (PNG, JPEG, GIF, BMP, TIFF, WebP, TGA, PBM). Every pixel format they
/// hold is converted to RGB: grey becomes three equal channels; 16-bit channels are scaled to 8 bits; palette images
/// are expanded; CMYK and YCCK JPEGs are converted to RGB. Of a multi-frame image (animated GIF, multi-page TIFF)
/// only the first frame is kept.</para>
/// <para>Transparency: a pixel with alpha <c>a</c> becomes <c>c * a / 255 + 255 * (1 - a / 255)</c>, that is, the
/// image is composited on a white background, which is what a viewer shows and what most classifiers were trained
/// on (PNG icons and product photos with a transparent background).</para>
/// <para>Size: when the shorter side is longer than <c>maxShorterSide</c>, the image is shrunk (aspect ratio kept,
/// antialiased bilinear, ImageSharp's triangle filter) so that its shorter side is <c>maxShorterSide</c>; it is never
/// enlarged. Giving the preprocessor's <see cref="ImagePreprocessor.ResizeSize"/> keeps the cache small without
/// losing anything the preprocessing would keep.</para>
/// </remarks>
internal static class ImageDecoder
{
    /// <summary>Decodes an encoded image (PNG, JPEG, ...).</summary>
    /// <param name="bytes">The encoded file's bytes.</param>
    /// <param name="source">What the image is, for messages: worded to follow "The image" (see <see cref="DecodedImage.Source"/>).</param>
    /// <param name="maxShorterSide">The longest the shorter side may be; a larger image is shrunk to it (positive; <see cref="int.MaxValue"/> keeps the size).</param>
    /// <exception cref="InvalidDataException">The bytes are empty, truncated, damaged, or not an image format that can be read; the message names <paramref name="source"/>.</exception>
    public static DecodedImage Decode(ReadOnlySpan<byte> bytes, string source, int maxShorterSide)
    {
        ArgumentNullException.ThrowIfNull(source);
        CheckMaxShorterSide(maxShorterSide);
        if (bytes.IsEmpty) throw new InvalidDataException($"The image {source} is empty (0 bytes).");

        Image<Rgba32> image;
        IImageFormat format;
        try
        {
            image = Image.Load<Rgba32>(bytes, out format);
        }
        catch (UnknownImageFormatException e)
        {
            throw new InvalidDataException(
                $"The image {source} ({bytes.Length} bytes, starting {Describe(bytes)}) is not in an image format that can be read: PNG, JPEG, GIF, BMP, TIFF, WebP, TGA or PBM were expected.", e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // InvalidImageContentException for damaged or truncated data, NotSupportedException for unsupported
            // variants of a format; decoders also let low-level exceptions through on some truncated inputs.
            throw new InvalidDataException($"The image {source} ({bytes.Length} bytes) is damaged, truncated or of an unsupported kind: {e.Message}", e);
        }

        using (image)
        {
            if (TruncationCheck.Problem(bytes, format) is { } problem)
                throw new InvalidDataException($"The image {source} ({bytes.Length} bytes) is {problem}.");
            while (image.Frames.Count > 1) image.Frames.RemoveFrame(1);
            try
            {
                image.Mutate(x => x.AutoOrient());
                if (Math.Min(image.Width, image.Height) > maxShorterSide)
                {
                    var (w, h) = ShrunkSize(image.Width, image.Height, maxShorterSide);
                    image.Mutate(x => x.Resize(w, h, KnownResamplers.Triangle));
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new InvalidDataException($"The image {source} could not be oriented or resized: {e.Message}", e);
            }

            var rgb = new byte[checked(image.Width * image.Height * 3)];
            image.ProcessPixelRows(accessor =>
            {
                for (int y = 0; y < accessor.Height; y++)
                {
                    var row = accessor.GetRowSpan(y);
                    var dst = rgb.AsSpan(y * accessor.Width * 3, accessor.Width * 3);
                    for (int x = 0; x < row.Length; x++)
                    {
                        var p = row[x];
                        if (p.A == 255)
                        {
                            dst[3 * x] = p.R;
                            dst[3 * x + 1] = p.G;
                            dst[3 * x + 2] = p.B;
                        }
                        else
                        {
                            dst[3 * x] = OnWhite(p.R, p.A);
                            dst[3 * x + 1] = OnWhite(p.G, p.A);
                            dst[3 * x + 2] = OnWhite(p.B, p.A);
                        }
                    }
                }
            });
            return new DecodedImage(image.Width, image.Height, rgb, source);
        }
    }

    /// <summary>Reads and decodes an image file.</summary>
    /// <param name="path">The file.</param>
    /// <param name="maxShorterSide">The longest the shorter side may be (see <see cref="Decode"/>).</param>
    /// <param name="source">What the image is, for messages; by default the path in quotes.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file cannot be read or decoded; the message names it.</exception>
    public static DecodedImage FromFile(string path, int maxShorterSide, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        source ??= $"'{path}'";
        if (Directory.Exists(path)) throw new FileNotFoundException($"The image {source} is a directory, not a file.", path);
        if (!File.Exists(path)) throw new FileNotFoundException($"The image file {source} does not exist.", path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"The image file {source} cannot be read: {e.Message}", e);
        }
        return Decode(bytes, source, maxShorterSide);
    }

    /// <summary>
    /// Converts an ML.NET image (as <c>mlContext.Transforms.LoadImages</c> gives) to RGB. Its pixels are 32-bit
    /// <see cref="MLPixelFormat.Bgra32"/> or <see cref="MLPixelFormat.Rgba32"/> with premultiplied alpha (SkiaSharp
    /// decodes to premultiplied alpha, and <see cref="MLImage.CreateFromPixels"/> stores premultiplied pixels), so
    /// compositing on white is <c>c + 255 - a</c>. ML.NET does not apply EXIF orientation when it loads images;
    /// neither can this, since the orientation is no longer known.
    /// </summary>
    /// <param name="image">The image; not disposed here.</param>
    /// <param name="source">What the image is, for messages.</param>
    /// <param name="maxShorterSide">The longest the shorter side may be (see <see cref="Decode"/>).</param>
    /// <exception cref="InvalidDataException">The image is disposed, empty, or in an unknown pixel format.</exception>
    public static DecodedImage FromMLImage(MLImage image, string source, int maxShorterSide)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(source);
        CheckMaxShorterSide(maxShorterSide);
        int width, height;
        MLPixelFormat format;
        ReadOnlySpan<byte> pixels;
        try
        {
            width = image.Width;
            height = image.Height;
            format = image.PixelFormat;
            pixels = image.Pixels;
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"The image {source} cannot be read (it was disposed before use): {e.Message}", e);
        }
        if (width <= 0 || height <= 0) throw new InvalidDataException($"The image {source} is empty ({width}x{height}).");
        int r, b;
        switch (format)
        {
            case MLPixelFormat.Bgra32: r = 2; b = 0; break;
            case MLPixelFormat.Rgba32: r = 0; b = 2; break;
            default: throw new InvalidDataException($"The image {source} has the pixel format {format}; Bgra32 or Rgba32 was expected.");
        }
        if (pixels.Length < (long)width * height * 4 || pixels.Length % height != 0)
            throw new InvalidDataException($"The image {source} is {width}x{height} but holds {pixels.Length} bytes of pixels; at least {(long)width * height * 4} were expected.");
        int stride = pixels.Length / height;

        var rgb = new byte[checked(width * height * 3)];
        for (int y = 0; y < height; y++)
        {
            var row = pixels.Slice(y * stride, width * 4);
            var dst = rgb.AsSpan(y * width * 3, width * 3);
            for (int x = 0; x < width; x++)
            {
                int a = row[4 * x + 3];
                int whiteShare = 255 - a;
                dst[3 * x] = (byte)Math.Min(255, row[4 * x + r] + whiteShare);
                dst[3 * x + 1] = (byte)Math.Min(255, row[4 * x + 1] + whiteShare);
                dst[3 * x + 2] = (byte)Math.Min(255, row[4 * x + b] + whiteShare);
            }
        }
        return Math.Min(width, height) > maxShorterSide ? Shrink(rgb, width, height, source, maxShorterSide) : new DecodedImage(width, height, rgb, source);
    }

    /// <summary>The size an image is shrunk to so that its shorter side is <paramref name="maxShorterSide"/>, aspect ratio kept (the longer side rounded).</summary>
    internal static (int Width, int Height) ShrunkSize(int width, int height, int maxShorterSide)
    {
        if (width <= height)
            return (maxShorterSide, Math.Max(maxShorterSide, (int)Math.Round((double)height * maxShorterSide / width, MidpointRounding.AwayFromZero)));
        return (Math.Max(maxShorterSide, (int)Math.Round((double)width * maxShorterSide / height, MidpointRounding.AwayFromZero)), maxShorterSide);
    }

    /// <summary>The image shrunk so that its shorter side is <paramref name="maxShorterSide"/> (antialiased bilinear).</summary>
    internal static DecodedImage Shrink(byte[] rgb, int width, int height, string source, int maxShorterSide)
    {
        var (w, h) = ShrunkSize(width, height, maxShorterSide);
        using var image = Image.LoadPixelData<Rgb24>(rgb, width, height);
        image.Mutate(x => x.Resize(w, h, KnownResamplers.Triangle));
        var shrunk = new byte[w * h * 3];
        image.CopyPixelDataTo(shrunk);
        return new DecodedImage(w, h, shrunk, source);
    }

    private static byte OnWhite(byte value, byte alpha) => (byte)((value * alpha + 255 * (255 - alpha) + 127) / 255);

    private static void CheckMaxShorterSide(int maxShorterSide)
    {
        if (maxShorterSide <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxShorterSide), maxShorterSide, "The largest shorter side kept for decoded images must be positive.");
    }

    private static string Describe(ReadOnlySpan<byte> bytes)
    {
        var head = bytes[..Math.Min(8, bytes.Length)];
        return "0x" + Convert.ToHexString(head);
    }
}
