using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Small images made in memory for the image input tests.</summary>
internal static class ImageTestImages
{
    /// <summary>An RGB image whose pixel (x, y) is <paramref name="color"/>(x, y).</summary>
    public static Image<Rgb24> Rgb(int width, int height, Func<int, int, (byte R, byte G, byte B)> color)
    {
        var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var (r, g, b) = color(x, y);
                image[x, y] = new Rgb24(r, g, b);
            }
        return image;
    }

    /// <summary>The RGB24 bytes of an image, as <see cref="Inputs.Images.DecodedImage.Rgb"/> lays them out.</summary>
    public static byte[] RgbBytes(Image<Rgb24> image)
    {
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    /// <summary>A pattern with every pixel distinct enough to catch mix-ups of rows, columns and channels.</summary>
    public static (byte, byte, byte) Pattern(int x, int y) => ((byte)(x * 37 + y * 71), (byte)(x * 37 + y * 71 + 101), (byte)(x * 37 + y * 71 + 202));

    public static byte[] Encode(Image image, IImageEncoder encoder)
    {
        using var stream = new MemoryStream();
        image.Save(stream, encoder);
        return stream.ToArray();
    }

    public static byte[] Png(Image image) => Encode(image, new PngEncoder());

    /// <summary>Writes a PNG file of the pattern and returns its path.</summary>
    public static string WritePng(string path, int width, int height)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var image = Rgb(width, height, Pattern);
        File.WriteAllBytes(path, Png(image));
        return path;
    }

    public static string TempDirectory(string prefix)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }
}
