using Microsoft.ML.Data;
using Microsoft.ML.Peft.AutoML;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The automated search's parts (sampler, successive halving, trial log) and whole runs on a tiny random BERT.</summary>
[TestFixture]
[NonParallelizable]
public class AutoMLTests
{
    private string tinyBert = null!;
    private readonly List<string> temporary = new();

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void CleanUp()
    {
        Directory.Delete(tinyBert, recursive: true);
        foreach (var path in temporary)
            if (File.Exists(path)) File.Delete(path);
    }

    private string TempFile(string extension)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peft-automl-{Guid.NewGuid():N}{extension}");
        temporary.Add(path);
        return path;
    }

    /// <summary>Sentences of the tiny vocabulary whose label is the adjective's sentiment.</summary>
    private static List<SentenceRow> Sentences(int count, int seed)
    {
        var random = new Random(seed);
        string[] good = { "good", "great", "fun" }, bad = { "bad", "awful", "boring" }, nouns = { "movie", "film", "plot", "actor" };
        return Enumerable.Range(0, count).Select(i =>
        {
            bool positive = random.Next(2) == 1;
            var adjective = (positive ? good : bad)[random.Next(3)];
            return new SentenceRow { Sentence = $"the {nouns[random.Next(4)]} was very {adjective}", Label = positive ? "positive" : "negative" };
        }).ToList();
    }

    private PeftSearchTask TinyTask(string sentenceColumn = nameof(SentenceRow.Sentence)) =>
        PeftSearchTasks.TextClassification(sentence1ColumnName: sentenceColumn, configure: o =>
        {
            o.BaseModel = BaseModelSource.FromHuggingFace(tinyBert);
            o.BatchSize = 16;
        });

    private static PeftExperimentOptions TinyOptions(int maxTrials, string? log = null, bool resume = false) => new()
    {
        TrainTimeSeconds = 300,
        MaxTrials = maxTrials,
        TrialLogPath = log,
        Resume = resume,
        StartupTrials = 2,
        SearchSpace = new PeftSearchSpace { Methods = new[] { "lora", "ia3", "bitfit" }, MaxEpochs = 2, InputSizes = new[] { 16, 24 } },
    };

    [Test]
    public void SamplerIsDeterministicAndFollowsTheGoodTrials()
    {
        var dims = new[] { new SearchDimension("choice", 4), new SearchDimension("x", 0, 0, 10) };
        var sampler = new TpeSampler(dims, startupTrials: 2);
        // The objective rewards x near 8 and choices 1 and 2: the best quarter of these 24 trials has x from 6.6 to 8.5
        // and choices 1 and 2 only (three each); the other 18 hold three of each of those and all twelve of 0 and 3.
        var history = new List<(double[] Point, double Score)>();
        for (int i = 0; i < 24; i++)
        {
            var p = new[] { (double)(i % 4), (i * 37 % 100) / 10.0 };
            history.Add((p, -Math.Pow(p[1] - 8, 2) - (p[0] == 2 ? 0 : 1)));
        }
        Assert.That(sampler.Sample(history, new Random(5)), Is.EqualTo(sampler.Sample(history, new Random(5))));
        var samples = Enumerable.Range(0, 200).Select(s => sampler.Sample(history, new Random(s))).ToList();
        // Uniform sampling would give choices 1 and 2 half of the time and x of 6 or more 40% of the time.
        Assert.That(samples.Count(p => p[0] is 1 or 2), Is.GreaterThan(160));
        Assert.That(samples.Count(p => p[1] >= 6), Is.GreaterThan(140));
        Assert.That(samples.All(p => p[1] >= 0 && p[1] <= 10), Is.True);
    }

    [Test]
    public void SamplerStartsRandom()
    {
        var sampler = new TpeSampler(new[] { new SearchDimension("choice", 3) }, startupTrials: 5);
        var history = new List<(double[] Point, double Score)> { (new[] { 0.0 }, 1) };
        var counts = new int[3];
        for (int s = 0; s < 300; s++) counts[(int)sampler.Sample(history, new Random(s))[0]]++;
        Assert.That(counts, Has.All.GreaterThan(70));
    }

    [Test]
    public void SuccessiveHalvingKeepsTheTopThirdAtEachRung()
    {
        var halving = new SuccessiveHalving(reduction: 3);
        Assert.That(new[] { 1, 3, 9, 27 }.All(halving.IsRung), Is.True);
        Assert.That(new[] { 2, 4, 6, 10 }.Any(halving.IsRung), Is.False);
        Assert.That(halving.Report(1, 0.80), Is.True);   // alone at the rung
        Assert.That(halving.Report(1, 0.70), Is.False);  // 2 at the rung: keep 1, and 0.80 is better
        Assert.That(halving.Report(1, 0.90), Is.True);   // 3: keep 1, the best
        Assert.That(halving.Report(1, 0.85), Is.True);   // 4: keep 2, only 0.90 is better
        Assert.That(halving.Report(1, 0.75), Is.False);  // 5: keep 2, three are better
        Assert.That(halving.Report(2, 0.10), Is.True);   // not a rung
        Assert.That(halving.Report(3, 0.60), Is.True);   // first at rung 3
    }

    [Test]
    public void SearchFindsAModelLogsEveryTrialAndRanksThem()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(160, seed: 1));
        var log = TempFile(".jsonl");
        var experiment = new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 5, log));
        var started = new List<int>();
        experiment.TrialStarted += (_, t) => started.Add(t.Number);
        var result = experiment.Run(train);
        Assert.That(result.Trials.Select(t => t.Number), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        Assert.That(started, Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        Assert.That(File.ReadAllLines(log), Has.Length.EqualTo(6));
        Assert.That(result.BestTrial.Status, Is.EqualTo(PeftTrialStatus.Completed));
        var ranked = result.Leaderboard();
        Assert.That(ranked[0].Metric, Is.EqualTo(result.Trials.Where(t => t.Status == PeftTrialStatus.Completed).Max(t => t.Metric)));
        Assert.That(result.Trials.Select(t => t.Parameters.Method).Distinct().Count(), Is.GreaterThan(1), "the sampler explores methods");
        Assert.That(result.Refitted, Is.True);
        // The final model maps text to the label's values.
        var scored = result.Model.Transform(mlContext.Data.LoadFromEnumerable(Sentences(40, seed: 2)));
        var predicted = scored.GetColumn<string>("PredictedLabel").ToList();
        Assert.That(predicted, Has.All.AnyOf("positive", "negative"));
        (result.Model as IDisposable)?.Dispose();
    }

    [Test]
    public void ResumedSearchReplaysTheLogAndSamplesWhatAnUninterruptedOneWould()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(120, seed: 3));
        var whole = new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 4)).Run(train);
        var log = TempFile(".jsonl");
        var first = new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 2, log)).Run(train);
        var resumed = new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 4, log, resume: true)).Run(train);
        Assert.That(resumed.Trials.Take(2).Select(t => t.Parameters), Is.EqualTo(first.Trials.Select(t => t.Parameters)));
        Assert.That(resumed.Trials.Select(t => t.Parameters), Is.EqualTo(whole.Trials.Select(t => t.Parameters)));
        Assert.That(resumed.Trials.Select(t => t.Metric), Is.EqualTo(whole.Trials.Select(t => t.Metric)).Within(1e-9));
        Assert.That(File.ReadAllLines(log), Has.Length.EqualTo(5));
        foreach (var r in new[] { whole, first, resumed }) (r.Model as IDisposable)?.Dispose();
    }

    [Test]
    public void DamagedOrForeignTrialLogsAreRefusedWithTheLine()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(80, seed: 4));
        var log = TempFile(".jsonl");
        (new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 2, log)).Run(train).Model as IDisposable)?.Dispose();
        var lines = File.ReadAllLines(log);

        File.WriteAllLines(log, new[] { lines[0], "{\"number\": 1, \"parameters\": ", lines[2] });
        var damaged = Assert.Throws<InvalidDataException>(() => new PeftExperiment(mlContext, TinyTask(), TinyOptions(3, log, resume: true)).Run(train))!;
        Assert.That(damaged.Message, Does.Contain(log).And.Contain("line 2"));

        File.WriteAllLines(log, lines);
        var other = TinyOptions(3, log, resume: true);
        other.Seed = 2;
        var foreign = Assert.Throws<InvalidDataException>(() => new PeftExperiment(mlContext, TinyTask(), other).Run(train))!;
        Assert.That(foreign.Message, Does.Contain("another search"));

        File.WriteAllText(log, "sentence\tlabel\nhello\t1\n");
        var notALog = Assert.Throws<InvalidDataException>(() => new PeftExperiment(mlContext, TinyTask(), TinyOptions(3, log, resume: true)).Run(train))!;
        Assert.That(notALog.Message, Does.Contain("not a trial log"));

        // A last line cut short by a crash is dropped, and its trial runs again.
        File.WriteAllText(log, string.Join("\n", lines) + "\n" + lines[1][..20]);
        var resumed = new PeftExperiment(mlContext, TinyTask(), TinyOptions(3, log, resume: true)).Run(train);
        Assert.That(resumed.Trials, Has.Count.EqualTo(3));
        Assert.That(File.ReadAllLines(log), Has.Length.EqualTo(4));
        (resumed.Model as IDisposable)?.Dispose();
    }

    [Test]
    public void TooSmallABudgetSaysWhatIsNeeded()
    {
        var mlContext = new MLContext(seed: 1);
        var tiny = Assert.Throws<ArgumentOutOfRangeException>(() => new PeftExperiment(mlContext, TinyTask(), new PeftExperimentOptions { TrainTimeSeconds = 3 }))!;
        Assert.That(tiny.Message, Does.Contain("at least 10 s"));
        // 60,000 rows cannot be trained on in 10 s: the measured minimum is given.
        var train = mlContext.Data.LoadFromEnumerable(Sentences(60_000, seed: 5));
        var options = TinyOptions(maxTrials: 3);
        options.TrainTimeSeconds = 10;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PeftExperiment(mlContext, TinyTask(), options).Run(train))!;
        Assert.That(e.Message, Does.Match(@"too small for one trial on \d\d,\d\d\d training rows").And.Match(@"give at least \d+ s"));
    }

    [Test]
    public void ColumnsThatDoNotMatchTheTaskAreNamed()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(40, seed: 6));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PeftExperiment(mlContext, TinyTask("Text"), TinyOptions(2)).Run(train))!;
        Assert.That(e.Message, Does.Contain("'Text'"));
    }

    [Test]
    public void FailingTrialsAreReportedAndSkipped()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(80, seed: 7));
        var options = TinyOptions(maxTrials: 6);
        // The tiny BERT has 40 positions: trials at 64 fail when they load the base model.
        options.SearchSpace.InputSizes = new[] { 16, 64 };
        var result = new PeftExperiment(mlContext, TinyTask(), options).Run(train);
        var failed = result.Trials.Where(t => t.Status == PeftTrialStatus.Failed).ToList();
        Assert.That(failed, Is.Not.Empty);
        Assert.That(failed.All(t => t.Parameters.InputSize == 64 && t.Error!.Contains("MaxSequenceLength")), Is.True);
        Assert.That(result.BestTrial.Parameters.InputSize, Is.EqualTo(16));
        (result.Model as IDisposable)?.Dispose();
    }

    [Test]
    public void TheFirstTrialIsTheDefaultRecipe()
    {
        var mlContext = new MLContext(seed: 1);
        var train = mlContext.Data.LoadFromEnumerable(Sentences(80, seed: 8));
        var result = new PeftExperiment(mlContext, TinyTask(), TinyOptions(maxTrials: 1)).Run(train);
        // The trainer's defaults (README): LoRA r=8, alpha 16 on every linear layer at 2e-3; the space's most epochs (2)
        // and, of its sequence lengths 16 and 24, the one nearest the default 128.
        Assert.That(result.Trials[0].Parameters, Is.EqualTo(new PeftTrialParameters("lora", 8, 16f, "all-linear", 2e-3f, 2, 24)));
        (result.Model as IDisposable)?.Dispose();

        // Without it, trial 1 is the sampler's.
        var options = TinyOptions(maxTrials: 1);
        options.StartWithDefaults = false;
        options.SearchSpace.Methods = new[] { "ia3", "bitfit" };
        var random = new PeftExperiment(mlContext, TinyTask(), options).Run(train);
        Assert.That(random.Trials[0].Parameters.Method, Is.AnyOf("ia3", "bitfit"));
        (random.Model as IDisposable)?.Dispose();
    }

    [Test]
    public void TheFinalTrainingExtendsABestTrialThatWasStillImproving()
    {
        var experiment = new PeftExperiment(new MLContext(seed: 1), TinyTask(), TinyOptions(maxTrials: 1));
        static EpochMetrics Epoch(int epoch, double accuracy) => new(epoch, 3, 0.5, 100, "accuracy", accuracy, false);
        var parameters = new PeftTrialParameters("lora", 8, 16f, "all-linear", 2e-3f, 3, 128);
        var rising = new PeftTrialResult(1, parameters, PeftTrialStatus.Completed, 0.85, 100, new[] { Epoch(1, 0.80), Epoch(2, 0.83), Epoch(3, 0.85) }, null);
        // 30 s an epoch and 5 s of loading: (200 - 5) / 30 = 6.5, so 6 epochs fit.
        Assert.That(experiment.FinalEpochs(rising, 30, 5, 200, out var why), Is.EqualTo(6));
        Assert.That(why, Does.Contain("still rose"));
        // Capped by MaxFinalEpochs (10), and never fewer than the best trial's epochs even when little time is left.
        Assert.That(experiment.FinalEpochs(rising, 1, 5, 200, out _), Is.EqualTo(10));
        Assert.That(experiment.FinalEpochs(rising, 30, 5, 20, out _), Is.EqualTo(3));
        // A trial whose best epoch was not its last: its best epoch count, whatever the time.
        var peaked = rising with { Epochs = new[] { Epoch(1, 0.80), Epoch(2, 0.86), Epoch(3, 0.85) } };
        Assert.That(experiment.FinalEpochs(peaked, 30, 5, 1000, out why), Is.EqualTo(2));
        Assert.That(why, Does.Contain("fell after it"));
    }

    [Test]
    public void BadFinalTrainingOptionsAreNamed()
    {
        var share = Assert.Throws<ArgumentOutOfRangeException>(() => new PeftExperiment(new MLContext(1), TinyTask(), new PeftExperimentOptions { FinalTrainingShare = 1 }))!;
        Assert.That(share.ParamName, Is.EqualTo(nameof(PeftExperimentOptions.FinalTrainingShare)));
        var epochs = Assert.Throws<ArgumentOutOfRangeException>(() => new PeftExperiment(new MLContext(1), TinyTask(), new PeftExperimentOptions { MaxFinalEpochs = 0 }))!;
        Assert.That(epochs.ParamName, Is.EqualTo(nameof(PeftExperimentOptions.MaxFinalEpochs)));
    }

    [Test]
    public void UnknownMetricOrMethodIsRefused()
    {
        var mlContext = new MLContext(seed: 1);
        var metric = Assert.Throws<ArgumentException>(() => new PeftExperiment(mlContext, TinyTask(), new PeftExperimentOptions { MetricName = "rmse" }))!;
        Assert.That(metric.Message, Does.Contain("accuracy, macro-accuracy, log-loss"));
        var method = Assert.Throws<ArgumentException>(() => new PeftExperiment(mlContext, PeftSearchTasks.ImageClassification(),
            new PeftExperimentOptions { SearchSpace = new PeftSearchSpace { Methods = new[] { "prefix" } } }))!;
        Assert.That(method.Message, Does.Contain("not a PEFT method for images"));
    }
}
