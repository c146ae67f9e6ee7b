using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// Fine-tunes a pretrained ResNet into an anchor-free object detector (a feature pyramid and FCOS's head, trained in full)
/// with a PEFT method on the backbone (LoRA on its convolutions by default) inside an ML.NET pipeline. Columns as
/// Microsoft.ML.TorchSharp's <c>ObjectDetectionTrainer</c>: input an image column (bytes, <c>MLImage</c> or a path), a
/// <c>Label</c> vector of keys (one per box) and a <c>BoundingBoxes</c> vector of Single (xmin, ymin, xmax, ymax per box, in
/// the original image's pixels); output <c>PredictedLabel</c> (vector of keys), <c>Score</c> and
/// <c>PredictedBoundingBoxes</c> in the same layout. Create it with
/// <c>mlContext.MulticlassClassification.Trainers.PeftObjectDetection(options)</c>.
/// </summary>
public sealed class PeftObjectDetectionTrainer : IEstimator<PeftObjectDetectionTransformer>
{
    internal const int MinImageSize = 32;
    internal const int MaxImageSize = 1024;
    // Boxes may reach this many pixels past the image's edges (rounding in annotation tools); they are clipped.
    internal const float EdgeTolerance = 1f;
    // The score threshold of the validation metric: mAP needs the low-scored detections too (COCO evaluates from 0.05).
    internal const float ValidationScoreThreshold = 0.05f;
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftObjectDetectionTrainer"/>.</summary>
    public sealed class Options : PeftTrainerOptions
    {
        /// <summary>Options with the detection defaults: LoRA (rank 8, alpha 16) on every convolution, learning rate 1e-3, batches of 8, 20 epochs.</summary>
        public Options()
        {
            Method = PeftImageClassificationTrainer.Options.DefaultMethod();
            LearningRate = 1e-3f;
            BatchSize = 8;
            MaxEpoch = 20;
        }

        /// <summary>The pretrained network. Default (null): the ImageNet ResNet-18 of the <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> package.</summary>
        public ImageBaseModelSource? BaseModel;

        /// <summary>The image column: bytes (vector of Byte), <c>MLImage</c>, or text (a path). Default <c>Image</c>.</summary>
        public string ImageColumnName = "Image";

        /// <summary>The folder relative paths of a text image column are resolved against; null: the current directory.</summary>
        public string? ImageFolder;

        /// <summary>The boxes: a vector of Single, four per box (xmin, ymin, xmax, ymax, in pixels of the original image), in the order of the label's keys. Default <c>BoundingBoxes</c>.</summary>
        public string BoundingBoxColumnName = "BoundingBoxes";

        /// <summary>The output column of predicted classes: a vector of keys of the label's key type, one per detection. Default <c>PredictedLabel</c>.</summary>
        public string PredictedLabelColumnName = "PredictedLabel";

        /// <summary>The output column of predicted boxes: a vector of Single, four per detection, in pixels of the original image. Default <c>PredictedBoundingBoxes</c>.</summary>
        public string PredictedBoundingBoxColumnName = "PredictedBoundingBoxes";

        /// <summary>The output column of the detections' scores (vector of Single, best first). Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>Detections scored below this are dropped at prediction, in [0, 1). Default 0.5, as ML.NET's.</summary>
        public float ScoreThreshold = 0.5f;

        /// <summary>Non-maximum suppression (per class) drops a detection overlapping a better one by more than this IoU, in (0, 1]. Default 0.5.</summary>
        public float IOUThreshold = 0.5f;

        /// <summary>The most detections per image. Default 100.</summary>
        public int MaxDetections = 100;

        /// <summary>
        /// Side of the square canvas the network sees, in pixels, a multiple of 32: each image is scaled so that its longer
        /// side fits and padded (letterboxed). Default 256.
        /// </summary>
        public int ImageSize = 256;

        /// <summary>Training augmentation (flip, random crop, scale jitter, random placement; boxes follow); <see cref="BoxAugmentationOptions.None"/> turns it off.</summary>
        public BoxAugmentationOptions Augmentation = new();

        /// <summary>
        /// Train only the feature pyramid and the head: the backbone gets no method (as <c>LinearProbeOptions</c>) whatever
        /// <see cref="PeftTrainerOptions.Method"/> says. Default false.
        /// </summary>
        public bool FreezeBackbone;

