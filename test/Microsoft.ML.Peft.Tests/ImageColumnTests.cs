using Microsoft.ML.Data;
using Microsoft.ML.Peft.Inputs.Images;
using NUnit.Framework;
using SixLabors.ImageSharp.Formats.Jpeg;
using static Microsoft.ML.Peft.Tests.ImageTestImages;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The image column in its three forms (bytes, MLImage, path) through real ML.NET data views, and its errors.</summary>
[TestFixture]
public class ImageColumnTests
{
    private const string Option = "ImageColumnName";
    private string folder = null!;
    private MLContext ml = null!;

    private sealed class BytesRow
    {
        public byte[] Image { get; set; } = [];
    }

    private sealed class PathRow
    {
        public string Path { get; set; } = "";
    }

    private sealed class NumberRow
    {
        public float Image { get; set; }

        public float[] Pixels { get; set; } = [];
    }

    /// <summary>Images of different sizes and formats: (file name, width, height).</summary>
    private static readonly (string Name, int Width, int Height)[] Files = [("a.png", 5, 3), ("b.png", 2, 7), ("sub/c.png", 40, 30), ("d.png", 1, 1)];

    [OneTimeSetUp]
    public void SetUp()
    {
        ml = new MLContext(1);
        folder = TempDirectory("peft-image-column");
        foreach (var (name, width, height) in Files) WritePng(Path.Combine(folder, name), width, height);
    }

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(folder, recursive: true);

    private static List<DecodedImage> ReadAll(IDataView data, ImageColumn column, int maxShorterSide = 1000)
    {
        var images = new List<DecodedImage>();
        using var cursor = data.GetRowCursor([column.Column]);
        var getter = column.Getter(cursor, maxShorterSide);
        while (cursor.MoveNext()) images.Add(getter());
        return images;
    }

    private static void AssertPatterns(IReadOnlyList<DecodedImage> images, int maxShorterSide = 1000)
    {
        Assert.That(images, Has.Count.EqualTo(Files.Length));
        for (int i = 0; i < Files.Length; i++)
        {
            var (name, width, height) = Files[i];
            if (Math.Min(width, height) > maxShorterSide)
            {
                Assert.That(Math.Min(images[i].Width, images[i].Height), Is.EqualTo(maxShorterSide), name);
                continue;
            }
            using var expected = Rgb(width, height, Pattern);
            Assert.That((images[i].Width, images[i].Height), Is.EqualTo((width, height)), name);
            Assert.That(images[i].Rgb, Is.EqualTo(RgbBytes(expected)), name);
        }
    }

    /// <summary>ML.NET's <c>SchemaShape.Create</c>, internal to it, as every estimator's <c>Fit</c> calls it.</summary>
    private static SchemaShape ShapeOf(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic, [typeof(DataViewSchema)])!
            .Invoke(null, [schema])!;

