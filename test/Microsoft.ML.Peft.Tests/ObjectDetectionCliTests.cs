using System.Globalization;
using System.Text.Json;
using NUnit.Framework;
using SkiaSharp;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>object-detection</c> and <c>predict</c> of a detector (with <c>--draw</c>), run as separate processes on small synthetic photos.</summary>
[TestFixture]
[NonParallelizable]
public class ObjectDetectionCliTests
{
    private string work = "";

    [SetUp]
    public void CreateWorkDirectory()
    {
        work = Path.Combine(Path.GetTempPath(), "mlnet-peft-detect-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
    }

    [TearDown]
    public void DeleteWorkDirectory()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    }

    /// <summary>Writes <paramref name="count"/> scenes of red and blue squares as PNG files and their labels in the raccoon CSV layout.</summary>
    private (string Labels, string Images) WriteScenes(string name, int count, int seed)
    {
        var images = Path.Combine(work, name);
        Directory.CreateDirectory(images);
        var random = new Random(seed);
        var lines = new List<string> { "filename,width,height,class,xmin,ymin,xmax,ymax" };
        for (int i = 0; i < count; i++)
        {
            var row = ObjectDetectionTrainerTests.Scene(random, 96, 64, i % 8 == 7 ? 0 : 1 + i % 2);
            var file = $"scene-{i:D3}.png";
            File.WriteAllBytes(Path.Combine(images, file), row.Image);
            if (row.Label.Length == 0) lines.Add($"{file},96,64,,,,,");
            for (int b = 0; b < row.Label.Length; b++)
                lines.Add(string.Join(',', new[] { file, "96", "64", row.Label[b] }.Concat(row.BoundingBoxes.Skip(4 * b).Take(4).Select(v => v.ToString(CultureInfo.InvariantCulture)))));
        }
        var labels = Path.Combine(work, name + ".csv");
        File.WriteAllLines(labels, lines);
        return (labels, images);
    }

    /// <summary>Runs <c>object-detection</c> with short-training defaults that <paramref name="more"/> (option, value pairs or flags) may replace.</summary>
    private CliRun Train(string labels, string images, string output, params string[] more)
    {
        var defaults = new List<string> { "--epochs", "4", "--image-size", "64", "--batch-size", "8" };
        for (int i = 0; i < defaults.Count; i += 2)
            if (more.Contains(defaults[i]))
            {
                defaults.RemoveRange(i, 2);
                i -= 2;
            }
        return CliProcess.Run(work, new[] { "object-detection", "--dataset", labels, "--images", images, "--output", Path.Combine(work, output) }
            .Concat(defaults).Concat(more).ToArray());
    }

