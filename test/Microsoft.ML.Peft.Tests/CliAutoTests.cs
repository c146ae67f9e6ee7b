using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// <c>mlnet-peft auto</c> on every task, on real rows with a tiny random BERT (text tasks) or the real ResNet-18 (images),
/// a few trials each: the search finds and saves a model within its budget, writes the metrics and the leaderboard,
/// and the model predicts; and its bad input.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CliAutoTests
{
    private string workDir = null!;
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    [SetUp]
    public void SetUp()
    {
        workDir = Path.Combine(Path.GetTempPath(), $"peft-cli-auto-{Guid.NewGuid():N}");
        Directory.CreateDirectory(workDir);
    }

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(workDir)) Directory.Delete(workDir, recursive: true);
    }

    private string Head(string source, int rows, string name)
    {
        var path = Path.Combine(workDir, name);
        File.WriteAllLines(path, File.ReadLines(source).Take(rows + 1));
        return path;
    }

    private static string Shared(params string[] parts) => Path.Combine(new[] { TestData.SharedData }.Concat(parts).ToArray());

    private CliRun Auto(int budget, params string[] arguments)
    {
        var all = new[] { "auto", "--train-time", budget.ToString(System.Globalization.CultureInfo.InvariantCulture), "--output", Path.Combine(workDir, "model.zip"),
            "--metrics-json", Path.Combine(workDir, "m.json") }.Concat(arguments).ToArray();
        var run = CliProcess.Run(workDir, all);
        TestContext.Out.WriteLine(run.StdOut);
        return run;
    }

    /// <summary>Checks the run's metrics JSON: the keys, the leaderboard, the time within the budget's 10%.</summary>
    private JsonElement CheckSearch(CliRun run, int budget, int trials, params string[] metricKeys)
    {
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("Leaderboard"));
        var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(workDir, "m.json"))).RootElement;
        foreach (var key in metricKeys.Concat(new[] { "trainSeconds", "trainableParameters", "totalParameters", "modelBytes", "validationMetric", "best" }))
            Assert.That(json.TryGetProperty(key, out _), Is.True, $"metrics JSON key {key}");
        Assert.That(json.GetProperty("trainSeconds").GetDouble(), Is.LessThanOrEqualTo(budget * 1.1));
        Assert.That(json.GetProperty("trials").GetInt32(), Is.EqualTo(trials));
        var board = json.GetProperty("leaderboard").EnumerateArray().ToList();
        Assert.That(board, Has.Count.EqualTo(trials));
        var metrics = board.Where(t => t.GetProperty("metric").ValueKind == JsonValueKind.Number).Select(t => t.GetProperty("metric").GetDouble()).ToList();
        Assert.That(metrics, Is.Ordered.Descending, "the leaderboard is ranked best first");
        Assert.That(json.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(Path.Combine(workDir, "model.zip")).Length));
        Assert.That(File.Exists(Path.Combine(workDir, "model.trials.jsonl")), Is.True, "the trial log sits beside the model");
        return json;
    }

    [Test]
    public void TextClassificationSearchSavesAModelThatPredicts()
    {
        var data = Head(Shared("sst2", "train.tsv"), 160, "train.tsv");
        var run = Auto(60, "--task", "text-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence",
            "--model", tinyBert, "--max-lengths", "16,32", "--max-trials", "3", "--methods", "lora,bitfit", "--report", Path.Combine(workDir, "report.html"),
            "--generate-code", Path.Combine(workDir, "app"));
        var json = CheckSearch(run, 60, 3, "accuracy", "macroF1", "logLoss");
        // The consumption project (built and run against the packed library by CodeGenerationCliTests) is written too.
        Assert.That(Directory.GetFiles(Path.Combine(workDir, "app"), "*.csproj"), Has.Length.EqualTo(1));
        Assert.That(File.ReadAllText(Path.Combine(workDir, "app", "Program.cs")), Does.Contain("class ModelInput").And.Contain("Sentence1"));
        var page = File.ReadAllText(Path.Combine(workDir, "report.html"));
        Assert.That(page, Does.Contain("Leaderboard").And.Contain("data:image/png;base64,"));
        Assert.That(Directory.GetFiles(Path.Combine(workDir, "report-charts"), "*.png"), Is.Not.Empty);
        Assert.That(json.GetProperty("metric").GetString(), Is.EqualTo("accuracy"));
        var predictions = Path.Combine(workDir, "p.tsv");
        var predict = CliProcess.Run(workDir, "predict", "--model", Path.Combine(workDir, "model.zip"), "--dataset", data, "--has-header", "--text-col", "sentence", "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        Assert.That(File.ReadAllLines(predictions).Skip(1).Select(l => l.Split('\t')[1]).Distinct(), Is.SubsetOf(new[] { "0", "1" }));
    }

    [Test]
    public void PairClassificationSearch()
    {
        var data = Head(Shared("mrpc", "train.tsv"), 120, "train.tsv");
        var run = Auto(60, "--task", "pair-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence1",
            "--text2-col", "sentence2", "--model", tinyBert, "--max-lengths", "16,32", "--max-trials", "2", "--methods", "lora",
            "--validation-fraction", "0.3", "--events", Path.Combine(workDir, "events.jsonl"));
        var json = CheckSearch(run, 60, 2, "accuracy", "macroF1", "logLoss");

        // The events file (for the web app) follows the search: one search event, each trial with its epochs and its end, then done.
        var events = File.ReadAllLines(Path.Combine(workDir, "events.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var types = events.Select(e => e.GetProperty("type").GetString()).ToList();
        Assert.That(types[0], Is.EqualTo("search"));
        Assert.That(events[0].GetProperty("budgetSeconds").GetInt32(), Is.EqualTo(60));
        Assert.That(events[0].GetProperty("metric").GetString(), Is.EqualTo("accuracy"));
        Assert.That(types[^1], Is.EqualTo("done"));
        Assert.That(types.Count(t => t == "trial"), Is.EqualTo(2));
        Assert.That(types.Count(t => t == "trialEnd"), Is.EqualTo(2));
        Assert.That(events.Select(e => e.GetProperty("elapsed").GetDouble()), Is.Ordered.Ascending);
        var epochs = events.Where(e => e.GetProperty("type").GetString() == "epoch").ToList();
        Assert.That(epochs, Is.Not.Empty);
        Assert.That(epochs.Select(e => e.GetProperty("loss").GetDouble()), Has.All.GreaterThan(0));
        // Each epoch belongs to the trial started last.
        int trial = 0;
        foreach (var e in events)
        {
            if (e.GetProperty("type").GetString() == "trial") trial = e.GetProperty("trial").GetInt32();
            if (e.GetProperty("type").GetString() is "epoch" or "trialEnd") Assert.That(e.GetProperty("trial").GetInt32(), Is.EqualTo(trial));
        }
        var done = events[^1];
        Assert.That(done.GetProperty("metrics").GetProperty("accuracy").GetDouble(), Is.EqualTo(json.GetProperty("accuracy").GetDouble()).Within(1e-5));
        Assert.That(done.GetProperty("bestTrial").GetInt32(), Is.EqualTo(json.GetProperty("best").GetProperty("trial").GetInt32()));
    }

    [Test]
    public void AValidationFractionOutsideZeroToOneIsRefused()
    {
        var data = Head(Shared("mrpc", "train.tsv"), 20, "train.tsv");
        var run = Auto(60, "--task", "pair-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence1",
            "--text2-col", "sentence2", "--model", tinyBert, "--validation-fraction", "1.5");
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--validation-fraction"));
    }

    [Test]
    public void SentenceSimilaritySearch()
    {
        var data = Head(Shared("stsb", "train.tsv"), 120, "train.tsv");
        var run = Auto(60, "--task", "sentence-similarity", "--dataset", data, "--has-header", "--label-col", "score", "--text-col", "sentence1",
            "--text2-col", "sentence2", "--model", tinyBert, "--max-lengths", "16,32", "--max-trials", "2", "--methods", "lora,ia3");
        var json = CheckSearch(run, 60, 2, "spearman", "pearson");
        Assert.That(json.GetProperty("metric").GetString(), Is.EqualTo("spearman"));
    }

    [Test]
    public void NerSearch()
    {
        var run = Auto(60, "--task", "ner", "--dataset", Shared("conll2003", "train.txt"), "--max-rows", "80", "--model", tinyBert, "--max-lengths", "16,32",
            "--max-trials", "2", "--methods", "lora", "--report", Path.Combine(workDir, "report.html"));
        var json = CheckSearch(run, 60, 2, "f1", "precision", "recall");
        Assert.That(File.ReadAllText(Path.Combine(workDir, "report.html")), Does.Contain("PER").And.Contain("LOC"));
        Assert.That(json.GetProperty("metric").GetString(), Is.EqualTo("entity F1"));
    }

    [Test]
    public void ImageClassificationSearch()
    {
        var (pixels, labels) = Samples.FashionMnist.Read(Samples.FashionMnist.DefaultDirectory, train: true, maxCount: 120);
        var images = Path.Combine(workDir, "images");
        Samples.FashionMnist.WriteClassFolders(images, Enumerable.Range(0, 120).ToList(), pixels, labels);
        var run = Auto(90, "--task", "image-classification", "--dataset", images, "--max-trials", "2", "--methods", "lora,bitfit", "--max-epochs", "1",
            "--report", Path.Combine(workDir, "report.html"));
        CheckSearch(run, 90, 2, "accuracy", "macroF1", "logLoss");
        // The hardest test images are shown as thumbnails.
        Assert.That(File.ReadAllText(Path.Combine(workDir, "report.html")), Does.Contain("Hardest").And.Contain("<img class=\"thumb"));
    }

    [Test]
    public void ABudgetTooSmallForOneTrialGivesTheMinimum()
    {
        var data = Head(Shared("sst2", "train.tsv"), 40, "train.tsv");
        var tiny = Auto(5, "--task", "text-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence");
        Assert.That(tiny.ExitCode, Is.EqualTo(2), tiny.ToString());
        Assert.That(tiny.StdErr, Does.Contain("--train-time").And.Contain("at least 10 s"));
        // 20,000 rows of SST-2 need more than 10 s for one epoch with MiniLM: the measured minimum is given.
        var large = Head(Shared("sst2", "train.tsv"), 20_000, "large.tsv");
        var measured = Auto(10, "--task", "text-classification", "--dataset", large, "--has-header", "--label-col", "label", "--text-col", "sentence");
        Assert.That(measured.ExitCode, Is.EqualTo(2), measured.ToString());
        Assert.That(measured.StdErr, Does.Match(@"--train-time: .*too small for one trial.*give at least \d+ s"));
        Assert.That(File.Exists(Path.Combine(workDir, "model.zip")), Is.False);
    }

    [Test]
    public void ColumnsThatDoNotMatchTheDataAreNamed()
    {
        var data = Head(Shared("sst2", "train.tsv"), 40, "train.tsv");
        var run = Auto(60, "--task", "text-classification", "--dataset", data, "--has-header", "--label-col", "stars", "--text-col", "sentence", "--model", tinyBert);
        Assert.That(run.ExitCode, Is.Not.EqualTo(0), run.ToString());
        Assert.That(run.StdErr, Does.Contain("'stars'").And.Contain("--label-col"));
        var missing = Auto(60, "--task", "sentence-similarity", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence", "--model", tinyBert);
        Assert.That(missing.ExitCode, Is.EqualTo(2), missing.ToString());
        Assert.That(missing.StdErr, Does.Contain("--text2-col"));
    }

    [Test]
    public void UnwritableReportIsRefusedBeforeTheSearch()
    {
        var data = Head(Shared("sst2", "train.tsv"), 40, "train.tsv");
        var blocker = Path.Combine(workDir, "file");
        File.WriteAllText(blocker, "");
        var run = Auto(60, "--task", "text-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence",
            "--model", tinyBert, "--max-lengths", "16,32", "--report", Path.Combine(blocker, "report.html"));
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--report").And.Contain("cannot be written"));
        Assert.That(run.StdOut, Does.Not.Contain("Trial 1"));
    }

    [Test]
    public void ResumeContinuesTheLogAndRefusesADamagedOne()
    {
        var data = Head(Shared("sst2", "train.tsv"), 80, "train.tsv");
        string[] args = { "--task", "text-classification", "--dataset", data, "--has-header", "--label-col", "label", "--text-col", "sentence",
            "--model", tinyBert, "--max-lengths", "16,32", "--methods", "lora,ia3" };
        var first = Auto(60, args.Concat(new[] { "--max-trials", "2" }).ToArray());
        Assert.That(first.ExitCode, Is.EqualTo(0), first.ToString());
        var log = Path.Combine(workDir, "model.trials.jsonl");
        var logged = File.ReadAllLines(log);
        var resumed = Auto(60, args.Concat(new[] { "--max-trials", "3", "--resume" }).ToArray());
        Assert.That(resumed.ExitCode, Is.EqualTo(0), resumed.ToString());
        Assert.That(resumed.StdOut, Does.Contain("Trial 3").And.Not.Contain("Trial 1:"));
        Assert.That(File.ReadAllLines(log).Take(3), Is.EqualTo(logged));

        File.WriteAllLines(log, new[] { logged[0], "{\"number\": 1,", logged[2] });
        var damaged = Auto(60, args.Concat(new[] { "--max-trials", "4", "--resume" }).ToArray());
        Assert.That(damaged.ExitCode, Is.EqualTo(1), damaged.ToString());
        Assert.That(damaged.StdErr, Does.Contain("damaged at line 2"));
        var other = Auto(60, args.Concat(new[] { "--max-trials", "4", "--resume", "--seed", "9" }).ToArray());
        Assert.That(other.StdErr, Does.Contain("damaged").Or.Contain("another search"));
    }
}
