using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Peft.AutoML;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Cli.Reports;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli.Auto;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>auto</c>: the <c>mlnet</c> CLI's automated training for PEFT. Searches methods and hyper-parameters within a time
/// budget (<see cref="PeftExperiment"/>), saves the best model, evaluates it on test data, and writes the metrics and a
/// visual report.
/// </summary>
internal static class AutoCommand
{
    public static Command Create()
    {
        var task = new Option<string>("--task") { Description = $"The task: {string.Join(", ", AutoTasks.Names)}.", Required = true };
        task.AcceptOnlyFromAmong(AutoTasks.Names.ToArray());
        var dataset = CommandOptions.Dataset("The training data: a delimited text file (text tasks), a CoNLL file (ner), or a folder of class folders or a TSV of path and label (images).");
        var trainTime = new Option<int>("--train-time") { Description = "The time budget in seconds for the whole search, the final refit included.", Required = true };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var report = new Option<string>("--report") { Description = "Write a visual report (one HTML page, charts also as PNG files beside it)." };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Write the metrics and the leaderboard to this JSON file." };
        var seed = CommandOptions.Seed(1, "the sampler, the splits and every trial");
        var labelCol = new Option<string>("--label-col") { Description = "The label column (text tasks): a header name (with --has-header) or a 0-based index." };
        var textCol = new Option<string>("--text-col") { Description = "The (first) text column (text tasks): a header name or a 0-based index." };
        var text2Col = CommandOptions.Text2Column();
        text2Col.Description = "The second text column (pair-classification, sentence-similarity).";
        var hasHeader = CommandOptions.HasHeader();
        var separator = CommandOptions.Separator();
        var tagCol = new Option<int?>("--tag-col") { Description = "ner: the 0-based column of the tags. Default: the last column whose values are all BIO tags." };
        var validation = new Option<string>("--validation-dataset") { Description = "Validation data (same layout) that ranks the trials. Default: 20% of the training data." };
        var test = new Option<string>("--test-dataset") { Description = "Test data (same layout) for the final metrics. Default: 20% of the training data is held out first." };
        var model = new Option<string>("--model") { Description = "The base model: for text an ONNX file or a Hugging Face directory (default MiniLM); for images an ONNX ResNet or torchvision .safetensors (default ResNet-18)." };
        var vocab = CommandOptions.Vocab();
        var maxRows = CommandOptions.MaxRows();
        var methods = new Option<string>("--methods") { Description = "Comma-separated methods to search (default: text lora, rslora, loraplus, ia3, bitfit, bottleneck; images lora, rslora, loraplus, ia3, bitfit, full)." };
        var metric = new Option<string>("--metric") { Description = "The metric that ranks trials (classification: accuracy, macro-accuracy, log-loss; sentence-similarity: spearman, pearson; ner: entity F1). Default: the task's first." };
        var maxEpochs = new Option<int>("--max-epochs") { Description = "Most epochs a trial trains.", DefaultValueFactory = _ => new PeftSearchSpace().MaxEpochs }.AtLeast(1);
        var maxLengths = new Option<string>("--max-lengths") { Description = "Text tasks: comma-separated sequence lengths to search (default 64,128)." };
        var imageSizes = new Option<string>("--image-sizes") { Description = "image-classification: comma-separated image sides in pixels to search (default 64,96)." };
        var maxTrials = new Option<int?>("--max-trials") { Description = "Stop after this many trials (default: as many as the budget allows)." };
        var trialLog = new Option<string>("--trial-log") { Description = "The trial log (JSON lines) to write, and to continue with --resume. Default: the output's name with .trials.jsonl." };
        var resume = new Option<bool>("--resume") { Description = "Continue the search of the trial log (same data and options) after a crash or Ctrl+C." };
        var noRefit = new Option<bool>("--no-refit") { Description = "Keep the best trial's model instead of training its settings again on the training and validation rows." };
        var validationFraction = new Option<double?>("--validation-fraction") { Description = "Without --validation-dataset: the share of the training rows that ranks the trials (default 0.2)." };
        var events = new Option<string>("--events") { Description = "Write the search's progress (trials, epochs, results) to this file as JSON lines, one event a line, as it happens." };

        var command = new Command("auto", "Search PEFT methods and hyper-parameters within a time budget, save the best model and report the search (as mlnet's auto-train).")
        {
            task, dataset, trainTime, output, report, metricsJson, seed, labelCol, textCol, text2Col, hasHeader, separator, tagCol,
            validation, test, model, vocab, maxRows, methods, metric, maxEpochs, maxLengths, imageSizes, maxTrials, trialLog, resume, noRefit,
            validationFraction, events,
        };
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse => Run(
            new AutoDataSettings(parse.GetValue(task)!, parse.GetValue(dataset)!, parse.GetValue(labelCol), parse.GetValue(textCol), parse.GetValue(text2Col),
                new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(separator)), parse.GetValue(hasHeader)),
                parse.GetValue(validation), parse.GetValue(test), parse.GetValue(model), parse.GetValue(vocab), parse.GetValue(maxRows), parse.GetValue(tagCol),
                parse.GetValue(seed)),
            new RunSettings(parse.GetValue(trainTime), parse.GetValue(output)!, parse.GetValue(report), parse.GetValue(metricsJson),
                parse.GetValue(methods), parse.GetValue(metric), parse.GetValue(maxEpochs),
                InputSizes(parse.GetValue(task)!, parse.GetValue(maxLengths), parse.GetValue(imageSizes)), parse.GetValue(maxTrials), parse.GetValue(trialLog),
                parse.GetValue(resume), !parse.GetValue(noRefit), code.Check(parse, "auto"), parse.GetValue(validationFraction), parse.GetValue(events))));
        return command;
    }

    /// <summary>The input sizes of --max-lengths (text) or --image-sizes (images); null for the task's defaults.</summary>
    private static int[]? InputSizes(string task, string? maxLengths, string? imageSizes)
    {
        bool images = task == "image-classification";
        if (images && maxLengths is not null) throw new UsageException("--max-lengths applies to text tasks; use --image-sizes.");
        if (!images && imageSizes is not null) throw new UsageException("--image-sizes applies to image-classification; use --max-lengths.");
        var (text, option, minimum) = images ? (imageSizes, "--image-sizes", 32) : (maxLengths, "--max-lengths", 3);
        if (text is null) return null;
        var sizes = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(t => int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= minimum ? v
                : throw new UsageException($"{option}: '{t}' is not a whole number of at least {minimum}."))
            .ToArray();
        return sizes.Length > 0 ? sizes : throw new UsageException($"{option} is empty.");
    }

    private sealed record RunSettings(int TrainTime, string Output, string? Report, string? MetricsJson, string? Methods, string? Metric,
        int MaxEpochs, int[]? InputSizes, int? MaxTrials, string? TrialLog, bool Resume, bool Refit, CodeRequest? Code,
        double? ValidationFraction, string? Events);

    private static int Run(AutoDataSettings data, RunSettings s)
    {
        var console = Terminal.Out;
        // Every input and output is checked before the search starts.
        if (s.TrainTime < PeftExperimentOptions.MinimumTrainTimeSeconds)
            throw new UsageException($"--train-time {s.TrainTime} is too small for one trial: give at least {PeftExperimentOptions.MinimumTrainTimeSeconds} s (the search then measures what one trial needs on this data).");
        if (s.MaxTrials is < 1) throw new UsageException($"--max-trials must be at least 1; got {s.MaxTrials}.");
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");
        var reportPath = s.Report is null ? null : HtmlReport.CheckWritable(s.Report, "--report", ChartFolder(s.Report), "--report");
        var logPath = OutputFiles.Check(s.TrialLog ?? Path.ChangeExtension(outputPath, ".trials.jsonl"), "--trial-log");
        if (s.ValidationFraction is double fraction && !(fraction > 0 && fraction < 1))
            throw new UsageException($"--validation-fraction must be between 0 and 1 (exclusive); it is {fraction.ToString(CultureInfo.InvariantCulture)}.");
        if (s.ValidationFraction is not null && data.ValidationDataset is not null)
            throw new UsageException("--validation-fraction applies without --validation-dataset.");
        var eventsPath = s.Events is null ? null : OutputFiles.Check(s.Events, "--events");
        if (s.Resume && !File.Exists(logPath)) throw new UsageException($"--resume: there is no trial log '{logPath}' to continue{(s.TrialLog is null ? " (give it with --trial-log)" : "")}.");

        var mlContext = new MLContext(data.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        var setup = AutoTasks.Prepare(mlContext, console, data);
        var options = new PeftExperimentOptions
        {
            TrainTimeSeconds = s.TrainTime,
            Seed = data.Seed,
            MetricName = s.Metric,
            MaxTrials = s.MaxTrials,
            TrialLogPath = logPath,
            Resume = s.Resume,
            Refit = s.Refit,
            ValidationFraction = s.ValidationFraction ?? new PeftExperimentOptions().ValidationFraction,
            SearchSpace = new PeftSearchSpace
            {
                Methods = s.Methods?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                MaxEpochs = s.MaxEpochs,
                InputSizes = s.InputSizes,
            },
        };
        PeftExperiment experiment;
        try
        {
            experiment = new PeftExperiment(mlContext, setup.Task, options);
        }
        catch (ArgumentException e) when (e.ParamName is "MetricName" or "Methods" || e.Message.Contains("not a PEFT method", StringComparison.Ordinal))
        {
            throw new UsageException((e.ParamName == "MetricName" ? "--metric: " : "--methods: ") + StripParameter(e.Message));
        }

        using var events = AutoEvents.Open(eventsPath);
        events?.Attach(experiment, setup.Task, s.TrainTime);
        PeftExperimentResult result;
        try
        {
            result = Search(mlContext, console, experiment, setup, s.TrainTime);
        }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == nameof(PeftExperimentOptions.TrainTimeSeconds))
        {
            throw new UsageException("--train-time: " + StripParameter(e.Message));
        }
        using var disposeModel = result.Model as IDisposable;

        OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(result.Model, setup.Train.Schema, temporary));
        events?.Message("Evaluating the best model on the test data");
        var evaluation = TrainingProgress.Run(mlContext, console, "Evaluating the best model on the test data", () => setup.Evaluate(mlContext, result.Model, setup.Test));
        var sizes = ModelSizes(result.Model);
        long modelBytes = new FileInfo(outputPath).Length;
        var leaderboard = result.Leaderboard(experiment.Metric.HigherIsBetter);
        console.Write(LeaderboardTable(leaderboard, result, setup.Task));
        console.Write(SummaryTable(result, evaluation, sizes, modelBytes));
        console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
        if (reportPath is not null)
        {
            var page = ReportData(setup, data, result, leaderboard, evaluation, sizes, modelBytes, s.TrainTime);
            HtmlReport.Write(page, reportPath, ChartFolder(reportPath));
            console.MarkupLine($"Report written to [green]{Markup.Escape(reportPath)}[/] (charts as PNG in {Markup.Escape(ChartFolder(reportPath))})");
        }
        if (metricsPath is not null)
        {
            var json = MetricsJson(setup.Task.Name, result, leaderboard, evaluation, sizes, modelBytes, s.TrainTime, setup.Task.InputSizeName);
            OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, json + Environment.NewLine));
            console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
        }
        s.Code?.Write(outputPath, console);
        events?.Done(result, evaluation.Metrics);
        return 0;
    }

    /// <summary>The folder of the report's charts as PNG files: beside the page, named after it.</summary>
    private static string ChartFolder(string reportPath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(reportPath))!, Path.GetFileNameWithoutExtension(reportPath) + "-charts");

    /// <summary>What the visual report shows of the search and the best model.</summary>
    private static ReportData ReportData(AutoSetup setup, AutoDataSettings data, PeftExperimentResult result, IReadOnlyList<PeftTrialResult> leaderboard,
        AutoEvaluation evaluation, (long Trainable, long Total) sizes, long modelBytes, int budget)
    {
        var best = result.BestTrial;
        var summary = new List<(string, string)>
        {
            ("Task", setup.Task.Name),
            ("Data", setup.DataSummary),
            ("Budget", $"{budget} s; the search took {result.Seconds.ToString("F0", CultureInfo.InvariantCulture)} s ({result.Trials.Count} trials)"),
            ("Best trial", $"{best.Number}: {best.Parameters.ToString().Replace("input size", setup.Task.InputSizeName, StringComparison.Ordinal)}"),
            ($"Validation {result.MetricName}", F(best.Metric)),
        };
        summary.AddRange(evaluation.Metrics.Select(m => ($"Test {m.Label}", F(m.Value))));
        summary.Add(("Final model", result.Refitted ? $"best settings trained again on the training and validation rows ({result.RefitEpochs} epoch(s), {result.RefitSeconds.ToString("F0", CultureInfo.InvariantCulture)} s)" : result.RefitNote ?? "the best trial's model"));
        summary.Add(("Seed", data.Seed.ToString(CultureInfo.InvariantCulture)));
        var trials = result.Trials.Select(t => new ReportTrial(t.Number, t.Parameters.ToPairs(setup.Task.InputSizeName), PeftTrialResult.StatusName(t.Status), t.Metric, t.Seconds, t.Epochs, t.Error)).ToList();
        long? baseBytes = BaseModelBytes(data);
        return new ReportData($"Automated search: {setup.Task.Name}", setup.Task.Name, DateTime.UtcNow, result.MetricName, summary, trials, best.Number,
            new ReportModel(modelBytes, sizes.Trainable, sizes.Total, baseBytes), evaluation.Classification, evaluation.HardestExamples);
    }

    /// <summary>The size of the base model's weights file when --model names one (an ONNX file, or a Hugging Face folder's safetensors); null for the packaged defaults.</summary>
    private static long? BaseModelBytes(AutoDataSettings data)
    {
        if (data.Model is null) return null;
        if (File.Exists(data.Model)) return new FileInfo(data.Model).Length;
        var weights = Path.Combine(data.Model, "model.safetensors");
        return File.Exists(weights) ? new FileInfo(weights).Length : null;
    }

    private static string StripParameter(string message)
    {
        int at = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        return at < 0 ? message : message[..at];
    }

    /// <summary>Runs the search, printing each trial as it ends and, on a terminal, a status line with the best so far and the time left.</summary>
    private static PeftExperimentResult Search(MLContext mlContext, IAnsiConsole console, PeftExperiment experiment, AutoSetup setup, int budget)
    {
        var watch = Stopwatch.StartNew();
        double? best = null;
        var higher = experiment.Metric.HigherIsBetter;
        StatusContext? status = null;
        var gate = new object();
        string Left() => $"{Math.Max(0, budget - watch.Elapsed.TotalSeconds):F0} s left";
        string Best() => best is double b ? $"best {experiment.Metric.Name} {b.ToString("F4", CultureInfo.InvariantCulture)}" : "no result yet";
        experiment.TrialStarted += (_, t) =>
        {
            lock (gate)
            {
                console.MarkupLine($"[bold]Trial {t.Number}[/]: {Markup.Escape(t.Parameters.ToPairs(setup.Task.InputSizeName).Select(p => $"{p.Name} {p.Value}").Aggregate((a, b) => a + ", " + b))}");
                status?.Status(Markup.Escape($"Trial {t.Number} · {Best()} · {Left()}"));
            }
        };
        experiment.EpochCompleted += (_, e) =>
        {
            lock (gate)
            {
                var m = e.Metrics;
                console.MarkupLine(Markup.Escape($"  epoch {m.Epoch}/{m.MaxEpoch}: loss {m.TrainingLoss.ToString("F4", CultureInfo.InvariantCulture)}" +
                    (m.ValidationMetric is double v ? $", validation {m.MetricName} {v.ToString("F4", CultureInfo.InvariantCulture)}" : "") +
                    $", {m.RowsPerSecond.ToString("F0", CultureInfo.InvariantCulture)} rows/s"));
                status?.Status(Markup.Escape($"Trial {e.Number}, epoch {m.Epoch}/{m.MaxEpoch} · {Best()} · {Left()}"));
            }
        };
        experiment.TrialCompleted += (_, t) =>
        {
            lock (gate)
            {
                if (t.Status == PeftTrialStatus.Completed && t.Metric is double v && (best is not double b || (higher ? v > b : v < b))) best = v;
                var text = t.Status switch
                {
                    PeftTrialStatus.Completed => $"[green]completed[/]",
                    PeftTrialStatus.Pruned => "[yellow]pruned[/] (early termination)",
                    PeftTrialStatus.OutOfTime => "[yellow]out of time[/]",
                    _ => $"[red]failed[/]: {Markup.Escape(t.Error ?? "")}",
                };
                console.MarkupLine($"  {text}" + Markup.Escape((t.Metric is double m ? $", {experiment.Metric.Name} {m.ToString("F4", CultureInfo.InvariantCulture)}" : "") +
                    $", {t.Seconds.ToString("F0", CultureInfo.InvariantCulture)} s · {Best()} · {Left()}"));
            }
        };
        console.MarkupLine($"[bold]Automated search[/]: {Markup.Escape(setup.Task.Name)} on {Markup.Escape(setup.DataSummary)}, {budget} s, ranked by {Markup.Escape(experiment.Metric.Name)}");
        if (!console.Profile.Capabilities.Interactive) return RunWithLog(mlContext, console, () => experiment.Run(setup.Train, setup.Validation, Cancellation.Token));
        return console.Status().Spinner(Spinner.Known.Dots).Start("Searching...", context =>
        {
            status = context;
            return RunWithLog(mlContext, console, () => experiment.Run(setup.Train, setup.Validation, Cancellation.Token));
        });
    }

    /// <summary>Passes the experiment's own messages (calibration, refit, stopping) and warnings to the console.</summary>
    private static T RunWithLog<T>(MLContext mlContext, IAnsiConsole console, Func<T> work)
    {
        void OnLog(object? sender, Microsoft.ML.LoggingEventArgs e)
        {
            if (e.Source is null || !e.Source.Contains(nameof(PeftExperiment), StringComparison.Ordinal)) return;
            var text = e.RawMessage ?? e.Message;
            // The trials' and the calibration's own messages stay out of the way (the events above report the trials); warnings always show.
            if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info
                && (text.StartsWith("Trial ", StringComparison.Ordinal) || text.StartsWith("Calibration: ", StringComparison.Ordinal))) return;
            if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) console.MarkupLine($"  [yellow]warning:[/] {Markup.Escape(text)}");
            else if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) console.MarkupLine($"  {Markup.Escape(text)}");
        }
        mlContext.Log += OnLog;
        try
        {
            return work();
        }
        finally
        {
            mlContext.Log -= OnLog;
        }
    }

    /// <summary>Trainable and total parameters of the PEFT transformer in the model.</summary>
    internal static (long Trainable, long Total) ModelSizes(ITransformer model)
    {
        foreach (var t in Flatten(model))
        {
            switch (t)
            {
                case PeftTextClassificationTransformer x: return (x.TrainableParameterCount, x.TotalParameterCount);
                case PeftImageClassificationTransformer x: return (x.TrainableParameterCount, x.TotalParameterCount);
                case PeftSentenceSimilarityTransformer x: return (x.TrainableParameterCount, x.TotalParameterCount);
                case PeftNamedEntityRecognitionTransformer x: return (x.TrainableParameterCount, x.TotalParameterCount);
            }
        }
        return (0, 0);
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };

    private static string F(double? value) => value is double v ? v.ToString("F4", CultureInfo.InvariantCulture) : "-";

    private static Table LeaderboardTable(IReadOnlyList<PeftTrialResult> leaderboard, PeftExperimentResult result, PeftSearchTask task)
    {
        var table = new Table().Title("Leaderboard").AddColumn("#").AddColumn("Trial", c => c.RightAligned()).AddColumn("Settings")
            .AddColumn("Status").AddColumn(new TableColumn(Markup.Escape(result.MetricName)).RightAligned()).AddColumn(new TableColumn("Seconds").RightAligned());
        int rank = 0;
        foreach (var t in leaderboard)
        {
            var settings = string.Join(", ", t.Parameters.ToPairs(task.InputSizeName).Select(p => $"{p.Name} {p.Value}"));
            var mark = t.Number == result.BestTrial.Number ? "[green]*[/]" : "";
            table.AddRow((++rank).ToString(CultureInfo.InvariantCulture), $"{t.Number}{mark}", Markup.Escape(settings), PeftTrialResult.StatusName(t.Status),
                F(t.Metric), t.Seconds.ToString("F0", CultureInfo.InvariantCulture));
        }
        return table;
    }

    private static Table SummaryTable(PeftExperimentResult result, AutoEvaluation evaluation, (long Trainable, long Total) sizes, long modelBytes)
    {
        var table = new Table().Title("Best model").AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        foreach (var (_, label, value) in evaluation.Metrics) table.AddRow($"Test {Markup.Escape(label)}", F(value));
        table.AddRow($"Validation {Markup.Escape(result.MetricName)} (trial {result.BestTrial.Number})", F(result.BestTrial.Metric));
        table.AddRow("Trials", result.Trials.Count.ToString(CultureInfo.InvariantCulture));
        table.AddRow("Refitted on all rows", result.Refitted ? "yes" : Markup.Escape(result.RefitNote ?? "no"));
        table.AddRow("Search time (s)", result.Seconds.ToString("F1", CultureInfo.InvariantCulture));
        table.AddRow("Trainable parameters", Markup.Escape($"{sizes.Trainable.ToString("N0", CultureInfo.InvariantCulture)} of {sizes.Total.ToString("N0", CultureInfo.InvariantCulture)} " +
            $"({(100.0 * sizes.Trainable / Math.Max(1, sizes.Total)).ToString("F2", CultureInfo.InvariantCulture)}%)"));
        table.AddRow("Model file (bytes)", modelBytes.ToString("N0", CultureInfo.InvariantCulture));
        return table;
    }

    private static string MetricsJson(string task, PeftExperimentResult result, IReadOnlyList<PeftTrialResult> leaderboard, AutoEvaluation evaluation,
        (long Trainable, long Total) sizes, long modelBytes, int budget, string inputSizeName)
    {
        static JsonNode? Number(double? value) => value is double v && double.IsFinite(v) ? JsonValue.Create(v) : null;
        JsonObject Parameters(PeftTrialParameters p) => new(p.ToPairs(inputSizeName).Select(x => KeyValuePair.Create(Camel(x.Name),
            (JsonNode?)(double.TryParse(x.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? JsonValue.Create(d) : JsonValue.Create(x.Value)))));
        var json = new JsonObject { ["task"] = task, ["metric"] = result.MetricName };
        foreach (var (key, _, value) in evaluation.Metrics) json[key] = Number(value);
        json["validationMetric"] = Number(result.BestTrial.Metric);
        json["trainSeconds"] = Math.Round(result.Seconds, 3);
        json["budgetSeconds"] = budget;
        json["refitted"] = result.Refitted;
        json["refitSeconds"] = Math.Round(result.RefitSeconds, 3);
        json["refitEpochs"] = result.RefitEpochs;
        json["trials"] = result.Trials.Count;
        json["trainableParameters"] = sizes.Trainable;
        json["totalParameters"] = sizes.Total;
        json["modelBytes"] = modelBytes;
        json["best"] = new JsonObject { ["trial"] = result.BestTrial.Number, ["parameters"] = Parameters(result.BestTrial.Parameters) };
        json["leaderboard"] = new JsonArray(leaderboard.Select(t => (JsonNode)new JsonObject
        {
            ["trial"] = t.Number, ["status"] = PeftTrialResult.StatusName(t.Status), ["metric"] = Number(t.Metric), ["seconds"] = Math.Round(t.Seconds, 3),
            ["epochs"] = t.Epochs.Count, ["parameters"] = Parameters(t.Parameters), ["error"] = t.Error,
        }).ToArray());
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static string Camel(string name)
    {
        var parts = name.Split(' ');
        return parts[0] + string.Concat(parts.Skip(1).Select(p => char.ToUpperInvariant(p[0]) + p[1..]));
    }
}
