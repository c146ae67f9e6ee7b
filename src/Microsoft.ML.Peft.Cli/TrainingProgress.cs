using Microsoft.ML.Runtime;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary>Shows the PEFT trainer's log (base model, parameter counts, epochs, warnings) while a step runs.</summary>
internal static class TrainingProgress
{
    /// <summary>
    /// Runs <paramref name="work"/> with <see cref="MLContext.Log"/> subscribed: messages of the library's channels
    /// (source containing "Peft") of kind Info or Warning are printed as they come; on a terminal a spinner shows the latest.
    /// </summary>
    public static T Run<T>(MLContext mlContext, IAnsiConsole console, string title, Func<T> work)
    {
        StatusContext? status = null;
        var gate = new object();
        void OnLog(object? sender, LoggingEventArgs e)
        {
            if (e.Source is null || !e.Source.Contains("Peft", StringComparison.Ordinal)) return;
            var text = Markup.Escape(e.RawMessage ?? e.Message);
            // ML.NET may log from its worker threads; keep lines whole.
            lock (gate)
            {
                if (e.Kind == ChannelMessageKind.Info)
                {
                    console.MarkupLine($"  {text}");
                    status?.Status($"{Markup.Escape(title)}: {text}");
                }
                else if (e.Kind == ChannelMessageKind.Warning)
                {
                    console.MarkupLine($"  [yellow]warning:[/] {text}");
                }
            }
        }

        mlContext.Log += OnLog;
        try
        {
            console.MarkupLine($"[bold]{Markup.Escape(title)}[/]");
            if (!console.Profile.Capabilities.Interactive) return work();
            return console.Status().Spinner(Spinner.Known.Dots).Start($"{Markup.Escape(title)}...", context =>
            {
                status = context;
                return work();
            });
        }
        finally
        {
            mlContext.Log -= OnLog;
        }
    }
}
