// Few-shot object detection with PEFT: a detector on the ImageNet ResNet-18 (LoRA on its convolutions, a feature
// pyramid and an FCOS head) trained on the first Raccoon photos, evaluated on the others (mAP), saved, reloaded, and
// used to draw its boxes on the held-out photos.
//   dotnet run -c Release --project examples/RaccoonDetection [-- RACCOON_FOLDER [OUTPUT_FOLDER [TRAIN_IMAGES [EPOCHS]]]]
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using SkiaSharp;

string raccoon = args.Length > 0 ? args[0] : FindRaccoon();
string output = Path.GetFullPath(args.Length > 1 ? args[1] : "raccoon-detections");
int trainImages = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 64;
int epochs = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 12;

var ml = new MLContext(seed: 1);
var all = ObjectDetectionDataset.Load(ml, Path.Combine(raccoon, "labels.csv"), Path.Combine(raccoon, "images"));
if (trainImages >= all.ImageCount) throw new ArgumentException($"{trainImages} training images leave none of the {all.ImageCount} to detect on.");
var train = ml.Data.TakeRows(all.Data, trainImages);
var test = ml.Data.SkipRows(all.Data, trainImages);
Console.WriteLine($"{all.ImageCount} photos, {all.BoxCount} boxes of {string.Join(", ", all.Classes)}: training on the first {trainImages}, detecting on the other {all.ImageCount - trainImages}.");

var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.PeftObjectDetection(new PeftObjectDetectionTrainer.Options
    {
        ImageColumnName = ObjectDetectionDataset.ImagePathColumnName,
        MaxEpoch = epochs,
        ImageSize = 256,
        ScoreThreshold = 0.3f,
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
var watch = Stopwatch.StartNew();
var model = pipeline.Fit(train);
Console.WriteLine($"Trained in {watch.Elapsed.TotalSeconds:F0} s.");

var metrics = ml.MulticlassClassification.EvaluateObjectDetection(model.Transform(test));
Console.WriteLine($"Held-out photos: mAP@0.5 {metrics.MeanAveragePrecision50:F3}, mAP@[0.5:0.95] {metrics.MeanAveragePrecision:F3}.");

Directory.CreateDirectory(output);
var modelPath = Path.Combine(output, "raccoon-detector.zip");
ml.Model.Save(model, train.Schema, modelPath);
Console.WriteLine($"Saved {modelPath} ({new FileInfo(modelPath).Length:N0} bytes: adapters, pyramid and head; the base model is referenced).");
foreach (var part in model.OfType<IDisposable>()) part.Dispose();

// The saved model, reloaded, through a PredictionEngine: one photo at a time, boxes in its own pixels.
var loaded = ml.Model.Load(modelPath, out _);
using var engine = ml.Model.CreatePredictionEngine<Photo, Detection>(loaded);
int drawn = 0;
foreach (var path in all.ImagePaths.Skip(trainImages))
{
    var found = engine.Predict(new Photo { ImagePath = path });
    Draw(path, found, Path.Combine(output, Path.GetFileNameWithoutExtension(path) + ".png"));
    drawn++;
}
Console.WriteLine($"Drew the boxes of {drawn} photos in {output}.");

static void Draw(string imagePath, Detection found, string destination)
{
    using var bitmap = SKBitmap.Decode(imagePath);
    using var canvas = new SKCanvas(bitmap);
    using var pen = new SKPaint { Color = new SKColor(230, 25, 75), Style = SKPaintStyle.Stroke, StrokeWidth = Math.Max(2, bitmap.Width / 150f), IsAntialias = true };
    using var ink = new SKPaint { Color = SKColors.White, TextSize = Math.Max(12, bitmap.Width / 30f), IsAntialias = true };
    using var fill = new SKPaint { Color = new SKColor(230, 25, 75) };
    for (int i = 0; i < found.PredictedLabel.Length; i++)
    {
        var b = found.PredictedBoundingBoxes.AsSpan(4 * i, 4);
        canvas.DrawRect(SKRect.Create(b[0], b[1], b[2] - b[0], b[3] - b[1]), pen);
        var text = $"{found.PredictedLabel[i]} {found.Score[i]:F2}";
        canvas.DrawRect(SKRect.Create(b[0], Math.Max(0, b[1] - ink.TextSize - 4), ink.MeasureText(text) + 6, ink.TextSize + 4), fill);
        canvas.DrawText(text, b[0] + 3, Math.Max(ink.TextSize, b[1] - 4), ink);
    }
    using var data = SKImage.FromBitmap(bitmap).Encode(SKEncodedImageFormat.Png, 100);
    using var file = File.Create(destination);
    data.SaveTo(file);
}

static string FindRaccoon()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
    {
        var candidate = Path.Combine(dir.FullName, "shared", "data", "raccoon");
        if (File.Exists(Path.Combine(candidate, "labels.csv"))) return candidate;
    }
    throw new DirectoryNotFoundException("The Raccoon data (shared/data/raccoon beside the repository) was not found: give its folder as the first argument.");
}

/// <summary>A photo to detect in.</summary>
internal sealed class Photo
{
    public string ImagePath { get; set; } = "";

    /// <summary>The saved pipeline starts by mapping the label to keys, so the input has one; empty when predicting.</summary>
    public string[] Label { get; set; } = Array.Empty<string>();
}

/// <summary>What the detector found: one class name, score and box (xmin, ymin, xmax, ymax in the photo's pixels) per object.</summary>
internal sealed class Detection
{
    public string[] PredictedLabel { get; set; } = Array.Empty<string>();
    public float[] Score { get; set; } = Array.Empty<float>();
    public float[] PredictedBoundingBoxes { get; set; } = Array.Empty<float>();
}
