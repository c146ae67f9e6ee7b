using System.CommandLine;
using Microsoft.ML.Peft.Export;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>export-onnx</c>: writes a saved model as one ONNX file with the adapter merged into the base weights (or the
/// method's operators) and the task's head, for ONNX Runtime or ML.NET's <c>ApplyOnnxModel</c>.
/// </summary>
internal static class ExportOnnxCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "The model file written by a training command (.zip).", Required = true };
        var output = new Option<string>("--output") { Description = "The ONNX file to write (replaced when it exists).", Required = true };
        var baseModel = new Option<string>("--base-model") { Description = "Where the base model is now (ONNX file or Hugging Face directory), if it moved since training." };
        var command = new Command("export-onnx",
            "Export a saved model as one ONNX file: the adapter merged into the base model's weights, the head appended, " +
            "token ids and attention mask in, the task's outputs out, dynamic batch and sequence axes.") { model, output, baseModel };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(baseModel)));
        return command;
    }

    private static int Run(string modelPath, string output, string? baseModelPath)
    {
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"The model file '{modelPath}' (--model) does not exist.", modelPath);
        if (baseModelPath is not null && !File.Exists(baseModelPath) && !Directory.Exists(baseModelPath))
            throw new FileNotFoundException($"The base model '{baseModelPath}' (--base-model) does not exist.", baseModelPath);
        var path = OutputFiles.Check(output, "--output");

        var mlContext = new MLContext(1);
        ITransformer loaded;
        try
        {
            // LoadPeft rethrows the loader's own exception (a missing or different base model names the one expected).
            loaded = mlContext.Model.LoadPeft(modelPath, new Format.PeftLoadOptions { BaseModelPath = baseModelPath }, out _);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"The model file '{modelPath}' (--model) is not an ML.NET model: {e.Message}.", e);
        }
        try
        {
            try
            {
                OutputFiles.WriteAtomically(path, temporary => mlContext.Model.ExportPeftToOnnx(loaded, temporary));
            }
            catch (NotSupportedException e)
            {
                // The model is valid but this export cannot write it: a data error, with the library's message.
                throw new InvalidDataException($"The model file '{modelPath}' (--model) cannot be exported to ONNX: {e.Message}", e);
            }
            var size = new FileInfo(path).Length;
            Terminal.Out.MarkupLine($"Wrote [green]{Markup.Escape(path)}[/] ({size / 1048576.0:F1} MB)");
            return ExitCodes.Success;
        }
        finally
        {
            foreach (var disposable in Flatten(loaded).OfType<IDisposable>()) disposable.Dispose();
        }
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };
}
