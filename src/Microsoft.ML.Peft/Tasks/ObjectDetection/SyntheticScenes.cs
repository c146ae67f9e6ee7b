using System.Globalization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>One synthetic detection scene: a square grey canvas and the boxes of the items pasted on it.</summary>
/// <param name="Pixels">The canvas, <c>Size * Size</c> grey bytes, row-major.</param>
/// <param name="Size">The canvas's side in pixels.</param>
/// <param name="Boxes">Per pasted item, the tight box of its non-zero pixels, with the item's label as class.</param>
internal sealed record SyntheticScene(byte[] Pixels, int Size, IReadOnlyList<DetectionBox> Boxes);

/// <summary>
/// Multi-class detection scenes made from small labelled items (Fashion-MNIST's 28x28 grey images): 1 to 4 items, each
/// resized to a random side (28 to 84 pixels by default) and pasted at a random position on a noisy square canvas
/// (128x128 by default), not overlapping the boxes already there; each box is the tight bounding box of the pasted
/// item's non-zero pixels. The same items and seed give the same scenes. For the multi-class check of the detector and
/// its tests; reading the IDX files is the caller's (the samples' <c>FashionMnist.Read</c>).
/// </summary>
internal static class SyntheticScenes
{
    /// <summary>The default canvas side.</summary>
    public const int DefaultCanvasSize = 128;

    /// <summary>The brightest background noise value; item pixels are pasted over it where they are non-zero.</summary>
    public const int NoiseLevel = 40;

    private const int PlacementTries = 30;

