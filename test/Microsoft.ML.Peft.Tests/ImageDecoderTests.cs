using Microsoft.ML.Data;
using Microsoft.ML.Peft.Inputs.Images;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using static Microsoft.ML.Peft.Tests.ImageTestImages;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Decoding of every pixel format and file format to RGB24, orientation, transparency, shrinking and errors.</summary>
[TestFixture]
public class ImageDecoderTests
{
    private static void AssertPixel(DecodedImage image, int x, int y, int r, int g, int b, int tolerance = 0)
    {
        int at = (y * image.Width + x) * 3;
        var actual = (image.Rgb[at], image.Rgb[at + 1], image.Rgb[at + 2]);
        Assert.That(Math.Abs(actual.Item1 - r) <= tolerance && Math.Abs(actual.Item2 - g) <= tolerance && Math.Abs(actual.Item3 - b) <= tolerance,
            $"pixel ({x}, {y}) is {actual}, expected ({r}, {g}, {b}) within {tolerance}");
    }

    [Test]
    public void RgbPngDecodesExactly()
    {
        using var image = Rgb(5, 3, Pattern);
        var decoded = ImageDecoder.Decode(Png(image), "'test.png'", 100);
        Assert.That((decoded.Width, decoded.Height, decoded.Source), Is.EqualTo((5, 3, "'test.png'")));
        Assert.That(decoded.Rgb, Is.EqualTo(RgbBytes(image)));
    }

    [TestCase("bmp")]
    [TestCase("gif")]
    [TestCase("tiff")]
    [TestCase("webp")]
    public void LosslessFormatsDecodeExactly(string format)
    {
        // Two colours only, so that the GIF palette holds them exactly.
        using var image = Rgb(6, 4, (x, y) => x < 3 ? ((byte)200, (byte)30, (byte)90) : ((byte)10, (byte)220, (byte)140));
        IImageEncoder encoder = format switch
        {
            "bmp" => new BmpEncoder(),
            "gif" => new GifEncoder(),
            "tiff" => new TiffEncoder(),
            _ => new WebpEncoder { FileFormat = WebpFileFormatType.Lossless },
        };
        var decoded = ImageDecoder.Decode(Encode(image, encoder), "x", 100);
        Assert.That(decoded.Rgb, Is.EqualTo(RgbBytes(image)), format);
    }

    [Test]
    public void GreyBecomesThreeEqualChannels()
    {
        using var grey = new Image<L8>(4, 2);
        for (int x = 0; x < 4; x++) { grey[x, 0] = new L8((byte)(x * 60)); grey[x, 1] = new L8((byte)(255 - x)); }
        var decoded = ImageDecoder.Decode(Png(grey), "x", 100);
        for (int x = 0; x < 4; x++)
        {
            AssertPixel(decoded, x, 0, x * 60, x * 60, x * 60);
            AssertPixel(decoded, x, 1, 255 - x, 255 - x, 255 - x);
        }
    }

    [Test]
    public void SixteenBitPngIsScaledToEightBits()
    {
        using var image = new Image<Rgb48>(3, 1);
        image[0, 0] = new Rgb48(65535, 0, 32896);
        image[1, 0] = new Rgb48(257 * 10, 257 * 20, 257 * 30);
        image[2, 0] = new Rgb48(0, 65535, 0);
        var bytes = Encode(image, new PngEncoder { BitDepth = PngBitDepth.Bit16, ColorType = PngColorType.Rgb });
        var decoded = ImageDecoder.Decode(bytes, "x", 100);
        AssertPixel(decoded, 0, 0, 255, 0, 128);
        AssertPixel(decoded, 1, 0, 10, 20, 30);
        AssertPixel(decoded, 2, 0, 0, 255, 0);

        using var grey16 = new Image<L16>(1, 1);
        grey16[0, 0] = new L16(257 * 77);
        AssertPixel(ImageDecoder.Decode(Encode(grey16, new PngEncoder { BitDepth = PngBitDepth.Bit16, ColorType = PngColorType.Grayscale }), "x", 100), 0, 0, 77, 77, 77);
    }

