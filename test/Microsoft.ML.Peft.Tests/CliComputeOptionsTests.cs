using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>--precision</c> and <c>--attention-dropout</c> on the text commands reach the trainer and the saved model.</summary>
[TestFixture]
public class CliComputeOptionsTests
{
    [Test]
    public void PrecisionIsSavedWithTheModelAndBadValuesAreUsageErrors()
    {
        var dir = Directory.CreateTempSubdirectory("mlnet-peft-compute-").FullName;
        try
        {
            var train = Path.Combine(dir, "train.tsv");
            File.WriteAllLines(train, TestData.ReadSst2(TestData.Sst2Train, skip: 0, take: 24).Select(r => $"{r.Sentence}\t{r.Label}"));
            var model = Path.Combine(dir, "model.zip");
            var run = CliProcess.Run(dir, "text-classification", "--dataset", train, "--text-col", "0", "--label-col", "1", "--epochs", "1",
                "--max-length", "24", "--batch-size", "8", "--precision", "bf16", "--attention-dropout", "0", "--output", model);
            Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
            var loaded = new MLContext(1).Model.Load(model, out _);
            var peft = ((IEnumerable<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
            Assert.That(peft.Model.Precision, Is.EqualTo(PeftPrecision.Bf16), "the saved model scores in bf16 as it was trained");

            foreach (var (option, value, message) in new[] { ("--precision", "fp16", "fp16"), ("--attention-dropout", "1.5", "--attention-dropout must be at least 0 and below 1") })
            {
                var bad = CliProcess.Run(dir, "text-classification", "--dataset", train, "--text-col", "0", "--label-col", "1", option, value, "--output", model);
                Assert.That(bad.ExitCode, Is.EqualTo(2), bad.ToString());
                Assert.That(bad.StdErr, Does.Contain(message));
            }
            foreach (var command in new[] { "ner", "sentence-similarity" })
            {
                var help = CliProcess.Run(dir, command, "--help");
                Assert.That(help.StdOut, Does.Contain("--precision").And.Contain("--attention-dropout"), command);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