    /// <summary>Makes scenes.</summary>
    /// <param name="items">The item images, each <c>itemSide * itemSide</c> grey bytes with 0 as background (Fashion-MNIST's layout).</param>
    /// <param name="labels">Each item's class index.</param>
    /// <param name="count">How many scenes.</param>
    /// <param name="seed">The seed of all random choices.</param>
    /// <param name="canvasSize">The canvas side.</param>
    /// <param name="maxItems">The most items per scene (at least 1; fewer when no free place is found).</param>
    /// <param name="minItemSide">The smallest side an item is resized to.</param>
    /// <param name="maxItemSide">The largest side an item is resized to (at most the canvas side).</param>
    /// <exception cref="ArgumentException">The items are empty or not square, or a size is out of range.</exception>
    public static IReadOnlyList<SyntheticScene> Generate(IReadOnlyList<byte[]> items, IReadOnlyList<byte> labels, int count, int seed,
        int canvasSize = DefaultCanvasSize, int maxItems = 4, int minItemSide = 28, int maxItemSide = 84)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(labels);
        if (items.Count == 0) throw new ArgumentException("There are no items to paste.", nameof(items));
        if (items.Count != labels.Count) throw new ArgumentException($"There are {items.Count} items but {labels.Count} labels.", nameof(labels));
        int itemSide = (int)Math.Round(Math.Sqrt(items[0].Length));
        if (itemSide * itemSide != items[0].Length || items.Any(i => i.Length != items[0].Length))
            throw new ArgumentException("The items must all be square images of the same size.", nameof(items));
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxItems);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minItemSide);
        if (maxItemSide < minItemSide || maxItemSide > canvasSize)
            throw new ArgumentOutOfRangeException(nameof(maxItemSide), maxItemSide, $"The largest item side must be between the smallest ({minItemSide}) and the canvas side ({canvasSize}).");

        if (items.All(i => i.All(v => v == 0))) throw new ArgumentException("Every item is blank (all pixels 0), so no box can be made.", nameof(items));
        var random = new Random(seed);
        var scenes = new List<SyntheticScene>(count);
        for (int s = 0; s < count; s++)
        {
            var canvas = new byte[canvasSize * canvasSize];
            for (int i = 0; i < canvas.Length; i++) canvas[i] = (byte)random.Next(0, NoiseLevel + 1);
            int wanted = random.Next(1, maxItems + 1);
            var boxes = new List<DetectionBox>(wanted);
            for (int n = 0; n < wanted; n++)
            {
                int index = random.Next(items.Count);
                int side = random.Next(minItemSide, maxItemSide + 1);
                var resized = ResizeItem(items[index], itemSide, side);
                if (TightBox(resized, side) is not var (x0, y0, x1, y1)) continue;
                bool placed = false;
                for (int attempt = 0; attempt < PlacementTries && !placed; attempt++)
                {
                    int left = random.Next(0, canvasSize - side + 1), top = random.Next(0, canvasSize - side + 1);
                    var box = new DetectionBox(left + x0, top + y0, left + x1, top + y1, labels[index]);
                    if (boxes.Any(b => BoxGeometry.IntersectionArea(b, box) > 0)) continue;
                    for (int y = 0; y < side; y++)
                        for (int x = 0; x < side; x++)
                        {
                            byte v = resized[y * side + x];
                            if (v > 0) canvas[(top + y) * canvasSize + left + x] = v;
                        }
                    boxes.Add(box);
                    placed = true;
                }
                if (!placed) break;
            }
            if (boxes.Count == 0)
            {
                // Only when every drawn item was blank: draw the scene again.
                s--;
                continue;
            }
            scenes.Add(new SyntheticScene(canvas, canvasSize, boxes));
        }
        return scenes;
    }

    /// <summary>
    /// Writes the scenes as image files <c>images/scene-00000.png</c> (or <c>.jpg</c>) under <paramref name="folder"/>
    /// and a <c>labels.csv</c> beside them in the raccoon layout (<see cref="DetectionLabels"/>), and returns what was
    /// written, with <paramref name="classNames"/> as the classes. Reading the CSV back gives the class names sorted,
    /// so the class indices may differ; the names do not.
    /// </summary>
    /// <param name="folder">The folder; created if needed.</param>
    /// <param name="scenes">The scenes.</param>
    /// <param name="classNames">The class names by item label.</param>
    /// <param name="jpeg">JPEG files (quality 90) instead of PNG.</param>
    public static DetectionDataset Write(string folder, IReadOnlyList<SyntheticScene> scenes, IReadOnlyList<string> classNames, bool jpeg = false)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(scenes);
        ArgumentNullException.ThrowIfNull(classNames);
        var imageFolder = Path.Combine(folder, "images");
        Directory.CreateDirectory(imageFolder);
        var images = new List<DetectionImage>(scenes.Count);
        for (int i = 0; i < scenes.Count; i++)
        {
            var scene = scenes[i];
            var name = string.Create(CultureInfo.InvariantCulture, $"scene-{i:D5}{(jpeg ? ".jpg" : ".png")}");
            using (var image = Image.LoadPixelData<L8>(scene.Pixels, scene.Size, scene.Size))
            {
                var path = Path.Combine(imageFolder, name);
                if (jpeg) image.SaveAsJpeg(path, new JpegEncoder { Quality = 90 });
                else image.SaveAsPng(path);
            }
            images.Add(new DetectionImage(name, scene.Size, scene.Size, scene.Boxes));
        }
        DetectionLabels.WriteCsv(Path.Combine(folder, "labels.csv"), images, classNames, withScore: false);
        return new DetectionDataset(images, classNames);
    }

    /// <summary>The item resized to <paramref name="side"/> (antialiased bilinear), rounded to bytes.</summary>
    private static byte[] ResizeItem(byte[] item, int itemSide, int side)
    {
        var floats = new ChwImage(item.Select(b => (float)b).ToArray(), 1, itemSide, itemSide);
        var (resized, _) = BoxAugmentation.Resize(floats, [], side, side);
        return resized.Data.Select(v => (byte)Math.Clamp((int)MathF.Round(v), 0, 255)).ToArray();
    }

    /// <summary>The tight box <c>[x0, x1) x [y0, y1)</c> of the non-zero pixels, or null when there are none.</summary>
    internal static (int X0, int Y0, int X1, int Y1)? TightBox(byte[] pixels, int side)
    {
        int x0 = side, y0 = side, x1 = 0, y1 = 0;
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
            {
                if (pixels[y * side + x] == 0) continue;
                x0 = Math.Min(x0, x);
                y0 = Math.Min(y0, y);
                x1 = Math.Max(x1, x + 1);
                y1 = Math.Max(y1, y + 1);
            }
        return x1 > x0 ? (x0, y0, x1, y1) : null;
    }
}
