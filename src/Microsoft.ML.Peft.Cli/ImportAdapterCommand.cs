using System.CommandLine;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary><c>import-adapter</c>: turns a Hugging Face PEFT adapter directory into an ML.NET model file that <c>predict</c> scores with.</summary>
internal static class ImportAdapterCommand
{
    public static Command Create()
    {
        var adapter = new Option<string>("--adapter") { Description = "The adapter directory (adapter_config.json, adapter_model.safetensors), from export-adapter or Python PEFT.", Required = true };
        var baseModel = new Option<string>("--base-model") { Description = "The base model the adapter was trained on: an ONNX file (with vocab.txt beside it or --vocab) or a Hugging Face directory. Default: all-MiniLM-L6-v2." };
        var vocab = new Option<string>("--vocab") { Description = "The WordPiece vocab.txt of an ONNX --base-model." };
        var maxLength = new Option<int?>("--max-length") { Description = "Longest token sequence. Default: the adapter's, else 128." };
        maxLength.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is < 3 and var value) result.AddError($"--max-length must be at least 3; got {value}.");
        });
        var ignoreName = new Option<bool>("--ignore-base-model-name") { Description = "Accept a base model whose name differs from the adapter's base_model_name_or_path (adapters without a recorded SHA-256 only)." };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var command = new Command("import-adapter", "Import a Hugging Face PEFT text-classification adapter as an ML.NET model file for predict.")
        {
            adapter, baseModel, vocab, maxLength, ignoreName, output,
        };
        command.SetAction(parse => Run(parse.GetValue(adapter)!, parse.GetValue(baseModel), parse.GetValue(vocab), parse.GetValue(maxLength),
            parse.GetValue(ignoreName), parse.GetValue(output)!));
        return command;
    }

    private sealed class OneText
    {
        public string Sentence1 { get; set; } = "";
    }

    private sealed class TwoTexts
    {
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
    }

    private static int Run(string adapterPath, string? baseModelPath, string? vocabPath, int? maxLength, bool ignoreName, string output)
    {
        if (!Directory.Exists(adapterPath)) throw new DirectoryNotFoundException($"The adapter directory '{adapterPath}' (--adapter) does not exist.");
        if (baseModelPath is not null && !File.Exists(baseModelPath) && !Directory.Exists(baseModelPath))
            throw new FileNotFoundException($"The base model '{baseModelPath}' (--base-model) does not exist: give an ONNX file or a Hugging Face directory.", baseModelPath);
        if (vocabPath is not null && (baseModelPath is null || Directory.Exists(baseModelPath)))
            throw new UsageException("--vocab applies to an ONNX --base-model only.");
        if (vocabPath is not null && !File.Exists(vocabPath)) throw new FileNotFoundException($"The vocabulary '{vocabPath}' (--vocab) does not exist.", vocabPath);
        var outputPath = OutputFiles.Check(output, "--output");

        var mlContext = new MLContext(1);
        var peft = mlContext.Model.ImportPeftAdapter(adapterPath, new PeftAdapterImportOptions
        {
            BaseModel = baseModelPath is null ? null : BaseModelSource.FromPath(baseModelPath, vocabPath),
            Sentence1ColumnName = TextClassificationCommand.Sentence1Column,
            Sentence2ColumnName = TextClassificationCommand.Sentence2Column,
            ScoreColumnName = TextClassificationCommand.ScoreColumn,
            PredictedLabelColumnName = TextClassificationCommand.PredictedLabelColumn,
            MaxSequenceLength = maxLength,
            CheckBaseModelName = !ignoreName,
        });
        using (peft)
        {
            // The saved input is the text column(s); the predicted key is mapped back to the class names, as text-classification's models do.
            IDataView empty = peft.Sentence2ColumnName is null
                ? mlContext.Data.LoadFromEnumerable(Array.Empty<OneText>())
                : mlContext.Data.LoadFromEnumerable(Array.Empty<TwoTexts>());
            var scored = peft.GetOutputSchema(empty.Schema);
            ITransformer model = peft;
            if (scored[TextClassificationCommand.PredictedLabelColumn].HasKeyValues())
                model = new TransformerChain<ITransformer>(peft, mlContext.Transforms.Conversion.MapKeyToValue(TextClassificationCommand.PredictedLabelColumn).Fit(peft.Transform(empty)));
            OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(model, empty.Schema, temporary));
            Terminal.Out.MarkupLine($"Imported the {Markup.Escape(peft.Method)} adapter ({peft.ClassCount} classes: {Markup.Escape(string.Join(", ", peft.ClassNames.Take(10)))}) " +
                $"on {Markup.Escape(peft.BaseModelDescription)}; model saved to [green]{Markup.Escape(outputPath)}[/]");
            return ExitCodes.Success;
        }
    }
}
