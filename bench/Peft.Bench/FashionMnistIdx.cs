using System.Buffers.Binary;
using System.IO.Compression;

namespace Peft.Bench;

/// <summary>
/// A minimal reader of Fashion-MNIST's gzipped IDX files (Debian's dataset-fashion-mnist installs them in
/// /usr/share/datasets/fashion-mnist): {train,t10k}-images-idx3-ubyte.gz (magic 0x00000803, count, rows, columns, then
/// one byte per pixel, row-major, 0 = the black background) and {train,t10k}-labels-idx1-ubyte.gz (magic 0x00000801, count,
/// then one byte per label, 0..9); every integer of the header is big-endian.
/// Kept apart from the benchmark so that a shared Fashion-MNIST helper can replace it: <see cref="ImageComparison"/>
/// only uses <see cref="Read"/>, <see cref="ClassNames"/> and <see cref="FashionMnistSet"/>.
/// </summary>
internal static class FashionMnistIdx
{
    /// <summary>The data set's ten classes, by label value.</summary>
    public static readonly string[] ClassNames =
        { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };

    /// <summary>Reads the <paramref name="split"/> ("train" or "t10k") images and labels of the folder.</summary>
    public static FashionMnistSet Read(string folder, string split)
    {
        var imagesPath = Path.Combine(folder, $"{split}-images-idx3-ubyte.gz");
        var labelsPath = Path.Combine(folder, $"{split}-labels-idx1-ubyte.gz");
        foreach (var path in new[] { imagesPath, labelsPath })
            if (!File.Exists(path))
                throw new FileNotFoundException($"The Fashion-MNIST file {path} does not exist; install Debian's dataset-fashion-mnist or pass the folder with --data.", path);

        var images = Decompress(imagesPath);
        if (images.Length < 16 || BinaryPrimitives.ReadInt32BigEndian(images) != 0x00000803)
            throw new InvalidDataException($"{imagesPath} is not an IDX file of unsigned bytes in 3 dimensions (magic 0x00000803).");
        int count = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(4));
        int height = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(8));
        int width = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(12));
        if (count <= 0 || height <= 0 || width <= 0 || images.Length != 16 + (long)count * height * width)
            throw new InvalidDataException($"{imagesPath}: the header says {count} images of {height}x{width}, but the file holds {images.Length - 16} pixel bytes.");

        var labels = Decompress(labelsPath);
        if (labels.Length < 8 || BinaryPrimitives.ReadInt32BigEndian(labels) != 0x00000801)
            throw new InvalidDataException($"{labelsPath} is not an IDX file of unsigned bytes in 1 dimension (magic 0x00000801).");
        int labelCount = BinaryPrimitives.ReadInt32BigEndian(labels.AsSpan(4));
        if (labelCount != count || labels.Length != 8 + labelCount)
            throw new InvalidDataException($"{labelsPath} holds {labels.Length - 8} labels (header: {labelCount}); {imagesPath} holds {count} images.");
        var labelValues = labels.AsSpan(8).ToArray();
        int bad = Array.FindIndex(labelValues, l => l >= ClassNames.Length);
        if (bad >= 0) throw new InvalidDataException($"{labelsPath}: label {labelValues[bad]} at index {bad} is not a class 0..{ClassNames.Length - 1}.");
        return new FashionMnistSet(images.AsMemory(16), labelValues, height, width);
    }

    private static byte[] Decompress(string path)
    {
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var memory = new MemoryStream();
        gzip.CopyTo(memory);
        return memory.ToArray();
    }
}

/// <summary>Images of one Fashion-MNIST file: <see cref="Count"/> grey images of <see cref="Height"/> x <see cref="Width"/> bytes, and their labels 0..9.</summary>
internal sealed class FashionMnistSet(ReadOnlyMemory<byte> pixels, byte[] labels, int height, int width)
{
    public int Count => labels.Length;
    public int Height => height;
    public int Width => width;

    /// <summary>The class (0..9) of image <paramref name="index"/>.</summary>
    public int Label(int index) => labels[index];

    /// <summary>Image <paramref name="index"/>'s pixels, row-major, one byte each (0 = background).</summary>
    public ReadOnlySpan<byte> Pixels(int index) => pixels.Span.Slice(index * height * width, height * width);
}
