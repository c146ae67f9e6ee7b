using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>
/// Fine-tunes a pretrained BERT-family encoder with a PEFT method (LoRA by default) plus a classification head to
/// classify text, or pairs of texts. Create it with <c>mlContext.MulticlassClassification.Trainers.PeftTextClassification(...)</c>.
/// The label must be a key type (<c>MapValueToKey</c>); outputs are <c>Score</c> (class probabilities) and
/// <c>PredictedLabel</c> (the label's key type).
/// </summary>
public sealed class PeftTextClassificationTrainer : IEstimator<PeftTextClassificationTransformer>
{
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftTextClassificationTrainer"/>; names follow Microsoft.ML.TorchSharp's <c>TextClassification</c>.</summary>
    public sealed class Options : PeftTextTrainerOptions
    {

        /// <summary>The text column. Default <c>Sentence1</c>, as in Microsoft.ML.TorchSharp.</summary>
        public string Sentence1ColumnName = "Sentence1";

        /// <summary>An optional second text column for sentence-pair tasks; null for single sentences.</summary>
        public string? Sentence2ColumnName;

        /// <summary>The output column of class probabilities. Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>The output column of the predicted key. Default <c>PredictedLabel</c>.</summary>
        public string PredictedLabelColumnName = "PredictedLabel";

        /// <summary>
        /// Knowledge distillation: also learn from a teacher's class probabilities (a fitted classifier of the same task, or
        /// a column of scores), with a temperature and the soft term's weight. Default null: the hard labels only.
        /// </summary>
        public DistillationOptions? Distillation;