    [Test]
    public void VariableSizeByteVectorsOfMixedSizes()
    {
        var rows = Files.Select(f => new BytesRow { Image = File.ReadAllBytes(Path.Combine(folder, f.Name)) }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var column = ImageColumn.Bind(data.Schema, "Image", Option, imageFolder: null);
        Assert.That(column.Kind, Is.EqualTo(ImageColumnKind.Bytes));
        Assert.That(column.Column.Type, Is.InstanceOf<VectorDataViewType>());
        AssertPatterns(ReadAll(data, column));
        var shrunk = ReadAll(data, column, maxShorterSide: 10);
        Assert.That((shrunk[2].Width, shrunk[2].Height), Is.EqualTo((13, 10)), "40x30 shrunk to a shorter side of 10");
        Assert.That(shrunk[2].Source, Is.EqualTo("in row 3 of column 'Image'"));
    }

    [Test]
    public void KnownSizeByteVectors()
    {
        var bytes = File.ReadAllBytes(Path.Combine(folder, "a.png"));
        var definition = SchemaDefinition.Create(typeof(BytesRow));
        definition["Image"].ColumnType = new VectorDataViewType(NumberDataViewType.Byte, bytes.Length);
        var data = ml.Data.LoadFromEnumerable([new BytesRow { Image = bytes }, new BytesRow { Image = bytes }], definition);
        Assert.That(((VectorDataViewType)data.Schema["Image"].Type).Size, Is.EqualTo(bytes.Length));
        var images = ReadAll(data, ImageColumn.Bind(data.Schema, "Image", Option, null));
        Assert.That(images.Select(i => (i.Width, i.Height)), Is.EqualTo(new[] { (5, 3), (5, 3) }));
    }

    [Test]
    public void RawImageBytesLoaderOutput()
    {
        var data = ml.Data.LoadFromEnumerable(Files.Select(f => new PathRow { Path = f.Name }).ToList());
        var loaded = ml.Transforms.LoadRawImageBytes("Image", folder, "Path").Fit(data).Transform(data);
        var column = ImageColumn.Bind(loaded.Schema, "Image", Option, null);
        Assert.That(column.Kind, Is.EqualTo(ImageColumnKind.Bytes));
        AssertPatterns(ReadAll(loaded, column));
    }

    [Test]
    public void MLImagesFromLoadImages()
    {
        var data = ml.Data.LoadFromEnumerable(Files.Select(f => new PathRow { Path = f.Name }).ToList());
        var loaded = ml.Transforms.LoadImages("Image", folder, "Path").Fit(data).Transform(data);
        var column = ImageColumn.Bind(loaded.Schema, "Image", Option, null);
        Assert.That(column.Kind, Is.EqualTo(ImageColumnKind.Image));
        AssertPatterns(ReadAll(loaded, column));
        AssertPatterns(ReadAll(loaded, column, maxShorterSide: 20), maxShorterSide: 20);
    }

    [Test]
    public void PathsRelativeToTheImageFolderAbsoluteOrToTheCurrentDirectory()
    {
        var relative = Files.Select(f => new PathRow { Path = f.Name }).ToList();
        var data = ml.Data.LoadFromEnumerable(relative);
        var column = ImageColumn.Bind(data.Schema, "Path", Option, folder);
        Assert.That(column.Kind, Is.EqualTo(ImageColumnKind.Path));
        AssertPatterns(ReadAll(data, column));

        var absolute = ml.Data.LoadFromEnumerable(Files.Select(f => new PathRow { Path = Path.Combine(folder, f.Name) }).ToList());
        AssertPatterns(ReadAll(absolute, ImageColumn.Bind(absolute.Schema, "Path", Option, "/nonexistent-folder")));

        var fromCurrent = ml.Data.LoadFromEnumerable(Files.Select(f => new PathRow { Path = Path.GetRelativePath(Environment.CurrentDirectory, Path.Combine(folder, f.Name)) }).ToList());
        AssertPatterns(ReadAll(fromCurrent, ImageColumn.Bind(fromCurrent.Schema, "Path", Option, null)));
    }

    [Test]
    public void MissingWrongAndEmptyImagesNameTheRowAndColumn()
    {
        var paths = ml.Data.LoadFromEnumerable(new[] { new PathRow { Path = "a.png" }, new PathRow { Path = "gone.png" } });
        var ex = Assert.Throws<FileNotFoundException>(() => ReadAll(paths, ImageColumn.Bind(paths.Schema, "Path", Option, folder)))!;
        Assert.That(ex.Message, Does.Contain("'gone.png'").And.Contain("row 2 of column 'Path'").And.Contain(folder));

        var emptyPath = ml.Data.LoadFromEnumerable(new[] { new PathRow { Path = " " } });
        Assert.That(Assert.Throws<InvalidDataException>(() => ReadAll(emptyPath, ImageColumn.Bind(emptyPath.Schema, "Path", Option, folder)))!.Message,
            Does.Contain("row 1 of column 'Path'").And.Contain("empty"));

        var good = File.ReadAllBytes(Path.Combine(folder, "a.png"));
        var bytes = ml.Data.LoadFromEnumerable(new[] { new BytesRow { Image = good }, new BytesRow { Image = good }, new BytesRow { Image = "GIF89a nonsense"u8.ToArray() } });
        var bad = Assert.Throws<InvalidDataException>(() => ReadAll(bytes, ImageColumn.Bind(bytes.Schema, "Image", Option, null)))!;
        Assert.That(bad.Message, Does.Contain("in row 3 of column 'Image'"));

        var cut = ml.Data.LoadFromEnumerable(new[] { new BytesRow { Image = good[..(good.Length / 2)] } });
        Assert.That(Assert.Throws<InvalidDataException>(() => ReadAll(cut, ImageColumn.Bind(cut.Schema, "Image", Option, null)))!.Message, Does.Contain("in row 1 of column 'Image'"));

        var empty = ml.Data.LoadFromEnumerable(new[] { new BytesRow { Image = good }, new BytesRow { Image = [] } });
        Assert.That(Assert.Throws<InvalidDataException>(() => ReadAll(empty, ImageColumn.Bind(empty.Schema, "Image", Option, null)))!.Message,
            Does.Contain("in row 2 of column 'Image'").And.Contain("0 bytes"));

        var images = ml.Transforms.LoadImages("Image", folder, "Path").Fit(paths).Transform(paths);
        var loadFailure = Assert.Catch(() => ReadAll(images, ImageColumn.Bind(images.Schema, "Image", Option, null)))!;
        Assert.That(loadFailure.Message, Does.Contain("row 2 of column 'Image'"), loadFailure.ToString());
    }

    [Test]
    public void ColumnsOfAnotherTypeOrMissingAreRefusedNamingTheOption()
    {
        var data = ml.Data.LoadFromEnumerable(new[] { new NumberRow { Image = 1, Pixels = [1, 2] } });
        var wrong = Assert.Throws<ArgumentException>(() => ImageColumn.Bind(data.Schema, "Image", Option, null))!;
        Assert.That(wrong.Message, Does.Contain("'Image'").And.Contain(Option).And.Contain("Single").And.Contain("LoadImages").And.Contain("vector of Byte").And.Contain("file path"));
        Assert.That(Assert.Throws<ArgumentException>(() => ImageColumn.Bind(data.Schema, "Pixels", Option, null))!.Message, Does.Contain("'Pixels'"));

        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ImageColumn.Bind(data.Schema, "Picture", Option, null))!;
        Assert.That(missing.Message, Does.Contain("'Picture'").And.Contain(Option).And.Contain("'Image'"));

        var shape = ShapeOf(data.Schema);
        Assert.That(Assert.Throws<ArgumentException>(() => ImageColumn.CheckShape(shape, "Image", Option))!.Message, Does.Contain("'Image'").And.Contain(Option));
        Assert.That(Assert.Throws<ArgumentException>(() => ImageColumn.CheckShape(shape, "Pixels", Option))!.Message, Does.Contain("vector of Single"));
        Assert.Throws<ArgumentOutOfRangeException>(() => ImageColumn.CheckShape(shape, "Picture", Option));
    }