    [Test]
    public void PalettePngIsExpanded()
    {
        using var image = Rgb(4, 4, (x, y) => (x + y) % 2 == 0 ? ((byte)255, (byte)0, (byte)0) : ((byte)0, (byte)0, (byte)255));
        var bytes = Encode(image, new PngEncoder { ColorType = PngColorType.Palette });
        Assert.That(bytes[25], Is.EqualTo(3), "PNG colour type 3 (palette) was written");
        Assert.That(ImageDecoder.Decode(bytes, "x", 100).Rgb, Is.EqualTo(RgbBytes(image)));
    }

    [Test]
    public void TransparencyIsCompositedOnWhite()
    {
        using var image = new Image<Rgba32>(4, 1);
        image[0, 0] = new Rgba32(255, 0, 0, 255);  // opaque: unchanged
        image[1, 0] = new Rgba32(255, 0, 0, 0);    // transparent: white
        image[2, 0] = new Rgba32(255, 0, 0, 128);  // half: 255 * 127 / 255 of white added
        image[3, 0] = new Rgba32(0, 0, 0, 51);     // 20 % black on white: 204
        var decoded = ImageDecoder.Decode(Png(image), "x", 100);
        AssertPixel(decoded, 0, 0, 255, 0, 0);
        AssertPixel(decoded, 1, 0, 255, 255, 255);
        AssertPixel(decoded, 2, 0, 255, 127, 127);
        AssertPixel(decoded, 3, 0, 204, 204, 204);
    }

    [Test]
    public void JpegRgbAndGreyDecodeClosely()
    {
        using var image = Rgb(16, 16, (x, y) => (200, 100, 50));
        AssertPixel(ImageDecoder.Decode(Encode(image, new JpegEncoder { Quality = 95 }), "x", 100), 7, 7, 200, 100, 50, tolerance: 3);

        using var grey = new Image<L8>(16, 16, new L8(90));
        var bytes = Encode(grey, new JpegEncoder { Quality = 95, ColorType = JpegColorType.Luminance });
        var decoded = ImageDecoder.Decode(bytes, "x", 100);
        AssertPixel(decoded, 3, 12, 90, 90, 90, tolerance: 1);
        Assert.That(decoded.Rgb.Chunk(3).All(p => p[0] == p[1] && p[1] == p[2]), "grey JPEG gives three equal channels");
    }

