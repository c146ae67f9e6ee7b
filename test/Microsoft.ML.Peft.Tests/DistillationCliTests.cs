using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>text-classification</c> with <c>--teacher-model</c> and <c>--teacher-scores-col</c>, run as separate processes on the tiny BERT.</summary>
[TestFixture]
[NonParallelizable]
public class DistillationCliTests
{
    private string work = "";
    private string tiny = "";

    [SetUp]
    public void CreateWorkDirectory()
    {
        work = Path.Combine(Path.GetTempPath(), "mlnet-peft-distill-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        tiny = TinyBert.WriteDirectory();
    }

    [TearDown]
    public void DeleteWorkDirectory()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        if (Directory.Exists(tiny)) Directory.Delete(tiny, recursive: true);
    }

    private CliRun Train(string data, string output, params string[] more) => CliProcess.Run(work, new[]
    {
        "text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
        "--epochs", "2", "--max-length", "16", "--batch-size", "8", "--output", Path.Combine(work, output),
    }.Concat(more).ToArray());

    /// <summary>The training loss of each epoch, from --metrics-json.</summary>
    private double[] Losses(string metricsJson)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, metricsJson)));
        var epochs = json.RootElement.EnumerateObject().First(p => p.Name.Equals("epochs", StringComparison.OrdinalIgnoreCase)).Value;
        return epochs.EnumerateArray().Select(e => e.EnumerateObject().First(p => p.Name.Equals("trainingLoss", StringComparison.OrdinalIgnoreCase)).Value.GetDouble()).ToArray();
    }

    [Test]
    public void AStudentOnTheFirstLayerDistilsFromATeacherOnTheWholeModelAndPredicts()
    {
        var rows = TinyTraining.Rows(40, 2);
        var data = Path.Combine(work, "train.tsv");
        File.WriteAllLines(data, rows.Select(r => $"{r.Sentence}\t{r.Label}"));
        var teacher = Train(data, "teacher.zip", "--metrics-json", "teacher.json");
        Assert.That(teacher.ExitCode, Is.EqualTo(0), teacher.ToString());
        var student = Train(data, "student.zip", "--model-layers", "1", "--teacher-model", Path.Combine(work, "teacher.zip"), "--metrics-json", "student.json");
        Assert.That(student.ExitCode, Is.EqualTo(0), student.ToString());
        Assert.That(student.StdOut, Does.Contain("first 1 layer"), "the report names the smaller base model");
        long Total(string file)
        {
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, file)));
            return json.RootElement.GetProperty("totalParameters").GetInt64();
        }
        Assert.That(Total("student.json"), Is.LessThan(Total("teacher.json")), "one of the tiny BERT's two layers");
        var predictions = Path.Combine(work, "predictions.tsv");
        var predict = CliProcess.Run(work, "predict", "--model", Path.Combine(work, "student.zip"), "--dataset", data, "--text-col", "0", "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        Assert.That(File.ReadAllLines(predictions), Has.Length.EqualTo(rows.Count + 1));

        var tooMany = Train(data, "x.zip", "--model-layers", "3");
        Assert.That(tooMany.ExitCode, Is.Not.EqualTo(0));
        Assert.That(tooMany.StdErr, Does.Contain("--model-layers").And.Contain("2 encoder layers"));
        Assert.That(File.Exists(Path.Combine(work, "x.zip")), Is.False);
    }

    [Test]
    public void StudentDistilsFromASavedTeacherOrFromScoreColumns()
    {
        var rows = TinyTraining.Rows(40, 1);
        var data = Path.Combine(work, "train.tsv");
        File.WriteAllLines(data, rows.Select(r => $"{r.Sentence}\t{r.Label}"));

        var teacher = Train(data, "teacher.zip");
        Assert.That(teacher.ExitCode, Is.EqualTo(0), teacher.ToString());
        var student = Train(data, "student.zip", "--teacher-model", Path.Combine(work, "teacher.zip"), "--distill-temperature", "3", "--distill-weight", "0.7");
        Assert.That(student.ExitCode, Is.EqualTo(0), student.ToString());
        Assert.That(student.StdOut, Does.Contain("Distillation").And.Contain("teacher teacher.zip, temperature 3, weight 0.7"));
        Assert.That(File.Exists(Path.Combine(work, "student.zip")));
        var copies = Train(data, "copies.zip", "--teacher-model", Path.Combine(work, "teacher.zip"), "--distill-perturbed-copies", "2");
        Assert.That(copies.ExitCode, Is.EqualTo(0), copies.ToString());
        Assert.That(copies.StdOut, Does.Contain("2 perturbed copies a row"));

        // Scores of the classes in their sorted order (negative, positive), or in columns named after the classes in any order:
        // the same scores either way, so the same model; the unnamed columns swapped are other scores.
        float Positive(int i) => rows[i].Label == "positive" ? 0.9f : 0.3f;
        var ordered = Path.Combine(work, "ordered.tsv");
        File.WriteAllLines(ordered, rows.Select((r, i) => $"{r.Sentence}\t{r.Label}\t{1 - Positive(i)}\t{Positive(i)}"));
        var named = Path.Combine(work, "named.tsv");
        File.WriteAllLines(named, new[] { "sentence\tlabel\tpositive\tnegative" }.Concat(rows.Select((r, i) => $"{r.Sentence}\t{r.Label}\t{Positive(i)}\t{1 - Positive(i)}")));

        var byOrder = Train(ordered, "by-order.zip", "--teacher-scores-col", "2,3", "--metrics-json", "by-order.json");
        Assert.That(byOrder.ExitCode, Is.EqualTo(0), byOrder.ToString());
        var byName = CliProcess.Run(work, "text-classification", "--dataset", named, "--has-header", "--label-col", "label", "--text-col", "sentence", "--model", tiny,
            "--epochs", "2", "--max-length", "16", "--batch-size", "8", "--teacher-scores-col", "positive,negative", "--output", Path.Combine(work, "by-name.zip"),
            "--metrics-json", "by-name.json");
        Assert.That(byName.ExitCode, Is.EqualTo(0), byName.ToString());
        var swapped = Train(ordered, "swapped.zip", "--teacher-scores-col", "3,2", "--metrics-json", "swapped.json");
        Assert.That(swapped.ExitCode, Is.EqualTo(0), swapped.ToString());
        Assert.That(Losses("by-name.json"), Is.EqualTo(Losses("by-order.json")).Within(1e-9), "the named columns are matched to their classes");
        Assert.That(Losses("swapped.json")[0], Is.Not.EqualTo(Losses("by-order.json")[0]).Within(1e-6), "swapped scores teach otherwise");
    }

    [Test]
    public void TeacherMistakesAreReportedBeforeTraining()
    {
        var rows = TinyTraining.Rows(40, 1);
        var data = Path.Combine(work, "train.tsv");
        File.WriteAllLines(data, rows.Select(r => $"{r.Sentence}\t{r.Label}\t0.5\t0.5"));

        var both = Train(data, "x.zip", "--teacher-model", data, "--teacher-scores-col", "2,3");
        Assert.That(both.ExitCode, Is.EqualTo(2), both.ToString());
        Assert.That(both.StdErr, Does.Contain("--teacher-model or --teacher-scores-col"));
        var noTeacher = Train(data, "x.zip", "--distill-weight", "0.3");
        Assert.That(noTeacher.ExitCode, Is.EqualTo(2), noTeacher.ToString());
        Assert.That(noTeacher.StdErr, Does.Contain("--distill-weight needs a teacher"));
        var badWeight = Train(data, "x.zip", "--teacher-scores-col", "2,3", "--distill-weight", "1.5");
        Assert.That(badWeight.ExitCode, Is.EqualTo(2), badWeight.ToString());
        Assert.That(badWeight.StdErr, Does.Contain("--distill-weight must be in [0, 1]"));
        var copiesWithScores = Train(data, "x.zip", "--teacher-scores-col", "2,3", "--distill-perturbed-copies", "2");
        Assert.That(copiesWithScores.ExitCode, Is.EqualTo(2), copiesWithScores.ToString());
        Assert.That(copiesWithScores.StdErr, Does.Contain("--distill-perturbed-copies needs --teacher-model"));

        var images = CliProcess.Run(work, "image-classification", "--dataset", work, "--output", Path.Combine(work, "x.zip"), "--distill-temperature", "3");
        Assert.That(images.ExitCode, Is.EqualTo(2), images.ToString());
        Assert.That(images.StdErr, Does.Contain("--distill-temperature needs a teacher: --teacher-model."));

        // A teacher of sentence pairs reads a column the single-text data does not have.
        var pairs = Path.Combine(work, "pairs.tsv");
        File.WriteAllLines(pairs, rows.Select(r => $"{r.Sentence}\t{r.Label}\tit was"));
        var pairTeacher = Train(pairs, "pairs.zip", "--text2-col", "2");
        Assert.That(pairTeacher.ExitCode, Is.EqualTo(0), pairTeacher.ToString());
        var wrongTask = Train(data, "x.zip", "--teacher-model", Path.Combine(work, "pairs.zip"));
        Assert.That(wrongTask.ExitCode, Is.EqualTo(1), wrongTask.ToString());
        Assert.That(wrongTask.StdErr, Does.Contain("--teacher-model").And.Contain("'Sentence2'"));

        // Scores that are not probabilities name the row and the way out.
        File.WriteAllLines(data, rows.Select(r => $"{r.Sentence}\t{r.Label}\t2.5\t-1"));
        var logits = Train(data, "x.zip", "--teacher-scores-col", "2,3");
        Assert.That(logits.ExitCode, Is.EqualTo(1), logits.ToString());
        Assert.That(logits.StdErr, Does.Contain("not a probability").And.Contain("--teacher-scores-are-logits"));
        Assert.That(Train(data, "x.zip", "--teacher-scores-col", "2,3", "--teacher-scores-are-logits").ExitCode, Is.EqualTo(0));
        Assert.That(File.Exists(Path.Combine(work, "x.zip")));
    }
}
