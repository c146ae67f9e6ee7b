using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Training;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary>What a trained classifier tells the report: its sizes, method, epochs, base model and any task-specific rows.</summary>
internal sealed record ClassifierSummary(long TrainableParameters, long TotalParameters, string Method, IReadOnlyList<EpochMetrics> Epochs,
    string BaseModel, IReadOnlyList<(string Name, string Value)> ExtraRows);

/// <summary>
/// The end of every classification command: fit (with progress), assemble the chain behind the label mapper, evaluate
/// on the test data with ML.NET's evaluator, save the model and the metrics JSON atomically, print the report table.
/// </summary>
internal static class ClassifierRun
{
    public static int FitEvaluateSave(MLContext mlContext, IAnsiConsole console, string title, ITransformer labelToKey,
        Func<IDataView, IEnumerable<ITransformer>> fit, IDataView train, IDataView testData, string labelColumn,
        string outputPath, string? metricsPath, Func<TransformerChain<ITransformer>, ClassifierSummary> summarize)
    {
        // The label mapper was fitted on the training data by the caller (so the validation set gets the same mapping);
        // the rest of the pipeline is fitted on the mapped rows, and the chain assembled from both.
        var watch = Stopwatch.StartNew();
        var rest = TrainingProgress.Run(mlContext, console, "Training", () => fit(labelToKey.Transform(train)));
        watch.Stop();
        var trained = new TransformerChain<ITransformer>(new[] { labelToKey }.Concat(rest).ToArray());
        try
        {
            var summary = summarize(trained);
            var metrics = TrainingProgress.Run(mlContext, console, "Evaluating", () =>
                mlContext.MulticlassClassification.Evaluate(trained.Transform(testData), labelColumn));
            OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(trained, train.Schema, temporary));
            var report = new ClassificationReport(
                Accuracy: metrics.MicroAccuracy,
                MacroF1: ClassificationReport.ComputeMacroF1(metrics.ConfusionMatrix),
                LogLoss: metrics.LogLoss,
                TrainSeconds: Math.Round(watch.Elapsed.TotalSeconds, 3),
                TrainableParameters: summary.TrainableParameters,
                TotalParameters: summary.TotalParameters,
                ModelBytes: new FileInfo(outputPath).Length,
                Method: summary.Method,
                Epochs: summary.Epochs);
            console.Write(ReportTable(title, report, summary));
            console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
            if (metricsPath is not null)
            {
                OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, report.ToJson() + Environment.NewLine));
                console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
            }
            return 0;
        }
        finally
        {
            foreach (var disposable in trained.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    private static Table ReportTable(string title, ClassificationReport report, ClassifierSummary summary)
    {
        static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);
        var table = new Table().Title(title).AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        table.AddRow("Accuracy", F(report.Accuracy, "F4"));
        table.AddRow("Macro-F1", F(report.MacroF1, "F4"));
        table.AddRow("Log-loss", F(report.LogLoss, "F4"));
        table.AddRow("Training time (s)", F(report.TrainSeconds, "F1"));
        table.AddRow("Trainable parameters", Markup.Escape(
            $"{report.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture)} of {report.TotalParameters.ToString("N0", CultureInfo.InvariantCulture)} " +
            $"({F(100.0 * report.TrainableParameters / Math.Max(1, report.TotalParameters), "F2")}%)"));
        table.AddRow("Base model", Markup.Escape(summary.BaseModel));
        foreach (var (name, value) in summary.ExtraRows) table.AddRow(Markup.Escape(name), Markup.Escape(value));
        table.AddRow("Model file (bytes)", report.ModelBytes.ToString("N0", CultureInfo.InvariantCulture));
        return table;
    }
}
