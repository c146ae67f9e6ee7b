using Microsoft.ML.Peft.Cli;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The CLI's image data sources: class folders, TSV files and flat folders, and each bad layout's error.</summary>
[TestFixture]
public class ImageDatasetTests
{
    private const string Option = "--dataset";
    private string root = null!;

    [SetUp]
    public void SetUp() => root = ImageTestImages.TempDirectory("peft-image-dataset");

    [TearDown]
    public void TearDown() => Directory.Delete(root, recursive: true);

    /// <summary>Creates files (content irrelevant here) under the root; returns the root-joined path of the first.</summary>
    private string Touch(params string[] relativePaths)
    {
        foreach (var relative in relativePaths)
        {
            var path = Path.Combine(root, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, [1, 2, 3]);
        }
        return Path.Combine(root, relativePaths[0]);
    }

    private string Tsv(string name, params string[] lines)
    {
        var path = Path.Combine(root, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    [Test]
    public void ClassFoldersGiveSortedRowsLabelledByFolder()
    {
        Touch("data/dogs/b.JPG", "data/dogs/a.png", "data/dogs/nested/c.webp", "data/cats/z.jpeg", "data/cats/readme.txt",
            "data/cats/.hidden.png", "data/.cache/x.png", "data/birds/img.TIFF", "data/birds/img2.bmp", "data/birds/img3.gif", "data/birds/img4.tif");
        var dataset = ImageDataset.Read(Path.Combine(root, "data"), Option);
        Assert.That(dataset.Layout, Is.EqualTo(ImageDatasetLayout.ClassFolders));
        Assert.That(dataset.HasLabels);
        Assert.That(dataset.Classes, Is.EqualTo(new[] { "birds", "cats", "dogs" }));
        var data = Path.Combine(root, "data");
        Assert.That(dataset.Rows.Select(r => (Path.GetRelativePath(data, r.ImagePath), r.Label)), Is.EqualTo(new[]
        {
            ("birds/img.TIFF", "birds"), ("birds/img2.bmp", "birds"), ("birds/img3.gif", "birds"), ("birds/img4.tif", "birds"),
            ("cats/z.jpeg", "cats"),
            ("dogs/a.png", "dogs"), ("dogs/b.JPG", "dogs"), ("dogs/nested/c.webp", "dogs"),
        }));
        Assert.That(dataset.Rows.All(r => Path.IsPathRooted(r.ImagePath)));
        Assert.That(dataset.Description, Does.Contain(Option));
    }

    [Test]
    public void TsvWithOrWithoutHeaderResolvesPathsAgainstItsFolder()
    {
        var absolute = Touch("lists/img/one.png", "lists/img/two.jpg", "elsewhere/three.png");
        var third = Path.Combine(root, "elsewhere", "three.png");
        foreach (var header in new[] { "ImagePath\tLabel", null })
        {
            var lines = new List<string>();
            if (header is not null) lines.Add(header);
            lines.AddRange(["img/one.png\tshirt", "", $"img/two.jpg\tshoe", $"{third}\tshirt"]);
            var path = Tsv("lists/train.tsv", [.. lines]);
            var dataset = ImageDataset.Read(path, Option);
            Assert.That(dataset.Layout, Is.EqualTo(ImageDatasetLayout.Tsv));
            Assert.That(dataset.Rows.Select(r => (r.ImagePath, r.Label)), Is.EqualTo(new[] { (absolute, "shirt"), (Path.Combine(root, "lists/img/two.jpg"), "shoe"), (third, "shirt") }), header ?? "no header");
            Assert.That(dataset.Classes, Is.EqualTo(new[] { "shirt", "shoe" }));
        }
        // A byte-order mark and Windows line ends are read too.
        File.WriteAllText(Path.Combine(root, "lists/bom.tsv"), "\uFEFFpath\tlabel\r\nimg/one.png\ta\r\nimg/two.jpg\tb\r\n", new System.Text.UTF8Encoding(true));
        Assert.That(ImageDataset.Read(Path.Combine(root, "lists/bom.tsv"), Option).Rows.Select(r => r.Label), Is.EqualTo(new[] { "a", "b" }));
    }

    [Test]
    public void MissingPathIsNamed()
    {
        var missing = Path.Combine(root, "nope");
        var ex = Assert.Throws<FileNotFoundException>(() => ImageDataset.Read(missing, Option))!;
        Assert.That(ex.Message, Does.Contain(missing).And.Contain(Option));
        Assert.Throws<FileNotFoundException>(() => ImageDataset.ReadForPrediction(missing, "--dataset"));
        Assert.Throws<ArgumentException>(() => ImageDataset.Read(" ", Option));
    }

    [Test]
    public void FolderWithoutClassFoldersIsRefusedForTraining()
    {
        Directory.CreateDirectory(Path.Combine(root, "empty"));
        var empty = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(Path.Combine(root, "empty"), Option))!;
        Assert.That(empty.Message, Does.Contain("empty").And.Contain("no class sub-folders"));

        Touch("flat/a.png", "flat/b.png");
        var flat = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(Path.Combine(root, "flat"), Option))!;
        Assert.That(flat.Message, Does.Contain("flat").And.Contain("2 images but no class sub-folders"));
    }

