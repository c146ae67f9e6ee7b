using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Samples;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Synthetic multi-class detection scenes from the real Fashion-MNIST files (Debian's dataset-fashion-mnist in
/// <see cref="FashionMnist.DefaultDirectory"/>; like <see cref="FashionMnistTests"/>, these fail with the install hint
/// when the files are absent).
/// </summary>
[TestFixture]
public class ObjectDetectionSyntheticScenesTests
{
    private string temp = null!;

    [SetUp]
    public void SetUp() => temp = ImageTestImages.TempDirectory("peft-detection-scenes");

    [TearDown]
    public void TearDown() => Directory.Delete(temp, recursive: true);

    [Test]
    public void ScenesHoldTheirItemsInsideTheBoxesOnly()
    {
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: false, maxCount: 200);
        var scenes = SyntheticScenes.Generate(pixels, labels, count: 30, seed: 7);
        Assert.That(scenes, Has.Count.EqualTo(30));
        var counts = scenes.Select(s => s.Boxes.Count).ToList();
        Assert.That(counts.Min(), Is.GreaterThanOrEqualTo(1));
        Assert.That(counts.Max(), Is.LessThanOrEqualTo(4));
        Assert.That(counts.Distinct().Count(), Is.GreaterThan(1), "the number of items varies");
        Assert.That(scenes.SelectMany(s => s.Boxes).Select(b => b.Class).Distinct().Count(), Is.GreaterThan(3), "several classes");
        foreach (var scene in scenes)
        {
            Assert.That(scene.Size, Is.EqualTo(128));
            foreach (var b in scene.Boxes)
            {
                Assert.That(b.XMin >= 0 && b.YMin >= 0 && b.XMax <= 128 && b.YMax <= 128, $"{b}");
                Assert.That(b.Width <= 84 && b.Height <= 84 && b.Width >= 1, $"{b}: items are at most 84 pixels");
                Assert.That(b.XMin == MathF.Floor(b.XMin) && b.XMax == MathF.Floor(b.XMax), "whole pixels");
                Assert.That(b.Class is >= 0 and < 10);
                Assert.That(scene.Boxes.Count(o => BoxGeometry.IntersectionArea(o, b) > 0), Is.EqualTo(1), "boxes do not overlap");
            }
            // Outside every box there is only background noise (<= NoiseLevel); inside each box, the item is visible
            // (Fashion-MNIST items have bright pixels far above the noise).
            for (int y = 0; y < 128; y++)
                for (int x = 0; x < 128; x++)
                {
                    bool inBox = scene.Boxes.Any(b => x >= b.XMin && x < b.XMax && y >= b.YMin && y < b.YMax);
                    if (!inBox) Assert.That(scene.Pixels[y * 128 + x], Is.LessThanOrEqualTo(SyntheticScenes.NoiseLevel), $"({x}, {y}) outside the boxes");
                }
            foreach (var b in scene.Boxes)
            {
                int bright = 0;
                for (int y = (int)b.YMin; y < (int)b.YMax; y++)
                    for (int x = (int)b.XMin; x < (int)b.XMax; x++)
                        if (scene.Pixels[y * 128 + x] > SyntheticScenes.NoiseLevel) bright++;
                Assert.That(bright, Is.GreaterThan(0.1 * b.Area), $"{b}: the item is there");
            }
        }
        // The same seed gives the same scenes, another seed others.
        var again = SyntheticScenes.Generate(pixels, labels, count: 30, seed: 7);
        Assert.That(again.Select(s => s.Pixels), Is.EqualTo(scenes.Select(s => s.Pixels)));
        Assert.That(again.Select(s => s.Boxes.ToArray()), Is.EqualTo(scenes.Select(s => s.Boxes.ToArray())));
        Assert.That(SyntheticScenes.Generate(pixels, labels, count: 1, seed: 8)[0].Pixels, Is.Not.EqualTo(scenes[0].Pixels));
    }

    [Test]
    public void BoxIsTheTightBoxOfTheResizedItem()
    {
        // One item: a 4x4 block of 255 at (10..13, 10..13) in 28x28, enlarged to exactly 56. Output pixel i samples
        // source (i + 0.5) / 2 bilinearly: pixel 19 (source 9.75) takes 0.25 of pixel 10 -> 64, non-zero; pixel 18
        // (9.25) takes pixels 8 and 9 -> 0; likewise 28 (14.25) takes 0.25 of pixel 13 and 29 nothing. The tight box
        // is [19, 29) on both axes: 10 pixels square, around the block's middle at 24.
        var item = new byte[28 * 28];
        for (int y = 10; y < 14; y++)
            for (int x = 10; x < 14; x++) item[y * 28 + x] = 255;
        var scenes = SyntheticScenes.Generate([item], [3], count: 5, seed: 1, maxItems: 1, minItemSide: 56, maxItemSide: 56);
        foreach (var scene in scenes)
        {
            var b = scene.Boxes.Single();
            Assert.That((b.Width, b.Height, b.Class), Is.EqualTo((10f, 10f, 3)));
            Assert.That(scene.Pixels[(int)(b.YMin + 5) * 128 + (int)(b.XMin + 5)], Is.EqualTo(255), "the block's middle, 5 pixels in");
        }
        Assert.Throws<ArgumentException>(() => SyntheticScenes.Generate([new byte[28 * 28]], [0], 1, 1));
    }

    [Test]
    public void WrittenScenesReadBackAsALabelledDataSet()
    {
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 50);
        var scenes = SyntheticScenes.Generate(pixels, labels, count: 6, seed: 3);
        foreach (bool jpeg in new[] { false, true })
        {
            var folder = Path.Combine(temp, jpeg ? "jpeg" : "png");
            var written = SyntheticScenes.Write(folder, scenes, FashionMnist.ClassNames, jpeg);
            var read = DetectionLabels.Read(Path.Combine(folder, "labels.csv"));
            var paths = DetectionLabels.ImagePaths(read.Images, Path.Combine(folder, "images"));
            Assert.That(read.Images.Select(i => i.FileName), Is.EqualTo(written.Images.Select(i => i.FileName)));
            Assert.That(read.Classes, Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
            for (int i = 0; i < scenes.Count; i++)
            {
                // Same boxes, class names the same though the indices follow the sorted names.
                Assert.That(read.Images[i].Boxes.Select(b => (b.XMin, b.YMin, b.XMax, b.YMax, read.Classes[b.Class])),
                    Is.EqualTo(scenes[i].Boxes.Select(b => (b.XMin, b.YMin, b.XMax, b.YMax, FashionMnist.ClassNames[b.Class]))));
                var decoded = ImageDecoder.FromFile(paths[i], int.MaxValue);
                Assert.That((decoded.Width, decoded.Height), Is.EqualTo((128, 128)));
                if (!jpeg) Assert.That(decoded.Rgb.Where((_, k) => k % 3 == 0), Is.EqualTo(scenes[i].Pixels), "PNG is lossless");
            }
        }
    }
}
