using Microsoft.ML.Peft.Inputs.Images;
using NUnit.Framework;
using static Microsoft.ML.Peft.Tests.ImageTestImages;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Resize, centre crop, random resized crop, flip and normalisation, against hand-computed values and against
/// torchvision 0.14 (values below computed once with Debian's python3-torchvision, see <see cref="TorchReference"/>).
/// </summary>
[TestFixture]
public class ImagePreprocessorTests
{
    private static readonly ImageNormalization Raw = new(false, 1f, [0f, 0f, 0f], [1f, 1f, 1f]);

    private static DecodedImage Make(int width, int height, Func<int, int, (byte, byte, byte)> color)
    {
        using var image = Rgb(width, height, color);
        return new DecodedImage(width, height, RgbBytes(image), $"'{width}x{height}'");
    }

    /// <summary>The image torchvision was given: pixel (x, y) channel c is (37 x + 71 y + 101 c) mod 256.</summary>
    private static DecodedImage TorchImage(int width, int height) => Make(width, height, Pattern);

    private static float[] Evaluate(ImagePreprocessor preprocessor, DecodedImage image)
    {
        var output = new float[preprocessor.ValuesPerImage];
        preprocessor.Evaluate(image, output);
        return output;
    }

    [Test]
    public void ResizeSizeIsTheShorterSideForA224To256Ratio()
    {
        Assert.That(new ImagePreprocessor(224, ImageNormalization.ImageNet).ResizeSize, Is.EqualTo(256));
        Assert.That(new ImagePreprocessor(64, ImageNormalization.ImageNet).ResizeSize, Is.EqualTo(73));
        Assert.That(new ImagePreprocessor(7, ImageNormalization.ImageNet).ResizeSize, Is.EqualTo(8));
        Assert.That(new ImagePreprocessor(32, ImageNormalization.ImageNet).ValuesPerImage, Is.EqualTo(3 * 32 * 32));
    }

    [Test]
    public void TwoColourImageGivesImageNetNormalisedValuesInRgbAndBgrOrder()
    {
        // 8x8 with S = 7: the resize keeps 8 (no change) and the centre crop starts at round(0.5) = 0 (half to even).
        var image = Make(8, 8, (x, y) => x < 4 ? ((byte)255, (byte)0, (byte)0) : ((byte)0, (byte)51, (byte)255));
        var rgb = Evaluate(new ImagePreprocessor(7, ImageNormalization.ImageNet), image);
        float[] red = [(1f - 0.485f) / 0.229f, (0f - 0.456f) / 0.224f, (0f - 0.406f) / 0.225f];
        float[] blue = [(0f - 0.485f) / 0.229f, (0.2f - 0.456f) / 0.224f, (1f - 0.406f) / 0.225f];
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 7; y++)
                for (int x = 0; x < 7; x++)
                    Assert.That(rgb[c * 49 + y * 7 + x], Is.EqualTo(x < 4 ? red[c] : blue[c]).Within(1e-5f), $"RGB plane {c} at ({x}, {y})");

