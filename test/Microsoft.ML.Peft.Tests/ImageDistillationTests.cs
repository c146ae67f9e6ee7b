using Microsoft.ML.Peft.Methods.LinearProbe;
using Microsoft.ML.Peft.Samples;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Distillation through the image trainer: a fitted image pipeline as the teacher, on Fashion-MNIST images with the package's ResNet-18.</summary>
[TestFixture]
public class ImageDistillationTests
{
    private string root = null!;
    private List<ImageClassificationTests.ImagePathRow> rows = null!;

    [OneTimeSetUp]
    public void WriteImages()
    {
        root = Path.Combine(Path.GetTempPath(), "peft-image-distill-" + Guid.NewGuid().ToString("N"));
        var (pixels, labels) = FashionMnist.Read(FashionMnist.DefaultDirectory, train: true, maxCount: 64);
        rows = FashionMnist.WriteClassFolders(root, Enumerable.Range(0, 64).ToList(), pixels, labels)
            .Select(p => new ImageClassificationTests.ImagePathRow { ImagePath = p, Label = Path.GetFileName(Path.GetDirectoryName(p))! }).ToList();
    }

    [OneTimeTearDown]
    public void RemoveImages() => Directory.Delete(root, recursive: true);

    private static ITransformer Fit(MLContext ml, PeftImageClassificationTrainer.Options options, IDataView data) =>
        ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftImageClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(data);

    [Test]
    public void ImageTeacherPipelineScoresTheRowsAndWeightZeroTrainsAsWithoutIt()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var data = ml.Data.LoadFromEnumerable(rows);
        var teacherOptions = ImageClassificationTests.SmallOptions(new LinearProbeOptions());
        teacherOptions.MaxEpoch = 1;
        var teacher = Fit(ml, teacherOptions, data);

        PeftImageClassificationTrainer.Options Student(float? weight)
        {
            var options = ImageClassificationTests.SmallOptions();
            options.MaxEpoch = 1;
            if (weight is float w) options.Distillation = new DistillationOptions { Teacher = teacher, Weight = w, Temperature = 3 };
            return options;
        }
        var plain = Fit(ml, Student(null), data);
        var weightZero = Fit(ml, Student(0), data);
        var distilled = Fit(ml, Student(0.5f), data);
        try
        {
            Assert.That(log, Has.Some.Contains("reads the label 'Label' as its values"));
            Assert.That(log, Has.Some.Contains("Distillation (temperature 3, weight 0.5): 64 rows train on both terms"));
            var loss = (ITransformer model) => ((PeftImageClassificationTransformer)((IEnumerable<ITransformer>)model).ElementAt(1)).TrainingHistory[0].TrainingLoss;
            Assert.That(loss(weightZero), Is.EqualTo(loss(plain)).Within(1e-6), "weight 0 is plain training");
            Assert.That(loss(distilled), Is.Not.EqualTo(loss(plain)).Within(1e-4), "weight 0.5 learns from the teacher too");
        }
        finally
        {
            foreach (var model in new[] { teacher, plain, weightZero, distilled })
                foreach (var t in (IEnumerable<ITransformer>)model) (t as IDisposable)?.Dispose();
        }
    }
}
