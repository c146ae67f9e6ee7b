using System.CommandLine;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Cli;

var verbose = new Option<bool>("--verbose")
{
    Description = "Show the stack trace of errors.",
    Recursive = true,
};
var root = new RootCommand("Fine-tune pretrained text encoders with PEFT methods in ML.NET pipelines, and score with the saved models. " +
    "Exit codes: 0 success, 1 bad data or files, 2 wrong command line, 70 unexpected error, 130 cancelled.");
root.Options.Add(verbose);
root.Options.Add(CommandOptions.Threads);
root.Options.Add(CommandOptions.WaitPolicy);
root.Subcommands.Add(TextClassificationCommand.Create());
root.Subcommands.Add(ImageClassificationCommand.Create());
root.Subcommands.Add(ObjectDetectionCommand.Create());
root.Subcommands.Add(NerCommand.Create());
root.Subcommands.Add(SentenceSimilarityCommand.Create());
root.Subcommands.Add(RecommendationCommand.Create());
root.Subcommands.Add(RecommendationCommand.CreateAdapt());
root.Subcommands.Add(PredictCommand.Create());
root.Subcommands.Add(ExportAdapterCommand.Create());
root.Subcommands.Add(ExportOnnxCommand.Create());
root.Subcommands.Add(ImportAdapterCommand.Create());
root.Subcommands.Add(Microsoft.ML.Peft.Cli.Auto.AutoCommand.Create());
root.Subcommands.Add(Microsoft.ML.Peft.Cli.Ui.UiCommand.Create());

var parseResult = root.Parse(args);
if (parseResult.Errors.Count > 0 && !parseResult.Tokens.Any(t => t.Value is "--help" or "-h" or "-?"))
{
    foreach (var error in parseResult.Errors) Terminal.WriteError(error.Message);
    Console.Error.WriteLine("Run 'mlnet-peft --help' or 'mlnet-peft <command> --help' for the options.");
    return ExitCodes.UsageError;
}

// libtorch's process settings, before anything loads it: the wait policy is read once, when it loads.
if (parseResult.GetValue(CommandOptions.WaitPolicy) is { } waitPolicy)
    PeftRuntime.SetOpenMPWaitPolicy(waitPolicy == "passive" ? OpenMPWaitPolicy.Passive : OpenMPWaitPolicy.Active);
if (parseResult.GetValue(CommandOptions.Threads) is { } threadCount)
{
    if (threadCount < 1 || threadCount > 4 * Environment.ProcessorCount)
    {
        Terminal.WriteError($"--threads must be between 1 and {4 * Environment.ProcessorCount}; it is {threadCount}.");
        return ExitCodes.UsageError;
    }
    PeftRuntime.SetThreads(threadCount);
}
if (parseResult.GetValue(verbose) && (parseResult.GetResult(CommandOptions.Threads) is not null || parseResult.GetResult(CommandOptions.WaitPolicy) is not null))
    Console.Error.WriteLine($"libtorch: {PeftRuntime.Threads} threads, OpenMP wait policy {PeftRuntime.WaitPolicy?.ToString().ToLowerInvariant() ?? "not set"}.");

// Ctrl+C and SIGTERM cancel the work in progress through ML.NET (checked every training step); outputs are written
// to temporary names and moved into place, so a cancelled run leaves nothing half-written.
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    cancel.Cancel();
});
Cancellation.Token = cancel.Token;

try
{
    return parseResult.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception thrown)
{
    var e = Unwrap(thrown);
    if (e is OperationCanceledException || cancel.IsCancellationRequested)
    {
        Terminal.WriteError("Cancelled; no output was written.");
        return ExitCodes.Cancelled;
    }
    if (e is UsageException)
    {
        Terminal.WriteError(e.Message);
        return ExitCodes.UsageError;
    }
    // Bad input (data, files, models) is reported as one line; anything else is a bug and keeps its stack trace.
    bool expected = e is ArgumentException or InvalidDataException or IOException or InvalidOperationException or UnauthorizedAccessException or FormatException;
    Terminal.WriteError(expected ? e.Message : $"{e.GetType().FullName}: {e.Message}");
    if (!expected || parseResult.GetValue(verbose)) Console.Error.WriteLine(thrown);
    return expected ? ExitCodes.DataError : ExitCodes.InternalError;
}

static Exception Unwrap(Exception e)
{
    while (e is TargetInvocationException or AggregateException or TypeInitializationException && e.InnerException is not null)
        e = e.InnerException;
    return e;
}

namespace Microsoft.ML.Peft.Cli
{
    /// <summary>The process's cancellation (Ctrl+C, SIGTERM), for commands to pass on to ML.NET.</summary>
    internal static class Cancellation
    {
        public static CancellationToken Token { get; set; }

        /// <summary>Makes <paramref name="mlContext"/> stop its work when the process is asked to stop.</summary>
        public static CancellationTokenRegistration Attach(MLContext mlContext) => Token.Register(() => mlContext.CancelExecution());
    }
}
