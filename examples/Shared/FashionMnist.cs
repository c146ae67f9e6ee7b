using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Microsoft.ML.Peft.Samples;

/// <summary>
/// Fashion-MNIST (Zalando's 28x28 grey images of clothing in 10 classes, 60,000 for training and 10,000 for testing)
/// read from its IDX files, and written out as PNG files in the layouts the image classification trainer reads.
/// Shared by the tests, the benchmark and the example (linked into each project).
/// </summary>
public static class FashionMnist
{
    /// <summary>The side of the square images, in pixels.</summary>
    public const int Side = 28;

    /// <summary>Where Debian's <c>dataset-fashion-mnist</c> package installs the files.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>The class names by label (0 to 9), made safe to use as folder names.</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
        ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"];

    /// <summary>
    /// Reads images and labels from <c>train-images-idx3-ubyte.gz</c> and <c>train-labels-idx1-ubyte.gz</c> (or the
    /// <c>t10k-</c> files for the test set) in <paramref name="directory"/>; the files may also be there uncompressed,
    /// without <c>.gz</c>.
    /// </summary>
    /// <param name="directory">The folder of the IDX files, such as <see cref="DefaultDirectory"/>.</param>
    /// <param name="train">The training set (60,000 images) when true, else the test set (10,000).</param>
    /// <param name="maxCount">Read at most this many images, the first ones.</param>
    /// <returns>Per image, 28 * 28 grey bytes, row-major (0, black, is the background); and per image its label, 0 to 9.</returns>
    /// <exception cref="FileNotFoundException">A file is missing; the message says how to install them.</exception>
    /// <exception cref="InvalidDataException">A file is not an IDX file of the expected kind, is truncated, or the counts disagree.</exception>
    public static (byte[][] Pixels, byte[] Labels) Read(string directory, bool train, int maxCount = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var prefix = train ? "train" : "t10k";
        var imagesPath = Locate(directory, $"{prefix}-images-idx3-ubyte");
        var labelsPath = Locate(directory, $"{prefix}-labels-idx1-ubyte");

        byte[] labels;
        int labelCount;
        using (var stream = Open(labelsPath))
        {
            var header = ReadExactly(stream, 8, labelsPath, "header");
            CheckMagic(header, 0x00000801, labelsPath);
            labelCount = CheckCount(BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4)), labelsPath);
            labels = ReadExactly(stream, Math.Min(labelCount, maxCount), labelsPath, "labels");
            foreach (var label in labels)
                if (label >= ClassNames.Count) throw new InvalidDataException($"The Fashion-MNIST file '{labelsPath}' holds the label {label}; labels are 0 to {ClassNames.Count - 1}.");
        }

        byte[][] pixels;
        using (var stream = Open(imagesPath))
        {
            var header = ReadExactly(stream, 16, imagesPath, "header");
            CheckMagic(header, 0x00000803, imagesPath);
            int count = CheckCount(BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4)), imagesPath);
            int rows = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(8));
            int columns = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(12));
            if (rows != Side || columns != Side)
                throw new InvalidDataException($"The Fashion-MNIST file '{imagesPath}' holds {rows}x{columns} images; {Side}x{Side} were expected.");
            if (count != labelCount)
                throw new InvalidDataException($"The Fashion-MNIST file '{imagesPath}' holds {count} images but '{labelsPath}' holds {labelCount} labels.");
            pixels = new byte[labels.Length][];
            for (int i = 0; i < pixels.Length; i++)
                pixels[i] = ReadExactly(stream, Side * Side, imagesPath, $"image {i}");
        }
        return (pixels, labels);
    }

    /// <summary>
    /// Writes the chosen images as 8-bit grey PNG files, one sub-folder per class (named by <see cref="ClassNames"/>),
    /// file names from the image's index (<c>00042.png</c>): the layout the CLI's <c>--dataset</c> reads.
    /// </summary>
    /// <param name="directory">The root folder; created if needed.</param>
    /// <param name="indices">Which images to write.</param>
    /// <param name="pixels">The images, as <see cref="Read"/> returns them.</param>
    /// <param name="labels">Their labels.</param>
    /// <returns>The paths written, in the order of <paramref name="indices"/>.</returns>
    public static IReadOnlyList<string> WriteClassFolders(string directory, IReadOnlyList<int> indices, byte[][] pixels, byte[] labels)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(indices);
        Directory.CreateDirectory(directory);
        var written = new List<string>(indices.Count);
        foreach (int index in indices)
        {
            var folder = Path.Combine(directory, ClassNames[labels[index]]);
            Directory.CreateDirectory(folder);
            var path = Path.Combine(folder, FileName(index));
            WritePng(path, pixels[index]);
            written.Add(path);
        }
        return written;
    }

    /// <summary>
    /// Writes the chosen images as PNG files into <c>images/</c> beside a TSV file listing, per line, the image's
    /// path relative to the TSV's folder, a tab, and its class name; the first line is the header <c>ImagePath\tLabel</c>.
    /// </summary>
    /// <param name="tsvPath">The TSV file to write; its folder is created if needed.</param>
    /// <param name="indices">Which images to write.</param>
    /// <param name="pixels">The images, as <see cref="Read"/> returns them.</param>
    /// <param name="labels">Their labels.</param>
    /// <param name="header">Whether to write the header line.</param>
    public static void WriteTsv(string tsvPath, IReadOnlyList<int> indices, byte[][] pixels, byte[] labels, bool header = true)
    {
        ArgumentNullException.ThrowIfNull(tsvPath);
        ArgumentNullException.ThrowIfNull(indices);
        var folder = Path.GetDirectoryName(Path.GetFullPath(tsvPath))!;
        var imageFolder = Path.Combine(folder, "images");
        Directory.CreateDirectory(imageFolder);
        var text = new StringBuilder();
        if (header) text.Append("ImagePath\tLabel\n");
        foreach (int index in indices)
        {
            var name = FileName(index);
            WritePng(Path.Combine(imageFolder, name), pixels[index]);
            text.Append(CultureInfo.InvariantCulture, $"images/{name}\t{ClassNames[labels[index]]}\n");
        }
        File.WriteAllText(tsvPath, text.ToString());
    }

    /// <summary>The PNG file holding one image: 28x28, 8-bit grey.</summary>
    public static byte[] EncodePng(byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.Length != Side * Side) throw new ArgumentException($"A Fashion-MNIST image has {Side * Side} pixels, not {pixels.Length}.", nameof(pixels));
        using var image = Image.LoadPixelData<L8>(pixels, Side, Side);
        using var stream = new MemoryStream();
        image.SaveAsPng(stream);
        return stream.ToArray();
    }

    private static string FileName(int index) => $"{index:D5}.png";

    private static void WritePng(string path, byte[] pixels) => File.WriteAllBytes(path, EncodePng(pixels));

    private static string Locate(string directory, string name)
    {
        var compressed = Path.Combine(directory, name + ".gz");
        if (File.Exists(compressed)) return compressed;
        var plain = Path.Combine(directory, name);
        if (File.Exists(plain)) return plain;
        throw new FileNotFoundException(
            $"The Fashion-MNIST file '{compressed}' does not exist. On Debian and Ubuntu, install the data set with " +
            $"'apt-get install dataset-fashion-mnist' (it goes to {DefaultDirectory}), or put the IDX files " +
            $"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in '{directory}'.",
            compressed);
    }

    private static Stream Open(string path)
    {
        var file = File.OpenRead(path);
        return path.EndsWith(".gz", StringComparison.Ordinal) ? new GZipStream(file, CompressionMode.Decompress) : file;
    }

    private static byte[] ReadExactly(Stream stream, int count, string path, string what)
    {
        var buffer = new byte[count];
        try
        {
            stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"The Fashion-MNIST file '{path}' is truncated: it ends within the {what}.", e);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"The Fashion-MNIST file '{path}' is not valid gzip data: {e.Message}", e);
        }
        return buffer;
    }

    private static void CheckMagic(byte[] header, int expected, string path)
    {
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != expected)
            throw new InvalidDataException($"The file '{path}' is not a Fashion-MNIST IDX file of this kind: it starts with 0x{magic:X8}, not 0x{expected:X8}.");
    }

    private static int CheckCount(int count, string path) =>
        count >= 0 ? count : throw new InvalidDataException($"The Fashion-MNIST file '{path}' gives a negative image count ({count}).");
}
