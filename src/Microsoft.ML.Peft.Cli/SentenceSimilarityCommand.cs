using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>sentence-similarity</c>: fine-tunes a sentence-pair scorer (cross-encoder or bi-encoder) with a PEFT method, reports
/// Pearson and Spearman correlation on test pairs and saves it as an ML.NET model.
/// </summary>
internal static class SentenceSimilarityCommand
{
    /// <summary>Column names inside the model, fixed so a saved model does not depend on the training file's header.</summary>
    public const string LabelColumn = "Label";
    public const string ScoreColumn = "Score";

    public static Command Create()
    {
        var defaults = new PeftSentenceSimilarityTrainer.Options();
        var dataset = CommandOptions.Dataset("The training pairs: a delimited text file with two text columns and a numeric score.");
        var labelCol = new Option<string>("--label-col") { Description = "The score column (a number; a value that does not parse is skipped): a header name (with --has-header) or a 0-based index.", Required = true };
        var textCol = CommandOptions.TextColumn();
        textCol.Description = "The first sentence's column: a header name (with --has-header) or a 0-based index.";
        var text2Col = CommandOptions.Text2Column();
        text2Col.Description = "The second sentence's column: a header name (with --has-header) or a 0-based index.";
        text2Col.Required = true;
        var hasHeader = CommandOptions.HasHeader();
        var separator = CommandOptions.Separator();
        var validation = new Option<string>("--validation-dataset") { Description = "Validation pairs (same layout): Spearman correlation is reported after each epoch." };
        var test = new Option<string>("--test-dataset") { Description = "Test pairs (same layout) for the final metrics. Default: 20% of the training data is held out." };
        var model = CommandOptions.TextBaseModel();
        var vocab = CommandOptions.Vocab();
        var architecture = new Option<string>("--architecture")
        {
            Description = "cross: the pair as one sequence, a regression head; bi: each sentence embedded alone, cosine similarity (default).",
            DefaultValueFactory = _ => defaults.Architecture == SimilarityArchitecture.BiEncoder ? "bi" : "cross",
        };
        architecture.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string>() is not ("cross" or "bi") and var value) result.AddError($"--architecture must be cross or bi; got '{value}'.");
        });
        var method = CommandOptions.TextMethod();
        var methodOptions = MethodChoices.CreateOptions();
        var epochs = CommandOptions.Epochs(defaults.MaxEpoch);
        var batchSize = CommandOptions.BatchSize(defaults.BatchSize, "Pairs");
        var learningRate = CommandOptions.LearningRate(defaults.LearningRate);
        var maxLength = new Option<int>("--max-length") { Description = "Longest token sequence (of the pair for cross, of each sentence for bi); longer texts are truncated.", DefaultValueFactory = _ => defaults.MaxSequenceLength }.AtLeast(3);
        var maxRows = CommandOptions.MaxRows();
        var seed = CommandOptions.Seed(defaults.Seed);
        var embed = new Option<bool>("--embed-base-model") { Description = "Store the base model inside the saved model (self-contained, larger file)." };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Also write the metrics to this JSON file." };

        var command = new Command("sentence-similarity", "Fine-tune a sentence-pair similarity scorer with a PEFT method (LoRA by default), report Pearson and Spearman correlation and save it as an ML.NET model.")
        {
            dataset, labelCol, textCol, text2Col, hasHeader, separator, validation, test, model, vocab, architecture,
            method, epochs, batchSize, learningRate, maxLength, maxRows, seed, embed, output, metricsJson,
        };
        foreach (var option in methodOptions) command.Options.Add(option.Option);
        var compute = new ComputeChoices();
        compute.AddTo(command);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse => Run(new Settings(
            Dataset: parse.GetValue(dataset)!,
            LabelColumn: parse.GetValue(labelCol)!,
            TextColumn: parse.GetValue(textCol)!,
            Text2Column: parse.GetValue(text2Col)!,
            Format: new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(separator)), parse.GetValue(hasHeader)),
            ValidationDataset: parse.GetValue(validation),
            TestDataset: parse.GetValue(test),
            Model: parse.GetValue(model),
            Vocab: parse.GetValue(vocab),
            Architecture: parse.GetValue(architecture) == "cross" ? SimilarityArchitecture.CrossEncoder : SimilarityArchitecture.BiEncoder,
            Method: MethodChoices.Create(parse.GetValue(method)!, parse, methodOptions),
            Epochs: parse.GetValue(epochs),
            BatchSize: parse.GetValue(batchSize),
            LearningRate: parse.GetValue(learningRate),
            MaxLength: parse.GetValue(maxLength),
            MaxRows: parse.GetValue(maxRows),
            Seed: parse.GetValue(seed),
            EmbedBaseModel: parse.GetValue(embed),
            Output: parse.GetValue(output)!,
            MetricsJson: parse.GetValue(metricsJson),
            Code: code.Check(parse, "sentence-similarity"),
            Compute: compute.Parse(parse))));
        return command;
    }

    private sealed record Settings(
        string Dataset, string LabelColumn, string TextColumn, string Text2Column, TextFileFormat Format,
        string? ValidationDataset, string? TestDataset, string? Model, string? Vocab, SimilarityArchitecture Architecture,
        PeftMethodOptions Method, int Epochs, int BatchSize, float LearningRate, int MaxLength, long? MaxRows, int Seed,
        bool EmbedBaseModel, string Output, string? MetricsJson, CodeRequest? Code = null, ComputeSettings? Compute = null);

    private static int Run(Settings s)
    {
        var console = Terminal.Out;
        // Check every input before the (slow) training starts.
        var trainFile = DelimitedFile.Open(s.Dataset, "--dataset", s.Format);
        var validationFile = s.ValidationDataset is null ? null : DelimitedFile.Open(s.ValidationDataset, "--validation-dataset", s.Format);
        var testFile = s.TestDataset is null ? null : DelimitedFile.Open(s.TestDataset, "--test-dataset", s.Format);
        var baseModel = TextClassificationCommand.ResolveBaseModel(s.Model, s.Vocab);
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");

        var mlContext = new MLContext(s.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        IDataView train = Load(mlContext, trainFile, s);
        IDataView? validation = validationFile is null ? null : Load(mlContext, validationFile, s);
        IDataView testData;
        (train, testData) = TextClassificationCommand.HoldOut(mlContext, console, train, testFile is null ? null : Load(mlContext, testFile, s), s.Seed);

        var trainerOptions = new PeftSentenceSimilarityTrainer.Options
        {
            LabelColumnName = LabelColumn,
            Sentence1ColumnName = TextClassificationCommand.Sentence1Column,
            Sentence2ColumnName = TextClassificationCommand.Sentence2Column,
            ScoreColumnName = ScoreColumn,
            ValidationSet = validation,
            BaseModel = baseModel,
            Architecture = s.Architecture,
            Method = s.Method,
            MaxEpoch = s.Epochs,
            BatchSize = s.BatchSize,
            LearningRate = s.LearningRate,
            MaxSequenceLength = s.MaxLength,
            Seed = s.Seed,
            EmbedBaseModel = s.EmbedBaseModel,
        };
        s.Compute?.ApplyTo(trainerOptions);
        var trainer = mlContext.Regression.Trainers.PeftSentenceSimilarity(trainerOptions);
        var watch = Stopwatch.StartNew();
        using var trained = TrainingProgress.Run(mlContext, console, "Training", () => trainer.Fit(train));
        watch.Stop();
        var metrics = TrainingProgress.Run(mlContext, console, "Evaluating", () =>
            mlContext.Regression.EvaluateSentenceSimilarity(trained.Transform(testData), LabelColumn, ScoreColumn));
        OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(trained, train.Schema, temporary));
        var report = new SimilarityReport(
            Pearson: metrics.Pearson,
            Spearman: metrics.Spearman,
            TrainSeconds: Math.Round(watch.Elapsed.TotalSeconds, 3),
            TrainableParameters: trained.TrainableParameterCount,
            TotalParameters: trained.TotalParameterCount,
            ModelBytes: new FileInfo(outputPath).Length,
            Method: trained.Method,
            Architecture: trained.Architecture == SimilarityArchitecture.CrossEncoder ? "cross" : "bi",
            TestRows: metrics.RowCount,
            SkippedTestRows: metrics.SkippedRowCount,
            TrainingLabelMinimum: trained.TrainingLabelMinimum,
            TrainingLabelMaximum: trained.TrainingLabelMaximum,
            Epochs: trained.TrainingHistory);
        console.Write(ReportTable(report, (baseModel ?? BaseModelSource.MiniLM()).ToString()));
        console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
        if (metricsPath is not null)
        {
            OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, report.ToJson() + Environment.NewLine));
            console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
        }
        s.Code?.Write(outputPath, console);
        return 0;
    }

    /// <summary>The label as Single (a value that does not parse becomes NaN, which training and evaluation skip and count), the two sentences as text.</summary>
    private static IDataView Load(MLContext mlContext, DelimitedFile file, Settings s)
    {
        var columns = new List<(string Name, int Index, DataKind Kind)>
        {
            (LabelColumn, file.ResolveColumn(s.LabelColumn, "--label-col"), DataKind.Single),
            (TextClassificationCommand.Sentence1Column, file.ResolveColumn(s.TextColumn, "--text-col"), DataKind.String),
            (TextClassificationCommand.Sentence2Column, file.ResolveColumn(s.Text2Column, "--text2-col"), DataKind.String),
        };
        var clash = columns.GroupBy(c => c.Index).FirstOrDefault(g => g.Count() > 1);
        if (clash is not null)
            throw new ArgumentException($"Column {clash.Key} of {file.Description} is given twice (--label-col, --text-col, --text2-col must differ).");
        return file.Load(mlContext, columns, s.MaxRows);
    }

    private static Table ReportTable(SimilarityReport report, string baseModel)
    {
        static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);
        var table = new Table().Title("Sentence similarity").AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        table.AddRow("Pearson", F(report.Pearson, "F4"));
        table.AddRow("Spearman", F(report.Spearman, "F4"));
        table.AddRow("Test pairs", report.TestRows.ToString("N0", CultureInfo.InvariantCulture));
        table.AddRow("Architecture", report.Architecture == "cross" ? "cross-encoder" : "bi-encoder");
        table.AddRow("Training time (s)", F(report.TrainSeconds, "F1"));
        table.AddRow("Trainable parameters", Markup.Escape(
            $"{report.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture)} of {report.TotalParameters.ToString("N0", CultureInfo.InvariantCulture)} " +
            $"({F(100.0 * report.TrainableParameters / Math.Max(1, report.TotalParameters), "F2")}%)"));
        table.AddRow("Base model", Markup.Escape(baseModel));
        table.AddRow("Model file (bytes)", report.ModelBytes.ToString("N0", CultureInfo.InvariantCulture));
        return table;
    }
}

/// <summary>The results of a sentence-similarity run, as written by <c>--metrics-json</c>.</summary>
internal sealed record SimilarityReport(
    double Pearson,
    double Spearman,
    double TrainSeconds,
    long TrainableParameters,
    long TotalParameters,
    long ModelBytes,
    string Method,
    string Architecture,
    long TestRows,
    long SkippedTestRows,
    double TrainingLabelMinimum,
    double TrainingLabelMaximum,
    IReadOnlyList<Microsoft.ML.Peft.Training.EpochMetrics> Epochs)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        // A correlation is NaN when the scores are constant; keep the file writable then.
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);
}
