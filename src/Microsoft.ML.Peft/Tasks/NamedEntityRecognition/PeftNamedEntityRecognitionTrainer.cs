using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// Fine-tunes a pretrained BERT-family encoder with a PEFT method (LoRA by default) plus a token classification head to tag
/// every word of a sentence (BIO tags such as <c>B-PER</c>, <c>I-PER</c>, <c>O</c>). Create it with
/// <c>mlContext.MulticlassClassification.Trainers.PeftNamedEntityRecognition(...)</c>; columns follow Microsoft.ML.TorchSharp's
/// <c>NamedEntityRecognition</c>: <c>Sentence</c> (text, split into words on white space, or a vector of words) and
/// <c>Label</c> (a vector of key-typed tags, one per word); the output <c>PredictedLabel</c> is a vector of the same key type.
/// </summary>
/// <remarks>
/// Each word is split into WordPieces; its tag is learnt and predicted on its first piece (the others are ignored in the
/// loss). Sentences longer than <see cref="PeftTextTrainerOptions.MaxSequenceLength"/> are cut into overlapping windows at word boundaries,
/// and each word is tagged in the window where it has the most context, so no word is dropped. Decoding is constrained:
/// the predicted sequence is the most probable one (Viterbi over the per-word tag probabilities) in which every <c>I-X</c>
/// follows a <c>B-X</c> or an <c>I-X</c>.
/// </remarks>
public sealed class PeftNamedEntityRecognitionTrainer : IEstimator<PeftNamedEntityRecognitionTransformer>
{
    private readonly IHost host;
    private readonly Options options;

    /// <summary>Options of <see cref="PeftNamedEntityRecognitionTrainer"/>; names follow Microsoft.ML.TorchSharp's <c>NerTrainer.NerOptions</c>.</summary>
    public sealed class Options : PeftTextTrainerOptions
    {

        /// <summary>The sentence column: text (split into words on white space) or a vector of text (one word per item). Default <c>Sentence</c>.</summary>
        public string Sentence1ColumnName = "Sentence";

        /// <summary>The output column: a vector of the label's key type, one predicted tag per word. Default <c>PredictedLabel</c>.</summary>
        public string PredictionColumnName = "PredictedLabel";


        /// <summary>WordPieces shared by consecutive windows of a long sentence, at most half a window. Default (null): a quarter
        /// of the window (31 pieces at the default <see cref="PeftTextTrainerOptions.MaxSequenceLength"/>).</summary>
        public int? WindowOverlap;


        /// <summary>
        /// Gives the head each word's spelling class (lower case, capitalised, upper case, mixed, no letters), which an uncased
        /// vocabulary loses and which marks names. Null (default): on when the base model's vocabulary is uncased.
        /// </summary>
        public bool? CaseFeatures;

