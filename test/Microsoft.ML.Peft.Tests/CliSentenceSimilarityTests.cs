using System.Globalization;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>sentence-similarity</c> and <c>predict</c> on its model, as separate processes on a few dozen STS-B pairs.</summary>
public partial class CliTests
{
    private static string StsbTrain => Path.Combine(TestData.SharedData, "stsb", "train.tsv");

    /// <summary>Lines of stsb/train.tsv (header skipped): sentence1, sentence2, score.</summary>
    private static List<string[]> StsbRows(int skip, int take) =>
        File.ReadLines(StsbTrain).Skip(1 + skip).Take(take).Select(l => l.Split('\t')).ToList();

    [Test]
    public void SentenceSimilarityTrainsReportsAndPredictsScores()
    {
        var train = Path.Combine(workDir, "train.tsv");
        var test = Path.Combine(workDir, "test.tsv");
        File.WriteAllLines(train, StsbRows(0, 48).Select(r => string.Join('\t', r)).Prepend("sentence1\tsentence2\tscore"));
        var testRows = StsbRows(2000, 30);
        File.WriteAllLines(test, testRows.Select(r => string.Join('\t', r)).Prepend("sentence1\tsentence2\tscore"));
        var model = Path.Combine(workDir, "ssim.zip");
        var metricsFile = Path.Combine(workDir, "m.json");

        var run = RunCli("sentence-similarity", "--dataset", train, "--has-header", "--text-col", "sentence1", "--text2-col", "sentence2",
            "--label-col", "score", "--test-dataset", test, "--output", model, "--metrics-json", metricsFile,
            "--epochs", "1", "--max-length", "48", "--batch-size", "16", "--seed", "3");
        TestContext.Out.WriteLine(run.StdOut);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("Epoch 1/1").And.Contain("Spearman"));

        double pearson;
        using (var json = JsonDocument.Parse(File.ReadAllText(metricsFile)))
        {
            var root = json.RootElement;
            foreach (var key in new[] { "pearson", "spearman", "trainSeconds", "trainableParameters", "modelBytes", "architecture", "method", "testRows" })
                Assert.That(root.TryGetProperty(key, out _), Is.True, $"metrics JSON lacks '{key}': {root}");
            pearson = root.GetProperty("pearson").GetDouble();
            Assert.That(pearson, Is.InRange(-1.0, 1.0));
            Assert.That(root.GetProperty("spearman").GetDouble(), Is.InRange(-1.0, 1.0));
            Assert.That(root.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(model).Length));
            Assert.That(root.GetProperty("trainableParameters").GetInt64(), Is.GreaterThan(0).And.LessThan(root.GetProperty("totalParameters").GetInt64()));
            Assert.That(root.GetProperty("testRows").GetInt64(), Is.EqualTo(30));
            Assert.That(root.GetProperty("architecture").GetString(), Is.EqualTo("bi"));
            Assert.That(root.GetProperty("method").GetString(), Is.EqualTo("LORA"));
        }

        // predict in a new process on the test file: one score per pair, which give the Pearson the metrics reported.
        var predictions = Path.Combine(workDir, "scores.tsv");
        var predict = RunCli("predict", "--model", model, "--dataset", test, "--has-header", "--text-col", "sentence1", "--text2-col", "sentence2",
            "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var lines = File.ReadAllLines(predictions);
        Assert.That(lines[0], Is.EqualTo("sentence1\tsentence2\tScore"));
        Assert.That(lines, Has.Length.EqualTo(testRows.Count + 1));
        var scores = new List<double>();
        for (int i = 1; i < lines.Length; i++)
        {
            var fields = lines[i].Split('\t');
            Assert.That(fields, Has.Length.EqualTo(3));
            Assert.That(fields[0], Is.EqualTo(testRows[i - 1][0]), "rows keep the input order");
            scores.Add(double.Parse(fields[2], CultureInfo.InvariantCulture));
        }
        var labels = testRows.Select(r => double.Parse(r[2], CultureInfo.InvariantCulture)).ToList();
        double ms = scores.Average(), ml = labels.Average();
        double r = scores.Zip(labels, (s, l) => (s - ms) * (l - ml)).Sum() /
            Math.Sqrt(scores.Sum(s => (s - ms) * (s - ms)) * labels.Sum(l => (l - ml) * (l - ml)));
        Assert.That(r, Is.EqualTo(pearson).Within(1e-4), "predict's scores are the evaluated ones");

        // The one-sentence form of predict does not apply to a pair model.
        var single = RunCli("predict", "--model", model, "--dataset", test, "--has-header", "--text-col", "sentence1", "--output", predictions);
        Assert.That(single.ExitCode, Is.EqualTo(1), single.ToString());
        Assert.That(single.StdErr, Does.Contain("--text2-col"));
    }

    [TestCase("--architecture", "tri", "--architecture")]
    [TestCase("--epochs", "0", "--epochs")]
    public void SentenceSimilarityCommandLineMistakesExitWithTwo(string option, string value, string named)
    {
        var data = Path.Combine(workDir, "pairs.tsv");
        File.WriteAllLines(data, StsbRows(0, 10).Select(r => string.Join('\t', r)));
        var result = RunCli("sentence-similarity", "--dataset", data, "--text-col", "0", "--text2-col", "1", "--label-col", "2",
            "--output", Path.Combine(workDir, "m.zip"), option, value);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain(named));
        var noSecond = RunCli("sentence-similarity", "--dataset", data, "--text-col", "0", "--label-col", "2", "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(noSecond.ExitCode, Is.EqualTo(2), noSecond.ToString());
        Assert.That(noSecond.StdErr, Does.Contain("--text2-col"));
    }

    [Test]
    public void SentenceSimilarityWithALabelColumnOfWordsFailsWithExitCodeOne()
    {
        var data = Path.Combine(workDir, "pairs.tsv");
        File.WriteAllLines(data, StsbRows(0, 10).Select(r => $"{r[0]}\t{r[1]}\thigh"));
        var result = RunCli("sentence-similarity", "--dataset", data, "--text-col", "0", "--text2-col", "1", "--label-col", "2",
            "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.StdErr, Does.Contain("Label").And.Contain("missing"));
        Assert.That(File.Exists(Path.Combine(workDir, "m.zip")), Is.False);
    }
}