    [Test]
    public void TrainsEvaluatesAndPredictsBoxesInTheLabelsLayoutWithDrawnImages()
    {
        var (labels, images) = WriteScenes("train", 24, seed: 1);
        var (testLabels, testImages) = WriteScenes("test", 6, seed: 2);
        var run = Train(labels, images, "detector.zip", "--test-dataset", testLabels, "--test-images", testImages, "--metrics-json", Path.Combine(work, "m.json"),
            "--score-threshold", "0.05");
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("mAP@0.5"));
        using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, "m.json"))))
        {
            var root = json.RootElement;
            foreach (var key in new[] { "map50", "map", "trainSeconds", "trainableParameters", "modelBytes" })
                Assert.That(root.TryGetProperty(key, out _), Is.True, key);
            Assert.That(root.GetProperty("map50").GetDouble(), Is.InRange(0.0, 1.0));
            Assert.That(root.GetProperty("map").GetDouble(), Is.LessThanOrEqualTo(root.GetProperty("map50").GetDouble()));
            Assert.That(root.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(Path.Combine(work, "detector.zip")).Length));
            Assert.That(root.GetProperty("testImages").GetInt32(), Is.EqualTo(6));
            Assert.That(root.GetProperty("classes").EnumerateArray().Select(c => c.GetString()), Is.EqualTo(new[] { "blue", "red" }));
        }

        var boxes = Path.Combine(work, "boxes.csv");
        var drawn = Path.Combine(work, "drawn");
        var predict = CliProcess.Run(work, "predict", "--model", Path.Combine(work, "detector.zip"), "--images", testImages, "--output", boxes, "--draw", drawn);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var lines = File.ReadAllLines(boxes);
        Assert.That(lines[0], Is.EqualTo("filename,width,height,class,xmin,ymin,xmax,ymax,score"));
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        Assert.That(rows.Select(r => r[0]).Distinct().Order(), Is.EqualTo(Directory.GetFiles(testImages).Select(Path.GetFileName).Order()), "every image is listed");
        foreach (var r in rows.Where(r => r[3].Length > 0))
        {
            Assert.That((r[1], r[2]), Is.EqualTo(("96", "64")), "the original image's size");
            Assert.That(r[3], Is.AnyOf("red", "blue"));
            var v = r.Skip(4).Select(x => float.Parse(x, CultureInfo.InvariantCulture)).ToArray();
            Assert.That(v[0] < v[2] && v[1] < v[3] && v[0] >= 0 && v[2] <= 96 && v[3] <= 64, string.Join(',', r));
            Assert.That(v[4], Is.InRange(0.05f, 1f));
        }
        var pictures = Directory.GetFiles(drawn, "*.png");
        Assert.That(pictures, Has.Length.EqualTo(6));
        using var picture = SKBitmap.Decode(pictures[0]);
        Assert.That((picture.Width, picture.Height), Is.EqualTo((96, 64)));

        // --draw and --images belong to detectors; both --dataset and --images is a usage error.
        var both = CliProcess.Run(work, "predict", "--model", Path.Combine(work, "detector.zip"), "--images", testImages, "--dataset", testImages, "--output", boxes);
        Assert.That(both.ExitCode, Is.EqualTo(2), both.ToString());
    }

    [Test]
    public void PascalVocFoldersTrainAsTheCsvDoes()
    {
        var (labels, images) = WriteScenes("train", 16, seed: 3);
        var voc = Path.Combine(work, "voc");
        Directory.CreateDirectory(voc);
        foreach (var group in File.ReadAllLines(labels).Skip(1).Select(l => l.Split(',')).GroupBy(f => f[0]))
        {
            var objects = string.Concat(group.Where(f => f[3].Length > 0).Select(f =>
                $"<object><name>{f[3]}</name><bndbox><xmin>{f[4]}</xmin><ymin>{f[5]}</ymin><xmax>{f[6]}</xmax><ymax>{f[7]}</ymax></bndbox></object>"));
            File.WriteAllText(Path.Combine(voc, Path.ChangeExtension(group.Key, ".xml")),
                $"<annotation><filename>{group.Key}</filename><size><width>96</width><height>64</height><depth>3</depth></size>{objects}</annotation>");
        }
        var run = Train(voc, images, "voc.zip", "--epochs", "1", "--method", "probe", "--metrics-json", Path.Combine(work, "voc.json"));
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("held out for testing"));
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, "voc.json")));
        Assert.That(json.RootElement.GetProperty("testImages").GetInt32(), Is.EqualTo(3));
        Assert.That(json.RootElement.GetProperty("method").GetString(), Is.EqualTo("probe"));
    }

    [Test]
    public void BadLabelsAndOptionsAreClearErrors()
    {
        var (labels, images) = WriteScenes("train", 8, seed: 4);
        var lines = File.ReadAllLines(labels);

        // An image named in the labels but missing: the file and its row.
        var kept = File.ReadAllBytes(Path.Combine(images, "scene-002.png"));
        File.Delete(Path.Combine(images, "scene-002.png"));
        var missing = Train(labels, images, "x.zip");
        Assert.That(missing.ExitCode, Is.EqualTo(1), missing.ToString());
        Assert.That(missing.StdErr, Does.Contain("scene-002.png").And.Contain("row"));
        File.WriteAllBytes(Path.Combine(images, "scene-002.png"), kept);

        // A box past the image's edge, and one with xmax <= xmin: the row is named.
        var outside = Path.Combine(work, "outside.csv");
        File.WriteAllLines(outside, lines.Take(2).Append("scene-000.png,96,64,red,10,10,120,30"));
        var wide = Train(outside, images, "x.zip");
        Assert.That(wide.ExitCode, Is.EqualTo(1), wide.ToString());
        Assert.That(wide.StdErr, Does.Contain("row 3"));
        var flipped = Path.Combine(work, "flipped.csv");
        File.WriteAllLines(flipped, lines.Take(2).Append("scene-000.png,96,64,red,40,10,20,30"));
        var backwards = Train(flipped, images, "x.zip");
        Assert.That(backwards.ExitCode, Is.EqualTo(1), backwards.ToString());
        Assert.That(backwards.StdErr, Does.Contain("row 3"));

        // An empty label file.
        var empty = Path.Combine(work, "empty.csv");
        File.WriteAllText(empty, "");
        var nothing = Train(empty, images, "x.zip");
        Assert.That(nothing.ExitCode, Is.EqualTo(1), nothing.ToString());
        Assert.That(nothing.StdErr, Does.Contain("empty.csv"));

        // A test set with a class the training labels do not have.
        var test = Path.Combine(work, "test.csv");
        File.WriteAllLines(test, new[] { lines[0], "scene-001.png,96,64,green,10,10,40,40" });
        var unknown = Train(labels, images, "x.zip", "--test-dataset", test);
        Assert.That(unknown.ExitCode, Is.EqualTo(1), unknown.ToString());
        Assert.That(unknown.StdErr, Does.Contain("green"));

        var size = Train(labels, images, "x.zip", "--image-size", "100");
        Assert.That(size.ExitCode, Is.EqualTo(2), size.ToString());
        Assert.That(size.StdErr, Does.Contain("multiple of 32"));
        var testImagesAlone = Train(labels, images, "x.zip", "--test-images", images);
        Assert.That(testImagesAlone.ExitCode, Is.EqualTo(2), testImagesAlone.ToString());
        Assert.That(testImagesAlone.StdErr, Does.Contain("--test-images needs --test-dataset"));
    }
}
