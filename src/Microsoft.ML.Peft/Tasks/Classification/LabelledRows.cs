using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>The checks and the metric every classification trainer applies to its labelled rows.</summary>
internal static class LabelledRows
{
    /// <summary>
    /// The training rows must hold a label and at least two classes (errors name the label column and count the rows with
    /// a missing key); skipped rows are reported on <paramref name="ch"/>.
    /// </summary>
    public static void CheckTraining(int count, int missingLabelRows, IEnumerable<int> labels, string labelColumn, IChannel ch)
    {
        if (count == 0)
            throw new ArgumentException($"The training data has no row with a label in column '{labelColumn}'" +
                (missingLabelRows > 0 ? $" ({missingLabelRows} rows have a missing key)." : "."), "input");
        if (labels.Distinct().Count() < 2)
            throw new ArgumentException($"The training data's label column '{labelColumn}' holds a single class; at least two classes are needed to train a classifier.", "input");
        if (missingLabelRows > 0) ch.Warning($"{missingLabelRows} training rows with a missing label were skipped.");
    }

    /// <summary>The validation set must have the training label's classes and a labelled row.</summary>
    public static void CheckValidation(LabelInfo training, LabelInfo validation, int count, string labelColumn)
    {
        training.CheckSameClasses(validation, labelColumn);
        if (count == 0) throw new ArgumentException("The validation set has no labelled row.", "ValidationSet");
    }

    /// <summary>The share of rows whose most probable class is their label.</summary>
    public static double Accuracy(IReadOnlyList<float[]> probabilities, IReadOnlyList<int> labels)
    {
        int correct = 0;
        for (int i = 0; i < labels.Count; i++)
            if (OutputColumns.ArgMax(probabilities[i]) == labels[i]) correct++;
        return (double)correct / labels.Count;
    }
}
