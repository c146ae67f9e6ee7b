using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// A short LoRA fine-tune of the real all-MiniLM-L6-v2 on a few hundred SST-2 rows, inside an ML.NET pipeline;
/// trained once for the fixture and checked on held-apart rows of the dev set.
/// </summary>
[TestFixture]
[NonParallelizable]
public class TextClassificationIntegrationTests
{
    private MLContext mlContext = null!;
    private ITransformer model = null!;
    private IDataView heldOut = null!;
    private string modelPath = null!;
    private readonly List<string> log = new();

    [OneTimeSetUp]
    public void Train()
    {
        mlContext = new MLContext(seed: 1);
        mlContext.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var train = mlContext.Data.LoadFromEnumerable(Rows.Sst2(TestData.Sst2Train, skip: 0, take: 480));
        heldOut = mlContext.Data.LoadFromEnumerable(Rows.Sst2(TestData.Sst2Dev, skip: 0, take: 200));
        var pipeline = mlContext.Transforms.Conversion.MapValueToKey("Label")
            .Append(mlContext.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
            {
                Sentence1ColumnName = nameof(SentenceRow.Sentence),
                MaxEpoch = 2,
                BatchSize = 16,
                MaxSequenceLength = 48,
                LearningRate = 1e-3f,
            }))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        model = pipeline.Fit(train);
        modelPath = Path.Combine(Path.GetTempPath(), $"peft-sst2-{Guid.NewGuid():N}.zip");
        mlContext.Model.Save(model, train.Schema, modelPath);
    }

    [OneTimeTearDown]
    public void CleanUp()
    {
        (model as IDisposable)?.Dispose();
        if (File.Exists(modelPath)) File.Delete(modelPath);
    }

    private PeftTextClassificationTransformer Peft => ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();

    [Test]
    public void ClearlyBeatsChanceOnHeldApartRows()
    {
        var metrics = mlContext.MulticlassClassification.Evaluate(model.Transform(heldOut));
        TestContext.Out.WriteLine($"held-out accuracy {metrics.MicroAccuracy:F3}, log-loss {metrics.LogLoss:F3}");
        Assert.That(metrics.MicroAccuracy, Is.GreaterThan(0.7));
        Assert.That(metrics.LogLoss, Is.LessThan(Math.Log(2)));
    }

    [Test]
    public void AccuracyAgreesWithCountingPredictions()
    {
        var scored = model.Transform(heldOut);
        var predictions = mlContext.Data.CreateEnumerable<SentencePrediction>(scored, reuseRowObject: false).ToList();
        var truth = Rows.Sst2(TestData.Sst2Dev, 0, 200);
        double counted = predictions.Zip(truth).Count(p => p.First.PredictedLabel == p.Second.Label) / (double)truth.Count;
        var metrics = mlContext.MulticlassClassification.Evaluate(scored);
        Assert.That(metrics.MicroAccuracy, Is.EqualTo(counted).Within(1e-9));
        Assert.That(predictions.Select(p => p.PredictedLabel).Distinct(), Is.SubsetOf(new[] { "positive", "negative" }));
        Assert.That(predictions.All(p => Math.Abs(p.Score.Sum() - 1) < 1e-4), "scores are probabilities");
    }

    [Test]
    public void SavedModelLoadsInAFreshContextAndPredictsTheSame()
    {
        var before = Scores(model.Transform(heldOut));
        var fresh = new MLContext(seed: 5);
        // With its own copy of the base the loaded model merges its adapter as the trained one did; sharing the base
        // (the default) it scores with the adapter unmerged, equal within float rounding.
        var loaded = fresh.Model.LoadPeft(modelPath, new Format.PeftLoadOptions { ShareBaseModel = false }, out var schema);
        var shared = fresh.Model.Load(modelPath, out _);
        Assert.That(schema.GetColumnOrNull(nameof(SentenceRow.Sentence)), Is.Not.Null);
        double MaxDiff(ITransformer other) =>
            before.Zip(Scores(other.Transform(heldOut))).SelectMany(p => p.First.Zip(p.Second, (a, b) => Math.Abs(a - b))).Max();
        double maxDiff = MaxDiff(loaded), sharedDiff = MaxDiff(shared);
        TestContext.Out.WriteLine($"max |score before save - after load| = {maxDiff:E3}; sharing the base model: {sharedDiff:E3}");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(1e-6));
        Assert.That(sharedDiff, Is.LessThanOrEqualTo(1e-5));
        (loaded as IDisposable)?.Dispose();
        (shared as IDisposable)?.Dispose();
    }

    [Test]
    public void PredictionEngineMatchesBatchedTransform()
    {
        var batched = mlContext.Data.CreateEnumerable<SentencePrediction>(model.Transform(heldOut), reuseRowObject: false).Take(20).ToList();
        var engine = mlContext.Model.CreatePredictionEngine<SentenceRow, SentencePrediction>(model);
        var rows = Rows.Sst2(TestData.Sst2Dev, 0, 20);
        for (int i = 0; i < rows.Count; i++)
        {
            var single = engine.Predict(rows[i]);
            Assert.That(single.PredictedLabel, Is.EqualTo(batched[i].PredictedLabel), rows[i].Sentence);
            Assert.That(single.Score, Is.EqualTo(batched[i].Score).Within(1e-4f));
        }
    }

    [Test]
    public void SavedFileHoldsTheAdapterNotTheBaseModel()
    {
        var baseBytes = Peft.Model.BaseModel.Size;
        var fileBytes = new FileInfo(modelPath).Length;
        TestContext.Out.WriteLine($"model file {fileBytes:N0} bytes = {100.0 * fileBytes / baseBytes:F2}% of the base model ({baseBytes:N0} bytes)");
        Assert.That(fileBytes, Is.LessThanOrEqualTo(0.02 * baseBytes));
    }

    [Test]
    public void TrainsAFractionOfTheParameters()
    {
        // Rank 8 on every Linear of 6 layers (hidden 384, feed-forward 1536): query, key, value and the attention output
        // are 384 x 384, the intermediate 384 -> 1536 and the output 1536 -> 384; plus a 2-class head.
        Assert.That(Peft.TrainableParameterCount, Is.EqualTo(6 * (4 * 8 * (384 + 384) + 2 * 8 * (384 + 1536)) + 384 * 2 + 2));
        Assert.That(Peft.TrainableParameterCount, Is.LessThan(Peft.TotalParameterCount * 0.02));
        Assert.That(Peft.AdaptedModules, Has.Count.EqualTo(36));
        Assert.That(Peft.Method, Is.EqualTo("LORA"));
    }

    [Test]
    public void ProgressIsReportedThroughMLContextLog()
    {
        string[] messages;
        lock (log) messages = log.ToArray();
        Assert.That(messages, Has.Some.Contains("Epoch 1/2: loss"));
        Assert.That(messages, Has.Some.Contains("rows/s"));
        Assert.That(messages, Has.Some.Contains("trainable parameters"));
    }

    [Test]
    public void OutputSchemaHasScoreVectorAndKeyTypedPrediction()
    {
        var peftOutput = Peft.GetOutputSchema(((IEnumerable<ITransformer>)model).First().GetOutputSchema(heldOut.Schema));
        var score = peftOutput["Score"];
        Assert.That(score.Type, Is.EqualTo(new VectorDataViewType(NumberDataViewType.Single, 2)));
        var predicted = peftOutput["PredictedLabel"];
        Assert.That(predicted.Type, Is.InstanceOf<KeyDataViewType>());
        Assert.That(((KeyDataViewType)predicted.Type).Count, Is.EqualTo(2));
        VBuffer<ReadOnlyMemory<char>> names = default;
        score.GetSlotNames(ref names);
        Assert.That(names.DenseValues().Select(v => v.ToString()), Is.EquivalentTo(new[] { "positive", "negative" }));
    }

    private static List<float[]> Scores(IDataView scored)
    {
        var result = new List<float[]>();
        using var cursor = scored.GetRowCursor(new[] { scored.Schema["Score"] });
        var getter = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }
}
