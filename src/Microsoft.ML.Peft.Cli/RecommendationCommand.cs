using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>recommendation</c>: trains a matrix-factorisation recommender on explicit ratings, reports RMSE and MAE on test
/// ratings and saves it; <c>recommendation-adapt</c>: adapts a saved one to new ratings with its tables frozen, saving
/// only the adapter (beside the base file).
/// </summary>
internal static class RecommendationCommand
{
    /// <summary>Column names inside a model trained here, fixed so a saved model does not depend on the file's header.</summary>
    public const string UserColumn = "User";
    public const string ItemColumn = "Item";
    public const string LabelColumn = "Label";

    private sealed record Columns(Option<string> User, Option<string> Item, Option<string> Label, Option<bool> HasHeader, Option<string> Separator,
        Option<string> Test, Option<int> Seed, Option<string> Output, Option<string> MetricsJson, Option<int> Iterations, Option<double> Lambda, Option<double> LearningRate)
    {
        public IEnumerable<Option> All => new Option[] { User, Item, Label, HasHeader, Separator, Test, Seed, Iterations, Lambda, LearningRate, Output, MetricsJson };

        /// <summary>
        /// One libtorch thread unless --threads says otherwise (the command line is the application, so it may): a
        /// recommender's operations are too small to gain from more; on two cores, two threads made training several times slower.
        /// </summary>
        public void ApplyThreads(ParseResult parse)
        {
            if (parse.GetValue(CommandOptions.Threads) is null) PeftRuntime.SetThreads(1);
        }
    }

