using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>A labelled sentence pair (MRPC: 1 = paraphrase).</summary>
public sealed class SentencePairRow
{
    public string Sentence1 { get; set; } = "";
    public string Sentence2 { get; set; } = "";
    public string Label { get; set; } = "";
}

/// <summary>
/// Sentence-pair classification through <c>PeftTextClassification</c> with <c>Sentence2ColumnName</c>: one short LoRA
/// epoch of all-MiniLM-L6-v2 on a few hundred real MRPC pairs, checked on held-apart pairs.
/// </summary>
[TestFixture]
[NonParallelizable]
public class PairClassificationIntegrationTests
{
    private static string MrpcTrain => Path.Combine(TestData.SharedData, "mrpc", "train.tsv");

    private static List<SentencePairRow> Mrpc(int skip, int take) =>
        File.ReadLines(MrpcTrain).Skip(1 + skip).Take(take).Select(l => l.Split('\t'))
            .Select(p => new SentencePairRow { Label = p[0], Sentence1 = p[1], Sentence2 = p[2] }).ToList();

    [Test]
    public void LearnsFromPairsAndReadsBothSentences()
    {
        var ml = new MLContext(1);
        var trainRows = Mrpc(0, 320);
        var heldOut = Mrpc(3000, 200);
        var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentencePairRow.Sentence1),
            Sentence2ColumnName = nameof(SentencePairRow.Sentence2),
            MaxEpoch = 2,
            BatchSize = 16,
            MaxSequenceLength = 80,
            LearningRate = 3e-3f,
        });
        var mapLabel = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(trainRows));
        using var model = trainer.Fit(mapLabel.Transform(ml.Data.LoadFromEnumerable(trainRows)));
        Assert.That(model.Sentence2ColumnName, Is.EqualTo(nameof(SentencePairRow.Sentence2)));
        int paraphrase = model.ClassNames.ToList().IndexOf("1");
        Assert.That(paraphrase, Is.GreaterThanOrEqualTo(0));

        float[] ParaphraseProbability(IEnumerable<SentencePairRow> rows) =>
            model.Transform(mapLabel.Transform(ml.Data.LoadFromEnumerable(rows.ToList()))).GetColumn<float[]>("Score").Select(p => p[paraphrase]).ToArray();

        // The same first sentences with the second sentence of another pair.
        var mismatched = heldOut.Select((r, i) => new SentencePairRow { Sentence1 = r.Sentence1, Sentence2 = heldOut[(i + 17) % heldOut.Count].Sentence2, Label = "0" }).ToList();
        var real = ParaphraseProbability(heldOut);
        var shuffled = ParaphraseProbability(mismatched);
        double accuracy = heldOut.Select((r, i) => (real[i] > 0.5 ? "1" : "0") == r.Label).Count(x => x) / (double)heldOut.Count;
        double majority = Math.Max(heldOut.Count(r => r.Label == "1"), heldOut.Count(r => r.Label == "0")) / (double)heldOut.Count;
        // Cross-entropy of always predicting the training rows' class frequencies: what a model that ignores the text reaches.
        double positive = trainRows.Count(r => r.Label == "1") / (double)trainRows.Count;
        double priorEntropy = -(positive * Math.Log(positive) + (1 - positive) * Math.Log(1 - positive));
        var losses = model.TrainingHistory.Select(e => e.TrainingLoss).ToList();
        TestContext.Out.WriteLine($"held-out accuracy {accuracy:F3} (majority {majority:F3}); mean P(paraphrase) real pairs {real.Average():F3}, mismatched {shuffled.Average():F3}; " +
            $"losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}, class-prior entropy {priorEntropy:F4}");

        Assert.That(losses[1], Is.LessThan(losses[0]), "the loss falls");
        Assert.That(losses[1], Is.LessThan(priorEntropy), "the loss falls below what the class frequencies alone give");
        Assert.That(real.Zip(shuffled).Count(p => Math.Abs(p.First - p.Second) > 1e-3), Is.GreaterThan(heldOut.Count * 9 / 10),
            "the second sentence is read: replacing it changes the prediction");
        Assert.That(accuracy, Is.GreaterThanOrEqualTo(majority - 0.05), "no worse than always answering the majority class");
    }
}
