using System.CommandLine;
using System.Reflection;
using Microsoft.ML.Peft.Cli;

var verbose = new Option<bool>("--verbose")
{
    Description = "Show the stack trace of errors.",
    Recursive = true,
};
var root = new RootCommand("Fine-tune pretrained text encoders with LoRA in ML.NET pipelines, and score with the saved models.");
root.Options.Add(verbose);
root.Subcommands.Add(TextClassificationCommand.Create());
root.Subcommands.Add(PredictCommand.Create());

var parseResult = root.Parse(args);
try
{
    return parseResult.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception thrown)
{
    var e = Unwrap(thrown);
    // Bad input (arguments, files, data) is reported as one line; anything else is a bug and keeps its stack trace.
    bool expected = e is ArgumentException or InvalidDataException or IOException or InvalidOperationException or UnauthorizedAccessException or FormatException;
    Terminal.WriteError(expected ? e.Message : $"{e.GetType().FullName}: {e.Message}");
    if (!expected || parseResult.GetValue(verbose)) Console.Error.WriteLine(thrown);
    return 1;
}

static Exception Unwrap(Exception e)
{
    while (e is TargetInvocationException or AggregateException or TypeInitializationException && e.InnerException is not null)
        e = e.InnerException;
    return e;
}
