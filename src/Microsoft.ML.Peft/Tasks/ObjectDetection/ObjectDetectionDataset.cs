using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// A labelled detection data set read from the files people have, as the trainer reads it: one row per image with the
/// columns <c>ImagePath</c> (text: the image file's full path), <c>Label</c> (a vector of text: each box's class name;
/// map it to keys with <c>MapValueToKey</c>) and <c>BoundingBoxes</c> (a vector of Single, xmin, ymin, xmax, ymax in
/// pixels per box). Read it with <see cref="Load"/>.
/// </summary>
public sealed class ObjectDetectionDataset
{
    /// <summary>The name of the column of image paths.</summary>
    public const string ImagePathColumnName = "ImagePath";

    /// <summary>The name of the column of class names, one per box.</summary>
    public const string LabelColumnName = "Label";

    /// <summary>The name of the column of boxes, four numbers per box.</summary>
    public const string BoundingBoxColumnName = "BoundingBoxes";

    private ObjectDetectionDataset(IDataView data, IReadOnlyList<string> classes, IReadOnlyList<string> paths, IReadOnlyList<(int Width, int Height)> sizes, int boxCount)
    {
        Data = data;
        Classes = classes;
        ImagePaths = paths;
        ImageSizes = sizes;
        BoxCount = boxCount;
    }

    /// <summary>One row per image: <see cref="ImagePathColumnName"/>, <see cref="LabelColumnName"/>, <see cref="BoundingBoxColumnName"/>.</summary>
    public IDataView Data { get; }

    /// <summary>The class names: the sorted names found, or the list given to <see cref="Load"/>.</summary>
    public IReadOnlyList<string> Classes { get; }

    /// <summary>The images' full paths, in the rows' order.</summary>
    public IReadOnlyList<string> ImagePaths { get; }

    /// <summary>The images' sizes in pixels as the labels give them, in the rows' order.</summary>
    public IReadOnlyList<(int Width, int Height)> ImageSizes { get; }

    /// <summary>The number of images.</summary>
    public int ImageCount => ImagePaths.Count;

    /// <summary>The number of boxes over all images.</summary>
    public int BoxCount { get; }

    /// <summary>
    /// Reads detection labels and checks every image file: a CSV file with one row per box and the header
    /// <c>filename,width,height,class,xmin,ymin,xmax,ymax</c> (the layout of the Raccoon data set; a row with empty class
    /// and coordinates is an image without objects), or a folder of Pascal VOC XML files. Boxes must lie in their image
    /// (1 pixel of tolerance, clamped) with <c>xmin &lt; xmax</c> and <c>ymin &lt; ymax</c>.
    /// </summary>
    /// <param name="mlContext">The ML.NET context.</param>
    /// <param name="labelsPath">The CSV file or the folder of VOC XML files.</param>
    /// <param name="imagesFolder">The folder the labels' file names are relative to.</param>
    /// <param name="classes">A fixed class list (a model's classes, for a test set): a box of another class is an error. Null: the sorted names found.</param>
    /// <param name="maxImages">Read at most this many images (the first ones); null: all.</param>
    /// <exception cref="FileNotFoundException">The labels or an image file are missing (the message names the file and the labels row).</exception>
    /// <exception cref="DirectoryNotFoundException">The images folder is missing.</exception>
    /// <exception cref="InvalidDataException">The labels are not valid (the message names the file and row or line).</exception>
    public static ObjectDetectionDataset Load(MLContext mlContext, string labelsPath, string imagesFolder, IReadOnlyList<string>? classes = null, int? maxImages = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentNullException.ThrowIfNull(labelsPath);
        ArgumentNullException.ThrowIfNull(imagesFolder);
        if (maxImages is < 1) throw new ArgumentOutOfRangeException(nameof(maxImages), maxImages, "maxImages must be positive.");
        var dataset = DetectionLabels.Read(labelsPath, classes);
        if (dataset.Images.Count == 0) throw new InvalidDataException($"The labels '{labelsPath}' list no image.");
        var images = maxImages is int max ? dataset.Images.Take(max).ToList() : dataset.Images;
        var paths = DetectionLabels.ImagePaths(images, imagesFolder);
        var rows = images.Select((image, i) => new Row
        {
            ImagePath = paths[i],
            Label = image.Boxes.Select(b => dataset.Classes[b.Class]).ToArray(),
            BoundingBoxes = image.Boxes.SelectMany(b => new[] { b.XMin, b.YMin, b.XMax, b.YMax }).ToArray(),
        }).ToList();
        return new ObjectDetectionDataset(mlContext.Data.LoadFromEnumerable(rows), dataset.Classes, paths,
            images.Select(i => (i.Width, i.Height)).ToList(), images.Sum(i => i.Boxes.Count));
    }

