using Microsoft.ML.Peft.Inputs.Images;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// An image as floats, channel-major (CHW): value <c>(c, y, x)</c> at <c>(c * Height + y) * Width + x</c>.
/// </summary>
/// <param name="Data">The values, <c>Channels * Height * Width</c> of them; kept, not copied.</param>
/// <param name="Channels">The number of channels (positive).</param>
/// <param name="Height">The height in pixels (positive).</param>
/// <param name="Width">The width in pixels (positive).</param>
internal sealed record ChwImage(float[] Data, int Channels, int Height, int Width)
{
    /// <summary>Checks the sizes.</summary>
    /// <exception cref="ArgumentException">A size is not positive or the data's length does not match.</exception>
    public void Validate()
    {
        if (Channels <= 0 || Height <= 0 || Width <= 0)
            throw new ArgumentException($"An image must have positive sizes, not {Channels}x{Height}x{Width} (channels x height x width).");
        if (Data is null || Data.LongLength != (long)Channels * Height * Width)
            throw new ArgumentException($"A {Channels}x{Height}x{Width} image holds {(long)Channels * Height * Width} values, not {Data?.LongLength ?? 0}.");
    }

    /// <summary>
    /// A decoded image normalised as a model takes it (<see cref="ImageNormalization"/>: scale, then per-channel mean and
    /// standard deviation, RGB or BGR order), CHW, at its own size.
    /// </summary>
    public static ChwImage FromDecoded(DecodedImage image, ImageNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(normalization);
        normalization.Validate();
        int plane = image.Width * image.Height;
        var data = new float[3 * plane];
        var rgb = image.Rgb;
        for (int c = 0; c < 3; c++)
        {
            int source = normalization.Bgr ? 2 - c : c;
            float multiplier = normalization.Scale / normalization.Std[c], offset = -normalization.Mean[c] / normalization.Std[c];
            var destination = data.AsSpan(c * plane, plane);
            for (int i = 0; i < plane; i++) destination[i] = rgb[3 * i + source] * multiplier + offset;
        }
        return new ChwImage(data, 3, image.Height, image.Width);
    }
}

/// <summary>
/// Where an image lies on the square canvas it was letterboxed to: canvas <c>x = image x * ScaleX + OffsetX</c> (and
/// likewise for y). Maps predicted boxes back to the image's pixels.
/// </summary>
/// <param name="ScaleX">Resized width over the image's width.</param>
/// <param name="ScaleY">Resized height over the image's height.</param>
/// <param name="OffsetX">The left padding, in canvas pixels.</param>
/// <param name="OffsetY">The top padding, in canvas pixels.</param>
/// <param name="ImageWidth">The image's width.</param>
/// <param name="ImageHeight">The image's height.</param>
internal readonly record struct LetterboxTransform(float ScaleX, float ScaleY, float OffsetX, float OffsetY, int ImageWidth, int ImageHeight)
{
    /// <summary>A box of the image in canvas coordinates.</summary>
    public DetectionBox ToCanvas(in DetectionBox box) => box with
    {
        XMin = box.XMin * ScaleX + OffsetX, YMin = box.YMin * ScaleY + OffsetY,
        XMax = box.XMax * ScaleX + OffsetX, YMax = box.YMax * ScaleY + OffsetY,
    };

    /// <summary>A box on the canvas (a prediction) in the image's pixel coordinates, clipped to the image.</summary>
    public DetectionBox ToImage(in DetectionBox box) => BoxGeometry.Clip(box with
    {
        XMin = (box.XMin - OffsetX) / ScaleX, YMin = (box.YMin - OffsetY) / ScaleY,
        XMax = (box.XMax - OffsetX) / ScaleX, YMax = (box.YMax - OffsetY) / ScaleY,
    }, ImageWidth, ImageHeight);
}

/// <summary>The object detector's training augmentation (<c>PeftObjectDetectionTrainer.Options.Augmentation</c>): what is done to each training image, its boxes moved with the pixels.</summary>
public sealed class BoxAugmentationOptions
{
    /// <summary>Whether the image and its boxes are mirrored left to right with probability one half.</summary>
    public bool HorizontalFlip = true;

    /// <summary>The probability of a random crop that keeps every box's centre (the crop covers every box centre), in [0, 1].</summary>
    public float CropProbability = 0.5f;