    [Test]
    public void CmykJpegIsConvertedToRgb()
    {
        // ImageSharp 2.1 cannot write CMYK JPEGs: Assets/images/make_cmyk_jpeg.py wrote this one with Pillow
        // (Adobe-inverted CMYK, as Photoshop writes): left half RGB (220, 40, 40), right half RGB (30, 60, 200).
        var bytes = File.ReadAllBytes(Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "images", "cmyk.jpg"));
        int sof = IndexOfMarker(bytes, 0xC0);
        Assert.That(sof, Is.GreaterThan(0), "baseline SOF0 marker");
        Assert.That(bytes[sof + 9], Is.EqualTo(4), "the file is CMYK: its SOF0 declares 4 components");
        var decoded = ImageDecoder.Decode(bytes, "x", 100);
        Assert.That((decoded.Width, decoded.Height), Is.EqualTo((16, 16)));
        AssertPixel(decoded, 2, 8, 220, 40, 40, tolerance: 3);
        AssertPixel(decoded, 13, 8, 30, 60, 200, tolerance: 3);
    }

    private static int IndexOfMarker(byte[] bytes, byte marker)
    {
        for (int i = 0; i + 1 < bytes.Length; i++) if (bytes[i] == 0xFF && bytes[i + 1] == marker) return i;
        return -1;
    }

    [Test]
    public void ExifOrientationIsApplied()
    {
        // 2 wide, 3 high, stored unrotated with orientation 6: the viewer turns it 90 degrees clockwise.
        using var image = Rgb(2, 3, Pattern);
        image.Metadata.ExifProfile = new ExifProfile();
        image.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
        var decoded = ImageDecoder.Decode(Encode(image, new JpegEncoder { Quality = 100, ColorType = JpegColorType.YCbCrRatio444 }), "x", 100);
        Assert.That((decoded.Width, decoded.Height), Is.EqualTo((3, 2)));

        using var png = Rgb(2, 3, Pattern);
        png.Metadata.ExifProfile = new ExifProfile();
        png.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
        var exact = ImageDecoder.Decode(Png(png), "x", 100);
        Assert.That((exact.Width, exact.Height), Is.EqualTo((3, 2)), "PNG eXIf orientation");
        // Turned clockwise: the stored top-left pixel is now top-right, the stored bottom-left is now top-left.
        var (r, g, b) = Pattern(0, 0);
        AssertPixel(exact, 2, 0, r, g, b);
        (r, g, b) = Pattern(0, 2);
        AssertPixel(exact, 0, 0, r, g, b);
    }

    [Test]
    public void LargeImagesAreShrunkToTheShorterSideNeverEnlarged()
    {
        using var wide = Rgb(40, 20, (x, y) => (10, 120, 250));
        var shrunk = ImageDecoder.Decode(Png(wide), "x", 10);
        Assert.That((shrunk.Width, shrunk.Height), Is.EqualTo((20, 10)));
        Assert.That(shrunk.Rgb.Chunk(3).All(p => p[0] == 10 && p[1] == 120 && p[2] == 250), "a uniform image stays uniform");

        using var tall = Rgb(30, 71, Pattern);
        var tallShrunk = ImageDecoder.Decode(Png(tall), "x", 15);
        Assert.That((tallShrunk.Width, tallShrunk.Height), Is.EqualTo((15, 36)), "71 * 15 / 30 = 35.5 rounds to 36");

        using var small = Rgb(8, 9, Pattern);
        var kept = ImageDecoder.Decode(Png(small), "x", 10);
        Assert.That((kept.Width, kept.Height), Is.EqualTo((8, 9)));
        Assert.That(kept.Rgb, Is.EqualTo(RgbBytes(small)));
        Assert.That(ImageDecoder.Decode(Png(small), "x", 8).Rgb, Is.EqualTo(RgbBytes(small)), "a shorter side equal to the limit is kept");
    }

    [Test]
    public void EmptyGarbageAndTruncatedBytesNameTheSource()
    {
        var empty = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode([], "in row 3 of column 'Image'", 100))!;
        Assert.That(empty.Message, Does.Contain("in row 3 of column 'Image'").And.Contain("empty"));

        var garbage = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode("this is not an image at all"u8, "'notes.png'", 100))!;
        Assert.That(garbage.Message, Does.Contain("'notes.png'").And.Contain("not in an image format"));

        using var image = Rgb(64, 64, Pattern);
        var encoded = new[]
        {
            ("png", Png(image)),
            ("jpeg", Encode(image, new JpegEncoder())),
            ("progressive-free 4:2:0 jpeg", Encode(image, new JpegEncoder { Quality = 50, ColorType = JpegColorType.YCbCrRatio420 })),
            ("gif", Encode(image, new GifEncoder())),
            ("bmp", Encode(image, new BmpEncoder())),
            ("webp", Encode(image, new WebpEncoder { FileFormat = WebpFileFormatType.Lossless })),
            ("tiff", Encode(image, new TiffEncoder())),
        };
        var accepted = new List<string>();
        foreach (var (name, bytes) in encoded)
        {
            // Pixel data cut short at three points (for a JPEG, also just its end marker); then the header alone.
            var lengths = name.Contains("jpeg") ? new[] { bytes.Length - 2, bytes.Length * 7 / 8, bytes.Length / 2, 40 } : new[] { bytes.Length * 7 / 8, bytes.Length / 2, 40 };
            foreach (int length in lengths)
            {
                try
                {
                    ImageDecoder.Decode(bytes.AsSpan(0, length), $"'cut.{name}'", 100);
                    accepted.Add($"{name} cut to {length} of {bytes.Length} bytes");
                }
                catch (InvalidDataException ex)
                {
                    Assert.That(ex.Message, Does.Contain($"'cut.{name}'"));
                }
            }
        }
        Assert.That(accepted, Is.Empty, "truncated images decoded without an error");

        // Bytes after the end of a whole JPEG (as some cameras append) are no truncation.
        var jpeg = Encode(image, new JpegEncoder());
        Assert.That(ImageDecoder.Decode([.. jpeg, 1, 2, 3, 4], "x", 100).Width, Is.EqualTo(64));
    }

    [Test]
    public void FilesAreReadAndMissingOnesNamed()
    {
        var dir = TempDirectory("peft-decoder");
        try
        {
            var path = WritePng(Path.Combine(dir, "a.png"), 3, 2);
            var decoded = ImageDecoder.FromFile(path, 100);
            Assert.That(decoded.Source, Is.EqualTo($"'{path}'"));
            using (var expected = Rgb(3, 2, Pattern)) Assert.That(decoded.Rgb, Is.EqualTo(RgbBytes(expected)));

            var missing = Path.Combine(dir, "missing.png");
            var ex = Assert.Throws<FileNotFoundException>(() => ImageDecoder.FromFile(missing, 100))!;
            Assert.That(ex.Message, Does.Contain(missing));
            Assert.That(Assert.Throws<FileNotFoundException>(() => ImageDecoder.FromFile(dir, 100))!.Message, Does.Contain("directory"));

            var zero = Path.Combine(dir, "zero.jpg");
            File.WriteAllBytes(zero, []);
            Assert.That(Assert.Throws<InvalidDataException>(() => ImageDecoder.FromFile(zero, 100))!.Message, Does.Contain(zero).And.Contain("empty"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void MLImagesOfBothPixelFormatsAreConverted()
    {
        // Two pixels: opaque (10, 20, 30) and premultiplied half-transparent red (128, 0, 0, a = 128).
        using var bgra = MLImage.CreateFromPixels(2, 1, MLPixelFormat.Bgra32, new byte[] { 30, 20, 10, 255, 0, 0, 128, 128 });
        var fromBgra = ImageDecoder.FromMLImage(bgra, "in row 1 of column 'Image'", 100);
        Assert.That(fromBgra.Rgb, Is.EqualTo(new byte[] { 10, 20, 30, 255, 127, 127 }));

        using var rgba = MLImage.CreateFromPixels(2, 1, MLPixelFormat.Rgba32, new byte[] { 10, 20, 30, 255, 128, 0, 0, 128 });
        Assert.That(ImageDecoder.FromMLImage(rgba, "x", 100).Rgb, Is.EqualTo(new byte[] { 10, 20, 30, 255, 127, 127 }));

        var pixels = new byte[40 * 20 * 4];
        for (int i = 0; i < pixels.Length; i += 4) { pixels[i] = 1; pixels[i + 1] = 2; pixels[i + 2] = 3; pixels[i + 3] = 255; }
        using var large = MLImage.CreateFromPixels(40, 20, MLPixelFormat.Rgba32, pixels);
        var shrunk = ImageDecoder.FromMLImage(large, "x", 5);
        Assert.That((shrunk.Width, shrunk.Height), Is.EqualTo((10, 5)));
        Assert.That(shrunk.Rgb.Chunk(3).All(p => p[0] == 1 && p[1] == 2 && p[2] == 3));

        var disposed = MLImage.CreateFromPixels(1, 1, MLPixelFormat.Rgba32, new byte[4]);
        disposed.Dispose();
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDecoder.FromMLImage(disposed, "in row 9 of column 'I'", 5))!.Message, Does.Contain("row 9"));
    }
}
