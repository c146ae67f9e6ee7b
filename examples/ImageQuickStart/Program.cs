using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Samples;
using Microsoft.ML.Peft.Tasks.ImageClassification;

// Fine-tunes the ImageNet ResNet-18 that the NuGet package Microsoft.ML.DnnImageFeaturizer.ResNet18 ships (nothing is
// downloaded) with LoRA on its convolutions, on 1,000 Fashion-MNIST images written as PNG files into one folder per
// class (the layout Model Builder uses), evaluates on 500 others, saves the model, reloads it and predicts.
// Fashion-MNIST comes from the Debian package dataset-fashion-mnist (or pass the folder of its .gz files).
var source = args.Length > 0 ? args[0] : FashionMnist.DefaultDirectory;
var work = Path.Combine(Path.GetTempPath(), "peft-image-quickstart");
if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
var (pixels, labels) = FashionMnist.Read(source, train: true, maxCount: 1500);
var trainFiles = FashionMnist.WriteClassFolders(Path.Combine(work, "train"), Enumerable.Range(0, 1000).ToList(), pixels, labels);
var testFiles = FashionMnist.WriteClassFolders(Path.Combine(work, "test"), Enumerable.Range(1000, 500).ToList(), pixels, labels);

var ml = new MLContext(seed: 1);
ml.Log += (_, e) =>
{
    if (e.Source.Contains("Peft", StringComparison.Ordinal) && e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Info or Microsoft.ML.Runtime.ChannelMessageKind.Warning)
        Console.WriteLine($"  {e.Message[(e.Message.IndexOf(']') + 1)..].Trim()}");
};
// The class is the name of the image's folder.
static IEnumerable<ImageFile> Files(IEnumerable<string> paths) =>
    paths.Select(p => new ImageFile { ImagePath = p, Label = Path.GetFileName(Path.GetDirectoryName(p)!) });
var train = ml.Data.LoadFromEnumerable(Files(trainFiles));
var test = ml.Data.LoadFromEnumerable(Files(testFiles));

var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.PeftImageClassification(new PeftImageClassificationTrainer.Options
    {
        ImageColumnName = nameof(ImageFile.ImagePath),
        ImageSize = 64,
        MaxEpoch = 3,
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

Console.WriteLine($"Fine-tuning ResNet-18 with LoRA (rank 8 on every convolution) on {trainFiles.Count:N0} Fashion-MNIST images...");
var watch = Stopwatch.StartNew();
var model = pipeline.Fit(train);
Console.WriteLine($"Trained in {watch.Elapsed.TotalSeconds:F0} s.");

var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
var peft = ((IEnumerable<ITransformer>)model).OfType<PeftImageClassificationTransformer>().Single();
var modelPath = Path.Combine(work, "model.zip");
ml.Model.Save(model, train.Schema, modelPath);
long modelBytes = new FileInfo(modelPath).Length;
long baseBytes = new FileInfo(Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx")).Length;

Console.WriteLine();
Console.WriteLine($"Accuracy on {testFiles.Count} held-out images: {metrics.MicroAccuracy:P1} (log-loss {metrics.LogLoss:F3})");
Console.WriteLine($"Trainable parameters: {peft.TrainableParameterCount:N0} of {peft.TotalParameterCount:N0} ({100.0 * peft.TrainableParameterCount / peft.TotalParameterCount:F2}%)");
Console.WriteLine($"Saved model: {modelBytes:N0} bytes = {100.0 * modelBytes / baseBytes:F2}% of the {baseBytes:N0}-byte base model, which stays outside it");

// A fresh context, as another process would do it.
var loaded = new MLContext().Model.Load(modelPath, out _);
using var engine = new MLContext().Model.CreatePredictionEngine<ImageFile, Prediction>(loaded);
Console.WriteLine();
foreach (var file in testFiles.Take(5))
{
    var p = engine.Predict(new ImageFile { ImagePath = file });
    Console.WriteLine($"  {p.PredictedLabel,-12} ({p.Score.Max():P0})  {Path.GetRelativePath(work, file)}");
}

internal sealed class ImageFile
{
    public string ImagePath { get; set; } = "";
    public string Label { get; set; } = "";
}

internal sealed class Prediction
{
    public string PredictedLabel { get; set; } = "";
    public float[] Score { get; set; } = Array.Empty<float>();
}
