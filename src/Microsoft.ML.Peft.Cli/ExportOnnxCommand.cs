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
        var quantize = new Option<string>("--quantize")
        {
            Description = "none (default): float32 weights. int8: the text encoder's Linear layers as dynamic int8 products " +
                "(DynamicQuantizeLinear + MatMulInteger): about a quarter of the size, faster in ONNX Runtime, slightly different scores. Text tasks only.",
            DefaultValueFactory = _ => "none",
        }.AcceptOnlyFromAmong("none", "int8");
        var command = new Command("export-onnx",
            "Export a saved model as one ONNX file: the adapter merged into the base model's weights, the head appended, " +
            "token ids and attention mask in, the task's outputs out, dynamic batch and sequence axes.") { model, output, baseModel, quantize };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(baseModel),
            parse.GetValue(quantize) == "int8" ? PeftOnnxQuantization.DynamicInt8 : PeftOnnxQuantization.None));
        return command;
    }

    private static int Run(string modelPath, string output, string? baseModelPath, PeftOnnxQuantization quantization)
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
            if (quantization != PeftOnnxQuantization.None && Flatten(loaded).Any(t => t is Tasks.ImageClassification.PeftImageClassificationTransformer))
                throw new UsageException($"--quantize int8 quantises the Linear layers of text encoders; '{modelPath}' (--model) is an image classifier (ResNet convolutions), which exports in float32 only: leave out --quantize.");
            try
            {
                var options = new PeftOnnxExportOptions { Quantization = quantization };
                OutputFiles.WriteAtomically(path, temporary => mlContext.Model.ExportPeftToOnnx(loaded, temporary, options));
            }
            catch (NotSupportedException e)
            {
                // The model is valid but this export cannot write it: a data error, with the library's message.
                throw new InvalidDataException($"The model file '{modelPath}' (--model) cannot be exported to ONNX: {e.Message}", e);
            }
            var size = new FileInfo(path).Length;
            Terminal.Out.MarkupLine($"Wrote [green]{Markup.Escape(path)}[/] ({size / 1048576.0:F1} MB{(quantization == PeftOnnxQuantization.DynamicInt8 ? ", int8 encoder weights" : "")})");
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