    private static Columns CommonOptions(int seed, int iterations, double lambda, double learningRate) => new(
        new Option<string>("--user-col") { Description = "The user id column: a header name (with --has-header) or a 0-based index. Ids are read as text and matched by value.", Required = true },
        new Option<string>("--item-col") { Description = "The item id column: a header name (with --has-header) or a 0-based index.", Required = true },
        new Option<string>("--label-col") { Description = "The rating column (a number; an empty or non-numeric rating is an error naming its row).", Required = true },
        CommandOptions.HasHeader(),
        CommandOptions.Separator(),
        new Option<string>("--test-dataset") { Description = "Test ratings (same layout) for the final metrics. Default: 20% of the ratings are held out." },
        CommandOptions.Seed(seed, "the split, the initial values and the order of the ratings"),
        new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true },
        new Option<string>("--metrics-json") { Description = "Also write the metrics to this JSON file." },
        new Option<int>("--iterations") { Description = $"Passes over the ratings (default {iterations}).", DefaultValueFactory = _ => iterations }.AtLeast(1),
        new Option<double>("--lambda") { Description = $"L2 regularisation (default {lambda.ToString(CultureInfo.InvariantCulture)}).", DefaultValueFactory = _ => lambda }.AtLeast(0),
        new Option<double>("--learning-rate") { Description = $"Adam's learning rate (default {learningRate.ToString(CultureInfo.InvariantCulture)}).", DefaultValueFactory = _ => learningRate }.AtLeast(1e-12));

    public static Command Create()
    {
        var defaults = new PeftMatrixFactorizationTrainer.Options();
        var dataset = CommandOptions.Dataset("The ratings: a delimited text file with user, item and rating columns.");
        var c = CommonOptions(defaults.Seed, defaults.NumberOfIterations, defaults.Lambda, defaults.LearningRate);
        var neural = new PeftNeuralCollaborativeFilteringTrainer.Options();
        var kind = new Option<string>("--model-kind")
        {
            Description = "mf: biased matrix factorisation (the default; recommendation-adapt adapts it); ncf: neural collaborative filtering (NeuMF with biases). " +
                "Options not given take the chosen kind's defaults.",
            DefaultValueFactory = _ => "mf",
        };
        kind.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string>() is not ("mf" or "ncf") and var value) result.AddError($"--model-kind must be mf or ncf; got '{value}'.");
        });
        var rank = new Option<int>("--rank") { Description = $"Rank of the user and item factors (embeddings for ncf; default {defaults.ApproximationRank} for mf, {neural.ApproximationRank} for ncf)." }.AtLeast(1);
        var hidden = new Option<string>("--hidden-layers") { Description = $"ncf: sizes of the MLP's layers, comma-separated (default {string.Join(',', neural.HiddenLayerSizes)})." };
        var events = new Option<string>("--events")
        {
            Description = "Also write the training's progress to this file as JSON lines, as auto --events does (one trial; an epoch event after each pass with its training loss; done with the test metrics).",
        };
        var command = new Command("recommendation", "Train a recommender on explicit ratings (matrix factorisation, or neural collaborative filtering), report RMSE and MAE and save it as an ML.NET model.")
        {
            dataset, kind, rank, hidden, events,
        };
        foreach (var option in c.All) command.Options.Add(option);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse =>
        {
            var format = new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(c.Separator)), parse.GetValue(c.HasHeader));
            var trainFile = DelimitedFile.Open(parse.GetValue(dataset)!, "--dataset", format);
            var testPath = parse.GetValue(c.Test);
            var testFile = testPath is null ? null : DelimitedFile.Open(testPath, "--test-dataset", format);
            var ids = (parse.GetValue(c.User)!, parse.GetValue(c.Item)!, parse.GetValue(c.Label)!);
            var outputPath = OutputFiles.Check(parse.GetValue(c.Output)!, "--output");
            var metricsPath = parse.GetValue(c.MetricsJson) is { } m ? OutputFiles.Check(m, "--metrics-json") : null;
            var codeRequest = code.Check(parse, "recommendation");
            var eventsPath = parse.GetValue(events) is { } ev ? OutputFiles.Check(ev, "--events") : null;
            int seed = parse.GetValue(c.Seed);

            var console = Terminal.Out;
            c.ApplyThreads(parse);
            var mlContext = new MLContext(seed);
            using var cancellation = Cancellation.Attach(mlContext);
            using var progress = Auto.AutoEvents.Open(eventsPath);
            var train = Load(mlContext, trainFile, ids, (UserColumn, ItemColumn, LabelColumn));
            var (trainSet, testSet) = TextClassificationCommand.HoldOut(mlContext, console, train, testFile is null ? null : Load(mlContext, testFile, ids, (UserColumn, ItemColumn, LabelColumn)), seed);
            bool isNeural = parse.GetValue(kind) == "ncf";
            var layers = ParseLayers(parse.GetValue(hidden), isNeural) ?? neural.HiddenLayerSizes;
            int? rankValue = parse.GetResult(rank) is not { Implicit: false } ? null : parse.GetValue(rank);
            // The defaults of the options that are not given are each trainer's own.
            int iterations = parse.GetResult(c.Iterations) is not { Implicit: false } ? (isNeural ? neural.NumberOfIterations : defaults.NumberOfIterations) : parse.GetValue(c.Iterations);
            double lambda = parse.GetResult(c.Lambda) is not { Implicit: false } ? (isNeural ? neural.Lambda : defaults.Lambda) : parse.GetValue(c.Lambda);
            double learningRate = parse.GetResult(c.LearningRate) is not { Implicit: false } ? (isNeural ? neural.LearningRate : defaults.LearningRate) : parse.GetValue(c.LearningRate);
            int rankUsed = rankValue ?? (isNeural ? neural.ApproximationRank : defaults.ApproximationRank);
            IEstimator<ITransformer> trainer;
            if (isNeural)
            {
                var ncf = mlContext.Regression.Trainers.PeftNeuralCollaborativeFiltering(new PeftNeuralCollaborativeFilteringTrainer.Options
                {
                    MatrixColumnIndexColumnName = UserColumn,
                    MatrixRowIndexColumnName = ItemColumn,
                    LabelColumnName = LabelColumn,
                    ApproximationRank = rankUsed,
                    HiddenLayerSizes = layers,
                    NumberOfIterations = iterations,
                    Lambda = lambda,
                    LearningRate = learningRate,
                    Seed = seed,
                });
                if (progress is not null) ncf.IterationCompleted += (_, e) => progress.Epoch(1, e.Iteration, iterations, e.TrainingLoss, null, "rmse");
                trainer = ncf;
            }
            else
            {
                var mf = mlContext.Regression.Trainers.PeftMatrixFactorization(new PeftMatrixFactorizationTrainer.Options
                {
                    MatrixColumnIndexColumnName = UserColumn,
                    MatrixRowIndexColumnName = ItemColumn,
                    LabelColumnName = LabelColumn,
                    ApproximationRank = rankUsed,
                    NumberOfIterations = iterations,
                    Lambda = lambda,
                    LearningRate = learningRate,
                    Seed = seed,
                });
                if (progress is not null) mf.IterationCompleted += (_, e) => progress.Epoch(1, e.Iteration, iterations, e.TrainingMse, null, "rmse");
                trainer = mf;
            }
            if (progress is not null)
            {
                // One trial, the chosen settings: the same events as auto's, so that a follower draws the loss per pass.
                progress.Search("recommendation", "rmse", higherIsBetter: false, budgetSeconds: null);
                var settings = new List<(string, string)>
                {
                    ("modelKind", isNeural ? "ncf" : "mf"), ("rank", rankUsed.ToString(CultureInfo.InvariantCulture)),
                    ("iterations", iterations.ToString(CultureInfo.InvariantCulture)), ("lambda", lambda.ToString("R", CultureInfo.InvariantCulture)),
                    ("learningRate", learningRate.ToString("R", CultureInfo.InvariantCulture)),
                };
                if (isNeural) settings.Add(("hiddenLayers", string.Join(',', layers)));
                progress.Trial(1, settings, null);
            }
            var watch = Stopwatch.StartNew();
            using var model = (PeftRecommenderTransformer)TrainingProgress.Run(mlContext, console, "Training", () => trainer.Fit(trainSet));
            watch.Stop();
            var metrics = TrainingProgress.Run(mlContext, console, "Evaluating", () => mlContext.Regression.Evaluate(model.Transform(testSet), LabelColumn));
            // The trial's metric is the test RMSE: there is no validation set.
            progress?.TrialEnd(1, "completed", metrics.RootMeanSquaredError, watch.Elapsed.TotalSeconds, null);
            OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(model, trainSet.Schema, temporary));
            var report = RecommendationReport.Of(model, isNeural, metrics, null, watch.Elapsed, outputPath, Count(testSet));
            Finish(console, report, isNeural ? "Neural collaborative filtering" : "Matrix factorization", outputPath, metricsPath);
            codeRequest?.Write(outputPath, console);
            progress?.Done(1, null, new[] { ("rmse", report.Rmse), ("mae", report.Mae) });
            return 0;
        });
        return command;
    }

    public static Command CreateAdapt()
    {
        var defaults = new PeftMatrixFactorizationAdaptationTrainer.Options();
        var model = new Option<string>("--model") { Description = "The base model file written by `recommendation` (.zip; matrix factorisation or ncf).", Required = true };
        var dataset = CommandOptions.Dataset("The new ratings to adapt on: a delimited text file with user, item and rating columns.");
        var c = CommonOptions(defaults.Seed, defaults.NumberOfIterations, defaults.Lambda, defaults.LearningRate);
        var method = new Option<string>("--method")
        {
            Description = "What the adaptation trains: lora (low-rank factor offsets and re-fitted biases, the default), bias (biases only) or full (dense factor offsets).",
            DefaultValueFactory = _ => defaults.Method.ToString().ToLowerInvariant(),
        };
        method.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string>() is not ("lora" or "bias" or "full") and var value) result.AddError($"--method must be lora, bias or full; got '{value}'.");
        });
        var rank = new Option<int>("--rank") { Description = $"Rank of LoRA's factor offsets (default {defaults.AdaptationRank}).", DefaultValueFactory = _ => defaults.AdaptationRank }.AtLeast(1);
        var embed = new Option<bool>("--embed-base-model") { Description = "Store the base's tables in the adapted file (self-contained, larger) instead of referring to --model." };
        var command = new Command("recommendation-adapt", "Adapt a saved matrix-factorisation recommender to new ratings with its tables frozen; saves the adapter beside the base file.")
        {
            model, dataset, method, rank, embed,
        };
        foreach (var option in c.All) command.Options.Add(option);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse =>
        {
            var modelPath = parse.GetValue(model)!;
            if (!File.Exists(modelPath)) throw new FileNotFoundException($"The base model file '{modelPath}' (--model) does not exist.", modelPath);
            var format = new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(c.Separator)), parse.GetValue(c.HasHeader));
            var newFile = DelimitedFile.Open(parse.GetValue(dataset)!, "--dataset", format);
            var testPath = parse.GetValue(c.Test);
            var testFile = testPath is null ? null : DelimitedFile.Open(testPath, "--test-dataset", format);
            var ids = (parse.GetValue(c.User)!, parse.GetValue(c.Item)!, parse.GetValue(c.Label)!);
            var outputPath = OutputFiles.Check(parse.GetValue(c.Output)!, "--output");
            if (string.Equals(outputPath, Path.GetFullPath(modelPath), StringComparison.Ordinal))
                throw new UsageException("--output is the base model file (--model); the adapted model refers to its base, so write it elsewhere.");
            var metricsPath = parse.GetValue(c.MetricsJson) is { } m ? OutputFiles.Check(m, "--metrics-json") : null;
            var codeRequest = code.Check(parse, "recommendation-adapt");
            int seed = parse.GetValue(c.Seed);

            var console = Terminal.Out;
            c.ApplyThreads(parse);
            var mlContext = new MLContext(seed);
            using var cancellation = Cancellation.Attach(mlContext);
            // The kind of recommender is read from the file's version stamps; anything else fails in the matrix-factorisation loader, which names what the file holds.
            bool isNeural = PredictCommand.SavedSignatures(modelPath).Contains("PEFTNCFM");
            PeftRecommenderTransformer baseModel;
            try
            {
                baseModel = isNeural ? mlContext.Model.LoadNeuralCollaborativeFiltering(modelPath) : mlContext.Model.LoadMatrixFactorization(modelPath);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"--model: {e.Message}", e);
            }
            using var baseOwner = baseModel;
            if (baseModel.AdaptationMethod is not null)
                throw new InvalidDataException($"--model: '{modelPath}' is an adaptation ({baseModel.AdaptationMethod}); give the base model it was adapted from.");
            var names = (baseModel.MatrixColumnIndexColumnName, baseModel.MatrixRowIndexColumnName, baseModel.LabelColumnName);
            var data = Load(mlContext, newFile, ids, names);
            var (adaptSet, testSet) = TextClassificationCommand.HoldOut(mlContext, console, data, testFile is null ? null : Load(mlContext, testFile, ids, names), seed);
            void Configure(RecommendationAdaptationOptions options)
            {
                options.Method = Enum.Parse<MatrixFactorizationAdaptation>(parse.GetValue(method)!, ignoreCase: true);
                options.AdaptationRank = parse.GetValue(rank);
                options.NumberOfIterations = parse.GetValue(c.Iterations);
                options.Lambda = parse.GetValue(c.Lambda);
                options.LearningRate = parse.GetValue(c.LearningRate);
                options.Seed = seed;
                options.BaseModelPath = parse.GetValue(embed) ? null : Path.GetFullPath(modelPath);
            }
            Func<IDataView, PeftRecommenderTransformer> fit;
            if (baseModel is PeftNeuralCollaborativeFilteringTransformer neuralBase)
            {
                var options = new PeftNeuralCollaborativeFilteringAdaptationTrainer.Options();
                Configure(options);
                var neuralTrainer = mlContext.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(neuralBase, options);
                fit = neuralTrainer.Fit;
            }
            else
            {
                var options = new PeftMatrixFactorizationAdaptationTrainer.Options();
                Configure(options);
                var mfTrainer = mlContext.Regression.Trainers.PeftMatrixFactorizationAdaptation((PeftMatrixFactorizationTransformer)baseModel, options);
                fit = mfTrainer.Fit;
            }
            var watch = Stopwatch.StartNew();
            using var adapted = TrainingProgress.Run(mlContext, console, "Adapting", () => fit(adaptSet));
            watch.Stop();
            var (metrics, baseMetrics) = TrainingProgress.Run(mlContext, console, "Evaluating", () =>
                (mlContext.Regression.Evaluate(adapted.Transform(testSet), names.LabelColumnName), mlContext.Regression.Evaluate(baseModel.Transform(testSet), names.LabelColumnName)));
            OutputFiles.WriteAtomically(outputPath, temporary => mlContext.Model.Save(adapted, adaptSet.Schema, temporary));
            var report = RecommendationReport.Of(adapted, isNeural, metrics, baseMetrics, watch.Elapsed, outputPath, Count(testSet));
            Finish(console, report, isNeural ? "Adapted neural collaborative filtering" : "Adapted matrix factorization", outputPath, metricsPath);
            codeRequest?.Write(outputPath, console);
            return 0;
        });
        return command;
    }

    /// <summary>
    /// The file's user and item columns as text and its rating as Single, named <paramref name="names"/>. Every rating must
    /// be a number: an empty or non-numeric one is an error naming the file, the row and the column.
    /// </summary>
    internal static IDataView Load(MLContext mlContext, DelimitedFile file, (string User, string Item, string Label) columns, (string User, string Item, string Label) names)
    {
        var indices = new[]
        {
            (names.User, file.ResolveColumn(columns.User, "--user-col"), DataKind.String),
            (names.Item, file.ResolveColumn(columns.Item, "--item-col"), DataKind.String),
            (names.Label, file.ResolveColumn(columns.Label, "--label-col"), DataKind.Single),
        };
        if (indices.Select(c => c.Item2).Distinct().Count() != 3)
            throw new ArgumentException($"--user-col, --item-col and --label-col must name three different columns of {file.Description}.");
        var data = file.Load(mlContext, indices, maxRows: null);
        using var cursor = data.GetRowCursor(new[] { data.Schema[names.Label] });
        var getter = cursor.GetGetter<float>(data.Schema[names.Label]);
        float rating = 0;
        long row = 0;
        while (cursor.MoveNext())
        {
            row++;
            getter(ref rating);
            if (!float.IsFinite(rating))
                throw new InvalidDataException($"{file.Description}, data row {row:N0}: the rating (--label-col {columns.Label}) is empty, not a number or infinite.");
        }
        if (row == 0) throw new InvalidDataException($"{file.Description} has no ratings.");
        return data;
    }

    /// <summary>The MLP sizes of --hidden-layers (ncf only), or null when not given.</summary>
    private static int[]? ParseLayers(string? text, bool isNeural)
    {
        if (text is null) return null;
        if (!isNeural) throw new UsageException("--hidden-layers applies to --model-kind ncf only.");
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var sizes = new int[parts.Length];
        for (int k = 0; k < parts.Length; k++)
            if (!int.TryParse(parts[k], NumberStyles.Integer, CultureInfo.InvariantCulture, out sizes[k]) || sizes[k] <= 0 || sizes[k] > 65536)
                throw new UsageException($"--hidden-layers must be positive layer sizes separated by commas, like 64,32,16; got '{text}'.");
        return sizes;
    }

    private static long Count(IDataView data)
    {
        long n = 0;
        using var cursor = data.GetRowCursor(Array.Empty<DataViewSchema.Column>());
        while (cursor.MoveNext()) n++;
        return n;
    }

    private static void Finish(IAnsiConsole console, RecommendationReport report, string title, string outputPath, string? metricsPath)
    {
        static string F(double value) => value.ToString("F4", CultureInfo.InvariantCulture);
        static string N(long value) => value.ToString("N0", CultureInfo.InvariantCulture);
        var table = new Table().Title(title).AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        table.AddRow("RMSE", F(report.Rmse));
        table.AddRow("MAE", F(report.Mae));
        if (report.BaseRmse is double baseRmse) table.AddRow("Base RMSE (same test)", F(baseRmse));
        if (report.BaseMae is double baseMae) table.AddRow("Base MAE (same test)", F(baseMae));
        table.AddRow("Test ratings", N(report.TestRows));
        table.AddRow("Users, items", $"{N(report.Users)}, {N(report.Items)}");
        if (report.Method is not null) table.AddRow("Adaptation", $"{report.Method}; {N(report.NewUsers ?? 0)} new users, {N(report.NewItems ?? 0)} new items");
        table.AddRow("Trained parameters", N(report.TrainableParameters));
        table.AddRow("Training time (s)", report.TrainSeconds.ToString("F1", CultureInfo.InvariantCulture));
        table.AddRow("Model file (bytes)", N(report.ModelBytes));
        console.Write(table);
        console.MarkupLine($"Model saved to [green]{Markup.Escape(outputPath)}[/]");
        if (metricsPath is not null)
        {
            OutputFiles.WriteAtomically(metricsPath, temporary => File.WriteAllText(temporary, report.ToJson() + Environment.NewLine));
            console.MarkupLine($"Metrics written to [green]{Markup.Escape(metricsPath)}[/]");
        }
    }
}