        var caffe = new ImageNormalization(true, 1f, [103.939f, 116.779f, 123.68f], [1f, 1f, 1f]);
        var bgr = Evaluate(new ImagePreprocessor(7, caffe), image);
        // Plane 0 is blue, plane 2 red; the means are given in that order.
        Assert.That(bgr[0 * 49], Is.EqualTo(0f - 103.939f).Within(1e-4f));
        Assert.That(bgr[1 * 49], Is.EqualTo(0f - 116.779f).Within(1e-4f));
        Assert.That(bgr[2 * 49], Is.EqualTo(255f - 123.68f).Within(1e-4f));
        Assert.That(bgr[0 * 49 + 6], Is.EqualTo(255f - 103.939f).Within(1e-4f));
        Assert.That(bgr[1 * 49 + 6], Is.EqualTo(51f - 116.779f).Within(1e-4f));
        Assert.That(bgr[2 * 49 + 6], Is.EqualTo(0f - 123.68f).Within(1e-4f));
    }

    [Test]
    public void NormalisationIsScaleThenMeanThenStd()
    {
        var image = Make(8, 8, (x, y) => (100, 150, 200));
        var custom = new ImageNormalization(false, 0.5f, [10f, 20f, 30f], [2f, 4f, 5f]);
        var output = Evaluate(new ImagePreprocessor(7, custom), image);
        Assert.That(output[0], Is.EqualTo((50f - 10f) / 2f).Within(1e-5f));
        Assert.That(output[49 + 20], Is.EqualTo((75f - 20f) / 4f).Within(1e-5f));
        Assert.That(output[98 + 48], Is.EqualTo((100f - 30f) / 5f).Within(1e-5f));
    }

    [Test]
    public void ShrinkingAveragesWithAWidenedTriangleFilter()
    {
        // S = 2: ResizeSize round(2.29) = 2, so 4x4 is halved. Output column 0 is centred on source 1.0 with support 2:
        // source columns 0, 1, 2 weigh 0.75, 0.75, 0.25 (column -1 is outside): (0 * 3 + 70 * 3 + 140) / 7 = 50.
        // Output column 1 is centred on 3.0: columns 1, 2, 3 weigh 0.25, 0.75, 0.75: (70 + 140 * 3 + 210 * 3) / 7 = 160.
        var image = Make(4, 4, (x, y) => ((byte)(x * 70), (byte)(x * 70), (byte)(x * 70)));
        var output = Evaluate(new ImagePreprocessor(2, Raw), image);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 2; y++)
            {
                Assert.That(output[c * 4 + y * 2], Is.EqualTo(50f).Within(1e-4f));
                Assert.That(output[c * 4 + y * 2 + 1], Is.EqualTo(160f).Within(1e-4f));
            }
    }

    [Test]
    public void EnlargingIsPlainBilinearWithClampedEdges()
    {
        // 2x2 to S = 7 (resize to 8, crop from 0): output x centred on source (x + 0.5) / 4 - 0.5 in pixel units.
        var image = Make(2, 2, (x, y) => x == 0 ? ((byte)0, (byte)0, (byte)0) : ((byte)200, (byte)200, (byte)200));
        var output = Evaluate(new ImagePreprocessor(7, Raw), image);
        float[] expected = [0f, 0f, 25f, 75f, 125f, 175f, 200f];
        for (int x = 0; x < 7; x++) Assert.That(output[3 * 7 + x], Is.EqualTo(expected[x]).Within(1e-4f), $"x = {x}");
    }

    [TestCase(10, 7, nameof(TorchReference.Evaluate10x7))]
    [TestCase(3, 2, nameof(TorchReference.Evaluate3x2))]
    [TestCase(40, 23, nameof(TorchReference.Evaluate40x23))]
    public void EvaluateMatchesTorchvisionResizeAndCentreCrop(int width, int height, string reference)
    {
        var expected = (float[])typeof(TorchReference).GetField(reference)!.GetValue(null)!;
        var output = Evaluate(new ImagePreprocessor(4, Raw), TorchImage(width, height));
        Assert.That(output, Is.EqualTo(expected).Within(2e-3f));
    }

    [Test]
    public void ResizedCropMatchesTorchvision()
    {
        var preprocessor = new ImagePreprocessor(4, Raw);
        var image = TorchImage(10, 7);
        var output = new float[preprocessor.ValuesPerImage];
        preprocessor.ResizedCrop(image, 1, 2, 5, 7, flip: false, output);
        Assert.That(output, Is.EqualTo(TorchReference.Crop10x7).Within(2e-3f), "crop (top 1, left 2, 5 high, 7 wide) shrunk to 4x4");
        preprocessor.ResizedCrop(image, 0, 3, 3, 2, flip: false, output);
        Assert.That(output, Is.EqualTo(TorchReference.CropUp10x7).Within(2e-3f), "crop (top 0, left 3, 3 high, 2 wide) enlarged to 4x4");
        Assert.Throws<ArgumentOutOfRangeException>(() => preprocessor.ResizedCrop(image, 3, 0, 5, 7, false, output));
    }

    [Test]
    public void AugmentIsDeterministicForASeedAndVariesAcrossSeeds()
    {
        var preprocessor = new ImagePreprocessor(16, ImageNormalization.ImageNet);
        var image = TorchImage(30, 24);
        var augmentation = new ImageAugmentation();
        float[] Run(int seed)
        {
            var output = new float[preprocessor.ValuesPerImage];
            preprocessor.Augment(image, new Random(seed), augmentation, output);
            return output;
        }
        Assert.That(Run(7), Is.EqualTo(Run(7)));
        var outputs = Enumerable.Range(0, 6).Select(Run).ToList();
        Assert.That(outputs.Skip(1).Count(o => !o.SequenceEqual(outputs[0])), Is.GreaterThanOrEqualTo(4), "different seeds give different crops");
        Assert.That(outputs.All(o => !o.SequenceEqual(Evaluate(preprocessor, image))), "a random crop differs from the centre crop");
    }

    [Test]
    public void NoAugmentationIsEvaluateAndDrawsNothing()
    {
        var preprocessor = new ImagePreprocessor(16, ImageNormalization.ImageNet);
        var image = TorchImage(30, 24);
        var random = new Random(3);
        var output = new float[preprocessor.ValuesPerImage + 5];
        output.AsSpan().Fill(float.NaN);
        preprocessor.Augment(image, random, ImageAugmentation.None, output);
        Assert.That(output.Take(preprocessor.ValuesPerImage), Is.EqualTo(Evaluate(preprocessor, image)));
        Assert.That(output.Skip(preprocessor.ValuesPerImage).All(float.IsNaN), "nothing is written past the image");
        Assert.That(random.Next(), Is.EqualTo(new Random(3).Next()), "no random number was drawn");
        Assert.That(ImageAugmentation.None, Is.Not.SameAs(ImageAugmentation.None), "a fresh instance each time, so that changing one changes no other");
    }

    [Test]
    public void FlipMirrorsTheCentreCropHalfTheTime()
    {
        var preprocessor = new ImagePreprocessor(8, ImageNormalization.ImageNet);
        var image = TorchImage(12, 11);
        var plain = Evaluate(preprocessor, image);
        var mirrored = new float[plain.Length];
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    mirrored[c * 64 + y * 8 + x] = plain[c * 64 + y * 8 + 7 - x];
        var flipOnly = new ImageAugmentation { RandomResizedCrop = false, HorizontalFlip = true };
        int flips = 0;
        const int Seeds = 200;
        for (int seed = 0; seed < Seeds; seed++)
        {
            var output = new float[plain.Length];
            preprocessor.Augment(image, new Random(seed), flipOnly, output);
            bool isPlain = output.SequenceEqual(plain), isMirrored = output.SequenceEqual(mirrored);
            Assert.That(isPlain || isMirrored, $"seed {seed}: the centre crop or its mirror");
            if (isMirrored) flips++;
        }
        Assert.That(flips, Is.InRange(Seeds * 0.35, Seeds * 0.65), "flipped about half the time");
    }

    [Test]
    public void FlipOfARandomCropIsTheMirrorOfTheSameCrop()
    {
        var preprocessor = new ImagePreprocessor(8, Raw);
        var image = TorchImage(20, 15);
        var crop = ImagePreprocessor.RandomCrop(20, 15, 0.35, new Random(11));
        var unflipped = new float[preprocessor.ValuesPerImage];
        var flipped = new float[preprocessor.ValuesPerImage];
        preprocessor.ResizedCrop(image, crop.Top, crop.Left, crop.Height, crop.Width, false, unflipped);
        preprocessor.ResizedCrop(image, crop.Top, crop.Left, crop.Height, crop.Width, true, flipped);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    Assert.That(flipped[c * 64 + y * 8 + x], Is.EqualTo(unflipped[c * 64 + y * 8 + 7 - x]));
        Assert.That(flipped, Is.Not.EqualTo(unflipped));
    }

    [Test]
    public void RandomCropsKeepTorchvisionsScaleAndRatioBounds()
    {
        var random = new Random(5);
        for (int i = 0; i < 2000; i++)
        {
            var (top, left, height, width) = ImagePreprocessor.RandomCrop(91, 73, 0.35, random);
            Assert.That(top >= 0 && left >= 0 && top + height <= 73 && left + width <= 91, $"crop {i} inside the image");
            double share = (double)width * height / (73 * 91), ratio = (double)width / height;
            // Rounding the sides to whole pixels moves the share and ratio a little.
            Assert.That(share, Is.InRange(0.33, 1.0), $"crop {i} area share");
            Assert.That(ratio, Is.InRange(0.73, 1.37), $"crop {i} aspect ratio");
        }
        // A 100x1 strip fits no crop of ratio 3/4 to 4/3 and scale above 0.35: the fallback takes the whole height,
        // 4/3 of it wide (rounded to 1), centred.
        Assert.That(ImagePreprocessor.RandomCrop(100, 1, 0.35, new Random(1)), Is.EqualTo((0, 49, 1, 1)));
        // A square that always fits gives different crops for different draws.
        Assert.That(Enumerable.Range(0, 20).Select(s => ImagePreprocessor.RandomCrop(50, 50, 0.35, new Random(s))).Distinct().Count(), Is.GreaterThan(15));
    }

    [Test]
    public void BadArgumentsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ImagePreprocessor(0, ImageNormalization.ImageNet));
        Assert.That(Assert.Throws<ArgumentException>(() => new ImagePreprocessor(8, new ImageNormalization(false, 1f, [0f, 0f], [1f, 1f, 1f])))!.Message, Does.Contain("3 means"));
        Assert.That(Assert.Throws<ArgumentException>(() => new ImagePreprocessor(8, new ImageNormalization(false, 1f, [0f, 0f, 0f], [1f, 0f, 1f])))!.Message, Does.Contain("channel 1"));
        var preprocessor = new ImagePreprocessor(8, ImageNormalization.ImageNet);
        var image = TorchImage(9, 9);
        Assert.That(Assert.Throws<ArgumentException>(() => preprocessor.Evaluate(image, new float[191]))!.Message, Does.Contain("192"));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => preprocessor.Augment(image, new Random(1), new ImageAugmentation { MinCropScale = 0 }, new float[192]))!;
        Assert.That(ex.Message, Does.Contain("MinCropScale"));
    }

    [Test]
    public void SixtyFourPixelInputsFromTwentyEightPixelImagesAreFast()
    {
        // The budget this is written for: ~10,000 Fashion-MNIST images (28x28) to 64x64 per epoch on 2 cores.
        var preprocessor = new ImagePreprocessor(64, ImageNormalization.ImageNet);
        var image = TorchImage(28, 28);
        var output = new float[preprocessor.ValuesPerImage];
        var random = new Random(1);
        var augmentation = new ImageAugmentation();
        // Long enough for the tiered JIT to have optimised the loops.
        var warmUp = System.Diagnostics.Stopwatch.StartNew();
        while (warmUp.ElapsedMilliseconds < 500) preprocessor.Augment(image, random, augmentation, output);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        const int Count = 2000;
        for (int i = 0; i < Count; i++) preprocessor.Augment(image, random, augmentation, output);
        watch.Stop();
        TestContext.Out.WriteLine($"Augment 28x28 -> 64x64: {watch.Elapsed.TotalMilliseconds * 1000 / Count:F1} us per image");
        // Generous for shared, loaded machines (an idle core takes a few tens of microseconds): 10,000 images in at most 10 s.
        Assert.That(watch.Elapsed.TotalMilliseconds / Count, Is.LessThan(1.0));
    }
}