    /// <summary>
    /// Writes a detector's output in the labels' CSV layout plus a <c>score</c> column: one row per predicted box (one
    /// row with empty class and coordinates for an image where nothing was found). The scored data must have the
    /// detector's <c>PredictedBoundingBoxes</c> and <c>Score</c> and its <c>PredictedLabel</c> as class names (after
    /// <c>MapKeyToValue</c>) or keys (named by <paramref name="classes"/>), and one row per image of
    /// <paramref name="imagePaths"/> (whose file names are written) with <paramref name="imageSizes"/>.
    /// </summary>
    /// <returns>The number of boxes written.</returns>
    public static long WritePredictions(IDataView scored, IReadOnlyList<string> imagePaths, IReadOnlyList<(int Width, int Height)> imageSizes,
        IReadOnlyList<string> classes, TextWriter writer, string predictedLabelColumnName = "PredictedLabel",
        string predictedBoundingBoxColumnName = "PredictedBoundingBoxes", string scoreColumnName = "Score")
    {
        ArgumentNullException.ThrowIfNull(scored);
        ArgumentNullException.ThrowIfNull(writer);
        var predictions = ReadPredictions(scored, classes, predictedLabelColumnName, predictedBoundingBoxColumnName, scoreColumnName);
        if (predictions.Count != imagePaths.Count || imageSizes.Count != imagePaths.Count)
            throw new ArgumentException($"The scored data has {predictions.Count} rows for {imagePaths.Count} image paths and {imageSizes.Count} sizes.", nameof(scored));
        var images = predictions.Select((boxes, i) => new DetectionImage(Path.GetFileName(imagePaths[i]), imageSizes[i].Width, imageSizes[i].Height, boxes)).ToList();
        DetectionLabels.WriteCsv(writer, images, classes, withScore: true);
        return images.Sum(i => (long)i.Boxes.Count);
    }

    /// <summary>The predicted boxes of each scored row, in original-image pixels, best first.</summary>
    internal static List<DetectionBox[]> ReadPredictions(IDataView scored, IReadOnlyList<string> classes, string predictedLabelColumnName,
        string predictedBoundingBoxColumnName, string scoreColumnName)
    {
        var schema = scored.Schema;
        DataViewSchema.Column Find(string name) => schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(scored), $"The scored data has no column '{name}'; its columns are {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => c.Name))}.");
        var label = Find(predictedLabelColumnName);
        var boxes = Find(predictedBoundingBoxColumnName);
        var score = Find(scoreColumnName);
        bool names = label.Type is VectorDataViewType { ItemType: TextDataViewType };
        if (!names && label.Type is not VectorDataViewType { ItemType: KeyDataViewType })
            throw new ArgumentException($"The column '{predictedLabelColumnName}' has type {label.Type}; a vector of keys or of class names was expected.", nameof(predictedLabelColumnName));
        var classIndex = classes.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i, StringComparer.Ordinal);
        var result = new List<DetectionBox[]>();
        using var cursor = scored.GetRowCursor(new[] { label, boxes, score });
        var boxGetter = cursor.GetGetter<VBuffer<float>>(boxes);
        var scoreGetter = cursor.GetGetter<VBuffer<float>>(score);
        var keyGetter = names ? null : cursor.GetGetter<VBuffer<uint>>(label);
        var nameGetter = names ? cursor.GetGetter<VBuffer<ReadOnlyMemory<char>>>(label) : null;
        VBuffer<float> boxValues = default, scoreValues = default;
        VBuffer<uint> keys = default;
        VBuffer<ReadOnlyMemory<char>> labelNames = default;
        while (cursor.MoveNext())
        {
            boxGetter(ref boxValues);
            scoreGetter(ref scoreValues);
            var b = boxValues.DenseValues().ToArray();
            var s = scoreValues.DenseValues().ToArray();
            int[] classOf;
            if (names)
            {
                nameGetter!(ref labelNames);
                classOf = labelNames.DenseValues().Select(n => classIndex.TryGetValue(n.ToString(), out var c) ? c
                    : throw new InvalidDataException($"Row {cursor.Position + 1} predicts the class '{n}', which is not one of {string.Join(", ", classes)}.")).ToArray();
            }
            else
            {
                keyGetter!(ref keys);
                classOf = keys.DenseValues().Select(k => k >= 1 && k <= classes.Count ? (int)k - 1
                    : throw new InvalidDataException($"Row {cursor.Position + 1} predicts the key {k}, outside the {classes.Count} classes.")).ToArray();
            }
            if (b.Length != 4 * classOf.Length || s.Length != classOf.Length)
                throw new InvalidDataException($"Row {cursor.Position + 1} has {classOf.Length} predicted labels, {s.Length} scores and {b.Length} box coordinates (4 per label).");
            result.Add(classOf.Select((c, i) => new DetectionBox(b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], c, s[i])).ToArray());
        }
        return result;
    }

    private sealed class Row
    {
        public string ImagePath { get; set; } = "";
        public string[] Label { get; set; } = Array.Empty<string>();
        public float[] BoundingBoxes { get; set; } = Array.Empty<float>();
    }
}