    /// <summary>The smallest side of a random crop as a share of the image's side, in (0, 1] (the crop is widened to cover all box centres).</summary>
    public float MinCropShare = 0.5f;

    /// <summary>The share of its area a box must keep inside a crop not to be dropped, in [0, 1] (0.3: boxes cut to less than 30% are dropped).</summary>
    public float MinKeptArea = 0.3f;

    /// <summary>The smallest scale-jitter factor (relative to fitting the canvas), positive.</summary>
    public float MinScale = 0.6f;

    /// <summary>The largest scale-jitter factor, at least <see cref="MinScale"/>; above 1 the image is larger than the canvas and a window of it is kept.</summary>
    public float MaxScale = 1.2f;

    /// <summary>Whether the image is placed at a random position on the canvas; else centred, as evaluation and prediction place it.</summary>
    public bool RandomPlacement = true;

    /// <summary>Nothing random: training images are letterboxed as evaluation and prediction images are. Each call returns a new instance.</summary>
    public static BoxAugmentationOptions None => new() { HorizontalFlip = false, CropProbability = 0, MinScale = 1, MaxScale = 1, RandomPlacement = false };

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of its range.</exception>
    public void Validate()
    {
        if (!(CropProbability >= 0 && CropProbability <= 1)) throw new ArgumentOutOfRangeException(nameof(CropProbability), CropProbability, "The crop probability must be in [0, 1].");
        if (!(MinCropShare > 0 && MinCropShare <= 1)) throw new ArgumentOutOfRangeException(nameof(MinCropShare), MinCropShare, "The smallest crop share must be in (0, 1].");
        if (!(MinKeptArea >= 0 && MinKeptArea <= 1)) throw new ArgumentOutOfRangeException(nameof(MinKeptArea), MinKeptArea, "The smallest kept area share must be in [0, 1].");
        if (!(MinScale > 0 && float.IsFinite(MinScale))) throw new ArgumentOutOfRangeException(nameof(MinScale), MinScale, "The smallest scale must be positive.");
        if (!(MaxScale >= MinScale && float.IsFinite(MaxScale))) throw new ArgumentOutOfRangeException(nameof(MaxScale), MaxScale, $"The largest scale must be at least the smallest ({MinScale}).");
    }
}

/// <summary>
/// Training augmentation for detection that moves the boxes with the pixels: horizontal flip, random crop that keeps
/// box centres, scale jitter, and placement on the square training canvas (letterbox); every operation returns a new
/// image and new boxes and leaves its inputs alone. Randomness comes only from the <see cref="Random"/> passed in.
/// </summary>
/// <remarks>
/// Boxes are in continuous pixel coordinates (pixel <c>x</c> spans <c>[x, x + 1)</c>), so resizing a W-wide image to
/// W' multiplies x by <c>W' / W</c> exactly, and a flip maps x to <c>W - x</c>. Resizing is a separable triangle
/// (bilinear) filter widened when shrinking (antialiased), as <see cref="ImagePreprocessor"/> samples; padding is 0,
/// which after normalisation is the mean colour. A crop keeps a box only when the box's centre is inside the crop and
/// at least <see cref="BoxAugmentationOptions.MinKeptArea"/> (30%) of its area is; kept boxes are clipped to the crop.
/// </remarks>
internal static class BoxAugmentation
{
    /// <summary>The image mirrored left to right, and its boxes: <c>x</c> becomes <c>Width - x</c>.</summary>
    public static (ChwImage Image, DetectionBox[] Boxes) FlipHorizontal(ChwImage image, IReadOnlyList<DetectionBox> boxes)
    {
        Check(image, boxes);
        int w = image.Width, rows = image.Channels * image.Height;
        var data = new float[image.Data.Length];
        for (int r = 0; r < rows; r++)
        {
            var source = image.Data.AsSpan(r * w, w);
            var destination = data.AsSpan(r * w, w);
            for (int x = 0; x < w; x++) destination[w - 1 - x] = source[x];
        }
        var flipped = boxes.Select(b => b with { XMin = w - b.XMax, XMax = w - b.XMin }).ToArray();
        return (image with { Data = data }, flipped);
    }

