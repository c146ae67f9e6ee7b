using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Detection labels: the raccoon CSV layout, Pascal VOC folders, the bad inputs they reject, and the CSV writer.</summary>
[TestFixture]
public class ObjectDetectionLabelsTests
{
    private const string Header = "filename,width,height,class,xmin,ymin,xmax,ymax";
    private string temp = null!;

    [SetUp]
    public void SetUp() => temp = ImageTestImages.TempDirectory("peft-detection-labels");

    [TearDown]
    public void TearDown() => Directory.Delete(temp, recursive: true);

    private string Csv(params string[] lines)
    {
        var path = Path.Combine(temp, "labels.csv");
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    private string Error(params string[] lines) => Assert.Throws<InvalidDataException>(() => DetectionLabels.ReadCsv(Csv(lines)))!.Message;

    [Test]
    public void ReadsTheRaccoonLabels()
    {
        var folder = Path.Combine(TestData.SharedData, "raccoon");
        var data = DetectionLabels.Read(Path.Combine(folder, "labels.csv"));
        // ../shared/data/README.md: 160 images, 173 boxes, one class.
        Assert.That(data.Classes, Is.EqualTo(new[] { "raccoon" }));
        Assert.That(data.Images, Has.Count.EqualTo(160));
        Assert.That(data.Images.Sum(i => i.Boxes.Count), Is.EqualTo(173));
        // labels.csv rows 4 and 5: raccoon-63.jpg,600,400,raccoon,74,107,280,290 and ...,227,93,403,298.
        var image = data.Images.Single(i => i.FileName == "raccoon-63.jpg");
        Assert.That((image.Width, image.Height), Is.EqualTo((600, 400)));
        Assert.That(image.Boxes, Is.EqualTo(new[] { new DetectionBox(74, 107, 280, 290, 0), new DetectionBox(227, 93, 403, 298, 0) }));
        Assert.That(image.Origin, Does.Contain("row 4 of"));
        var paths = DetectionLabels.ImagePaths(data.Images, Path.Combine(folder, "images"));
        Assert.That(paths.All(File.Exists));
    }

    [Test]
    public void MergesRowsOfAnImageAndReadsBackgroundImages()
    {
        var data = DetectionLabels.ReadCsv(Csv(
            "XMIN,filename,Width,height,class,ymin,xmax,ymax,note", // columns in any order and case, extra ones ignored
            "10,a.jpg,100,80,dog,20,40,60,x",
            "5,b.jpg,50,50,cat,5,20,20,",
            "50,a.jpg,100,80,cat,10,100.9,80,",   // 100.9 is within 1 pixel of the edge: clamped to 100
            "-0.5,c.jpg,64,48,dog,0,30,48,",     // -0.5 clamped to 0
            ",bg.jpg,30,20,,,,,"));               // no class and no box: an image without objects
        Assert.That(data.Classes, Is.EqualTo(new[] { "cat", "dog" }));
        Assert.That(data.Images.Select(i => i.FileName), Is.EqualTo(new[] { "a.jpg", "b.jpg", "c.jpg", "bg.jpg" }));
        Assert.That(data.Images[0].Boxes, Is.EqualTo(new[] { new DetectionBox(10, 20, 40, 60, 1), new DetectionBox(50, 10, 100, 80, 0) }));
        Assert.That(data.Images[2].Boxes, Is.EqualTo(new[] { new DetectionBox(0, 0, 30, 48, 1) }));
        Assert.That(data.Images[3].Boxes, Is.Empty);
        Assert.That((data.Images[3].Width, data.Images[3].Height), Is.EqualTo((30, 20)));
    }

    [Test]
    public void FixedClassListGivesIndicesAndRejectsUnknownClasses()
    {
        var path = Csv(Header, "a.jpg,10,10,dog,1,1,5,5", "b.jpg,10,10,cat,1,1,5,5");
        var data = DetectionLabels.ReadCsv(path, ["dog", "cat", "bird"]);
        Assert.That(data.Classes, Is.EqualTo(new[] { "dog", "cat", "bird" }));
        Assert.That(data.Images.Select(i => i.Boxes[0].Class), Is.EqualTo(new[] { 0, 1 }));
        var message = Assert.Throws<InvalidDataException>(() => DetectionLabels.ReadCsv(path, ["dog", "bird"]))!.Message;
        Assert.That(message, Does.Contain("row 3").And.Contain("'cat'").And.Contain("not one of the model's classes").And.Contain("'dog', 'bird'"));
        // A prediction set may hold background images only when the classes are given.
        var background = DetectionLabels.ReadCsv(Csv(Header, "a.jpg,10,10,,,,,"), ["dog"]);
        Assert.That(background.Images.Single().Boxes, Is.Empty);
        Assert.That(Error(Header, "a.jpg,10,10,,,,,"), Does.Contain("no box at all"));
    }

    [Test]
    public void EmptyOrHeaderlessFilesAreNamed()
    {
        Assert.That(Error(""), Does.Contain("labels.csv").And.Contain("is empty"));
        Assert.That(Error(Header), Does.Contain("has a header but no rows"));
        Assert.That(Error("a.jpg,10,10,dog,1,1,5,5"), Does.Contain("has no header line").And.Contain(Header));
        Assert.That(Error("filename,width,height,class,xmin,ymin,xmax", "a.jpg,10,10,dog,1,1,5"), Does.Contain("misses the column 'ymax'"));
        Assert.That(Error("filename,width,class,xmin,ymin,xmax", "a.jpg,10,dog,1,1,5"), Does.Contain("'height', 'ymax'"));
        Assert.Throws<FileNotFoundException>(() => DetectionLabels.ReadCsv(Path.Combine(temp, "none.csv")));
    }

    [TestCase("a.jpg,ten,10,dog,1,1,5,5", "row 2", "width 'ten'")]
    [TestCase("a.jpg,10,10,dog,1,one,5,5", "row 2", "ymin 'one'")]
    [TestCase("a.jpg,0,10,dog,1,1,5,5", "row 2", "width 0")]
    [TestCase("a.jpg,10,-3,dog,1,1,5,5", "row 2", "height -3")]
    [TestCase("a.jpg,10,10,dog,5,1,5,5", "row 2", "xmax <= xmin")]
    [TestCase("a.jpg,10,10,dog,1,6,5,5", "row 2", "ymax <= ymin")]
    [TestCase("a.jpg,10,10,dog,1,1,11.5,5", "row 2", "outside the 10x10 image 'a.jpg'")]
    [TestCase("a.jpg,10,10,dog,-2,1,5,5", "row 2", "outside")]
    [TestCase("a.jpg,10,10,,1,1,5,5", "row 2", "no class")]
    [TestCase("a.jpg,10,10,dog,1,,5,5", "row 2", "no ymin")]
    [TestCase("a.jpg,10,10", "row 2", "3 fields")]
    [TestCase(",10,10,dog,1,1,5,5", "row 2", "no file name")]
    [TestCase("\"a.jpg,10,10,dog,1,1,5,5", "row 2", "quote")]
    public void BadRowsAreNamed(string row, string where, string what)
    {
        var message = Error(Header, row);
        Assert.That(message, Does.Contain(where).And.Contain(what).And.Contain("labels.csv"));
    }

    [Test]
    public void SameFileWithDifferentSizesIsAnError()
    {
        var message = Error(Header, "a.jpg,10,10,dog,1,1,5,5", "b.jpg,10,10,dog,1,1,5,5", "a.jpg,12,10,dog,1,1,5,5");
        Assert.That(message, Does.Contain("row 4").And.Contain("12x10").And.Contain("row 2").And.Contain("10x10"));
    }

    [Test]
    public void MissingImageFileNamesTheFileAndTheRow()
    {
        var images = Path.Combine(temp, "images");
        ImageTestImages.WritePng(Path.Combine(images, "a.png"), 10, 10);
        var data = DetectionLabels.ReadCsv(Csv(Header, "a.png,10,10,dog,1,1,5,5", "gone.png,10,10,dog,1,1,5,5"));
        var e = Assert.Throws<FileNotFoundException>(() => DetectionLabels.ImagePaths(data.Images, images))!;
        Assert.That(e.Message, Does.Contain("'gone.png'").And.Contain("row 3 of").And.Contain(images));
        Assert.Throws<DirectoryNotFoundException>(() => DetectionLabels.ImagePaths(data.Images, Path.Combine(temp, "nowhere")));
    }

    [Test]
    public void WriterRoundTripsWithScores()
    {
        var images = new[]
        {
            new DetectionImage("a,b.jpg", 100, 80, [new DetectionBox(1.5f, 2, 30.25f, 40, 1, 0.875f), new DetectionBox(0, 0, 10, 10, 0, 0.5f)]),
            new DetectionImage("empty.jpg", 20, 20, []),
        };
        var path = Path.Combine(temp, "out", "boxes.csv");
        DetectionLabels.WriteCsv(path, images, ["cat", "dog"], withScore: true);
        var lines = File.ReadAllLines(path);
        Assert.That(lines, Is.EqualTo(new[]
        {
            Header + ",score",
            "\"a,b.jpg\",100,80,dog,1.5,2,30.25,40,0.875",
            "\"a,b.jpg\",100,80,cat,0,0,10,10,0.5",
            "empty.jpg,20,20,,,,,,",
        }));
        var back = DetectionLabels.ReadCsv(path, ["cat", "dog"]);
        Assert.That(back.Images[0].FileName, Is.EqualTo("a,b.jpg"));
        Assert.That(back.Images[0].Boxes, Is.EqualTo(images[0].Boxes));
        Assert.That(back.Images[1].Boxes, Is.Empty);
    }

    [Test]
    public void ReadsPascalVocFolders()
    {
        var voc = Path.Combine(temp, "voc");
        Directory.CreateDirectory(voc);
        File.WriteAllText(Path.Combine(voc, "b.xml"), """
            <annotation>
              <folder>images</folder>
              <filename>b.jpg</filename>
              <size><width>200</width><height>100</height><depth>3</depth></size>
              <object><name>raccoon</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110.5</xmax><ymax>90</ymax></bndbox></object>
              <object><name>dog</name><bndbox><xmin>120</xmin><ymin>5</ymin><xmax>200</xmax><ymax>100.5</ymax></bndbox></object>
            </annotation>
            """);
        File.WriteAllText(Path.Combine(voc, "a.xml"), "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height></size></annotation>");
        File.WriteAllText(Path.Combine(voc, "readme.txt"), "not an annotation");
        var data = DetectionLabels.Read(voc);
        Assert.That(data.Classes, Is.EqualTo(new[] { "dog", "raccoon" }));
        Assert.That(data.Images.Select(i => (i.FileName, i.Width, i.Height, i.Boxes.Count)), Is.EqualTo(new[] { ("a.jpg", 64, 48, 0), ("b.jpg", 200, 100, 2) }));
        Assert.That(data.Images[1].Boxes, Is.EqualTo(new[] { new DetectionBox(10, 20, 110.5f, 90, 1), new DetectionBox(120, 5, 200, 100, 0) }));

        File.WriteAllText(Path.Combine(voc, "c.xml"), "<annotation><filename>c.jpg</filename>\n<size><width>64</width><height>48</height></size>\n<object><name>dog</name>\n<bndbox><xmin>1</xmin><ymin>x</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>");
        var message = Assert.Throws<InvalidDataException>(() => DetectionLabels.Read(voc))!.Message;
        Assert.That(message, Does.Contain("c.xml").And.Contain("line 4").And.Contain("ymin 'x'"));
        File.WriteAllText(Path.Combine(voc, "c.xml"), "<annotation><filename>c.jpg</filename><size><width>64</width></size></annotation>");
        Assert.That(Assert.Throws<InvalidDataException>(() => DetectionLabels.Read(voc))!.Message, Does.Contain("c.xml").And.Contain("no <height>"));
        File.WriteAllText(Path.Combine(voc, "c.xml"), "<annotation><filename>c.jpg</filename>\n<size>");
        Assert.That(Assert.Throws<InvalidDataException>(() => DetectionLabels.Read(voc))!.Message, Does.Contain("c.xml").And.Contain("not valid XML"));
        File.WriteAllText(Path.Combine(voc, "c.xml"), "<annotation><filename>c.jpg</filename><size><width>64</width><height>48</height></size><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>70</xmax><ymax>5</ymax></bndbox></object></annotation>");
        Assert.That(Assert.Throws<InvalidDataException>(() => DetectionLabels.Read(voc))!.Message, Does.Contain("c.xml").And.Contain("outside the 64x48 image"));

        var empty = Path.Combine(temp, "empty");
        Directory.CreateDirectory(empty);
        Assert.That(Assert.Throws<InvalidDataException>(() => DetectionLabels.Read(empty))!.Message, Does.Contain("holds no .xml file"));
    }
}