        /// <summary>Width of the feature pyramid and head, a multiple of 8. Default 64.</summary>
        public int HeadChannels = DetectionNetwork.DefaultChannels;

        /// <summary>Convolution layers in each head tower, 1 to 8. Default 2.</summary>
        public int HeadTowerDepth = DetectionNetwork.DefaultTowerDepth;

        internal override void Validate()
        {
            base.Validate();
            if (ImageSize < MinImageSize || ImageSize > MaxImageSize || ImageSize % 32 != 0)
                throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize,
                    $"ImageSize must be a multiple of 32 (the detector's coarsest stride) from {MinImageSize} to {MaxImageSize} pixels; {ImageSize} is not. Use {Math.Clamp(ImageSize / 32 * 32, MinImageSize, MaxImageSize)} or {Math.Clamp((ImageSize / 32 + 1) * 32, MinImageSize, MaxImageSize)}.");
            if (!(ScoreThreshold >= 0 && ScoreThreshold < 1)) throw new ArgumentOutOfRangeException(nameof(ScoreThreshold), ScoreThreshold, "ScoreThreshold must be in [0, 1).");
            if (!(IOUThreshold > 0 && IOUThreshold <= 1)) throw new ArgumentOutOfRangeException(nameof(IOUThreshold), IOUThreshold, "IOUThreshold must be in (0, 1].");
            if (MaxDetections < 1 || MaxDetections > 100_000) throw new ArgumentOutOfRangeException(nameof(MaxDetections), MaxDetections, "MaxDetections must be from 1 to 100000.");
            if (HeadChannels < 8 || HeadChannels > 4096 || HeadChannels % 8 != 0) throw new ArgumentOutOfRangeException(nameof(HeadChannels), HeadChannels, "HeadChannels must be a multiple of 8 from 8 to 4096.");
            if (HeadTowerDepth < 1 || HeadTowerDepth > 8) throw new ArgumentOutOfRangeException(nameof(HeadTowerDepth), HeadTowerDepth, "HeadTowerDepth must be from 1 to 8.");
            if (Augmentation is null) throw new ArgumentNullException(nameof(Augmentation), "Augmentation must be set (BoxAugmentationOptions.None turns it off).");
            try
            {
                Augmentation.Validate();
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new ArgumentOutOfRangeException(nameof(Augmentation), $"Augmentation.{e.ParamName}: {e.Message}");
            }
            if (GradientCheckpointing) throw new ArgumentException("GradientCheckpointing applies to text encoders; lower BatchSize or ImageSize to save memory.", nameof(GradientCheckpointing));
            if (InitialAdapterPath is not null) throw new ArgumentException("InitialAdapterPath applies to text classification only.", nameof(InitialAdapterPath));
            foreach (var (value, name) in new[] { (ImageColumnName, nameof(ImageColumnName)), (BoundingBoxColumnName, nameof(BoundingBoxColumnName)), (ScoreColumnName, nameof(ScoreColumnName)),
                (PredictedLabelColumnName, nameof(PredictedLabelColumnName)), (PredictedBoundingBoxColumnName, nameof(PredictedBoundingBoxColumnName)) })
                if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} is empty.", name);
        }
    }

    internal PeftObjectDetectionTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftObjectDetectionTrainer));
    }

    /// <summary>Raised after each epoch with its loss, speed and validation mAP@0.5.</summary>
    public event EventHandler<EpochMetrics>? EpochCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ImageColumn.CheckShape(inputSchema, options.ImageColumnName, nameof(Options.ImageColumnName));
        if (!inputSchema.TryFindColumn(options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"The input has no label column '{options.LabelColumnName}'.");
        if (!label.IsKey || label.Kind == SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentException(DetectionColumns.LabelTypeError(options.LabelColumnName), nameof(Options.LabelColumnName));
        if (!inputSchema.TryFindColumn(options.BoundingBoxColumnName, out var boxes))
            throw new ArgumentOutOfRangeException(nameof(Options.BoundingBoxColumnName), $"The input has no bounding-box column '{options.BoundingBoxColumnName}'.");
        if (boxes.Kind == SchemaShape.Column.VectorKind.Scalar || !boxes.ItemType.Equals(NumberDataViewType.Single))
            throw new ArgumentException(DetectionColumns.BoxTypeError(options.BoundingBoxColumnName), nameof(Options.BoundingBoxColumnName));
        var result = inputSchema.ToDictionary(c => c.Name);
        result[options.PredictedLabelColumnName] = new SchemaShape.Column(options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.VariableVector,
            NumberDataViewType.UInt32, true, label.Annotations);
        result[options.ScoreColumnName] = new SchemaShape.Column(options.ScoreColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Single, false);
        result[options.PredictedBoundingBoxColumnName] = new SchemaShape.Column(options.PredictedBoundingBoxColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Single, false);
        return new SchemaShape(result.Values);
    }

    /// <summary>Trains the method's parameters, the feature pyramid and the head on <paramref name="input"/>.</summary>
    public PeftObjectDetectionTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");

        var source = options.BaseModel ?? ImageBaseModelSource.ResNet18();
        ch.Info($"Loading base model {source}");
        host.CheckAlive();
        var baseModel = source.Load();
        var settings = new ObjectDetectionSettings
        {
            ImageColumnName = options.ImageColumnName,
            ImageFolder = options.ImageFolder is null ? null : Path.GetFullPath(options.ImageFolder),
            PredictedLabelColumnName = options.PredictedLabelColumnName,
            PredictedBoundingBoxColumnName = options.PredictedBoundingBoxColumnName,
            ScoreColumnName = options.ScoreColumnName,
            ImageSize = options.ImageSize,
            BatchSize = options.BatchSize,
            ScoreThreshold = options.ScoreThreshold,
            IouThreshold = options.IOUThreshold,
            MaxDetections = options.MaxDetections,
            Channels = options.HeadChannels,
            TowerDepth = options.HeadTowerDepth,
            BaseModelKind = source.Kind,
            Backbone = baseModel.Config,
        };
        // Images are kept shrunk to the largest size augmentation scales them to (the canvas side times MaxScale).
        int trainCacheSide = (int)Math.Ceiling(options.ImageSize * Math.Max(1f, options.Augmentation.MaxScale));
        var columns = new DetectionColumns(options.ImageColumnName, options.ImageFolder is null ? null : Path.GetFullPath(options.ImageFolder), options.LabelColumnName, options.BoundingBoxColumnName);
        var train = DetectionData.Read(input, columns, trainCacheSide, "training data", host, out var label);
        if (train.Count == 0) throw new ArgumentException("The training data has no rows.", nameof(input));
        if (train.BoxCount == 0) throw new ArgumentException($"The training data's label column '{options.LabelColumnName}' holds no boxes: there is nothing to learn.", nameof(input));
        ch.Info($"{train.Count} training images, {train.BoxCount} boxes of {label.ClassCount} classes.");
        settings.ClassCount = label.ClassCount;
        settings.LabelValueKind = label.ValueKind;
        settings.LabelValues = label.Values?.ToList();

        DetectionData? validation = null;
        if (options.ValidationSet is not null)
        {
            validation = DetectionData.Read(options.ValidationSet, columns, options.ImageSize, "validation set", host, out var validationLabel);
            label.CheckSameClasses(validationLabel, options.LabelColumnName);
            if (validation.Count == 0) throw new ArgumentException("The validation set has no rows.", nameof(Options.ValidationSet));
        }

        using var random = new RandomSource(options.Seed, device);
        var method = options.FreezeBackbone ? new Methods.LinearProbe.LinearProbeOptions() : options.Method;
        var model = new ObjectDetectionModel(settings, baseModel, method, options.EmbedBaseModel, device, random.Init);
        try
        {
            ch.Info($"{method.PeftType} on {model.Adapted.AdaptedModules.Count} modules of the {baseModel.Config}; trainable parameters " +
                $"{model.TrainableParameterCount:N0} of {model.TotalParameterCount:N0} ({100.0 * model.TrainableParameterCount / model.TotalParameterCount:F2}%).");
            var history = new TrainingLoop(options, host, ch).Run(model.Network, model.TrainableParameters(), model.ParameterGroups(),
                TrainingJob(model, train, validation, random), random, m => EpochCompleted?.Invoke(this, m));
            return new PeftObjectDetectionTransformer(host, model, history);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private TrainingJob TrainingJob(ObjectDetectionModel model, DetectionData train, DetectionData? validation, RandomSource random)
    {
        var augmentation = options.Augmentation;
        int size = options.ImageSize;
        var normalization = model.Settings.Normalization;
        return new TrainingJob
        {
            RowCount = train.Count,
            Loss = rows =>
            {
                // One seed per image from the run's generator: the augmentation does not depend on how threads are scheduled.
                var seeds = rows.Select(_ => random.Shuffle.Next()).ToArray();
                var canvases = new ChwImage[rows.Length];
                var boxes = new IReadOnlyList<DetectionBox>[rows.Length];
                Parallel.For(0, rows.Length, i =>
                {
                    var image = ChwImage.FromDecoded(train.Images[rows[i]].Image, normalization);
                    (canvases[i], boxes[i]) = BoxAugmentation.Augment(image, train.Boxes[rows[i]], size, new Random(seeds[i]), augmentation);
                });
                var batch = model.ToTensor(canvases);
                var outputs = model.Network.forward(batch);
                return DetectionLoss.Compute(outputs, boxes).Total;
            },
            Validate = validation is null ? null : () => MeanAveragePrecision50(model, validation),
            MetricName = "mAP@0.5",
        };
    }

    /// <summary>mAP@0.5 of the model on <paramref name="data"/> (original-image coordinates), detections from <see cref="ValidationScoreThreshold"/>.</summary>
    internal static double MeanAveragePrecision50(ObjectDetectionModel model, DetectionData data)
    {
        var predictions = model.Predict(data.Images, Math.Min(ValidationScoreThreshold, model.Settings.ScoreThreshold));
        var truth = data.Images.Select((image, i) => (IReadOnlyList<DetectionBox>)data.Boxes[i].Select(b => image.ToOriginal(b)).ToList()).ToList();
        return ObjectDetectionEvaluator.Evaluate(truth, predictions, model.Settings.Label.ClassNames, model.Settings.MaxDetections).MeanAveragePrecision50;
    }
}

/// <summary>The input columns of a detector's data: image, label (vector of keys) and boxes (vector of Single, four per box).</summary>
internal sealed record DetectionColumns(string ImageColumnName, string? ImageFolder, string LabelColumnName, string BoundingBoxColumnName)
{
    public static string LabelTypeError(string name) =>
        $"The label column '{name}' must be a vector of keys, one per box; add mlContext.Transforms.Conversion.MapValueToKey(\"{name}\") over a vector of class names.";

    public static string BoxTypeError(string name) =>
        $"The bounding-box column '{name}' must be a vector of Single, four per box (xmin, ymin, xmax, ymax in pixels).";

    /// <summary>The label column, checked to be a vector of keys; its key type.</summary>
    public static (DataViewSchema.Column Column, KeyDataViewType KeyType) Label(DataViewSchema schema, string name, string optionName, string what)
    {
        var column = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(optionName, $"The {what} has no label column '{name}'.");
        if (column.Type is not VectorDataViewType { ItemType: KeyDataViewType key }) throw new ArgumentException(LabelTypeError(name), optionName);
        return (column, key);
    }

    /// <summary>The box column, checked to be a vector of Single.</summary>
    public static DataViewSchema.Column Boxes(DataViewSchema schema, string name, string optionName, string what)
    {
        var column = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(optionName, $"The {what} has no bounding-box column '{name}'.");
        if (column.Type is not VectorDataViewType { ItemType: var item } || !item.Equals(NumberDataViewType.Single)) throw new ArgumentException(BoxTypeError(name), optionName);
        return column;
    }

    /// <summary>
    /// The boxes of one row from its keys and coordinates, checked: four coordinates per key, keys in range, finite
    /// coordinates with xmin &lt; xmax and ymin &lt; ymax, inside the image (<see cref="PeftObjectDetectionTrainer.EdgeTolerance"/>
    /// pixel of tolerance; clipped). Errors name the row and the columns.
    /// </summary>
    public static DetectionBox[] ReadBoxes(ReadOnlySpan<uint> keys, ReadOnlySpan<float> coordinates, int classCount, int width, int height, long row,
        string labelColumn, string boxColumn, bool predicted = false)
    {
        if (coordinates.Length != 4 * keys.Length)
            throw new InvalidDataException($"Row {row}: the {(predicted ? "predicted " : "")}bounding-box column '{boxColumn}' holds {coordinates.Length} values for the {keys.Length} keys of column '{labelColumn}'; it must hold 4 per key (xmin, ymin, xmax, ymax).");
        var boxes = new DetectionBox[keys.Length];
        for (int i = 0; i < keys.Length; i++)
        {
            if (keys[i] == 0 || keys[i] > classCount)
                throw new InvalidDataException($"Row {row}: box {i + 1} of column '{labelColumn}' has {(keys[i] == 0 ? "a missing key (a class not in the key type)" : $"the key {keys[i]}, outside the {classCount} classes")}.");
            float x0 = coordinates[4 * i], y0 = coordinates[4 * i + 1], x1 = coordinates[4 * i + 2], y1 = coordinates[4 * i + 3];
            string where = $"Row {row}: box {i + 1} of column '{boxColumn}' ({x0}, {y0}, {x1}, {y1})";
            if (!float.IsFinite(x0) || !float.IsFinite(y0) || !float.IsFinite(x1) || !float.IsFinite(y1)) throw new InvalidDataException($"{where} has a coordinate that is not a finite number.");
            if (!(x1 > x0) || !(y1 > y0)) throw new InvalidDataException($"{where} is empty or inverted: xmax must exceed xmin and ymax must exceed ymin.");
            float t = PeftObjectDetectionTrainer.EdgeTolerance;
            if (x0 < -t || y0 < -t || x1 > width + t || y1 > height + t)
                throw new InvalidDataException($"{where} is outside the {width}x{height} image (coordinates are pixels of the original image).");
            boxes[i] = BoxGeometry.Clip(new DetectionBox(x0, y0, x1, y1, (int)keys[i] - 1), width, height);
            if (boxes[i].Area <= 0) throw new InvalidDataException($"{where} has no area inside the {width}x{height} image.");
        }
        return boxes;
    }
}

/// <summary>Decoded images (shrunk for the cache) and their boxes in the cached images' pixels, read from an ML.NET data view.</summary>
internal sealed class DetectionData
{
    public List<CachedImage> Images { get; } = new();
    public List<DetectionBox[]> Boxes { get; } = new();
    public int Count => Images.Count;
    public int BoxCount => Boxes.Sum(b => b.Length);

    public static DetectionData Read(IDataView data, DetectionColumns columns, int cacheSide, string what, IHost host, out LabelInfo label)
    {
        var image = ImageColumn.Bind(data.Schema, columns.ImageColumnName, nameof(PeftObjectDetectionTrainer.Options.ImageColumnName), columns.ImageFolder);
        var (labelColumn, keyType) = DetectionColumns.Label(data.Schema, columns.LabelColumnName, nameof(PeftTrainerOptions.LabelColumnName), what);
        var boxColumn = DetectionColumns.Boxes(data.Schema, columns.BoundingBoxColumnName, nameof(PeftObjectDetectionTrainer.Options.BoundingBoxColumnName), what);
        label = LabelInfo.FromColumn(labelColumn, keyType, minClassCount: 1);
        var result = new DetectionData();
        using var cursor = data.GetRowCursor(new[] { image.Column, labelColumn, boxColumn });
        var readImage = image.Getter(cursor, int.MaxValue);
        var readLabels = cursor.GetGetter<VBuffer<uint>>(labelColumn);
        var readBoxes = cursor.GetGetter<VBuffer<float>>(boxColumn);
        VBuffer<uint> keys = default;
        VBuffer<float> coordinates = default;
        while (cursor.MoveNext())
        {
            host.CheckAlive();
            readLabels(ref keys);
            readBoxes(ref coordinates);
            var decoded = CachedImage.Read(readImage, cacheSide);
            var boxes = DetectionColumns.ReadBoxes(keys.DenseValues().ToArray(), coordinates.DenseValues().ToArray(), label.ClassCount,
                decoded.OriginalWidth, decoded.OriginalHeight, cursor.Position + 1, columns.LabelColumnName, columns.BoundingBoxColumnName);
            result.Images.Add(decoded);
            result.Boxes.Add(boxes.Select(b => decoded.ToCached(b)).ToArray());
        }
        return result;
    }
}