    /// <summary>The image resized to <paramref name="width"/> x <paramref name="height"/> (antialiased bilinear), and its boxes scaled by <c>width / Width</c> and <c>height / Height</c>.</summary>
    public static (ChwImage Image, DetectionBox[] Boxes) Resize(ChwImage image, IReadOnlyList<DetectionBox> boxes, int width, int height)
    {
        Check(image, boxes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        float sx = (float)width / image.Width, sy = (float)height / image.Height;
        var scaled = boxes.Select(b => b with { XMin = b.XMin * sx, YMin = b.YMin * sy, XMax = b.XMax * sx, YMax = b.YMax * sy }).ToArray();
        if (width == image.Width && height == image.Height) return (image with { Data = (float[])image.Data.Clone() }, scaled);
        return (new ChwImage(ResizeData(image, width, height), image.Channels, height, width), scaled);
    }

    /// <summary>
    /// The region <c>[left, left + width) x [top, top + height)</c> of the image, and the boxes that keep their centre
    /// inside it and at least <paramref name="minKeptArea"/> of their area, shifted and clipped to it.
    /// </summary>
    public static (ChwImage Image, DetectionBox[] Boxes) Crop(ChwImage image, IReadOnlyList<DetectionBox> boxes, int left, int top, int width, int height, float minKeptArea)
    {
        Check(image, boxes);
        if (left < 0 || top < 0 || width <= 0 || height <= 0 || left + width > image.Width || top + height > image.Height)
            throw new ArgumentOutOfRangeException(nameof(left), $"The crop ({left}, {top}) {width}x{height} is not inside the {image.Width}x{image.Height} image.");
        var data = new float[image.Channels * width * height];
        for (int c = 0; c < image.Channels; c++)
            for (int y = 0; y < height; y++)
                image.Data.AsSpan((c * image.Height + top + y) * image.Width + left, width).CopyTo(data.AsSpan((c * height + y) * width, width));
        return (new ChwImage(data, image.Channels, height, width), CropBoxes(boxes, left, top, width, height, minKeptArea));
    }

    /// <summary>The boxes a crop keeps (see <see cref="Crop"/>), in the crop's coordinates.</summary>
    internal static DetectionBox[] CropBoxes(IReadOnlyList<DetectionBox> boxes, float left, float top, float width, float height, float minKeptArea)
    {
        var kept = new List<DetectionBox>(boxes.Count);
        foreach (var box in boxes)
        {
            float cx = (box.XMin + box.XMax) / 2, cy = (box.YMin + box.YMax) / 2;
            if (cx < left || cx > left + width || cy < top || cy > top + height) continue;
            var shifted = box with { XMin = box.XMin - left, YMin = box.YMin - top, XMax = box.XMax - left, YMax = box.YMax - top };
            var clipped = BoxGeometry.Clip(shifted, width, height);
            if (clipped.Area <= 0 || clipped.Area < minKeptArea * box.Area) continue;
            kept.Add(clipped);
        }
        return kept.ToArray();
    }

    /// <summary>
    /// A random crop <c>(left, top, width, height)</c> of a <paramref name="imageWidth"/> x <paramref name="imageHeight"/>
    /// image that holds the centre of every box: each side is drawn between <paramref name="minShare"/> of the image's
    /// and all of it, widened to the spread of the box centres, and the position is drawn among those that hold them all.
    /// </summary>
    public static (int Left, int Top, int Width, int Height) RandomCrop(int imageWidth, int imageHeight, IReadOnlyList<DetectionBox> boxes, float minShare, Random random)
    {
        ArgumentNullException.ThrowIfNull(boxes);
        ArgumentNullException.ThrowIfNull(random);
        int width = Math.Max(1, (int)Math.Round(imageWidth * (minShare + (1 - minShare) * random.NextDouble())));
        int height = Math.Max(1, (int)Math.Round(imageHeight * (minShare + (1 - minShare) * random.NextDouble())));
        var (left, top) = Window(imageWidth, imageHeight, ref width, ref height, boxes, widen: true, random);
        return (left, top, width, height);
    }

    /// <summary>
    /// A window of the given size within the image, holding every box centre when it can (with <paramref name="widen"/>,
    /// the window is made larger until it can), else as many as its position allows around the centres' middle.
    /// </summary>
    private static (int Left, int Top) Window(int imageWidth, int imageHeight, ref int width, ref int height, IReadOnlyList<DetectionBox> boxes, bool widen, Random random)
    {
        int left = Axis(imageWidth, ref width, boxes.Select(b => (b.XMin + b.XMax) / 2), widen, random);
        int top = Axis(imageHeight, ref height, boxes.Select(b => (b.YMin + b.YMax) / 2), widen, random);
        return (left, top);

        static int Axis(int size, ref int window, IEnumerable<float> centres, bool widen, Random random)
        {
            window = Math.Clamp(window, 1, size);
            var list = centres.Select(c => Math.Clamp(c, 0, size)).ToList();
            if (list.Count == 0) return random.Next(0, size - window + 1);
            float lowCentre = list.Min(), highCentre = list.Max();
            // The window [start, start + window] holds [lowCentre, highCentre] for start in [highCentre - window, lowCentre].
            int needed = (int)Math.Ceiling(highCentre) - (int)Math.Floor(lowCentre);
            if (widen && window < needed) window = Math.Min(size, needed);
            int low = Math.Max(0, (int)Math.Ceiling(highCentre - window));
            int high = Math.Min(size - window, (int)Math.Floor(lowCentre));
            if (low > high)
            {
                // The centres are spread wider than the window: centre it on their middle.
                int middle = (int)Math.Round((lowCentre + highCentre) / 2 - window / 2.0);
                return Math.Clamp(middle, 0, size - window);
            }
            return random.Next(low, high + 1);
        }
    }

    /// <summary>
    /// The image scaled to fit a <paramref name="size"/> x <paramref name="size"/> canvas (longer side = size, aspect
    /// ratio kept), centred on it, the rest padded with <paramref name="padValue"/>; the boxes moved the same way. The
    /// transform maps predictions on the canvas back to the image. This is what validation, test and prediction images go through.
    /// </summary>
    public static (ChwImage Image, DetectionBox[] Boxes, LetterboxTransform Transform) Letterbox(ChwImage image, IReadOnlyList<DetectionBox> boxes, int size, float padValue = 0f)
    {
        Check(image, boxes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        var (w, h) = FitSize(image.Width, image.Height, size, 1f);
        var (resized, resizedBoxes) = Resize(image, boxes, w, h);
        int offsetX = (size - w) / 2, offsetY = (size - h) / 2;
        var (canvas, placed) = Place(resized, resizedBoxes, size, offsetX, offsetY, padValue);
        return (canvas, placed, new LetterboxTransform((float)w / image.Width, (float)h / image.Height, offsetX, offsetY, image.Width, image.Height));
    }

    /// <summary>
    /// A random training copy of the image on a <paramref name="size"/> x <paramref name="size"/> canvas, with its boxes:
    /// (1) with <see cref="BoxAugmentationOptions.HorizontalFlip"/>, a mirror with probability 1/2; (2) with probability
    /// <see cref="BoxAugmentationOptions.CropProbability"/>, a <see cref="RandomCrop"/> (boxes clipped, those cut below
    /// <see cref="BoxAugmentationOptions.MinKeptArea"/> of their area dropped); (3) scale jitter: a resize to a factor
    /// drawn in [<see cref="BoxAugmentationOptions.MinScale"/>, <see cref="BoxAugmentationOptions.MaxScale"/>] times the
    /// size that fits the canvas, and, when that is larger than the canvas, a window of the canvas's size that holds the
    /// box centres when it can (same box rule); (4) placement on the canvas, at a random position or centred, padded with 0.
    /// The same <paramref name="random"/> state gives the same output; the image may lose all its boxes (a background image).
    /// </summary>
    public static (ChwImage Image, DetectionBox[] Boxes) Augment(ChwImage image, IReadOnlyList<DetectionBox> boxes, int size, Random random, BoxAugmentationOptions options)
    {
        Check(image, boxes);
        ArgumentNullException.ThrowIfNull(random);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        options.Validate();
        var current = image;
        IReadOnlyList<DetectionBox> currentBoxes = boxes;
        if (options.HorizontalFlip && random.NextDouble() < 0.5)
            (current, currentBoxes) = FlipHorizontal(current, currentBoxes);
        if (options.CropProbability > 0 && random.NextDouble() < options.CropProbability)
        {
            var (left, top, width, height) = RandomCrop(current.Width, current.Height, currentBoxes, options.MinCropShare, random);
            (current, currentBoxes) = Crop(current, currentBoxes, left, top, width, height, options.MinKeptArea);
        }
        float factor = options.MaxScale > options.MinScale ? (float)(options.MinScale + (options.MaxScale - options.MinScale) * random.NextDouble()) : options.MinScale;
        var (w, h) = FitSize(current.Width, current.Height, size, factor);
        (current, currentBoxes) = Resize(current, currentBoxes, w, h);
        if (w > size || h > size)
        {
            int windowWidth = Math.Min(w, size), windowHeight = Math.Min(h, size);
            var (left, top) = Window(w, h, ref windowWidth, ref windowHeight, currentBoxes, widen: false, random);
            (current, currentBoxes) = Crop(current, currentBoxes, left, top, windowWidth, windowHeight, options.MinKeptArea);
        }
        int offsetX = (size - current.Width) / 2, offsetY = (size - current.Height) / 2;
        if (options.RandomPlacement)
        {
            offsetX = random.Next(0, size - current.Width + 1);
            offsetY = random.Next(0, size - current.Height + 1);
        }
        return Place(current, currentBoxes, size, offsetX, offsetY, 0f);
    }

    /// <summary>
    /// <see cref="Augment(ChwImage, IReadOnlyList{DetectionBox}, int, Random, BoxAugmentationOptions)"/> on a TorchSharp
    /// tensor <c>[C, H, W]</c> of float32 (on any device); returns a new CPU tensor <c>[C, size, size]</c>, which the
    /// caller disposes (or creates inside a dispose scope).
    /// </summary>
    public static (Tensor Image, DetectionBox[] Boxes) Augment(Tensor image, IReadOnlyList<DetectionBox> boxes, int size, Random random, BoxAugmentationOptions options)
    {
        var (result, resultBoxes) = Augment(FromTensor(image), boxes, size, random, options);
        return (ToTensor(result), resultBoxes);
    }

    /// <summary><see cref="Letterbox(ChwImage, IReadOnlyList{DetectionBox}, int, float)"/> on a tensor <c>[C, H, W]</c> of float32; returns a new CPU tensor.</summary>
    public static (Tensor Image, DetectionBox[] Boxes, LetterboxTransform Transform) Letterbox(Tensor image, IReadOnlyList<DetectionBox> boxes, int size, float padValue = 0f)
    {
        var (result, resultBoxes, transform) = Letterbox(FromTensor(image), boxes, size, padValue);
        return (ToTensor(result), resultBoxes, transform);
    }

    /// <summary>A copy of a float32 tensor <c>[C, H, W]</c> as a <see cref="ChwImage"/>.</summary>
    public static ChwImage FromTensor(Tensor image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.dim() != 3) throw new ArgumentException($"An image tensor must be [channels, height, width]; this one has the shape [{string.Join(", ", image.shape)}].", nameof(image));
        if (image.dtype != ScalarType.Float32) throw new ArgumentException($"An image tensor must be float32, not {image.dtype}.", nameof(image));
        using var scope = NewDisposeScope();
        var data = image.cpu().contiguous().data<float>().ToArray();
        return new ChwImage(data, (int)image.shape[0], (int)image.shape[1], (int)image.shape[2]);
    }

    /// <summary>A new CPU float32 tensor <c>[C, H, W]</c> holding the image.</summary>
    public static Tensor ToTensor(ChwImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        image.Validate();
        return tensor(image.Data, new long[] { image.Channels, image.Height, image.Width });
    }

    /// <summary>The size <c>factor</c> times the one that fits a square canvas: the longer side <c>size * factor</c>, rounded, at least 1 pixel each.</summary>
    internal static (int Width, int Height) FitSize(int width, int height, int size, float factor)
    {
        double scale = (double)size * factor / Math.Max(width, height);
        return (Math.Max(1, (int)Math.Round(width * scale)), Math.Max(1, (int)Math.Round(height * scale)));
    }

    private static (ChwImage Image, DetectionBox[] Boxes) Place(ChwImage image, IReadOnlyList<DetectionBox> boxes, int size, int offsetX, int offsetY, float padValue)
    {
        if (offsetX < 0 || offsetY < 0 || offsetX + image.Width > size || offsetY + image.Height > size)
            throw new ArgumentOutOfRangeException(nameof(offsetX), $"A {image.Width}x{image.Height} image at ({offsetX}, {offsetY}) does not fit a {size}x{size} canvas.");
        var data = new float[image.Channels * size * size];
        if (padValue != 0) Array.Fill(data, padValue);
        for (int c = 0; c < image.Channels; c++)
            for (int y = 0; y < image.Height; y++)
                image.Data.AsSpan((c * image.Height + y) * image.Width, image.Width).CopyTo(data.AsSpan((c * size + offsetY + y) * size + offsetX, image.Width));
        var moved = boxes.Select(b => b with { XMin = b.XMin + offsetX, YMin = b.YMin + offsetY, XMax = b.XMax + offsetX, YMax = b.YMax + offsetY }).ToArray();
        return (new ChwImage(data, image.Channels, size, size), moved);
    }

    private static void Check(ChwImage image, IReadOnlyList<DetectionBox> boxes)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(boxes);
        image.Validate();
    }

