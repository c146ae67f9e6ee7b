using System.CommandLine;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary><c>text-classification</c>: fine-tunes a text classifier with a PEFT method (LoRA by default), evaluates it and saves it as an ML.NET model.</summary>
internal static class TextClassificationCommand
{
    /// <summary>Column names inside the model. Fixed, so a saved model does not depend on the training file's header.</summary>
    public const string LabelColumn = "Label";
    public const string Sentence1Column = "Sentence1";
    public const string Sentence2Column = "Sentence2";
    public const string ScoreColumn = "Score";
    public const string PredictedLabelColumn = "PredictedLabel";
    /// <summary>The teacher's scores of --teacher-scores-col, during training only (not in the saved model's input).</summary>
    public const string TeacherScoreColumn = "TeacherScore";

    public static Command Create()
    {
        var defaults = new PeftTextClassificationTrainer.Options();

        var dataset = CommandOptions.Dataset("The training data: a delimited text file.");
        var labelCol = new Option<string>("--label-col") { Description = "The label column: a header name (with --has-header) or a 0-based index.", Required = true };
        var textCol = CommandOptions.TextColumn();
        var text2Col = CommandOptions.Text2Column();
        var hasHeader = CommandOptions.HasHeader();
        var separator = CommandOptions.Separator();
        var validation = new Option<string>("--validation-dataset") { Description = "Validation data (same layout): accuracy is reported after each epoch." };
        var test = new Option<string>("--test-dataset") { Description = "Test data (same layout) for the final metrics. Default: 20% of the training data is held out." };
        var model = CommandOptions.TextBaseModel();
        var vocab = CommandOptions.Vocab();
        var modelLayers = new Option<int?>("--model-layers")
        {
            Description = "Use only the first N encoder layers of the base model: a smaller, faster model (for example a student distilled " +
                "from a --teacher-model trained on the whole one). Default: all layers.",
        };
        modelLayers.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is <= 0 and var value) result.AddError($"--model-layers must be positive; got {value}.");
        });
        var method = CommandOptions.TextMethod();
        var methodOptions = MethodChoices.CreateOptions();
        var epochs = CommandOptions.Epochs(defaults.MaxEpoch);
        var batchSize = CommandOptions.BatchSize(defaults.BatchSize, "Rows");
        var learningRate = CommandOptions.LearningRate(defaults.LearningRate);
        var maxLength = new Option<int>("--max-length") { Description = "Longest token sequence; longer texts are truncated.", DefaultValueFactory = _ => defaults.MaxSequenceLength }.AtLeast(3);
        var maxRows = new Option<long?>("--max-rows") { Description = "Read at most this many rows of each file." };
        maxRows.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is <= 0 and var value) result.AddError($"--max-rows must be positive; got {value}.");
        });
        var seed = CommandOptions.Seed(defaults.Seed);
        var embed = new Option<bool>("--embed-base-model") { Description = "Store the base model inside the saved model (self-contained, larger file)." };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Also write the metrics to this JSON file." };
        var distill = new DistillationChoices(scoreColumns: true, perturbedCopies: true);
        var initAdapter = new Option<string>("--init-adapter") { Description = "Start from a Hugging Face PEFT adapter directory (export-adapter or Python PEFT): the adapter decides the method and its options (--method and method options may not be given with it); its head must have as many classes as the label." };

        var command = new Command("text-classification", "Fine-tune a text classifier with a PEFT method (LoRA by default), evaluate it and save it as an ML.NET model.")
        {
            dataset, labelCol, textCol, text2Col, hasHeader, separator, validation, test, model, vocab, modelLayers,
            method, epochs, batchSize, learningRate, maxLength, maxRows, seed, embed, output, metricsJson,
            initAdapter,
        };
        foreach (var option in methodOptions) command.Options.Add(option.Option);
        foreach (var option in distill.Options) command.Options.Add(option);
        var compute = new ComputeChoices();
        compute.AddTo(command);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse => Run(new Settings(
            Dataset: parse.GetValue(dataset)!,
            LabelColumn: parse.GetValue(labelCol)!,
            TextColumn: parse.GetValue(textCol)!,
            Text2Column: parse.GetValue(text2Col),
            Format: new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(separator)), parse.GetValue(hasHeader)),
            ValidationDataset: parse.GetValue(validation),
            TestDataset: parse.GetValue(test),
            Model: parse.GetValue(model),
            Vocab: parse.GetValue(vocab),
            ModelLayers: parse.GetValue(modelLayers),
            Method: CreateMethod(parse, method, methodOptions, initAdapter),
            Epochs: parse.GetValue(epochs),
            BatchSize: parse.GetValue(batchSize),
            LearningRate: parse.GetValue(learningRate),
            MaxLength: parse.GetValue(maxLength),
            MaxRows: parse.GetValue(maxRows),
            Seed: parse.GetValue(seed),
            EmbedBaseModel: parse.GetValue(embed),
            Output: parse.GetValue(output)!,
            MetricsJson: parse.GetValue(metricsJson),
            InitAdapter: parse.GetValue(initAdapter),
            Distillation: distill.Parse(parse),
            Code: code.Check(parse, "text-classification"),
            Compute: compute.Parse(parse))));
        return command;
    }

    private sealed record Settings(
        string Dataset, string LabelColumn, string TextColumn, string? Text2Column, TextFileFormat Format,
        string? ValidationDataset, string? TestDataset, string? Model, string? Vocab,
        PeftMethodOptions Method, int Epochs, int BatchSize, float LearningRate, int MaxLength, long? MaxRows, int Seed,
        bool EmbedBaseModel, string Output, string? MetricsJson,
        string? InitAdapter = null, DistillationSettings? Distillation = null, CodeRequest? Code = null, ComputeSettings? Compute = null,
        int? ModelLayers = null);

    /// <summary>The method from --method and its options; with --init-adapter the adapter decides, so giving them too is a usage error.</summary>
    private static PeftMethodOptions CreateMethod(ParseResult parse, Option<string> method, IReadOnlyList<MethodChoices.MethodOption> methodOptions, Option<string> initAdapter)
    {
        if (parse.GetValue(initAdapter) is not null)
        {
            var given = methodOptions.Where(o => o.Value(parse) is not null).Select(o => o.Option.Name).ToList();
            if (parse.GetResult(method) is { Implicit: false }) given.Insert(0, method.Name);
            if (given.Count > 0)
                throw new UsageException($"--init-adapter takes the method and its options from the adapter; drop {string.Join(", ", given)}.");
        }
        return MethodChoices.Create(parse.GetValue(method)!, parse, methodOptions);
    }

    private static int Run(Settings s)
    {
        var console = Terminal.Out;
        // Check every input before the (slow) training starts.
        var trainFile = DelimitedFile.Open(s.Dataset, "--dataset", s.Format);
        var validationFile = s.ValidationDataset is null ? null : DelimitedFile.Open(s.ValidationDataset, "--validation-dataset", s.Format);
        var testFile = s.TestDataset is null ? null : DelimitedFile.Open(s.TestDataset, "--test-dataset", s.Format);
        var baseModel = ResolveBaseModel(s.Model, s.Vocab);
        if (s.ModelLayers is int layers) baseModel = (baseModel ?? BaseModelSource.MiniLM()).WithLayers(layers);
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");

        var scoreColumns = s.Distillation?.TeacherScoreColumns is { } spec
            ? DistillationChoices.ResolveScoreColumns(trainFile, spec, DataColumns(trainFile, s).Select(c => c.Index))
            : null;

        var mlContext = new MLContext(s.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        IDataView train = Load(mlContext, trainFile, s);
        IDataView? validation = validationFile is null ? null : Load(mlContext, validationFile, s);
        IDataView testData;
        (train, testData) = HoldOut(mlContext, console, train, testFile is null ? null : Load(mlContext, testFile, s), s.Seed);
        // The teacher's scores are read with the training rows (the same split: it depends on the seed and the row count
        // only), but the saved model's input schema is the data's without them.
        IDataView? trainWithScores = null;
        if (scoreColumns is not null)
        {
            trainWithScores = Load(mlContext, trainFile, s, scoreColumns);
            if (testFile is null) trainWithScores = mlContext.Data.TrainTestSplit(trainWithScores, testFraction: 0.2, seed: s.Seed).TrainSet;
        }
        var teacher = s.Distillation?.TeacherModel is { } teacherPath
            ? DistillationChoices.LoadTeacher(mlContext, teacherPath, train.Schema, "the training data")
            : null;

        // The pipeline is MapValueToKey(Label) -> PeftTextClassification -> MapKeyToValue(PredictedLabel). Its first step is
        // fitted here, on the training data, so that the validation set gets the very same label mapping as the model; the
        // fitted chain is then assembled from that mapper and the rest of the pipeline fitted on the mapped training data.
        // With teacher score columns the classes are keyed in sorted order, the order the columns are given in.
        var labelToKey = mlContext.Transforms.Conversion.MapValueToKey(LabelColumn, LabelColumn,
            keyOrdinality: scoreColumns is null ? Microsoft.ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByOccurrence : Microsoft.ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(train);
        // Score columns named after the classes are matched by name (the loader gives them the header's names as slot
        // names); otherwise they are read in their order, the keys' sorted order.
        string? scoreColumn = null;
        if (trainWithScores is not null)
        {
            scoreColumn = TeacherScoreColumn;
            if (!DistillationChoices.MatchedByName(trainFile, scoreColumns!, labelToKey, train.Schema, LabelColumn))
            {
                scoreColumn = TeacherScoreColumn + "InOrder";
                trainWithScores = DistillationChoices.WithoutSlotNames(mlContext, trainWithScores, TeacherScoreColumn, scoreColumn);
            }
        }
        var trainerOptions = new PeftTextClassificationTrainer.Options
        {
            LabelColumnName = LabelColumn,
            Sentence1ColumnName = Sentence1Column,
            Sentence2ColumnName = s.Text2Column is null ? null : Sentence2Column,
            ScoreColumnName = ScoreColumn,
            PredictedLabelColumnName = PredictedLabelColumn,
            ValidationSet = validation is null ? null : labelToKey.Transform(validation),
            BaseModel = baseModel,
            Method = s.Method,
            MaxEpoch = s.Epochs,
            BatchSize = s.BatchSize,
            LearningRate = s.LearningRate,
            MaxSequenceLength = s.MaxLength,
            Seed = s.Seed,
            EmbedBaseModel = s.EmbedBaseModel,
            InitialAdapterPath = s.InitAdapter,
            Distillation = s.Distillation?.ToOptions(teacher, scoreColumn),
        };
        s.Compute?.ApplyTo(trainerOptions);
        var estimator = mlContext.MulticlassClassification.Trainers.PeftTextClassification(trainerOptions)
            .Append(mlContext.Transforms.Conversion.MapKeyToValue(PredictedLabelColumn));
        IEnumerable<ITransformer> Fit(IDataView keyed)
        {
            try
            {
                return estimator.Fit(trainWithScores is null ? keyed : labelToKey.Transform(trainWithScores));
            }
            finally
            {
                DistillationChoices.Dispose(teacher);
            }
        }
        int exitCode = ClassifierRun.FitEvaluateSave(mlContext, console, "Text classification", labelToKey, Fit, train, testData, LabelColumn,
            outputPath, metricsPath, trained =>
            {
                var peft = trained.OfType<PeftTextClassificationTransformer>().Single();
                return new ClassifierSummary(peft.TrainableParameterCount, peft.TotalParameterCount, peft.Method, peft.TrainingHistory,
                    (baseModel ?? BaseModelSource.MiniLM()).ToString(),
                    s.Distillation is null ? Array.Empty<(string, string)>() : new[] { ("Distillation", s.Distillation.Describe()) });
            });
        s.Code?.Write(outputPath, console);
        return exitCode;
    }

    private static IDataView Load(MLContext mlContext, DelimitedFile file, Settings s, int[]? teacherScoreColumns = null)
    {
        var columns = DataColumns(file, s);
        var clash = columns.GroupBy(c => c.Index).FirstOrDefault(g => g.Count() > 1);
        if (clash is not null)
            throw new ArgumentException($"Column {clash.Key} of {file.Description} is given twice (--label-col, --text-col, --text2-col must differ).");
        var loaderColumns = columns.Select(c => new Microsoft.ML.Data.TextLoader.Column(c.Name, Microsoft.ML.Data.DataKind.String, c.Index)).ToList();
        if (teacherScoreColumns is not null)
            loaderColumns.Add(new Microsoft.ML.Data.TextLoader.Column(TeacherScoreColumn, Microsoft.ML.Data.DataKind.Single,
                teacherScoreColumns.Select(i => new Microsoft.ML.Data.TextLoader.Range(i)).ToArray()));
        return file.Load(mlContext, loaderColumns, s.MaxRows);
    }

    /// <summary>The label and text columns of a file: their names in the model and their 0-based indices.</summary>
    private static List<(string Name, int Index)> DataColumns(DelimitedFile file, Settings s)
    {
        var columns = new List<(string Name, int Index)>
        {
            (LabelColumn, file.ResolveColumn(s.LabelColumn, "--label-col")),
            (Sentence1Column, file.ResolveColumn(s.TextColumn, "--text-col")),
        };
        if (s.Text2Column is not null) columns.Add((Sentence2Column, file.ResolveColumn(s.Text2Column, "--text2-col")));
        return columns;
    }

    /// <summary>The test data: --test-dataset, or without it 20% of the training data, held out (the training data is the rest).</summary>
    internal static (IDataView Train, IDataView Test) HoldOut(MLContext mlContext, IAnsiConsole console, IDataView train, IDataView? test, int seed)
    {
        if (test is not null) return (train, test);
        var split = mlContext.Data.TrainTestSplit(train, testFraction: 0.2, seed: seed);
        console.MarkupLine("No --test-dataset: 20% of the training data is held out for testing.");
        return (split.TrainSet, split.TestSet);
    }

    /// <summary>The text base model of --model (an ONNX file or a Hugging Face directory) and --vocab; null for the default MiniLM.</summary>
    internal static BaseModelSource? ResolveBaseModel(string? model, string? vocab)
    {
        if (model is null)
        {
            if (vocab is not null) throw new UsageException("--vocab applies to an ONNX --model only.");
            return null;
        }
        if (!File.Exists(model) && !Directory.Exists(model))
            throw new FileNotFoundException($"The base model '{model}' (--model) does not exist: give an ONNX file or a Hugging Face directory.", model);
        if (vocab is not null && !File.Exists(vocab))
            throw new FileNotFoundException($"The vocabulary '{vocab}' (--vocab) does not exist.", vocab);
        var source = BaseModelSource.FromPath(model, vocab);
        if (vocab is not null && source.Kind != BaseModelKind.Onnx) throw new UsageException("--vocab applies to an ONNX --model only.");
        return source;
    }

}