        internal override void Validate()
        {
            base.Validate();
            Distillation?.Validate();
            foreach (var (value, name) in new[] { (Sentence1ColumnName, nameof(Sentence1ColumnName)), (ScoreColumnName, nameof(ScoreColumnName)), (PredictedLabelColumnName, nameof(PredictedLabelColumnName)) })
                if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} is empty.", name);
        }
    }

    internal PeftTextClassificationTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftTextClassificationTrainer));
    }

    /// <summary>Raised after every epoch with its loss and validation metric.</summary>
    public event EventHandler<EpochMetrics>? EpochCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        void RequireText(string? name, string option)
        {
            if (name is null) return;
            if (!inputSchema.TryFindColumn(name, out var col))
                throw new ArgumentOutOfRangeException(option, $"The input has no column '{name}' ({option}).");
            if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not TextDataViewType)
                throw new ArgumentException($"The column '{name}' ({option}) must be a text scalar, found {col.ItemType}.", option);
        }
        RequireText(options.Sentence1ColumnName, nameof(Options.Sentence1ColumnName));
        RequireText(options.Sentence2ColumnName, nameof(Options.Sentence2ColumnName));
        options.Distillation?.CheckInputShape(inputSchema);
        return ClassificationSchema.OutputShape(inputSchema, options.LabelColumnName, options.ScoreColumnName, options.PredictedLabelColumnName);
    }

    /// <inheritdoc/>
    public PeftTextClassificationTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");

        // Perturbed copies of the rows, as a transfer set the teacher scores (checked columns first, so errors name them).
        if (options.Distillation is { PerturbedCopies: > 0 } perturb)
        {
            ColumnChecks.Find(input.Schema, options.LabelColumnName, nameof(Options.LabelColumnName), "training data");
            var texts = new List<string> { ColumnChecks.FindText(input.Schema, options.Sentence1ColumnName, nameof(Options.Sentence1ColumnName), "training data").Name };
            if (options.Sentence2ColumnName is not null)
                texts.Add(ColumnChecks.FindText(input.Schema, options.Sentence2ColumnName, nameof(Options.Sentence2ColumnName), "training data").Name);
            input = PerturbedCopies.WithCopies(host, input, texts, options.LabelColumnName, perturb, options.Seed);
            ch.Info($"Distillation: {perturb.PerturbedCopies} perturbed copies of each training row (words dropped, n-grams kept) for the teacher to score.");
        }
        // With distillation, rows without a label are kept (label -1): the teacher may still teach them.
        var train = TrainingData.Read(input, options, "training data", out var label, keepUnlabelled: options.Distillation is not null);
        var distillation = options.Distillation is null ? null
            : DistillationTargets.Prepare(options.Distillation, input, label, options.LabelColumnName, train.Labels, host, ch);
        if (distillation is null) LabelledRows.CheckTraining(train.Count, train.MissingLabelRows, train.Labels, options.LabelColumnName, ch);
        if (train.EmptyTextRows > 0) ch.Warning($"{train.EmptyTextRows} training rows have empty text; they are encoded as [CLS] [SEP] and kept.");

        TrainingData? validation = null;
        if (options.ValidationSet is not null)
        {
            validation = TrainingData.Read(options.ValidationSet, options, "validation set", out var validationLabel);
            LabelledRows.CheckValidation(label, validationLabel, validation.Count, options.LabelColumnName);
        }

        var baseModel = options.LoadBaseModel(host, ch);

        var settings = new TextClassificationSettings
        {
            Sentence1ColumnName = options.Sentence1ColumnName,
            Sentence2ColumnName = options.Sentence2ColumnName,
            ScoreColumnName = options.ScoreColumnName,
            PredictedLabelColumnName = options.PredictedLabelColumnName,
            MaxSequenceLength = options.MaxSequenceLength,
            BatchSize = options.BatchSize,
            ClassCount = label.ClassCount,
            LabelValueKind = label.ValueKind,
            LabelValues = label.Values?.ToList(),
        };
        var initial = options.InitialAdapterPath is null ? null : ReadInitialAdapter(options.InitialAdapterPath, baseModel, label, ch);
        var method = initial?.Method ?? options.Method;
        using var random = new RandomSource(options.Seed, device);
        var model = new TextClassificationModel(settings, baseModel, method, options.EmbedBaseModel, device, random.Init, options.HeadDropout);
        baseModel.ReleaseParsed(); // the model holds what it needs; the parsed copies must not live through training
        model.KeepBaseForUnmerge = options.KeepBaseForUnmerge;
        try
        {
            if (initial is not null) HuggingFacePeftFormat.LoadTensors(initial.Value.Adapter, model);
            model.Adapted.Backbone.GradientCheckpointing = options.GradientCheckpointing;
            model.ConfigureCompute(options.Precision, options.AttentionDropout);
            ch.Info($"{method.PeftType} on {model.Adapted.AdaptedModules.Count} modules; trainable parameters " +
                $"{model.TrainableParameterCount:N0} of {model.TotalParameterCount:N0} ({100.0 * model.TrainableParameterCount / model.TotalParameterCount:F2}%).");
            var history = new TrainingLoop(options, host, ch).Run(model.Network, model.TrainableParameters(), model.ParameterGroups(),
                TrainingJob(model, train, validation, distillation, ch), random, m => EpochCompleted?.Invoke(this, m));
            model.Adapted.Backbone.GradientCheckpointing = false;
            return new PeftTextClassificationTransformer(host, model, history);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The adapter to start from (see <see cref="PeftTrainerOptions.InitialAdapterPath"/>): its options, checked against the base model and the label.</summary>
    private static (HuggingFacePeftFormat.AdapterDirectory Adapter, Methods.PeftMethodOptions Method)? ReadInitialAdapter(string path, LoadedBaseModel baseModel, LabelInfo label, IChannel ch)
    {
        var adapter = HuggingFacePeftFormat.Read(path);
        var method = HuggingFacePeftFormat.ResolveMethod(adapter, baseModel, checkBaseModelName: true);
        if (adapter.ClassCount != label.ClassCount)
            throw new ArgumentException($"The initial adapter '{path}' ({nameof(Options.InitialAdapterPath)}) has a head for {adapter.ClassCount} classes, " +
                $"but the training label has {label.ClassCount}.", nameof(Options.InitialAdapterPath));
        var names = adapter.Extra?.LabelValueKind is null ? null : adapter.Extra.ClassNames;
        if (names is not null && label.Values is not null && !names.SequenceEqual(label.Values))
            throw new ArgumentException($"The initial adapter '{path}' ({nameof(Options.InitialAdapterPath)}) scores the classes [{string.Join(", ", names.Take(10))}], " +
                $"but the training label's classes are [{string.Join(", ", label.Values.Take(10))}] in that order.", nameof(Options.InitialAdapterPath));
        ch.Info($"Starting from the {method.PeftType} adapter in {path}; its options replace Method.");
        return (adapter, method);
    }

    /// <summary>
    /// What this task hands the training loop: tokenized rows, cross-entropy over the head's logits (or the distillation
    /// loss, over the rows it trains on), validation accuracy.
    /// </summary>
    private static TrainingJob TrainingJob(TextClassificationModel model, TrainingData train, TrainingData? validation, DistillationTargets? distillation, IChannel ch)
    {
        // Tokenized once; each step only pads its rows.
        var encoded = model.Encoder.Tokenize(train.First, train.Second);
        int truncated = encoded.Count(r => r.Truncated);
        if (truncated > 0)
            ch.Warning($"{truncated} of {train.Count} training rows were longer than MaxSequenceLength={model.Settings.MaxSequenceLength} tokens and were truncated.");
        var used = distillation?.Rows ?? Enumerable.Range(0, train.Count).ToArray();
        return new TrainingJob
        {
            RowCount = used.Length,
            RowLengths = used.Select(i => encoded[i].Ids.Length).ToArray(),
            Loss = batch =>
            {
                var rows = batch.Select(i => used[i]).ToArray();
                var logits = model.Logits(rows.Select(i => encoded[i]).ToList());
                if (distillation is not null) return distillation.Loss(logits, rows, train.Labels);
                var labels = tensor(rows.Select(i => (long)train.Labels[i]).ToArray()).to(model.Device);
                return nn.functional.cross_entropy(logits, labels);
            },
            Validate = validation is null ? null : () => Accuracy(model, validation),
            MetricName = "accuracy",
        };
    }

    internal static double Accuracy(TextClassificationModel model, TrainingData data) =>
        LabelledRows.Accuracy(model.Predict(data.First, data.Second, out _), data.Labels);
}
