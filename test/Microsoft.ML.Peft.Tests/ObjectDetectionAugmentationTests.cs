using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Box-aware augmentation: boxes must move with the pixels. Images are drawn with solid rectangles exactly where the
/// boxes are, so that after each operation the pixels themselves say where the boxes should be.
/// </summary>
[TestFixture]
public class ObjectDetectionAugmentationTests
{
    /// <summary>A 3-channel image, background 0, with rectangle k filled with the value k + 1 in every channel; box k has class k.</summary>
    private static (ChwImage Image, DetectionBox[] Boxes) Scene(int width, int height, params (int X0, int Y0, int X1, int Y1)[] rectangles)
    {
        var data = new float[3 * width * height];
        var boxes = new DetectionBox[rectangles.Length];
        for (int k = 0; k < rectangles.Length; k++)
        {
            var (x0, y0, x1, y1) = rectangles[k];
            for (int c = 0; c < 3; c++)
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) data[(c * height + y) * width + x] = k + 1;
            boxes[k] = new DetectionBox(x0, y0, x1, y1, k);
        }
        return (new ChwImage(data, 3, height, width), boxes);
    }

    private static float At(ChwImage image, int c, int x, int y) => image.Data[(c * image.Height + y) * image.Width + x];

    [Test]
    public void FlipMirrorsPixelsAndBoxesAndTwiceIsIdentity()
    {
        var (image, boxes) = Scene(10, 6, (2, 1, 5, 3), (6, 2, 10, 6));
        var (flipped, flippedBoxes) = BoxAugmentation.FlipHorizontal(image, boxes);
        // x -> 10 - x: (2..5) -> (5..8), (6..10) -> (0..4).
        Assert.That(flippedBoxes, Is.EqualTo(new[] { new DetectionBox(5, 1, 8, 3, 0), new DetectionBox(0, 2, 4, 6, 1) }));
        Assert.That((At(flipped, 0, 5, 1), At(flipped, 2, 7, 2), At(flipped, 1, 4, 1), At(flipped, 0, 0, 5)), Is.EqualTo((1f, 1f, 0f, 2f)));
        var (back, backBoxes) = BoxAugmentation.FlipHorizontal(flipped, flippedBoxes);
        Assert.That(back.Data, Is.EqualTo(image.Data));
        Assert.That(backBoxes, Is.EqualTo(boxes));
    }

    [Test]
    public void ResizeScalesBoxesExactly()
    {
        var (image, boxes) = Scene(40, 30, (10, 6, 22, 18));
        // Enlarged 2.5x by 2x: (10, 6, 22, 18) -> (25, 12, 55, 36), exactly.
        var (big, bigBoxes) = BoxAugmentation.Resize(image, boxes, 100, 60);
        Assert.That(bigBoxes, Is.EqualTo(new[] { new DetectionBox(25, 12, 55, 36, 0) }));
        // Bilinear: the filled region's half-value edge is the box edge. Along the middle row (y = 24), pixel x
        // (centre x + 0.5) is above 0.5 exactly when its centre is inside [25, 55].
        for (int x = 0; x < 100; x++)
        {
            bool inside = x + 0.5 > 25 && x + 0.5 < 55;
            Assert.That(At(big, 0, x, 24) > 0.5f, Is.EqualTo(inside), $"x = {x}: {At(big, 0, x, 24)}");
        }
        for (int y = 0; y < 60; y++) Assert.That(At(big, 1, 40, y) > 0.5f, Is.EqualTo(y + 0.5 > 12 && y + 0.5 < 36), $"y = {y}");
        // Halved: (10, 6, 22, 18) -> (5, 3, 11, 9). The antialiasing triangle spans 2 output pixels, so only pixels a
        // full pixel inside are exactly 1 and a full pixel outside exactly 0; the edge pixels straddle 0.5 again:
        // pixel 5 (source 10..12 of the filled side) takes 0.75 + 0.75 + 0.25 of the weights 0.25, 0.75, 0.75, 0.25
        // (sum 2): 0.875; pixel 4 takes only 0.25 of filled source pixel 10: 0.125.
        var (small, smallBoxes) = BoxAugmentation.Resize(image, boxes, 20, 15);
        Assert.That(smallBoxes, Is.EqualTo(new[] { new DetectionBox(5, 3, 11, 9, 0) }));
        Assert.That((At(small, 0, 6, 4), At(small, 0, 9, 7), At(small, 0, 3, 5), At(small, 0, 12, 5), At(small, 0, 7, 1)), Is.EqualTo((1f, 1f, 0f, 0f, 0f)));
        Assert.That((At(small, 0, 5, 5), At(small, 0, 4, 5), At(small, 0, 10, 5), At(small, 0, 11, 5)), Is.EqualTo((0.875f, 0.125f, 0.875f, 0.125f)));
    }

    [Test]
    public void CropKeepsABoxOnlyWithItsCentreAndEnoughArea()
    {
        // Boxes with centres inside or outside a crop at (20, 20) of 40x40; minimum kept area 30%.
        var boxes = new[]
        {
            new DetectionBox(25, 25, 35, 35, 0),  // wholly inside: kept, shifted to (5, 5, 15, 15)
            new DetectionBox(10, 30, 30, 40, 1),  // centre (20, 35) on the crop's left edge: kept, clipped to (0, 10, 10, 20): 50% left
            new DetectionBox(0, 30, 28, 40, 2),   // centre (14, 35) outside: dropped although 8/28 of it is inside
            new DetectionBox(50, 50, 70, 90, 3),  // centre (60, 70) inside, 10 x 10 of 20 x 40 inside = 12.5% < 30%: dropped
            new DetectionBox(50, 50, 70, 65, 4),  // centre (60, 57.5) inside, 10 x 10 of 20 x 15 = 33% >= 30%: kept, (30, 30, 40, 40)
        };
        var kept = BoxAugmentation.CropBoxes(boxes, 20, 20, 40, 40, 0.3f);
        Assert.That(kept, Is.EqualTo(new[] { new DetectionBox(5, 5, 15, 15, 0), new DetectionBox(0, 10, 10, 20, 1), new DetectionBox(30, 30, 40, 40, 4) }));
    }

    [Test]
    public void RandomCropNeverLosesABoxCentreWithoutDroppingTheBox()
    {
        var random = new Random(11);
        for (int trial = 0; trial < 300; trial++)
        {
            int width = random.Next(20, 200), height = random.Next(20, 200);
            var boxes = Enumerable.Range(0, random.Next(0, 5)).Select(k =>
            {
                float x0 = random.Next(0, width - 2), y0 = random.Next(0, height - 2);
                return new DetectionBox(x0, y0, random.Next((int)x0 + 1, width + 1), random.Next((int)y0 + 1, height + 1), k);
            }).ToArray();
            var (left, top, w, h) = BoxAugmentation.RandomCrop(width, height, boxes, 0.3f, random);
            Assert.That(left >= 0 && top >= 0 && w >= 1 && h >= 1 && left + w <= width && top + h <= height, $"trial {trial}: crop ({left}, {top}) {w}x{h} of {width}x{height}");
            // The random crop holds every box centre.
            foreach (var b in boxes)
            {
                float cx = (b.XMin + b.XMax) / 2, cy = (b.YMin + b.YMax) / 2;
                Assert.That(cx >= left && cx <= left + w && cy >= top && cy <= top + h, $"trial {trial}: centre ({cx}, {cy}) outside the crop ({left}, {top}) {w}x{h}");
            }
            // Any crop (here a random one ignoring the boxes): a kept box had its centre inside and 30% of its area.
            int l2 = random.Next(0, width), t2 = random.Next(0, height), w2 = random.Next(1, width - l2 + 1), h2 = random.Next(1, height - t2 + 1);
            var kept = BoxAugmentation.CropBoxes(boxes, l2, t2, w2, h2, 0.3f);
            foreach (var b in boxes)
            {
                float cx = (b.XMin + b.XMax) / 2, cy = (b.YMin + b.YMax) / 2;
                bool centreInside = cx >= l2 && cx <= l2 + w2 && cy >= t2 && cy <= t2 + h2;
                var visible = BoxGeometry.Clip(b with { XMin = b.XMin - l2, XMax = b.XMax - l2, YMin = b.YMin - t2, YMax = b.YMax - t2 }, w2, h2);
                bool expected = centreInside && visible.Area > 0 && visible.Area >= 0.3f * b.Area;
                Assert.That(kept.Any(k => k.Class == b.Class), Is.EqualTo(expected), $"trial {trial}: box {b} in crop ({l2}, {t2}) {w2}x{h2}");
                if (expected) Assert.That(kept.Single(k => k.Class == b.Class), Is.EqualTo(visible));
            }
        }
    }

    [Test]
    public void AugmentKeepsBoxesOnTheirObjects()
    {
        var (image, boxes) = Scene(160, 120, (10, 10, 50, 60), (70, 20, 110, 50), (100, 70, 150, 115));
        var options = new BoxAugmentationOptions { CropProbability = 0.7f, MinScale = 0.5f, MaxScale = 1.6f };
        var random = new Random(3);
        int checkedBoxes = 0;
        for (int trial = 0; trial < 40; trial++)
        {
            var (output, outBoxes) = BoxAugmentation.Augment(image, boxes, 96, random, options);
            Assert.That((output.Channels, output.Height, output.Width), Is.EqualTo((3, 96, 96)));
            foreach (var b in outBoxes)
            {
                Assert.That(b.XMin >= 0 && b.YMin >= 0 && b.XMax <= 96 && b.YMax <= 96 && b.Area > 0, $"trial {trial}: {b}");
                // Thin slivers (a crop's edge) are blurred through by the resize: only boxes 8 pixels or more are read.
                if (b.Width < 8 || b.Height < 8) continue;
                float value = b.Class + 1;
                // The box's middle lies on its rectangle, and so does each edge's middle 2.5 pixels inside it (more than
                // the widest bilinear blur here, 1.92 pixels when a 50% crop is enlarged) ...
                int cx = (int)((b.XMin + b.XMax) / 2), cy = (int)((b.YMin + b.YMax) / 2);
                Assert.That(At(output, 0, cx, cy), Is.EqualTo(value).Within(1e-4), $"trial {trial}: centre of {b}");
                Assert.That(At(output, 1, (int)b.XMin + 3, cy), Is.EqualTo(value).Within(1e-4), $"trial {trial}: left edge of {b}");
                Assert.That(At(output, 1, (int)Math.Ceiling(b.XMax) - 4, cy), Is.EqualTo(value).Within(1e-4), $"trial {trial}: right edge of {b}");
                Assert.That(At(output, 2, cx, (int)b.YMin + 3), Is.EqualTo(value).Within(1e-4), $"trial {trial}: top edge of {b}");
                Assert.That(At(output, 2, cx, (int)Math.Ceiling(b.YMax) - 4), Is.EqualTo(value).Within(1e-4), $"trial {trial}: bottom edge of {b}");
                // ... and 2.5 pixels outside each edge, the rectangle is gone (background, padding or another rectangle).
                int left = (int)Math.Floor(b.XMin) - 3, right = (int)Math.Ceiling(b.XMax) + 2, top = (int)Math.Floor(b.YMin) - 3, bottom = (int)Math.Ceiling(b.YMax) + 2;
                if (left >= 0) Assert.That(At(output, 0, left, cy), Is.Not.EqualTo(value).Within(0.05), $"trial {trial}: left of {b}");
                if (right < 96) Assert.That(At(output, 0, right, cy), Is.Not.EqualTo(value).Within(0.05), $"trial {trial}: right of {b}");
                if (top >= 0) Assert.That(At(output, 0, cx, top), Is.Not.EqualTo(value).Within(0.05), $"trial {trial}: above {b}");
                if (bottom < 96) Assert.That(At(output, 0, cx, bottom), Is.Not.EqualTo(value).Within(0.05), $"trial {trial}: below {b}");
                checkedBoxes++;
            }
        }
        Assert.That(checkedBoxes, Is.GreaterThan(60), "most boxes survive the crops");
    }

    [Test]
    public void AugmentIsSeededAndNoneIsTheLetterbox()
    {
        var (image, boxes) = Scene(80, 40, (5, 5, 30, 35), (40, 10, 75, 30));
        var a = BoxAugmentation.Augment(image, boxes, 64, new Random(5), new BoxAugmentationOptions());
        var b = BoxAugmentation.Augment(image, boxes, 64, new Random(5), new BoxAugmentationOptions());
        Assert.That(a.Image.Data, Is.EqualTo(b.Image.Data));
        Assert.That(a.Boxes, Is.EqualTo(b.Boxes));

        // Letterbox: 80x40 -> 64x32 (scale 0.8), centred: 16 rows of padding above; boxes * 0.8 + (0, 16).
        var (boxed, boxedBoxes, transform) = BoxAugmentation.Letterbox(image, boxes, 64);
        Assert.That(boxedBoxes, Is.EqualTo(new[] { new DetectionBox(4, 20, 24, 44, 0), new DetectionBox(32, 24, 60, 40, 1) }));
        Assert.That(transform, Is.EqualTo(new LetterboxTransform(0.8f, 0.8f, 0, 16, 80, 40)));
        Assert.That((At(boxed, 0, 10, 5), At(boxed, 0, 10, 30), At(boxed, 0, 10, 60)), Is.EqualTo((0f, 1f, 0f)));
        var back = boxedBoxes.Select(x => transform.ToImage(x)).ToArray();
        for (int i = 0; i < boxes.Length; i++)
        {
            Assert.That(back[i].XMin, Is.EqualTo(boxes[i].XMin).Within(1e-4));
            Assert.That(back[i].YMax, Is.EqualTo(boxes[i].YMax).Within(1e-4));
        }
        var none = BoxAugmentation.Augment(image, boxes, 64, new Random(5), BoxAugmentationOptions.None);
        Assert.That(none.Image.Data, Is.EqualTo(boxed.Data));
        Assert.That(none.Boxes, Is.EqualTo(boxedBoxes));
    }

    [Test]
    public void TensorsGoThroughTheSamePath()
    {
        var (image, boxes) = Scene(50, 70, (5, 5, 30, 35));
        using var scope = NewDisposeScope();
        var input = tensor(image.Data, new long[] { 3, 70, 50 });
        var (output, outBoxes) = BoxAugmentation.Augment(input, boxes, 48, new Random(9), new BoxAugmentationOptions());
        var expected = BoxAugmentation.Augment(image, boxes, 48, new Random(9), new BoxAugmentationOptions());
        Assert.That(output.shape, Is.EqualTo(new long[] { 3, 48, 48 }));
        Assert.That(output.data<float>().ToArray(), Is.EqualTo(expected.Image.Data));
        Assert.That(outBoxes, Is.EqualTo(expected.Boxes));
        Assert.That(input.data<float>().ToArray(), Is.EqualTo(image.Data), "the input tensor is left alone");
        Assert.Throws<ArgumentException>(() => BoxAugmentation.FromTensor(zeros(3, 4)));
    }

    [Test]
    public void DecodedImagesAreNormalisedLikeThePreprocessor()
    {
        // 2x1 RGB image: (255, 0, 128) and (0, 255, 64), ImageNet normalisation: (v / 255 - mean) / std per channel.
        var decoded = new DecodedImage(2, 1, [255, 0, 128, 0, 255, 64], "'test'");
        var chw = ChwImage.FromDecoded(decoded, ImageNormalization.ImageNet);
        Assert.That((chw.Channels, chw.Height, chw.Width), Is.EqualTo((3, 1, 2)));
        Assert.That(chw.Data[0], Is.EqualTo((1 - 0.485f) / 0.229f).Within(1e-5));
        Assert.That(chw.Data[1], Is.EqualTo((0 - 0.485f) / 0.229f).Within(1e-5));
        Assert.That(chw.Data[3], Is.EqualTo((1 - 0.456f) / 0.224f).Within(1e-5));
        Assert.That(chw.Data[4], Is.EqualTo((128 / 255f - 0.406f) / 0.225f).Within(1e-5));
        Assert.That(chw.Data[5], Is.EqualTo((64 / 255f - 0.406f) / 0.225f).Within(1e-5));
    }
}
