using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>The tasks <see cref="PeftExperiment"/> can search, one factory each.</summary>
public static class PeftSearchTasks
{
    /// <summary>Text (or text-pair) classification: the label (any type; mapped to keys on the training data) and one or two text columns.
    /// The final model maps the predicted key back to the label's values. Metrics: accuracy (default), macro-accuracy, log-loss.</summary>
    public static PeftSearchTask TextClassification(string labelColumnName = "Label", string sentence1ColumnName = "Sentence1",
        string? sentence2ColumnName = null, Action<PeftTextClassificationTrainer.Options>? configure = null) =>
        new(sentence2ColumnName is null ? "text-classification" : "pair-classification", forImages: false,
            () => With(new PeftTextClassificationTrainer.Options
            {
                LabelColumnName = labelColumnName, Sentence1ColumnName = sentence1ColumnName, Sentence2ColumnName = sentence2ColumnName,
            }, configure),
            (o, size) => ((PeftTextTrainerOptions)o).MaxSequenceLength = size,
            (ml, o, onEpoch) =>
            {
                var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification((PeftTextClassificationTrainer.Options)o);
                trainer.EpochCompleted += (_, m) => onEpoch(m);
                return trainer;
            },
            ClassificationMetrics(labelColumnName),
            (ml, data) => ml.Transforms.Conversion.MapValueToKey(labelColumnName, labelColumnName).Fit(data),
            ml => ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

    /// <summary>Image classification on the ResNet backbone: the label and the image column (bytes, <c>MLImage</c> or paths).
    /// Metrics: accuracy (default), macro-accuracy, log-loss.</summary>
    public static PeftSearchTask ImageClassification(string labelColumnName = "Label", string imageColumnName = "Image",
        Action<PeftImageClassificationTrainer.Options>? configure = null) =>
        new("image-classification", forImages: true,
            () => With(new PeftImageClassificationTrainer.Options { LabelColumnName = labelColumnName, ImageColumnName = imageColumnName }, configure),
            (o, size) => ((PeftImageClassificationTrainer.Options)o).ImageSize = size,
            (ml, o, onEpoch) =>
            {
                var trainer = ml.MulticlassClassification.Trainers.PeftImageClassification((PeftImageClassificationTrainer.Options)o);
                trainer.EpochCompleted += (_, m) => onEpoch(m);
                return trainer;
            },
            ClassificationMetrics(labelColumnName),
            (ml, data) => ml.Transforms.Conversion.MapValueToKey(labelColumnName, labelColumnName).Fit(data),
            ml => ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

    /// <summary>Sentence similarity: a Single score label and two text columns. Metrics: spearman (default), pearson.</summary>
    public static PeftSearchTask SentenceSimilarity(string labelColumnName = "Label", string sentence1ColumnName = "Sentence1",
        string sentence2ColumnName = "Sentence2", Action<PeftSentenceSimilarityTrainer.Options>? configure = null) =>
        new("sentence-similarity", forImages: false,
            () => With(new PeftSentenceSimilarityTrainer.Options
            {
                LabelColumnName = labelColumnName, Sentence1ColumnName = sentence1ColumnName, Sentence2ColumnName = sentence2ColumnName,
            }, configure),
            (o, size) => ((PeftTextTrainerOptions)o).MaxSequenceLength = size,
            (ml, o, onEpoch) =>
            {
                var trainer = ml.Regression.Trainers.PeftSentenceSimilarity((PeftSentenceSimilarityTrainer.Options)o);
                trainer.EpochCompleted += (_, m) => onEpoch(m);
                return trainer;
            },
            new PeftSearchMetric[]
            {
                new("spearman", (ml, scored) => ml.Regression.EvaluateSentenceSimilarity(scored, labelColumnName).Spearman),
                new("pearson", (ml, scored) => ml.Regression.EvaluateSentenceSimilarity(scored, labelColumnName).Pearson),
            });

    /// <summary>Named-entity recognition: a vector of BIO tags per sentence (mapped to keys on the training data) and the
    /// sentence column (text or a vector of words). Metric: entity F1.</summary>
    public static PeftSearchTask NamedEntityRecognition(string labelColumnName = "Label", string sentenceColumnName = "Sentence",
        Action<PeftNamedEntityRecognitionTrainer.Options>? configure = null) =>
        new("ner", forImages: false,
            () => With(new PeftNamedEntityRecognitionTrainer.Options { LabelColumnName = labelColumnName, Sentence1ColumnName = sentenceColumnName }, configure),
            (o, size) => ((PeftTextTrainerOptions)o).MaxSequenceLength = size,
            (ml, o, onEpoch) =>
            {
                var trainer = ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition((PeftNamedEntityRecognitionTrainer.Options)o);
                trainer.EpochCompleted += (_, m) => onEpoch(m);
                return trainer;
            },
            new PeftSearchMetric[] { new("entity F1", (ml, scored) => ml.MulticlassClassification.EvaluateEntities(scored, labelColumnName).F1) },
            (ml, data) => ml.Transforms.Conversion.MapValueToKey(labelColumnName, labelColumnName,
                keyOrdinality: Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(data));

    private static PeftSearchMetric[] ClassificationMetrics(string label) => new PeftSearchMetric[]
    {
        new("accuracy", (ml, scored) => ml.MulticlassClassification.Evaluate(scored, label).MicroAccuracy),
        new("macro-accuracy", (ml, scored) => ml.MulticlassClassification.Evaluate(scored, label).MacroAccuracy),
        new("log-loss", (ml, scored) => ml.MulticlassClassification.Evaluate(scored, label).LogLoss, HigherIsBetter: false),
    };

    private static T With<T>(T options, Action<T>? configure)
    {
        configure?.Invoke(options);
        return options;
    }
}
