using System.CommandLine;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

using Command = System.CommandLine.Command;

/// <summary><c>image-classification</c>: fine-tune a ResNet on a folder of class sub-folders (or a TSV of path and label), evaluate, save.</summary>
internal static class ImageClassificationCommand
{
    public const string ImageColumn = "ImagePath";
    public const string LabelColumn = "Label";
    public const string ScoreColumn = "Score";
    public const string PredictedLabelColumn = "PredictedLabel";

    public static Command Create()
    {
        var defaults = new PeftImageClassificationTrainer.Options();
        var dataset = new Option<string>("--dataset") { Description = "The training images: a folder with one sub-folder per class, or a TSV of image path and label.", Required = true };
        var test = new Option<string>("--test-dataset") { Description = "Test images (same layout) for the final metrics. Default: 20% of the training images are held out." };
        var validation = new Option<string>("--validation-dataset") { Description = "Validation images (same layout): accuracy after each epoch; with --early-stopping, the best epoch is kept." };
        var model = new Option<string>("--model") { Description = "The base model: an ONNX ResNet, or a torchvision ResNet state dict (.safetensors). Default: ResNet-18 of Microsoft.ML.DnnImageFeaturizer.ResNet18." };
        var method = new Option<string>("--method")
        {
            Description = "The PEFT method: " + string.Join("; ", MethodChoices.Methods.Where(m => MethodChoices.ImageMethods.Contains(m.Name)).Select(m => $"{m.Name} ({m.Description})")) + ". LoRA and IA3 adapt every convolution.",
            DefaultValueFactory = _ => "lora",
        };
        var methodOptions = MethodChoices.CreateOptions();
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training images.", DefaultValueFactory = _ => defaults.MaxEpoch }.AtLeast(1);
        var batchSize = new Option<int>("--batch-size") { Description = "Images per training step.", DefaultValueFactory = _ => defaults.BatchSize }.AtLeast(1);
        var learningRate = new Option<float>("--learning-rate") { Description = "Peak learning rate of AdamW.", DefaultValueFactory = _ => defaults.LearningRate }.Positive();
        var imageSize = new Option<int>("--image-size") { Description = "Side of the square the network sees, in pixels.", DefaultValueFactory = _ => defaults.ImageSize }.AtLeast(32);
        var trainBatchNorm = new Option<bool>("--train-batch-norm") { Description = "Also train the batch normalisations' scale and shift (statistics stay frozen)." };
        var noAugment = new Option<bool>("--no-augmentation") { Description = "Turn off random resized crops and horizontal flips." };
        var noFlip = new Option<bool>("--no-flip") { Description = "Turn off horizontal flips only (for images whose orientation matters)." };
        var minCropScale = new Option<float>("--min-crop-scale") { Description = "Smallest area of a random crop, as a fraction of the image (1: no cropping).", DefaultValueFactory = _ => defaults.Augmentation.MinCropScale };
        minCropScale.Validators.Add(r => { if (r.GetValueOrDefault<float>() is var v && !(v > 0 && v <= 1)) r.AddError($"--min-crop-scale must be in (0, 1]; got {v}."); });
        var earlyStopping = new Option<int>("--early-stopping") { Description = "With --validation-dataset: stop after this many epochs without a better validation accuracy (0: off).", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var maxRows = new Option<long?>("--max-rows") { Description = "Use at most this many images of each dataset, taken from the classes in turn (each class's first images), so every class is kept." };
        maxRows.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is <= 0 and var value) result.AddError($"--max-rows must be positive; got {value}.");
        });
        var seed = new Option<int>("--seed") { Description = "Seed of the split, initialisation, augmentation and shuffling.", DefaultValueFactory = _ => defaults.Seed };
        var embed = new Option<bool>("--embed-base-model") { Description = "Store the base model inside the saved model (self-contained, larger file)." };
        var output = new Option<string>("--output") { Description = "The model file to write (.zip).", Required = true };
        var metricsJson = new Option<string>("--metrics-json") { Description = "Also write the metrics to this JSON file." };
        // A class-folder tree or a path-and-label TSV has no place for score columns: images distil from a saved teacher.
        var distill = new DistillationChoices(scoreColumns: false);

        var command = new Command("image-classification", "Fine-tune an image classifier (a ResNet) with a PEFT method (LoRA by default), evaluate it and save it as an ML.NET model.")
        {
            dataset, test, validation, model, method, epochs, batchSize, learningRate, imageSize, trainBatchNorm, noAugment, noFlip, minCropScale,
            earlyStopping, maxRows, seed, embed, output, metricsJson,
        };
        foreach (var option in methodOptions) command.Options.Add(option.Option);
        foreach (var option in distill.Options) command.Options.Add(option);
        var code = CodeGenerationOptions.Create();
        code.AddTo(command);
        command.SetAction(parse => Run(new Settings(
            Dataset: parse.GetValue(dataset)!,
            TestDataset: parse.GetValue(test),
            ValidationDataset: parse.GetValue(validation),
            Model: parse.GetValue(model),
            Method: MethodChoices.Create(parse.GetValue(method)!, parse, methodOptions, forImages: true),
            Epochs: parse.GetValue(epochs),
            BatchSize: parse.GetValue(batchSize),
            LearningRate: parse.GetValue(learningRate),
            ImageSize: parse.GetValue(imageSize),
            TrainBatchNorm: parse.GetValue(trainBatchNorm),
            Augmentation: parse.GetValue(noAugment) ? ImageAugmentation.None : new ImageAugmentation { HorizontalFlip = !parse.GetValue(noFlip), MinCropScale = parse.GetValue(minCropScale) },
            EarlyStopping: parse.GetValue(earlyStopping),
            MaxRows: parse.GetValue(maxRows),
            Seed: parse.GetValue(seed),
            EmbedBaseModel: parse.GetValue(embed),
            Output: parse.GetValue(output)!,
            MetricsJson: parse.GetValue(metricsJson),
            Distillation: distill.Parse(parse),
            Code: code.Check(parse, "image-classification"))));
        return command;
    }

    private sealed record Settings(
        string Dataset, string? TestDataset, string? ValidationDataset, string? Model, PeftMethodOptions Method, int Epochs, int BatchSize,
        float LearningRate, int ImageSize, bool TrainBatchNorm, ImageAugmentation Augmentation, int EarlyStopping, long? MaxRows, int Seed,
        bool EmbedBaseModel, string Output, string? MetricsJson, DistillationSettings? Distillation = null, CodeRequest? Code = null);

    private static int Run(Settings s)
    {
        var console = Terminal.Out;
        // Check every input before the (slow) training starts.
        var trainSet = ImageDataset.Read(s.Dataset, "--dataset");
        var testSet = s.TestDataset is null ? null : ImageDataset.Read(s.TestDataset, "--test-dataset");
        var validationSet = s.ValidationDataset is null ? null : ImageDataset.Read(s.ValidationDataset, "--validation-dataset");
        if (s.EarlyStopping > 0 && validationSet is null) throw new UsageException("--early-stopping needs --validation-dataset.");
        ImageBaseModelSource? baseModel = null;
        if (s.Model is not null)
        {
            if (!File.Exists(s.Model)) throw new FileNotFoundException($"The base model '{s.Model}' (--model) does not exist: give an ONNX ResNet or a torchvision .safetensors file.", s.Model);
            baseModel = ImageBaseModelSource.FromPath(s.Model);
        }
        var outputPath = OutputFiles.Check(s.Output, "--output");
        var metricsPath = s.MetricsJson is null ? null : OutputFiles.Check(s.MetricsJson, "--metrics-json");

        var mlContext = new MLContext(s.Seed);
        using var cancellation = Cancellation.Attach(mlContext);
        IDataView train = Load(mlContext, trainSet, s.MaxRows);
        IDataView? validation = validationSet is null ? null : Load(mlContext, validationSet, s.MaxRows);
        IDataView testData;
        if (testSet is not null) testData = Load(mlContext, testSet, s.MaxRows);
        else
        {
            var split = mlContext.Data.TrainTestSplit(train, testFraction: 0.2, seed: s.Seed);
            (train, testData) = (split.TrainSet, split.TestSet);
            console.MarkupLine("No --test-dataset: 20% of the training images are held out for testing.");
        }

        var teacher = s.Distillation?.TeacherModel is { } teacherPath
            ? DistillationChoices.LoadTeacher(mlContext, teacherPath, train.Schema, "the training images")
            : null;
        var labelToKey = mlContext.Transforms.Conversion.MapValueToKey(LabelColumn, LabelColumn).Fit(train);
        var trainerOptions = new PeftImageClassificationTrainer.Options
        {
            LabelColumnName = LabelColumn,
            ImageColumnName = ImageColumn,
            ScoreColumnName = ScoreColumn,
            PredictedLabelColumnName = PredictedLabelColumn,
            ValidationSet = validation is null ? null : labelToKey.Transform(validation),
            EarlyStoppingPatience = s.EarlyStopping,
            BaseModel = baseModel,
            Method = s.Method,
            MaxEpoch = s.Epochs,
            BatchSize = s.BatchSize,
            LearningRate = s.LearningRate,
            ImageSize = s.ImageSize,
            TrainBatchNorm = s.TrainBatchNorm,
            Augmentation = s.Augmentation,
            Seed = s.Seed,
            EmbedBaseModel = s.EmbedBaseModel,
            Distillation = s.Distillation?.ToOptions(teacher, null),
        };
        var estimator = mlContext.MulticlassClassification.Trainers.PeftImageClassification(trainerOptions)
            .Append(mlContext.Transforms.Conversion.MapKeyToValue(PredictedLabelColumn));
        IEnumerable<ITransformer> Fit(IDataView keyed)
        {
            try
            {
                return estimator.Fit(keyed);
            }
            finally
            {
                DistillationChoices.Dispose(teacher);
            }
        }
        int exitCode = ClassifierRun.FitEvaluateSave(mlContext, console, "Image classification", labelToKey, Fit, train, testData, LabelColumn,
            outputPath, metricsPath, trained =>
            {
                var peft = trained.OfType<PeftImageClassificationTransformer>().Single();
                return new ClassifierSummary(peft.TrainableParameterCount, peft.TotalParameterCount, peft.Method, peft.TrainingHistory,
                    peft.BaseModelDescription, new[] { ("Image size", $"{peft.ImageSize} x {peft.ImageSize}") }
                        .Concat(s.Distillation is null ? Array.Empty<(string, string)>() : new[] { ("Distillation", s.Distillation.Describe()) }).ToArray());
            });
        s.Code?.Write(outputPath, console);
        return exitCode;
    }

    /// <summary>The dataset's rows as an ML.NET data view of ImagePath (text) and Label (text); at most <paramref name="maxRows"/>, from the classes in turn.</summary>
    internal static IDataView Load(MLContext mlContext, ImageDataset dataset, long? maxRows) =>
        mlContext.Data.LoadFromEnumerable(Subset(dataset.Rows, maxRows));

    /// <summary>
    /// The first <paramref name="maxRows"/> rows taking one from each class in turn (in each class the file order is kept):
    /// a folder dataset lists its classes one after another, so its first rows would all be of the first classes.
    /// </summary>
    internal static List<ImageDatasetRow> Subset(IReadOnlyList<ImageDatasetRow> rows, long? maxRows)
    {
        if (maxRows is not long max || max >= rows.Count) return rows.ToList();
        var queues = rows.GroupBy(r => r.Label).Select(g => new Queue<ImageDatasetRow>(g)).ToList();
        var result = new List<ImageDatasetRow>();
        while (result.Count < max)
            foreach (var queue in queues)
                if (result.Count < max && queue.Count > 0) result.Add(queue.Dequeue());
        return result;
    }

}
