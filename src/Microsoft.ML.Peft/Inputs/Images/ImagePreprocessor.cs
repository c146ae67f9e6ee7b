namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// Turns a <see cref="DecodedImage"/> into a model input: <c>[3, S, S]</c> floats, channel-major (CHW), normalised.
/// <see cref="Evaluate"/> does what torchvision's <c>Resize(round(S * 256 / 224))</c> then <c>CenterCrop(S)</c> do;
/// <see cref="Augment"/> does <c>RandomResizedCrop(S)</c> and <c>RandomHorizontalFlip()</c>. Both sample the RGB bytes
/// straight into the destination with a separable bilinear (triangle) filter whose support widens when it shrinks
/// (antialiasing, as PIL and torchvision's <c>antialias=True</c> do); values are not rounded to bytes in between.
/// Instances hold no state between calls and may be shared between threads.
/// </summary>
internal sealed class ImagePreprocessor
{
    private readonly float[] multiplier = new float[3];
    private readonly float[] offset = new float[3];
    private readonly int[] sourceChannel = new int[3];

    /// <summary>Creates a preprocessor.</summary>
    /// <param name="imageSize">The side <c>S</c> of the square model input, in pixels.</param>
    /// <param name="normalization">How bytes become input values and in which channel order.</param>
    /// <exception cref="ArgumentException">The size is not positive or the normalisation is not valid.</exception>
    public ImagePreprocessor(int imageSize, ImageNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(normalization);
        if (imageSize <= 0) throw new ArgumentOutOfRangeException(nameof(imageSize), imageSize, "The image size must be positive.");
        normalization.Validate();
        ImageSize = imageSize;
        Normalization = normalization;
        ResizeSize = (int)Math.Round(imageSize * 256.0 / 224.0, MidpointRounding.AwayFromZero);
        for (int plane = 0; plane < 3; plane++)
        {
            // Output plane p holds source channel p (RGB) or 2 - p (BGR); mean and std are in the output order.
            sourceChannel[plane] = normalization.Bgr ? 2 - plane : plane;
            multiplier[plane] = normalization.Scale / normalization.Std[plane];
            offset[plane] = -normalization.Mean[plane] / normalization.Std[plane];
        }
    }

    /// <summary>The side <c>S</c> of the square model input.</summary>
    public int ImageSize { get; }

    /// <summary>The normalisation applied.</summary>
    public ImageNormalization Normalization { get; }

    /// <summary>The shorter side an image is resized to before the centre crop: <c>round(S * 256 / 224)</c> (256 for 224).</summary>
    public int ResizeSize { get; }

    /// <summary>The number of floats one image takes: <c>3 * S * S</c>.</summary>
    public int ValuesPerImage => 3 * ImageSize * ImageSize;

    /// <summary>
    /// Resizes the image so that its shorter side is <see cref="ResizeSize"/> (aspect ratio kept, longer side truncated
    /// as torchvision does), takes the centred <c>S x S</c> square, and writes it normalised, CHW, into
    /// <paramref name="destination"/>.
    /// </summary>
    /// <param name="image">The image.</param>
    /// <param name="destination">At least <see cref="ValuesPerImage"/> floats; the first <see cref="ValuesPerImage"/> are written.</param>
    public void Evaluate(DecodedImage image, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        CheckDestination(destination);
        CentreCrop(image, destination, flip: false);
    }

    /// <summary>
    /// Writes a randomly augmented copy of the image, normalised, CHW, into <paramref name="destination"/>: with
    /// <see cref="ImageAugmentation.RandomResizedCrop"/>, torchvision's <c>RandomResizedCrop(S, scale=(MinCropScale, 1),
    /// ratio=(3/4, 4/3))</c> (10 tries at a crop that fits, then the whole image cropped to the nearest allowed ratio),
    /// else the resize and centre crop of <see cref="Evaluate"/>; then, with <see cref="ImageAugmentation.HorizontalFlip"/>,
    /// a left-right mirror with probability 1/2. The same <paramref name="random"/> state gives the same output.
    /// </summary>
    /// <param name="image">The image.</param>
    /// <param name="random">Where the random choices come from.</param>
    /// <param name="augmentation">What to do; <see cref="ImageAugmentation.None"/> gives <see cref="Evaluate"/>'s output and draws nothing.</param>
    /// <param name="destination">At least <see cref="ValuesPerImage"/> floats; the first <see cref="ValuesPerImage"/> are written.</param>
    public void Augment(DecodedImage image, Random random, ImageAugmentation augmentation, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(random);
        ArgumentNullException.ThrowIfNull(augmentation);
        augmentation.Validate();
        CheckDestination(destination);
        if (!augmentation.RandomResizedCrop)
        {
            bool mirror = augmentation.HorizontalFlip && random.NextDouble() < 0.5;
            CentreCrop(image, destination, mirror);
            return;
        }
        var (top, left, height, width) = RandomCrop(image.Width, image.Height, augmentation.MinCropScale, random);
        bool flip = augmentation.HorizontalFlip && random.NextDouble() < 0.5;
        ResizedCrop(image, top, left, height, width, flip, destination);
    }

