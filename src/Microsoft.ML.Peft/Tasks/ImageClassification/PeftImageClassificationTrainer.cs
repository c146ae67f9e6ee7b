using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

/// <summary>
/// Fine-tunes a pretrained ResNet for multiclass image classification with a PEFT method (LoRA on its convolutions by
/// default) inside an ML.NET pipeline. Input: an image column (raw bytes from <c>LoadRawImageBytes</c>, an
/// <c>MLImage</c> from <c>LoadImages</c>, or a file path) and a key-typed label; output: <c>Score</c> (class
/// probabilities) and <c>PredictedLabel</c>. Create it with
/// <c>mlContext.MulticlassClassification.Trainers.PeftImageClassification(options)</c>.
/// </summary>
public sealed class PeftImageClassificationTrainer : IEstimator<PeftImageClassificationTransformer>
{
    internal const int MinImageSize = 32;
    internal const int MaxImageSize = 1024;
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftImageClassificationTrainer"/>.</summary>
    public sealed class Options : PeftTrainerOptions
    {
        /// <summary>Options with the image defaults: LoRA (rank 8, alpha 16) on every convolution, learning rate 1e-3, 5 epochs.</summary>
        public Options()
        {
            Method = DefaultMethod();
            LearningRate = 1e-3f;
            MaxEpoch = 5;
        }

        /// <summary>LoRA of rank 8 (alpha 16, no dropout) on every convolution of the ResNet.</summary>
        public static LoraOptions DefaultMethod() => new() { Rank = 8, Alpha = 16, Dropout = 0, TargetModules = new[] { AllConvolutions } };

        /// <summary>A <see cref="LoraOptions.TargetModules"/> pattern selecting every convolution of a torchvision-named ResNet.</summary>
        public const string AllConvolutions = @"(.*\.)?conv\d|.*downsample\.0";

        /// <summary>The pretrained network. Default (null): the ImageNet ResNet-18 of the <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> package.</summary>
        public ImageBaseModelSource? BaseModel;

        /// <summary>The image column: bytes (vector of Byte), <c>MLImage</c>, or text (a path). Default <c>Image</c>.</summary>
        public string ImageColumnName = "Image";

        /// <summary>The folder relative paths of a text image column are resolved against; null: the current directory.</summary>
        public string? ImageFolder;

        /// <summary>The output column of class probabilities. Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>The output column of the predicted key. Default <c>PredictedLabel</c>.</summary>
        public string PredictedLabelColumnName = "PredictedLabel";

        /// <summary>
        /// Side of the square the network sees, in pixels (images are resized so their shorter side is ImageSize x 256/224,
        /// then centre-cropped; in training randomly cropped). Default 96: a CPU-friendly size; 224 is ImageNet's.
        /// </summary>
        public int ImageSize = 96;

        /// <summary>Training augmentation (random resized crop and horizontal flip by default); <see cref="ImageAugmentation.None"/> turns it off.</summary>
        public ImageAugmentation Augmentation = new();

        /// <summary>Also train the batch normalisations' affine parameters (their statistics stay frozen). Default false.</summary>
        public bool TrainBatchNorm;

        /// <summary>Dropout before the classification head. Default 0.</summary>
        public float HeadDropout;

        /// <summary>
        /// Knowledge distillation: also learn from a teacher's class probabilities (a fitted classifier of the same task, or
        /// a column of scores), with a temperature and the soft term's weight. The teacher scores each image once, without
        /// augmentation. Default null: the hard labels only.
        /// </summary>
        public DistillationOptions? Distillation;