    /// <summary>Separable resize: rows first (to the new width), then columns (to the new height).</summary>
    private static float[] ResizeData(ChwImage image, int width, int height)
    {
        int c = image.Channels, h0 = image.Height, w0 = image.Width;
        var (xStart, xCount, xWeights, xTaps) = Weights(w0, width);
        var (yStart, yCount, yWeights, yTaps) = Weights(h0, height);
        var horizontal = new float[c * h0 * width];
        for (int row = 0; row < c * h0; row++)
        {
            var source = image.Data.AsSpan(row * w0, w0);
            var destination = horizontal.AsSpan(row * width, width);
            for (int x = 0; x < width; x++)
            {
                float sum = 0;
                int start = xStart[x], at = x * xTaps;
                for (int k = 0; k < xCount[x]; k++) sum += xWeights[at + k] * source[start + k];
                destination[x] = sum;
            }
        }
        var result = new float[c * height * width];
        for (int channel = 0; channel < c; channel++)
        {
            for (int y = 0; y < height; y++)
            {
                var destination = result.AsSpan((channel * height + y) * width, width);
                int start = yStart[y], at = y * yTaps;
                for (int k = 0; k < yCount[y]; k++)
                {
                    float w = yWeights[at + k];
                    var source = horizontal.AsSpan((channel * h0 + start + k) * width, width);
                    for (int x = 0; x < width; x++) destination[x] += w * source[x];
                }
            }
        }
        return result;
    }

