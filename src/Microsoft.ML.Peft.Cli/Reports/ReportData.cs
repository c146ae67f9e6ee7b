using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.Cli.Reports;

/// <summary>
/// Everything the visual training report shows, independent of how it was produced (one training run or an automated
/// search). Sections whose data is null or empty are left out of the page.
/// </summary>
/// <param name="Title">The page's heading, for example "Automated search: text-classification".</param>
/// <param name="Task">The task's command name (<c>text-classification</c>, <c>ner</c>...).</param>
/// <param name="Created">When the report was made (UTC).</param>
/// <param name="MetricName">The metric that ranks trials and that the validation curves show (higher is better), for example <c>accuracy</c>.</param>
/// <param name="Summary">Name/value rows shown first (dataset, budget, best method, test metrics...).</param>
/// <param name="Trials">Every trial of the search (one for a plain training run), in trial order.</param>
/// <param name="BestTrial">The number of the trial whose configuration the saved model uses; null when none.</param>
/// <param name="Model">Sizes of the saved model.</param>
/// <param name="Classification">Confusion matrix and per-class metrics of the evaluation data, for classification tasks (for NER: per entity type, without a confusion matrix).</param>
/// <param name="HardestExamples">The evaluation rows with the highest loss, highest first.</param>
internal sealed record ReportData(
    string Title,
    string Task,
    DateTime Created,
    string MetricName,
    IReadOnlyList<(string Name, string Value)> Summary,
    IReadOnlyList<ReportTrial> Trials,
    int? BestTrial,
    ReportModel Model,
    ReportClassification? Classification,
    IReadOnlyList<ReportExample> HardestExamples);

/// <summary>One trial of a search.</summary>
/// <param name="Number">The trial's number, from 1.</param>
/// <param name="Configuration">The sampled settings as name/value pairs (method, rank, alpha, learning rate, epochs...).</param>
/// <param name="Status">How it ended: <c>completed</c>, <c>pruned</c> (early termination), <c>out of time</c>, <c>failed</c>.</param>
/// <param name="Metric">Its best validation metric, or null when it produced none.</param>
/// <param name="Seconds">Wall time of the trial.</param>
/// <param name="Epochs">Per-epoch training loss and validation metric.</param>
/// <param name="Error">Why it failed, when it did.</param>
internal sealed record ReportTrial(
    int Number,
    IReadOnlyList<(string Name, string Value)> Configuration,
    string Status,
    double? Metric,
    double Seconds,
    IReadOnlyList<EpochMetrics> Epochs,
    string? Error);

/// <summary>Sizes of the saved model: file bytes, trainable and total parameters, and the base model file's bytes when known.</summary>
internal sealed record ReportModel(long ModelBytes, long TrainableParameters, long TotalParameters, long? BaseModelBytes);

/// <summary>Per-class results on the evaluation data.</summary>
/// <param name="ClassNames">Class names in key order.</param>
/// <param name="Confusion">Counts[trueClass][predictedClass]; null when the task has no confusion matrix (NER entity types).</param>
/// <param name="Precision">Per-class precision, in <paramref name="ClassNames"/> order.</param>
/// <param name="Recall">Per-class recall.</param>
/// <param name="F1">Per-class F1.</param>
/// <param name="Support">Per-class number of true rows (or entities).</param>
internal sealed record ReportClassification(
    IReadOnlyList<string> ClassNames,
    IReadOnlyList<IReadOnlyList<long>>? Confusion,
    IReadOnlyList<double> Precision,
    IReadOnlyList<double> Recall,
    IReadOnlyList<double> F1,
    IReadOnlyList<long> Support);

/// <summary>One hard evaluation row: its text (or an image thumbnail as PNG bytes), the true and predicted values and its loss.</summary>
internal sealed record ReportExample(string? Text, byte[]? ImagePng, string Label, string Predicted, double Loss);