/// <summary>The results of a recommendation run, as written by <c>--metrics-json</c>.</summary>
internal sealed record RecommendationReport(
    double Rmse,
    double Mae,
    double TrainSeconds,
    long TrainableParameters,
    long ModelBytes,
    long TestRows,
    int Users,
    int Items,
    int Rank,
    string ModelKind,
    string? Method,
    int? NewUsers,
    int? NewItems,
    double? BaseRmse,
    double? BaseMae)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The report of a trained or adapted model: its metrics on the test ratings (and its base's, for an adaptation) and its sizes.</summary>
    public static RecommendationReport Of(PeftRecommenderTransformer model, bool isNeural, Microsoft.ML.Data.RegressionMetrics metrics,
        Microsoft.ML.Data.RegressionMetrics? baseMetrics, TimeSpan trainTime, string modelPath, long testRows)
    {
        bool adapted = model.AdaptationMethod is not null;
        return new RecommendationReport(
            Rmse: metrics.RootMeanSquaredError,
            Mae: metrics.MeanAbsoluteError,
            TrainSeconds: Math.Round(trainTime.TotalSeconds, 3),
            TrainableParameters: model.TrainableParameterCount,
            ModelBytes: new FileInfo(modelPath).Length,
            TestRows: testRows,
            Users: model.UserCount,
            Items: model.ItemCount,
            Rank: model.ApproximationRank,
            ModelKind: isNeural ? "ncf" : "mf",
            Method: model.AdaptationMethod?.ToString().ToLowerInvariant(),
            NewUsers: adapted ? model.NewUserCount : null,
            NewItems: adapted ? model.NewItemCount : null,
            BaseRmse: baseMetrics?.RootMeanSquaredError,
            BaseMae: baseMetrics?.MeanAbsoluteError);
    }

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);
}