    /// <summary>
    /// PIL's bilinear coefficients along one axis: output pixel <c>i</c> is centred on source coordinate
    /// <c>(i + 0.5) * in / out</c>; the triangle filter is widened by the scale when shrinking; pixels outside the
    /// image are left out and the weights renormalised (clamping at the edges when enlarging).
    /// </summary>
    private static (int[] Start, int[] Count, float[] Weights, int MaxTaps) Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = filterScale;
        int maxTaps = (int)Math.Ceiling(support) * 2 + 1;
        var starts = new int[outSize];
        var counts = new int[outSize];
        var weights = new float[outSize * maxTaps];
        var w = new double[maxTaps];
        for (int i = 0; i < outSize; i++)
        {
            double centre = (i + 0.5) * scale;
            int min = Math.Max((int)Math.Floor(centre - support + 0.5), 0);
            int max = Math.Min((int)Math.Floor(centre + support + 0.5), inSize);
            int n = Math.Min(max - min, maxTaps);
            double total = 0;
            for (int k = 0; k < n; k++)
            {
                double d = Math.Abs((min + k - centre + 0.5) / filterScale);
                w[k] = d < 1 ? 1 - d : 0;
                total += w[k];
            }
            if (total <= 0)
            {
                min = Math.Clamp((int)Math.Floor(centre), 0, inSize - 1);
                n = 1;
                w[0] = total = 1;
            }
            starts[i] = min;
            counts[i] = n;
            for (int k = 0; k < n; k++) weights[i * maxTaps + k] = (float)(w[k] / total);
        }
        return (starts, counts, weights, maxTaps);
    }
}