    /// <summary>
    /// torchvision's <c>resized_crop</c>: the region <c>(top, left, height, width)</c> of the image, resized to
    /// <c>S x S</c> (antialiased bilinear, pixels outside the region not used), mirrored when <paramref name="flip"/>,
    /// written normalised, CHW.
    /// </summary>
    internal void ResizedCrop(DecodedImage image, int top, int left, int height, int width, bool flip, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        CheckDestination(destination);
        if (top < 0 || left < 0 || height <= 0 || width <= 0 || top + height > image.Height || left + width > image.Width)
            throw new ArgumentOutOfRangeException(nameof(top), $"The crop ({left}, {top}) {width}x{height} is not inside the {image.Width}x{image.Height} image {image.Source}.");
        int s = ImageSize;
        var columns = Taps.Compute(s, left, (double)width / s, left, left + width);
        var rows = Taps.Compute(s, top, (double)height / s, top, top + height);
        Sample(image, columns, rows, flip, destination);
    }

    /// <summary>
    /// torchvision's <c>RandomResizedCrop.get_params</c>: the crop <c>(top, left, height, width)</c> in source pixels.
    /// Draws, per try, the area share, then the log aspect ratio, then (on success) the top and left offsets.
    /// </summary>
    internal static (int Top, int Left, int Height, int Width) RandomCrop(int imageWidth, int imageHeight, double minScale, Random random)
    {
        const double MinRatio = 3.0 / 4.0, MaxRatio = 4.0 / 3.0;
        double area = (double)imageWidth * imageHeight;
        double logMin = Math.Log(MinRatio), logMax = Math.Log(MaxRatio);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = area * (minScale + (1 - minScale) * random.NextDouble());
            double aspect = Math.Exp(logMin + (logMax - logMin) * random.NextDouble());
            int w = (int)Math.Round(Math.Sqrt(targetArea * aspect), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(targetArea / aspect), MidpointRounding.ToEven);
            if (w > 0 && w <= imageWidth && h > 0 && h <= imageHeight)
            {
                int top = random.Next(0, imageHeight - h + 1);
                int left = random.Next(0, imageWidth - w + 1);
                return (top, left, h, w);
            }
        }
        // Fallback: the whole image, cropped to the nearest allowed aspect ratio, centred.
        double inRatio = (double)imageWidth / imageHeight;
        int cw, ch;
        if (inRatio < MinRatio)
        {
            cw = imageWidth;
            ch = Math.Max(1, (int)Math.Round(cw / MinRatio, MidpointRounding.ToEven));
        }
        else if (inRatio > MaxRatio)
        {
            ch = imageHeight;
            cw = Math.Max(1, (int)Math.Round(ch * MaxRatio, MidpointRounding.ToEven));
        }
        else
        {
            cw = imageWidth;
            ch = imageHeight;
        }
        return ((imageHeight - ch) / 2, (imageWidth - cw) / 2, ch, cw);
    }

    /// <summary>
    /// The size torchvision's <c>Resize(size)</c> gives for an int size: the shorter side becomes <paramref name="size"/>,
    /// the longer <c>int(size * long / short)</c>.
    /// </summary>
    internal static (int Width, int Height) ResizedSize(int width, int height, int size)
    {
        if (width <= height) return (size, (int)((double)size * height / width));
        return ((int)((double)size * width / height), size);
    }

    private void CentreCrop(DecodedImage image, Span<float> destination, bool flip)
    {
        int s = ImageSize;
        var (newWidth, newHeight) = ResizedSize(image.Width, image.Height, ResizeSize);
        // torchvision's center_crop: int(round((size - crop) / 2.0)), Python's round being half to even.
        int top = (int)Math.Round((newHeight - s) / 2.0, MidpointRounding.ToEven);
        int left = (int)Math.Round((newWidth - s) / 2.0, MidpointRounding.ToEven);
        double scaleX = (double)image.Width / newWidth, scaleY = (double)image.Height / newHeight;
        var columns = Taps.Compute(s, left * scaleX, scaleX, 0, image.Width);
        var rows = Taps.Compute(s, top * scaleY, scaleY, 0, image.Height);
        Sample(image, columns, rows, flip, destination);
    }

    private void Sample(DecodedImage image, Taps columns, Taps rows, bool flip, Span<float> destination)
    {
        int s = ImageSize, plane = s * s, stride = image.Width * 3;
        var rgb = image.Rgb;
        int firstColumn = columns.FirstSource, columnSpan = columns.LastSource - firstColumn;
        Span<float> line = columnSpan * 3 <= 4096 ? stackalloc float[columnSpan * 3] : new float[columnSpan * 3];
        int c0 = sourceChannel[0], c1 = sourceChannel[1], c2 = sourceChannel[2];
        float m0 = multiplier[0], m1 = multiplier[1], m2 = multiplier[2];
        float o0 = offset[0], o1 = offset[1], o2 = offset[2];
        for (int y = 0; y < s; y++)
        {
            // Vertical pass: the output row's source rows blended into one line of the columns needed.
            line.Clear();
            int rowStart = rows.Start[y], rowCount = rows.Count[y], rowWeights = y * rows.MaxTaps;
            for (int k = 0; k < rowCount; k++)
            {
                float w = rows.Weights[rowWeights + k];
                var src = rgb.AsSpan((rowStart + k) * stride + firstColumn * 3, columnSpan * 3);
                for (int i = 0; i < src.Length; i++) line[i] += w * src[i];
            }
            // Horizontal pass, normalisation and channel order.
            int outRow = y * s;
            for (int x = 0; x < s; x++)
            {
                float v0 = 0, v1 = 0, v2 = 0;
                int start = (columns.Start[x] - firstColumn) * 3, count = columns.Count[x], weights = x * columns.MaxTaps;
                for (int k = 0; k < count; k++)
                {
                    float w = columns.Weights[weights + k];
                    int at = start + 3 * k;
                    v0 += w * line[at + c0];
                    v1 += w * line[at + c1];
                    v2 += w * line[at + c2];
                }
                int o = outRow + (flip ? s - 1 - x : x);
                destination[o] = v0 * m0 + o0;
                destination[plane + o] = v1 * m1 + o1;
                destination[2 * plane + o] = v2 * m2 + o2;
            }
        }
    }

    private void CheckDestination(Span<float> destination)
    {
        if (destination.Length < ValuesPerImage)
            throw new ArgumentException($"The destination holds {destination.Length} floats; an image of 3 x {ImageSize} x {ImageSize} needs {ValuesPerImage}.", nameof(destination));
    }

    /// <summary>
    /// The source pixels and weights of each output pixel along one axis (PIL's <c>precompute_coeffs</c> for the
    /// bilinear filter): output pixel <c>i</c> is centred on source coordinate <c>start + (i + 0.5) * scale</c>; the
    /// triangle filter is widened by <c>scale</c> when it is above 1, and source pixels outside <c>[low, high)</c>
    /// are left out (the weights renormalised), which for enlargement is the same as clamping at the edges.
    /// </summary>
    private sealed class Taps
    {
        private Taps(int[] start, int[] count, float[] weights, int maxTaps, int firstSource, int lastSource)
        {
            Start = start;
            Count = count;
            Weights = weights;
            MaxTaps = maxTaps;
            FirstSource = firstSource;
            LastSource = lastSource;
        }

        public int[] Start { get; }
        public int[] Count { get; }
        public float[] Weights { get; }
        public int MaxTaps { get; }
        public int FirstSource { get; }
        public int LastSource { get; }

        public static Taps Compute(int outSize, double start, double scale, int low, int high)
        {
            double filterScale = Math.Max(scale, 1.0);
            double support = filterScale;
            int maxTaps = (int)Math.Ceiling(support) * 2 + 1;
            var starts = new int[outSize];
            var counts = new int[outSize];
            var weights = new float[outSize * maxTaps];
            var w = new double[maxTaps];
            int first = int.MaxValue, last = int.MinValue;
            for (int i = 0; i < outSize; i++)
            {
                double centre = start + (i + 0.5) * scale;
                int min = Math.Max((int)Math.Floor(centre - support + 0.5), low);
                int max = Math.Min((int)Math.Floor(centre + support + 0.5), high);
                if (max <= min)
                {
                    // Only for a centre outside [low, high), which the callers never ask for: the nearest pixel inside.
                    min = Math.Clamp((int)Math.Floor(centre), low, high - 1);
                    max = min + 1;
                }
                double total = 0;
                int n = max - min;
                for (int k = 0; k < n; k++)
                {
                    double d = Math.Abs((min + k - centre + 0.5) / filterScale);
                    w[k] = d < 1 ? 1 - d : 0;
                    total += w[k];
                }
                if (total <= 0)
                {
                    Array.Clear(w);
                    w[Math.Clamp((int)Math.Floor(centre) - min, 0, n - 1)] = 1;
                    total = 1;
                }
                // Leading and trailing zero weights are dropped so that the inner loops do no useless work.
                int from = 0, to = n;
                while (from < to - 1 && w[from] == 0) from++;
                while (to > from + 1 && w[to - 1] == 0) to--;
                starts[i] = min + from;
                counts[i] = to - from;
                for (int k = from; k < to; k++) weights[i * maxTaps + k - from] = (float)(w[k] / total);
                first = Math.Min(first, starts[i]);
                last = Math.Max(last, starts[i] + counts[i]);
            }
            return new Taps(starts, counts, weights, maxTaps, first, last);
        }
    }
}
