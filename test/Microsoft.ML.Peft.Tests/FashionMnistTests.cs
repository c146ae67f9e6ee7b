using System.IO.Compression;
using Microsoft.ML.Peft.Cli;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Samples;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The shared Fashion-MNIST reader on the real files (Debian's dataset-fashion-mnist, in
/// <see cref="FashionMnist.DefaultDirectory"/>), its errors, and the PNG layouts it writes read back.
/// </summary>
[TestFixture]
public class FashionMnistTests
{
    private string temp = null!;

    [SetUp]
    public void SetUp() => temp = ImageTestImages.TempDirectory("peft-fashion-mnist");

    [TearDown]
    public void TearDown() => Directory.Delete(temp, recursive: true);

    [Test]
    public void ReadsTheFirstImagesOfBothSets()
    {
        var (train, trainLabels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 100);
        Assert.That(train, Has.Length.EqualTo(100));
        Assert.That(train.All(p => p.Length == 28 * 28));
        // The first labels and the first image's pixel sum, as the IDX files hold them.
        Assert.That(trainLabels.Take(12), Is.EqualTo(new byte[] { 9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9 }));
        Assert.That(train[0].Sum(b => b), Is.EqualTo(76247));
        Assert.That(Convert.ToHexString(train[0], 14 * 28, 28).ToLowerInvariant(), Is.EqualTo("000001040607020000000000ede2d9dfdedbdeddd8dfe5d7daff4d00"));
        Assert.That(trainLabels.Distinct().Count(), Is.EqualTo(10), "all classes among the first 100");

        var (test, testLabels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: false, maxCount: 100);
        Assert.That(testLabels.Take(12), Is.EqualTo(new byte[] { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5 }));
        Assert.That(test[0].Sum(b => b), Is.EqualTo(33456));
        Assert.That(FashionMnist.ClassNames[9], Is.EqualTo("Ankle_boot"));
        Assert.That(FashionMnist.ClassNames.All(n => n.IndexOfAny(Path.GetInvalidFileNameChars()) < 0 && !n.Contains(' ') && !n.Contains('/')));
    }

    [Test]
    public void ReadsTheWholeTestSet()
    {
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: false);
        Assert.That(pixels, Has.Length.EqualTo(10_000));
        Assert.That(labels.GroupBy(l => l).Select(g => g.Count()), Is.All.EqualTo(1000), "1,000 test images per class");
    }

    [Test]
    public void MissingAndBadFilesAreExplained()
    {
        var missing = Assert.Throws<FileNotFoundException>(() => FashionMnist.Read(temp, train: true))!;
        Assert.That(missing.Message, Does.Contain("apt-get install dataset-fashion-mnist").And.Contain(Path.Combine(temp, "train-images-idx3-ubyte.gz")));

        // Labels whole, images cut after 3 images: the count in the header says 10,000.
        File.Copy(Path.Combine(FashionMnist.DefaultDirectory, "t10k-labels-idx1-ubyte.gz"), Path.Combine(temp, "t10k-labels-idx1-ubyte.gz"));
        byte[] head;
        using (var source = new GZipStream(File.OpenRead(Path.Combine(FashionMnist.DefaultDirectory, "t10k-images-idx3-ubyte.gz")), CompressionMode.Decompress))
        {
            head = new byte[16 + 3 * 784];
            source.ReadExactly(head);
        }
        using (var target = new GZipStream(File.Create(Path.Combine(temp, "t10k-images-idx3-ubyte.gz")), CompressionLevel.Fastest))
            target.Write(head);
        Assert.That(FashionMnist.Read(temp, train: false, maxCount: 3).Pixels, Has.Length.EqualTo(3), "the first 3 are there");
        var truncated = Assert.Throws<InvalidDataException>(() => FashionMnist.Read(temp, train: false))!;
        Assert.That(truncated.Message, Does.Contain("truncated").And.Contain("t10k-images-idx3-ubyte.gz"));

        // Uncompressed files are read too.
        File.Delete(Path.Combine(temp, "t10k-images-idx3-ubyte.gz"));
        File.WriteAllBytes(Path.Combine(temp, "t10k-images-idx3-ubyte"), head);
        var (uncompressed, _) = FashionMnist.Read(temp, train: false, maxCount: 3);
        Assert.That(uncompressed[2], Is.EqualTo(head.AsSpan(16 + 2 * 784, 784).ToArray()));

        // A labels file in place of an images file is refused by its magic number (the .gz is taken first).
        File.Copy(Path.Combine(temp, "t10k-labels-idx1-ubyte.gz"), Path.Combine(temp, "t10k-images-idx3-ubyte.gz"));
        Assert.That(Assert.Throws<InvalidDataException>(() => FashionMnist.Read(temp, train: false))!.Message, Does.Contain("0x00000801"));
    }

    [Test]
    public void ClassFoldersRoundTripThroughTheDecoderAndTheDataset()
    {
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 40);
        var indices = Enumerable.Range(0, 40).Where(i => i % 2 == 0).ToList();
        var written = FashionMnist.WriteClassFolders(temp, indices, pixels, labels);
        Assert.That(written, Has.Count.EqualTo(indices.Count));
        for (int k = 0; k < indices.Count; k++)
        {
            int i = indices[k];
            Assert.That(written[k], Is.EqualTo(Path.Combine(temp, FashionMnist.ClassNames[labels[i]], $"{i:D5}.png")));
            var decoded = ImageDecoder.FromFile(written[k], 1000);
            Assert.That((decoded.Width, decoded.Height), Is.EqualTo((28, 28)));
            Assert.That(decoded.Rgb.Where((_, at) => at % 3 == 0), Is.EqualTo(pixels[i]), $"image {i}: red channel");
            Assert.That(decoded.Rgb.Chunk(3).All(p => p[0] == p[1] && p[1] == p[2]), $"image {i}: grey");
        }

        var dataset = ImageDataset.Read(temp, "--dataset");
        Assert.That(dataset.Rows, Has.Count.EqualTo(indices.Count));
        Assert.That(dataset.Classes, Is.EqualTo(indices.Select(i => FashionMnist.ClassNames[labels[i]]).Distinct().OrderBy(n => n, StringComparer.Ordinal)));
        foreach (var row in dataset.Rows)
            Assert.That(row.Label, Is.EqualTo(FashionMnist.ClassNames[labels[int.Parse(Path.GetFileNameWithoutExtension(row.ImagePath), System.Globalization.CultureInfo.InvariantCulture)]]));
    }

    [Test]
    public void TsvRoundTripsThroughTheDataset()
    {
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: false, maxCount: 12);
        var tsv = Path.Combine(temp, "set", "test.tsv");
        FashionMnist.WriteTsv(tsv, Enumerable.Range(0, 12).ToList(), pixels, labels);
        Assert.That(File.ReadLines(tsv).First(), Is.EqualTo("ImagePath\tLabel"));
        var dataset = ImageDataset.Read(tsv, "--dataset");
        Assert.That(dataset.Rows.Select(r => r.Label), Is.EqualTo(labels.Select(l => FashionMnist.ClassNames[l])));
        var decoded = ImageDecoder.FromFile(dataset.Rows[5].ImagePath, 1000);
        Assert.That(decoded.Rgb.Where((_, at) => at % 3 == 1), Is.EqualTo(pixels[5]));
    }
}
