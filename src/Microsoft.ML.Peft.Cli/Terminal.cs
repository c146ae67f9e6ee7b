using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary>Spectre.Console consoles for standard output and standard error.</summary>
internal static class Terminal
{
    /// <summary>Progress, tables and results.</summary>
    public static IAnsiConsole Out { get; } = Create(Console.Out, Console.IsOutputRedirected);

    /// <summary>Errors.</summary>
    public static IAnsiConsole Error { get; } = Create(Console.Error, Console.IsErrorRedirected);

    private static IAnsiConsole Create(TextWriter writer, bool redirected)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
        // Redirected output has no width; Spectre would then wrap every line at 80 columns, splitting paths and messages.
        if (redirected) console.Profile.Width = 4096;
        return console;
    }

    /// <summary>Writes <c>error: message</c> in red to standard error.</summary>
    public static void WriteError(string message) => Error.MarkupLine($"[red]error: {Markup.Escape(message)}[/]");
}