/// <summary>
/// torchvision 0.14.1's outputs for <c>TorchImage</c>s (float tensors, bilinear, antialias=True), [3, 4, 4] each, by
/// this script under Debian's python3-torchvision:
/// <code>
/// import torch, torchvision.transforms.functional as F
/// from torchvision.transforms import InterpolationMode
/// def make(w, h):  # pixel (x, y) channel c = (37 x + 71 y + 101 c) % 256
///     t = torch.zeros(3, h, w)
///     for y in range(h):
///         for x in range(w):
///             for c in range(3): t[c, y, x] = (x * 37 + y * 71 + c * 101) % 256
///     return t
/// evaluate = lambda t, s: F.center_crop(F.resize(t, round(s * 256 / 224), InterpolationMode.BILINEAR, antialias=True), [s, s])
/// crop = lambda t, top, left, h, w, s: F.resized_crop(t, top, left, h, w, [s, s], InterpolationMode.BILINEAR, antialias=True)
/// evaluate(make(10, 7), 4); evaluate(make(3, 2), 4); evaluate(make(40, 23), 4)
/// crop(make(10, 7), 1, 2, 5, 7, 4); crop(make(10, 7), 0, 3, 3, 2, 4)
/// </code>
/// </summary>
internal static class TorchReference
{
    public static readonly float[] Evaluate10x7 = [137.0538f, 147.5000f, 130.4193f, 46.6914f, 191.7168f, 77.8333f, 74.0573f, 127.1481f, 106.4223f, 123.5000f, 169.1056f, 184.8822f, 172.9427f, 169.1667f, 142.4516f, 81.5267f, 166.4839f, 120.5000f, 88.2796f, 141.3704f, 87.1828f, 121.9444f, 175.0573f, 170.2057f, 160.8768f, 177.9545f, 104.9443f, 102.2862f, 128.0502f, 71.0556f, 124.1685f, 177.2593f, 83.0538f, 136.1667f, 175.5161f, 160.1975f, 169.8315f, 151.8333f, 115.4839f, 77.3621f, 89.2082f, 92.7727f, 122.6129f, 156.7407f, 118.9427f, 172.0556f, 137.0824f, 106.5391f];
    public static readonly float[] Evaluate3x2 = [21.1429f, 37.0000f, 52.8571f, 68.7143f, 28.2429f, 44.1000f, 59.9571f, 75.8143f, 56.6429f, 72.5000f, 88.3571f, 104.2143f, 85.0429f, 100.9000f, 116.7571f, 132.6143f, 122.1429f, 138.0000f, 153.8571f, 169.7143f, 129.2429f, 145.1000f, 160.9572f, 176.8143f, 157.6429f, 173.5000f, 189.3571f, 205.2143f, 186.0428f, 201.9000f, 217.7571f, 233.6143f, 223.1429f, 239.0000f, 145.1429f, 51.2857f, 204.6429f, 220.5000f, 137.6143f, 54.7286f, 130.6429f, 146.5000f, 107.5000f, 68.5000f, 56.6429f, 72.5000f, 77.3857f, 82.2714f];
    public static readonly float[] Evaluate40x23 = [120.9579f, 118.1144f, 115.4912f, 116.2813f, 136.1669f, 135.0914f, 132.7482f, 128.1619f, 128.3630f, 130.0000f, 131.6370f, 134.6138f, 117.9871f, 120.5200f, 122.3703f, 123.9280f, 137.0649f, 140.0572f, 139.7462f, 135.0310f, 129.3055f, 131.3509f, 133.0061f, 135.4415f, 118.6370f, 121.6138f, 123.8250f, 125.1749f, 123.9989f, 119.4126f, 117.3619f, 116.9692f, 129.8293f, 130.8396f, 133.0611f, 136.0533f, 120.0061f, 122.4415f, 125.0720f, 126.6297f, 128.0512f, 122.7978f, 119.8411f, 119.2770f, 137.5200f, 138.3951f, 137.5147f, 135.2690f];
    public static readonly float[] Crop10x7 = [179.0833f, 134.7500f, 51.7900f, 109.3690f, 151.1865f, 96.4100f, 134.6233f, 192.2024f, 91.7976f, 149.3767f, 187.5900f, 132.8135f, 174.6309f, 178.4500f, 95.4900f, 104.9167f, 127.7024f, 84.7100f, 152.7900f, 176.8452f, 109.9643f, 167.5434f, 158.8233f, 108.3135f, 185.6865f, 130.9100f, 92.3233f, 120.0357f, 80.5833f, 90.0100f, 145.2900f, 202.8690f, 128.1309f, 167.7900f, 151.3900f, 64.5119f, 160.1706f, 120.0633f, 80.6233f, 138.2024f, 93.6706f, 95.3767f, 163.4566f, 142.8135f, 120.6309f, 178.2100f, 108.0500f, 78.3452f];
    public static readonly float[] CropUp10x7 = [111.0000f, 120.2500f, 138.7500f, 148.0000f, 155.3750f, 164.6250f, 183.1250f, 192.3750f, 208.6250f, 193.8750f, 164.3750f, 149.6250f, 253.0000f, 198.2500f, 88.7500f, 34.0000f, 212.0000f, 221.2500f, 239.7500f, 249.0000f, 96.3750f, 105.6250f, 124.1250f, 133.3750f, 53.6250f, 62.8750f, 81.3750f, 90.6250f, 98.0000f, 107.2500f, 125.7500f, 135.0000f, 57.0000f, 66.2500f, 84.7500f, 94.0000f, 101.3750f, 110.6250f, 129.1250f, 138.3750f, 154.6250f, 163.8750f, 182.3750f, 191.6250f, 199.0000f, 208.2500f, 226.7500f, 236.0000f];
}
