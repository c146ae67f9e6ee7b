using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Transforms;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary><c>ner</c>: fine-tunes a named-entity recognizer on CoNLL files with a PEFT method, evaluates entity F1 and saves it as an ML.NET model.</summary>
internal static class NerCommand
{
    /// <summary>Column names inside the model.</summary>
    public const string SentenceColumn = "Sentence";
    public const string LabelColumn = "Label";
    public const string PredictedLabelColumn = "PredictedLabel";

    public static Command Create()
    {
        var defaults = new PeftNamedEntityRecognitionTrainer.Options();
        var dataset = CommandOptions.Dataset("The training data: a CoNLL file (one token a line with space-separated columns, a blank line between sentences).");
        var test = new Option<string>("--test-dataset") { Description = "CoNLL test data for the final entity metrics.", Required = true };
        var validation = new Option<string>("--validation-dataset") { Description = "CoNLL validation data: entity F1 is reported after each epoch (and drives --early-stopping)." };
        var tagCol = new Option<int?>("--tag-col") { Description = "The 0-based column of the tags. Default: the last column whose values are all BIO tags (O, B-X, I-X)." };
        tagCol.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is < 1 and var v) r.AddError($"--tag-col must be at least 1 (column 0 holds the tokens); got {v}.");
        });
        var model = CommandOptions.TextBaseModel();
        var vocab = CommandOptions.Vocab();
        var method = CommandOptions.TextMethod();
        var methodOptions = MethodChoices.CreateOptions();
        var epochs = CommandOptions.Epochs(3);
        var batchSize = CommandOptions.BatchSize(defaults.BatchSize, "Windows");
        var learningRate = CommandOptions.LearningRate(defaults.LearningRate);
        var maxLength = new Option<int>("--max-length") { Description = "Tokens per window; longer sentences are cut into overlapping windows.", DefaultValueFactory = _ => defaults.MaxSequenceLength }.AtLeast(3);
        var noCase = new Option<bool>("--no-case-features") { Description = "Do not give the head each word's case shape (by default it does when the vocabulary is uncased)." };
        var earlyStopping = new Option<int>("--early-stopping") { Description = "With --validation-dataset: stop after this many epochs without a better entity F1 and keep the best epoch (0: off).", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var maxRows = new Option<int?>("--max-rows") { Description = "Read at most this many sentences of each file." };
        maxRows.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is <= 0 and var v) r.AddError($"--max-rows must be positive; got {v}.");
        });
        var seed = CommandOptions.Seed(defaults.Seed, "initialisation, dropout and shuffling");
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Also write the metrics to this JSON file." };

        var command = new Command("ner", "Fine-tune a named-entity recognizer on CoNLL data with a PEFT method (LoRA by default), evaluate entity precision, recall and F1, and save it as an ML.NET model.")
        {
            dataset, test, validation, tagCol, model, vocab, method, epochs, batchSize, learningRate, maxLength, noCase,
            earlyStopping, maxRows, seed, output, metricsJson,
        };
        foreach (var option in methodOptions) command.Options.Add(option.Option);
        var compute = new ComputeChoices();
        compute.AddTo(command);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse => Run(new Settings(
            parse.GetValue(dataset)!, parse.GetValue(test)!, parse.GetValue(validation), parse.GetValue(tagCol),
            parse.GetValue(model), parse.GetValue(vocab), MethodChoices.Create(parse.GetValue(method)!, parse, methodOptions),
            parse.GetValue(epochs), parse.GetValue(batchSize), parse.GetValue(learningRate), parse.GetValue(maxLength),
            parse.GetValue(noCase) ? false : null, parse.GetValue(earlyStopping), parse.GetValue(maxRows), parse.GetValue(seed),
            parse.GetValue(output)!, parse.GetValue(metricsJson), code.Check(parse, "ner"), compute.Parse(parse))));
        return command;
    }

    private sealed record Settings(string Dataset, string TestDataset, string? ValidationDataset, int? TagColumn, string? Model, string? Vocab,
        PeftMethodOptions Method, int Epochs, int BatchSize, float LearningRate, int MaxLength, bool? CaseFeatures, int EarlyStopping,
        int? MaxRows, int Seed, string Output, string? MetricsJson, CodeRequest? Code = null, ComputeSettings? Compute = null);

    /// <summary>A sentence as ML.NET reads it: words and their tags.</summary>
    internal sealed class SentenceRow
    {
        [VectorType] public string[] Sentence { get; set; } = Array.Empty<string>();
        [VectorType] public string[] Label { get; set; } = Array.Empty<string>();
    }

    private static int Run(Settings s)
    {
        var console = Terminal.Out;
        // Every input is checked before the (slow) training starts.
        var train = Read(s.Dataset, "--dataset", s);
        var test = Read(s.TestDataset, "--test-dataset", s);
        var validation = s.ValidationDataset is null ? null : Read(s.ValidationDataset, "--validation-dataset", s);
        var tags = train.Sentences.SelectMany(x => x.Tags).ToHashSet(StringComparer.Ordinal);
        if (!tags.Contains("O")) throw new InvalidDataException($"The tags of '{s.Dataset}' (--dataset) have no 'O' (outside any entity): [{string.Join(", ", tags.Order(StringComparer.Ordinal))}].");
        CheckKnownTags(test, tags, s.TestDataset, "--test-dataset");
        if (validation is not null) CheckKnownTags(validation, tags, s.ValidationDataset!, "--validation-dataset");
        var baseModel = TextClassificationCommand.ResolveBaseModel(s.Model, s.Vocab);
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");
        console.MarkupLine($"CoNLL: {train.Sentences.Count:N0} training sentences (tags in column {train.TagColumn}), {test.Sentences.Count:N0} test sentences" +
            (validation is null ? "." : $", {validation.Sentences.Count:N0} validation sentences."));

        var mlContext = new MLContext(s.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        var trainView = ToDataView(mlContext, train);
        var labelToKey = mlContext.Transforms.Conversion.MapValueToKey(LabelColumn, LabelColumn, keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(trainView);
        var options = new PeftNamedEntityRecognitionTrainer.Options
        {
            Sentence1ColumnName = SentenceColumn,
            LabelColumnName = LabelColumn,
            PredictionColumnName = PredictedLabelColumn,
            BaseModel = baseModel,
            Method = s.Method,
            MaxEpoch = s.Epochs,
            BatchSize = s.BatchSize,
            LearningRate = s.LearningRate,
            MaxSequenceLength = s.MaxLength,
            CaseFeatures = s.CaseFeatures,
            Seed = s.Seed,
            ValidationSet = validation is null ? null : labelToKey.Transform(ToDataView(mlContext, validation)),
            EarlyStoppingPatience = s.EarlyStopping,
        };
        s.Compute?.ApplyTo(options);
        var mappedTrain = labelToKey.Transform(trainView);
        var watch = Stopwatch.StartNew();
        using var tagger = TrainingProgress.Run(mlContext, console, "Training", () =>
            mlContext.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options).Fit(mappedTrain));
        watch.Stop();
        var metrics = TrainingProgress.Run(mlContext, console, "Evaluating", () =>
            mlContext.MulticlassClassification.EvaluateEntities(tagger.Transform(labelToKey.Transform(ToDataView(mlContext, test))), LabelColumn, PredictedLabelColumn));
        // The saved model reads the sentence column only: the label mapping was for training.
        OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(tagger, mappedTrain.Schema, temporary));
        var report = new NerReport
        {
            F1 = metrics.F1,
            Precision = metrics.Precision,
            Recall = metrics.Recall,
            PerType = metrics.PerType.ToDictionary(p => p.Key, p => new NerTypeReport { F1 = p.Value.F1, Precision = p.Value.Precision, Recall = p.Value.Recall, Support = p.Value.GoldCount }),
            TrainSeconds = Math.Round(watch.Elapsed.TotalSeconds, 3),
            TrainableParameters = tagger.TrainableParameterCount,
            TotalParameters = tagger.TotalParameterCount,
            ModelBytes = new FileInfo(outputPath).Length,
            Method = tagger.Method,
            TokenAccuracy = metrics.TokenAccuracy,
            TestSentences = test.Sentences.Count,
            TrainSentences = train.Sentences.Count,
            CaseFeatures = tagger.CaseFeatures,
            Epochs = tagger.TrainingHistory.Count,
        };
        console.Write(ReportTable(report, (baseModel ?? BaseModelSource.MiniLM()).ToString()));
        console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
        if (metricsPath is not null)
        {
            OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }) + Environment.NewLine));
            console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
        }
        s.Code?.Write(outputPath, console);
        return 0;
    }

    private static ConllData Read(string path, string option, Settings s) => Read(path, option, s.TagColumn, s.MaxRows);

    /// <summary>A CoNLL file (at most <paramref name="maxRows"/> sentences); a missing or empty file is an error naming <paramref name="option"/>.</summary>
    internal static ConllData Read(string path, string option, int? tagColumn, long? maxRows)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The CoNLL file '{path}' ({option}) does not exist.", path);
        var data = ConllFile.Read(path, tagColumn);
        if (data.Sentences.Count == 0) throw new InvalidDataException($"The CoNLL file '{path}' ({option}) holds no sentence.");
        return maxRows is long max && data.Sentences.Count > max ? new ConllData(data.Sentences.Take((int)max).ToList(), data.TagColumn, data.ColumnCount, data.DocStartLines) : data;
    }

    /// <summary>An unknown tag in test or validation data is an error naming the tag and its line.</summary>
    internal static void CheckKnownTags(ConllData data, HashSet<string> known, string path, string option)
    {
        foreach (var sentence in data.Sentences)
        {
            for (int i = 0; i < sentence.Tags.Length; i++)
            {
                if (!known.Contains(sentence.Tags[i]))
                    throw new InvalidDataException($"The tag '{sentence.Tags[i]}' on line {sentence.FirstLine + i} of '{path}' ({option}) does not occur in the training data " +
                        $"(its tags: {string.Join(", ", known.Order(StringComparer.Ordinal))}).");
            }
        }
    }

    internal static IDataView ToDataView(MLContext mlContext, ConllData data) =>
        mlContext.Data.LoadFromEnumerable(data.Sentences.Select(x => new SentenceRow { Sentence = x.Words, Label = x.Tags }).ToList());

    private static Table ReportTable(NerReport report, string baseModel)
    {
        static string F(double value) => value.ToString("F4", CultureInfo.InvariantCulture);
        var table = new Table().Title("Named-entity recognition").AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        table.AddRow("Entity F1", F(report.F1));
        table.AddRow("Precision", F(report.Precision));
        table.AddRow("Recall", F(report.Recall));
        foreach (var (type, m) in report.PerType) table.AddRow(Markup.Escape($"F1 {type} ({m.Support} entities)"), F(m.F1));
        table.AddRow("Token accuracy", F(report.TokenAccuracy));
        table.AddRow("Training time (s)", report.TrainSeconds.ToString("F1", CultureInfo.InvariantCulture));
        table.AddRow("Trainable parameters", Markup.Escape(
            $"{report.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture)} of {report.TotalParameters.ToString("N0", CultureInfo.InvariantCulture)} " +
            $"({(100.0 * report.TrainableParameters / Math.Max(1, report.TotalParameters)).ToString("F2", CultureInfo.InvariantCulture)}%)"));
        table.AddRow("Method", Markup.Escape(report.Method));
        table.AddRow("Base model", Markup.Escape(baseModel));
        table.AddRow("Case features", report.CaseFeatures ? "on" : "off");
        table.AddRow("Model file (bytes)", report.ModelBytes.ToString("N0", CultureInfo.InvariantCulture));
        return table;
    }

    /// <summary>The metrics JSON of <c>ner</c>; the keys are a contract for scripts.</summary>
    internal sealed class NerReport
    {
        [JsonPropertyName("f1")] public double F1 { get; init; }
        [JsonPropertyName("precision")] public double Precision { get; init; }
        [JsonPropertyName("recall")] public double Recall { get; init; }
        [JsonPropertyName("perType")] public Dictionary<string, NerTypeReport> PerType { get; init; } = new();
        [JsonPropertyName("trainSeconds")] public double TrainSeconds { get; init; }
        [JsonPropertyName("trainableParameters")] public long TrainableParameters { get; init; }
        [JsonPropertyName("modelBytes")] public long ModelBytes { get; init; }
        [JsonPropertyName("totalParameters")] public long TotalParameters { get; init; }
        [JsonPropertyName("method")] public string Method { get; init; } = "";
        [JsonPropertyName("tokenAccuracy")] public double TokenAccuracy { get; init; }
        [JsonPropertyName("trainSentences")] public int TrainSentences { get; init; }
        [JsonPropertyName("testSentences")] public int TestSentences { get; init; }
        [JsonPropertyName("caseFeatures")] public bool CaseFeatures { get; init; }
        [JsonPropertyName("epochs")] public int Epochs { get; init; }
    }

    /// <summary>Per-type entity metrics in the metrics JSON.</summary>
    internal sealed class NerTypeReport
    {
        [JsonPropertyName("f1")] public double F1 { get; init; }
        [JsonPropertyName("precision")] public double Precision { get; init; }
        [JsonPropertyName("recall")] public double Recall { get; init; }
        [JsonPropertyName("support")] public int Support { get; init; }
    }
}