        internal override void Validate()
        {
            base.Validate();
            Distillation?.Validate();
            if (ImageSize < MinImageSize || ImageSize > MaxImageSize)
                throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, $"ImageSize must be from {MinImageSize} to {MaxImageSize} pixels.");
            if (!(HeadDropout >= 0 && HeadDropout < 1)) throw new ArgumentOutOfRangeException(nameof(HeadDropout), HeadDropout, "HeadDropout must be in [0, 1).");
            if (Augmentation is null) throw new ArgumentNullException(nameof(Augmentation), "Augmentation must be set (ImageAugmentation.None turns it off).");
            if (!(Augmentation.MinCropScale > 0 && Augmentation.MinCropScale <= 1))
                throw new ArgumentOutOfRangeException(nameof(Augmentation), Augmentation.MinCropScale, "Augmentation.MinCropScale must be in (0, 1].");
            if (GradientCheckpointing) throw new ArgumentException("GradientCheckpointing applies to text encoders; lower BatchSize or ImageSize to save memory.", nameof(GradientCheckpointing));
            if (InitialAdapterPath is not null) throw new ArgumentException("InitialAdapterPath applies to text classification only.", nameof(InitialAdapterPath));
            foreach (var (value, name) in new[] { (ImageColumnName, nameof(ImageColumnName)), (ScoreColumnName, nameof(ScoreColumnName)), (PredictedLabelColumnName, nameof(PredictedLabelColumnName)) })
                if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} is empty.", name);
        }
    }

    internal PeftImageClassificationTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftImageClassificationTrainer));
    }

    /// <summary>Raised after each epoch with its loss, speed and validation accuracy.</summary>
    public event EventHandler<EpochMetrics>? EpochCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ImageColumn.CheckShape(inputSchema, options.ImageColumnName, nameof(Options.ImageColumnName));
        options.Distillation?.CheckInputShape(inputSchema);
        return ClassificationSchema.OutputShape(inputSchema, options.LabelColumnName, options.ScoreColumnName, options.PredictedLabelColumnName);
    }

    /// <summary>Trains the method's parameters and the head on <paramref name="input"/>.</summary>
    public PeftImageClassificationTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");

        var source = options.BaseModel ?? ImageBaseModelSource.ResNet18();
        ch.Info($"Loading base model {source}");
        host.CheckAlive();
        var baseModel = source.Load();
        var settings = new ImageClassificationSettings
        {
            ImageColumnName = options.ImageColumnName,
            ImageFolder = options.ImageFolder is null ? null : Path.GetFullPath(options.ImageFolder),
            ScoreColumnName = options.ScoreColumnName,
            PredictedLabelColumnName = options.PredictedLabelColumnName,
            ImageSize = options.ImageSize,
            BatchSize = options.BatchSize,
            TrainBatchNorm = options.TrainBatchNorm,
            BaseModelKind = source.Kind,
            Backbone = baseModel.Config,
        };
        // Decoded images are kept shrunk: to the evaluation resize, and half as large again for training when random crops
        // are taken from them (a crop of a third of the image would otherwise be upscaled from few pixels).
        int cacheSide = new ImagePreprocessor(options.ImageSize, settings.Normalization).ResizeSize;
        int trainCacheSide = options.Augmentation.RandomResizedCrop ? cacheSide * 3 / 2 : cacheSide;
        // With distillation, rows without a label are kept (label -1): the teacher may still teach them.
        var train = ImageData.Read(input, settings, options.LabelColumnName, trainCacheSide, "training data", host, out var label, keepUnlabelled: options.Distillation is not null);
        var distillation = options.Distillation is null ? null
            : DistillationTargets.Prepare(options.Distillation, input, label, options.LabelColumnName, train.Labels, host, ch);
        if (distillation is null) LabelledRows.CheckTraining(train.Count, train.MissingLabelRows, train.Labels, options.LabelColumnName, ch);
        settings.ClassCount = label.ClassCount;
        settings.LabelValueKind = label.ValueKind;
        settings.LabelValues = label.Values?.ToList();

        ImageData? validation = null;
        if (options.ValidationSet is not null)
        {
            validation = ImageData.Read(options.ValidationSet, settings, options.LabelColumnName, cacheSide, "validation set", host, out var validationLabel);
            LabelledRows.CheckValidation(label, validationLabel, validation.Count, options.LabelColumnName);
        }

        using var random = new RandomSource(options.Seed, device);
        var model = new ImageClassificationModel(settings, baseModel, options.Method, options.EmbedBaseModel, device, random.Init, options.HeadDropout);
        try
        {
            ch.Info($"{options.Method.PeftType} on {model.Adapted.AdaptedModules.Count} modules of the {baseModel.Config}; trainable parameters " +
                $"{model.TrainableParameterCount:N0} of {model.TotalParameterCount:N0} ({100.0 * model.TrainableParameterCount / model.TotalParameterCount:F2}%).");
            var history = new TrainingLoop(options, host, ch).Run(model.Network, model.TrainableParameters(), model.ParameterGroups(),
                TrainingJob(model, train, validation, distillation, random), random, m => EpochCompleted?.Invoke(this, m));
            return new PeftImageClassificationTransformer(host, model, history);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private TrainingJob TrainingJob(ImageClassificationModel model, ImageData train, ImageData? validation, DistillationTargets? distillation, RandomSource random)
    {
        var augmentation = options.Augmentation;
        bool augments = augmentation.RandomResizedCrop || augmentation.HorizontalFlip;
        var used = distillation?.Rows ?? Enumerable.Range(0, train.Count).ToArray();
        return new TrainingJob
        {
            RowCount = used.Length,
            Loss = batch =>
            {
                var rows = batch.Select(i => used[i]).ToArray();
                // One seed per image from the run's generator: the crops do not depend on how threads are scheduled.
                var seeds = rows.Select(_ => random.Shuffle.Next()).ToArray();
                var logits = model.Logits(rows.Select(i => train.Images[i]).ToList(), augments
                    ? (image, i, destination) =>
                    {
                        model.Preprocessor.Augment(image, new Random(seeds[i]), augmentation, destination);
                        return true;
                    }
                    : null);
                if (distillation is not null) return distillation.Loss(logits, rows, train.Labels);
                var labels = tensor(rows.Select(i => (long)train.Labels[i]).ToArray()).to(model.Device);
                return nn.functional.cross_entropy(logits, labels);
            },
            Validate = validation is null ? null : () => Accuracy(model, validation),
            MetricName = "accuracy",
        };
    }

    internal static double Accuracy(ImageClassificationModel model, ImageData data) =>
        LabelledRows.Accuracy(model.Predict(data.Images), data.Labels);
}