    [Test]
    public void SchemaShapesOfTheThreeKindsPass()
    {
        var paths = ml.Data.LoadFromEnumerable(Files.Select(f => new PathRow { Path = f.Name }).ToList());
        var both = ml.Transforms.LoadImages("Image", folder, "Path").Append(ml.Transforms.LoadRawImageBytes("Bytes", folder, "Path"));
        var shape = both.GetOutputSchema(ShapeOf(paths.Schema));
        Assert.DoesNotThrow(() => ImageColumn.CheckShape(shape, "Image", Option));
        Assert.DoesNotThrow(() => ImageColumn.CheckShape(shape, "Bytes", Option));
        Assert.DoesNotThrow(() => ImageColumn.CheckShape(shape, "Path", Option));
        var bytes = ml.Data.LoadFromEnumerable(new[] { new BytesRow { Image = [1] } });
        Assert.DoesNotThrow(() => ImageColumn.CheckShape(ShapeOf(bytes.Schema), "Image", Option));
    }

    [Test]
    public void JpegBytesInAColumnDecode()
    {
        using var image = Rgb(20, 12, (x, y) => (120, 60, 30));
        var data = ml.Data.LoadFromEnumerable(new[] { new BytesRow { Image = Encode(image, new JpegEncoder { Quality = 95 }) } });
        var decoded = ReadAll(data, ImageColumn.Bind(data.Schema, "Image", Option, null)).Single();
        Assert.That((decoded.Width, decoded.Height), Is.EqualTo((20, 12)));
        Assert.That(Math.Abs(decoded.Rgb[0] - 120), Is.LessThanOrEqualTo(3));
    }
}