/// <summary><c>predict</c> with a named-entity recognizer: tags every word of a CoNLL file or of plain text (one sentence a line).</summary>
internal static class NerPredictions
{
    public static int Run(string modelPath, string dataset, string output, string? baseModelPath)
    {
        var console = Terminal.Out;
        if (!File.Exists(dataset)) throw new FileNotFoundException($"The file '{dataset}' (--dataset) does not exist.", dataset);
        var outputPath = OutputFiles.Check(output, "--output");
        // A file that parses as CoNLL (a token column and a column of BIO tags) keeps its gold tags in the output, as conlleval
        // reads it (word, gold tag, predicted tag); anything else is plain text, one sentence a line, split on white space.
        ConllData? conll = null;
        try
        {
            conll = ConllFile.Read(dataset);
        }
        catch (InvalidDataException)
        {
        }
        IReadOnlyList<string[]> sentences = conll is not null && conll.Sentences.Count > 0
            ? conll.Sentences.Select(x => x.Words).ToList()
            : ConllFile.ReadPlainText(dataset);
        var mlContext = new MLContext(1);
        using var cancellation = Cancellation.Attach(mlContext);
        var model = PredictCommand.LoadModel(mlContext, modelPath, baseModelPath, out _);
        var transformers = PredictCommand.Flatten(model).ToList();
        try
        {
            var tagger = transformers.OfType<PeftNamedEntityRecognitionTransformer>().SingleOrDefault()
                ?? throw new InvalidDataException($"The model file '{modelPath}' (--model) holds no named-entity recognizer.");
            console.MarkupLine($"Tagging {sentences.Count:N0} sentences of [green]{Markup.Escape(dataset)}[/] ({(conll is null ? "plain text" : "CoNLL")})");
            var predicted = TrainingProgress.Run(mlContext, console, "Tagging", () => tagger.Predict(sentences));
            OutputFiles.WriteAtomically(outputPath, temporary =>
            {
                using var writer = new StreamWriter(temporary);
                for (int s = 0; s < sentences.Count; s++)
                {
                    for (int w = 0; w < sentences[s].Length; w++)
                        writer.WriteLine(conll is null ? $"{sentences[s][w]} {predicted[s][w]}" : $"{sentences[s][w]} {conll.Sentences[s].Tags[w]} {predicted[s][w]}");
                    writer.WriteLine();
                }
            });
            console.MarkupLine($"Wrote the tags of {predicted.Sum(p => p.Length):N0} words to [green]{Markup.Escape(outputPath)}[/]" +
                (conll is null ? " (word, predicted tag)." : " (word, gold tag, predicted tag)."));
            return 0;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }
}
