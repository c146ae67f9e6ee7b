using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Cli;

/// <summary>The results of a text-classification run, as written by <c>--metrics-json</c>.</summary>
internal sealed record ClassificationReport(
    double Accuracy,
    double MacroF1,
    double LogLoss,
    double TrainSeconds,
    long TrainableParameters,
    long TotalParameters,
    long ModelBytes,
    string Method,
    IReadOnlyList<Microsoft.ML.Peft.Training.EpochMetrics> Epochs)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        // Log-loss is infinite when a test row gets probability 0 for its class; keep the file writable then.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>
    /// Macro-averaged F1 from ML.NET's confusion matrix (rows: true class, columns: predicted class).
    /// Every class of the label's key type counts in the average, including a class that the test set lacks: when a class
    /// has no support and no predictions its precision and recall are undefined, and it counts as F1 = 0 (as scikit-learn's
    /// <c>f1_score(average="macro", labels=all, zero_division=0)</c>). The average then does not depend on which classes the
    /// test sample happens to contain, at the price of a lower score on tiny test sets. A class outside the label key cannot
    /// occur: ML.NET maps unseen labels to the missing key and the evaluator skips those rows.
    /// </summary>
    public static double ComputeMacroF1(ConfusionMatrix matrix)
    {
        var f1 = PerClassF1(matrix);
        return f1.Count == 0 ? 0 : f1.Sum() / f1.Count;
    }

    /// <summary>Each class's F1 from the confusion matrix's counts, in key order; 0 for a class without support or predictions (see <see cref="ComputeMacroF1"/>).</summary>
    public static IReadOnlyList<double> PerClassF1(ConfusionMatrix matrix)
    {
        int n = matrix.NumberOfClasses;
        var f1 = new double[n];
        for (int c = 0; c < n; c++)
        {
            double truePositives = matrix.Counts[c][c];
            double predicted = 0, actual = 0;
            for (int k = 0; k < n; k++)
            {
                predicted += matrix.Counts[k][c];
                actual += matrix.Counts[c][k];
            }
            double precision = predicted > 0 ? truePositives / predicted : 0;
            double recall = actual > 0 ? truePositives / actual : 0;
            f1[c] = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
        }
        return f1;
    }
}