    [Test]
    public void SingleClassIsRefusedForTraining()
    {
        Touch("one/cats/a.png");
        var ex = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(Path.Combine(root, "one"), Option))!;
        Assert.That(ex.Message, Does.Contain("single class folder ('cats')"));

        Touch("x.png");
        var tsv = Tsv("single.tsv", "x.png\tcat", "x.png\tcat");
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.Read(tsv, Option))!.Message, Does.Contain("single label ('cat')"));
    }

    [Test]
    public void EmptyClassFolderIsNamed()
    {
        Touch("data/cats/a.png", "data/dogs/notes.txt");
        var ex = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(Path.Combine(root, "data"), Option))!;
        Assert.That(ex.Message, Does.Contain("'dogs'").And.Contain("no image files"));
    }

    [Test]
    public void ImagesBesideClassFoldersAreRefused()
    {
        Touch("data/cats/a.png", "data/dogs/b.png", "data/stray.png");
        var ex = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(Path.Combine(root, "data"), Option))!;
        Assert.That(ex.Message, Does.Contain("'stray.png'").And.Contain("beside its class sub-folders"));
    }

    [Test]
    public void TsvLineWithWrongFieldCountIsNamedByNumber()
    {
        Touch("a.png", "b.png");
        var tsv = Tsv("bad.tsv", "path\tlabel", "a.png\tx", "b.png\ty\textra");
        var ex = Assert.Throws<InvalidDataException>(() => ImageDataset.Read(tsv, Option))!;
        Assert.That(ex.Message, Does.Contain("Line 3").And.Contain("3 tab-separated fields").And.Contain("bad.tsv"));

        var noLabel = Tsv("nolabel.tsv", "a.png\tx", "b.png");
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.Read(noLabel, Option))!.Message, Does.Contain("Line 2").And.Contain("1 tab-separated field"));

        var emptyLabel = Tsv("emptylabel.tsv", "a.png\tx", "b.png\t ");
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.Read(emptyLabel, Option))!.Message, Does.Contain("Line 2").And.Contain("empty label"));

        var onlyHeader = Tsv("header.tsv", "path\tlabel");
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.Read(onlyHeader, Option))!.Message, Does.Contain("lists no images"));
    }

    [Test]
    public void MissingImagesListedInTheTsvAreNamedFirstFew()
    {
        Touch("present.png");
        var lines = new List<string> { "present.png\ta" };
        for (int i = 0; i < 8; i++) lines.Add($"missing{i}.png\t{(i % 2 == 0 ? "a" : "b")}");
        var tsv = Tsv("list.tsv", [.. lines]);
        var ex = Assert.Throws<FileNotFoundException>(() => ImageDataset.Read(tsv, Option))!;
        Assert.That(ex.Message, Does.StartWith("8 image files listed in the dataset"));
        Assert.That(ex.Message, Does.Contain("'missing0.png' (line 2)").And.Contain("'missing4.png' (line 6)").And.Not.Contain("missing5.png").And.Contain(", ..."));
        Assert.That(ex.Message, Does.Contain(root));
    }

    [Test]
    public void PredictionReadsFlatFoldersClassTreesAndUnlabelledTsv()
    {
        Touch("flat/b.png", "flat/a.jpg", "flat/notes.txt");
        var flat = ImageDataset.ReadForPrediction(Path.Combine(root, "flat"), "--dataset");
        Assert.That(flat.Layout, Is.EqualTo(ImageDatasetLayout.FlatFolder));
        Assert.That(flat.HasLabels, Is.False);
        Assert.That(flat.Classes, Is.Empty);
        Assert.That(flat.Rows.Select(r => (Path.GetFileName(r.ImagePath), r.Label)), Is.EqualTo(new[] { ("a.jpg", ""), ("b.png", "") }));

        Touch("tree/cats/a.png", "tree/dogs/readme.md");
        var tree = ImageDataset.ReadForPrediction(Path.Combine(root, "tree"), "--dataset");
        Assert.That(tree.Layout, Is.EqualTo(ImageDatasetLayout.ClassFolders));
        Assert.That(tree.Classes, Is.EqualTo(new[] { "cats" }), "one class is enough to predict; the empty folder is skipped");
        Assert.That(tree.Rows.Single().Label, Is.EqualTo("cats"));

        var unlabelled = Tsv("flat/list.tsv", "image", "a.jpg", "b.png");
        var fromTsv = ImageDataset.ReadForPrediction(unlabelled, "--dataset");
        Assert.That(fromTsv.HasLabels, Is.False);
        Assert.That(fromTsv.Rows.Select(r => Path.GetFileName(r.ImagePath)), Is.EqualTo(new[] { "a.jpg", "b.png" }));

        var labelled = Tsv("flat/labelled.tsv", "a.jpg\tx", "b.png\ty");
        Assert.That(ImageDataset.ReadForPrediction(labelled, "--dataset").HasLabels);

        var mixed = Tsv("flat/mixed.tsv", "a.jpg\tx", "b.png");
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.ReadForPrediction(mixed, "--dataset"))!.Message, Does.Contain("Line 2").And.Contain("on every line or on none"));

        Directory.CreateDirectory(Path.Combine(root, "nothing"));
        Assert.That(Assert.Throws<InvalidDataException>(() => ImageDataset.ReadForPrediction(Path.Combine(root, "nothing"), "--dataset"))!.Message, Does.Contain("no image files"));
    }
}
