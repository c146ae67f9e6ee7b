using System.CommandLine;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary><c>export-adapter</c>: writes the adapter and head of a saved model as a Hugging Face PEFT adapter directory.</summary>
internal static class ExportAdapterCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "The model file written by text-classification (.zip).", Required = true };
        var format = new Option<string>("--format")
        {
            Description = "The adapter format: hf (Hugging Face PEFT: adapter_config.json, adapter_model.safetensors, README.md).",
            DefaultValueFactory = _ => "hf",
        };
        format.AcceptOnlyFromAmong("hf");
        var output = new Option<string>("--output") { Description = "The directory to write (created when missing; PEFT's files in it are replaced).", Required = true };
        var baseModel = new Option<string>("--base-model") { Description = "Where the base model is now (ONNX file or Hugging Face directory), if it moved since training." };
        var command = new Command("export-adapter", "Export a saved model's adapter and head in Hugging Face PEFT's format.") { model, format, output, baseModel };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(baseModel)));
        return command;
    }

    private static int Run(string modelPath, string output, string? baseModelPath)
    {
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"The model file '{modelPath}' (--model) does not exist.", modelPath);
        if (baseModelPath is not null && !File.Exists(baseModelPath) && !Directory.Exists(baseModelPath))
            throw new FileNotFoundException($"The base model '{baseModelPath}' (--base-model) does not exist.", baseModelPath);
        var directory = CheckDirectory(output, "--output");

        var mlContext = new MLContext(1);
        ITransformer loaded;
        try
        {
            loaded = baseModelPath is null ? mlContext.Model.Load(modelPath, out _) : mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out _);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"The model file '{modelPath}' (--model) is not an ML.NET model: {e.Message}.", e);
        }
        var transformers = Flatten(loaded).ToList();
        try
        {
            var peft = transformers.OfType<PeftTextClassificationTransformer>().ToList();
            if (peft.Count != 1) throw new InvalidDataException($"The model file '{modelPath}' (--model) holds {peft.Count} PEFT text classifiers; one is needed.");
            // Written beside the target and moved into place, so a failure leaves no half-written adapter.
            var temporary = Path.Combine(Path.GetDirectoryName(directory)!, $".{Path.GetFileName(directory)}.{Guid.NewGuid():N}.tmp");
            try
            {
                mlContext.Model.ExportPeftAdapter(peft[0], temporary);
                Directory.CreateDirectory(directory);
                foreach (var file in Directory.GetFiles(temporary)) File.Move(file, Path.Combine(directory, Path.GetFileName(file)), overwrite: true);
            }
            finally
            {
                if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
            }
            Terminal.Out.MarkupLine($"Wrote the {Markup.Escape(peft[0].Method)} adapter ({peft[0].ClassCount} classes) to [green]{Markup.Escape(directory)}[/]");
            return ExitCodes.Success;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    /// <summary>Checks that <paramref name="path"/> is a directory that can be created and written; returns its full path.</summary>
    internal static string CheckDirectory(string path, string option)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full)) throw new UsageException($"The output '{path}' ({option}) is a file; give a directory.");
        try
        {
            var parent = Path.GetDirectoryName(full)!;
            Directory.CreateDirectory(parent);
            var probe = Path.Combine(parent, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.probe");
            File.WriteAllBytes(probe, Array.Empty<byte>());
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"The output '{path}' ({option}) cannot be written: {e.Message}");
        }
        return full;
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };
}