/// <summary>Decoded images (shrunk for the cache) and their 0-based labels, read from an ML.NET data view.</summary>
internal sealed class ImageData
{
    public List<DecodedImage> Images { get; } = new();
    public List<int> Labels { get; } = new();
    public int MissingLabelRows { get; set; }
    public int Count => Labels.Count;

    /// <summary>
    /// Reads the image and label of every row; rows with a missing key are skipped and counted, or with
    /// <paramref name="keepUnlabelled"/> kept with the label -1 (and counted), so that row i is the input's row i.
    /// </summary>
    public static ImageData Read(IDataView data, ImageClassificationSettings settings, string labelColumnName, int cacheSide, string what,
        IHost host, out LabelInfo label, bool keepUnlabelled = false)
    {
        var image = ImageColumn.Bind(data.Schema, settings.ImageColumnName, nameof(PeftImageClassificationTrainer.Options.ImageColumnName), settings.ImageFolder);
        var labelColumn = data.Schema.GetColumnOrNull(labelColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(PeftTrainerOptions.LabelColumnName), $"The {what} has no label column '{labelColumnName}'.");
        if (labelColumn.Type is not KeyDataViewType keyType)
            throw new ArgumentException($"The label column '{labelColumnName}' must be a key type; add mlContext.Transforms.Conversion.MapValueToKey(\"{labelColumnName}\").", nameof(PeftTrainerOptions.LabelColumnName));
        if (keyType.Count < 2)
            throw new ArgumentException($"The {what}'s label column '{labelColumnName}' holds a single class; at least two classes are needed to train a classifier.", nameof(PeftTrainerOptions.LabelColumnName));
        label = LabelInfo.FromColumn(labelColumn, keyType);
        var result = new ImageData();
        using var cursor = data.GetRowCursor(new[] { image.Column, labelColumn });
        var readImage = image.Getter(cursor, cacheSide);
        var readLabel = cursor.GetGetter<uint>(labelColumn);
        uint key = 0;
        while (cursor.MoveNext())
        {
            host.CheckAlive();
            readLabel(ref key);
            if (key == 0)
            {
                result.MissingLabelRows++;
                if (!keepUnlabelled) continue;
            }
            result.Images.Add(readImage());
            result.Labels.Add((int)key - 1);
        }
        return result;
    }
}
