using System.Globalization;
using Microsoft.ML.Transforms;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary><c>predict</c> for image models: one row per image with its path, the predicted label and the class probabilities.</summary>
internal static class ImagePredictions
{
    public static int Run(string modelPath, ImageDataset dataset, string output, string? baseModelPath)
    {
        var console = Terminal.Out;
        var outputPath = OutputFiles.Check(output, "--output");
        var mlContext = new MLContext(1);
        using var cancellation = Cancellation.Attach(mlContext);
        var model = PredictCommand.LoadModel(mlContext, modelPath, baseModelPath, out _);
        var transformers = PredictCommand.Flatten(model).ToList();
        try
        {
            if (!transformers.OfType<Tasks.ImageClassification.PeftImageClassificationTransformer>().Any())
                throw new ArgumentException($"The model '{modelPath}' (--model) is a text model; --dataset '{dataset.Path}' holds images.");
            // Labels, when the dataset has them, are not needed: the label mappers at the head of the chain are skipped.
            IDataView data = mlContext.Data.LoadFromEnumerable(dataset.Rows.Select(r => new ImageRow { ImagePath = r.ImagePath }).ToList());
            foreach (var transformer in transformers.SkipWhile(t => t is ValueToKeyMappingTransformer))
                data = transformer.Transform(data);
            console.MarkupLine($"Scoring [green]{Markup.Escape(dataset.Description)}[/]");
            long rows = 0;
            OutputFiles.WriteAtomically(outputPath, temporary =>
                rows = PredictCommand.Write(data, new[] { ImageClassificationCommand.ImageColumn }, new[] { ImageClassificationCommand.ImageColumn }, temporary));
            console.MarkupLine($"Wrote {rows.ToString(CultureInfo.InvariantCulture)} predictions to [green]{Markup.Escape(outputPath)}[/]");
            return 0;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    private sealed class ImageRow
    {
        public string ImagePath { get; set; } = "";
    }
}