        internal override void Validate()
        {
            base.Validate();
            if (WindowOverlap is < 0 || WindowOverlap > (MaxSequenceLength - 2) / 2)
                throw new ArgumentOutOfRangeException(nameof(WindowOverlap), WindowOverlap, $"WindowOverlap must be between 0 and half a window ({(MaxSequenceLength - 2) / 2} pieces).");
            foreach (var (value, name) in new[] { (Sentence1ColumnName, nameof(Sentence1ColumnName)), (PredictionColumnName, nameof(PredictionColumnName)) })
                if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} is empty.", name);
        }
    }

    internal PeftNamedEntityRecognitionTrainer(IHostEnvironment env, Options options)
    {
        if (env is null) throw new ArgumentNullException(nameof(env));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        host = env.Register(nameof(PeftNamedEntityRecognitionTrainer));
    }

    /// <summary>Raised after every epoch with its loss and validation entity F1.</summary>
    public event EventHandler<EpochMetrics>? EpochCompleted;

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        if (!inputSchema.TryFindColumn(options.Sentence1ColumnName, out var sentence))
            throw new ArgumentOutOfRangeException(nameof(Options.Sentence1ColumnName), $"The input has no column '{options.Sentence1ColumnName}' (Sentence1ColumnName).");
        if (sentence.ItemType is not TextDataViewType)
            throw new ArgumentException($"The column '{options.Sentence1ColumnName}' (Sentence1ColumnName) must be text or a vector of text, found {sentence.ItemType}.", nameof(Options.Sentence1ColumnName));
        if (!inputSchema.TryFindColumn(options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"The input has no label column '{options.LabelColumnName}'.");
        if (!label.IsKey || label.Kind != SchemaShape.Column.VectorKind.VariableVector && label.Kind != SchemaShape.Column.VectorKind.Vector)
            throw new ArgumentException($"The label column '{options.LabelColumnName}' must be a vector of keys; add mlContext.Transforms.Conversion.MapValueToKey(\"{options.LabelColumnName}\").", nameof(Options.LabelColumnName));
        var result = inputSchema.ToDictionary(c => c.Name);
        result[options.PredictionColumnName] = new SchemaShape.Column(options.PredictionColumnName, SchemaShape.Column.VectorKind.VariableVector,
            NumberDataViewType.UInt32, true, label.Annotations);
        return new SchemaShape(result.Values);
    }

    /// <inheritdoc/>
    public PeftNamedEntityRecognitionTransformer Fit(IDataView input)
    {
        if (input is null) throw new ArgumentNullException(nameof(input));
        if (options.InitialAdapterPath is not null)
            throw new ArgumentException("InitialAdapterPath applies to text classification; named-entity recognition starts from a new adapter.", nameof(Options.InitialAdapterPath));
        TorchBackend.EnsureAvailable();
        var device = TorchBackend.ParseDevice(options.Device);
        using var ch = host.Start("Training");

        var train = NerData.Read(input, options.Sentence1ColumnName, options.LabelColumnName, "training data", out var label);
        if (train.EmptySentences > 0) ch.Warning($"{train.EmptySentences} training rows have no words; they are skipped.");
        if (train.Sentences.Count == 0) throw new ArgumentException("The training data has no sentence with words.", nameof(input));
        NerData? validation = null;
        if (options.ValidationSet is not null)
        {
            validation = NerData.Read(options.ValidationSet, options.Sentence1ColumnName, options.LabelColumnName, "validation set", out var validationLabel);
            label.CheckSameClasses(validationLabel, options.LabelColumnName);
        }

        var baseModel = options.LoadBaseModel(host, ch);
        var settings = new NerSettings
        {
            SentenceColumnName = options.Sentence1ColumnName,
            PredictionColumnName = options.PredictionColumnName,
            MaxSequenceLength = options.MaxSequenceLength,
            WindowOverlap = options.WindowOverlap ?? (options.MaxSequenceLength - 2) / 4,
            BatchSize = options.BatchSize,
            Tags = label.Values!.ToList(),
            CaseFeatures = options.CaseFeatures ?? baseModel.Source.LowerCase,
        };
        using var random = new RandomSource(options.Seed, device);
        var model = new NerModel(settings, baseModel, options.Method, options.EmbedBaseModel, device, random.Init, options.HeadDropout);
        baseModel.ReleaseParsed(); // the model holds what it needs; the parsed copies must not live through training
        model.KeepBaseForUnmerge = options.KeepBaseForUnmerge;
        try
        {
            model.Adapted.Backbone.GradientCheckpointing = options.GradientCheckpointing;
            model.ConfigureCompute(options.Precision, options.AttentionDropout);
            ch.Info($"{options.Method.PeftType} on {model.Adapted.AdaptedModules.Count} modules; trainable parameters " +
                $"{model.TrainableParameterCount:N0} of {model.TotalParameterCount:N0} ({100.0 * model.TrainableParameterCount / model.TotalParameterCount:F2}%); " +
                $"{settings.Tags.Count} tags; case features {(settings.CaseFeatures ? "on" : "off")}.");
            var history = new TrainingLoop(options, host, ch).Run(model.Network, model.TrainableParameters(), model.ParameterGroups(),
                TrainingJob(model, train, validation, ch), random, m => EpochCompleted?.Invoke(this, m));
            model.Adapted.Backbone.GradientCheckpointing = false;
            return new PeftNamedEntityRecognitionTransformer(host, model, history);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>What this task hands the training loop: windows of tokenized sentences, cross-entropy on each scored word, validation entity F1.</summary>
    private static TrainingJob TrainingJob(NerModel model, NerData train, NerData? validation, IChannel ch)
    {
        var (windows, tokenized) = model.Prepare(train.Sentences);
        int cut = tokenized.Sum(t => t.CutWords);
        if (cut > 0) ch.Warning($"{cut} training words have more WordPieces than a window holds; each keeps its first {model.Settings.MaxSequenceLength - 2} pieces (its tag is on the first).");
        int split = windows.Count - train.Sentences.Count;
        if (split > 0) ch.Info($"Sentences longer than MaxSequenceLength={model.Settings.MaxSequenceLength} tokens were cut into {split} more overlapping windows.");
        return new TrainingJob
        {
            RowCount = windows.Count,
            RowLengths = windows.Select(w => w.Row.Ids.Length).ToArray(),
            Loss = rows =>
            {
                var batch = rows.Select(i => windows[i]).ToList();
                var targets = batch.SelectMany(w => w.Words.Select(word => (long)train.Tags[w.Sentence][word])).ToArray();
                using var labels = tensor(targets).to(model.Device);
                return nn.functional.cross_entropy(model.Logits(batch, tokenized), labels);
            },
            Validate = validation is null ? null : () => EntityF1(model, validation),
            MetricName = "entity F1",
        };
    }

    private static double EntityF1(NerModel model, NerData data)
    {
        var predicted = model.Predict(data.Sentences, out _);
        var tags = model.Settings.Tags;
        return EntityScoring.Compute(data.Tags.Select((gold, i) =>
            ((IReadOnlyList<string>)gold.Select(t => tags[t]).ToArray(), (IReadOnlyList<string>)predicted[i].Select(t => tags[t]).ToArray()))).F1;
    }
}
