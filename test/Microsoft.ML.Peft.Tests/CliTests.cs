using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The <c>mlnet-peft</c> command line, run as separate processes on a small slice of SST-2.</summary>
[TestFixture]
[NonParallelizable]
public partial class CliTests
{
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromMinutes(20);
    private string workDir = "";

    [SetUp]
    public void CreateWorkDir()
    {
        workDir = Path.Combine(Path.GetTempPath(), "mlnet-peft-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(workDir);
    }

    [TearDown]
    public void DeleteWorkDir()
    {
        if (Directory.Exists(workDir)) Directory.Delete(workDir, recursive: true);
    }

    [Test]
    public void TrainsEvaluatesSavesAndPredictsInFreshProcesses()
    {
        // 100 test rows from the SST-2 dev set, with its header.
        var testRows = TestData.ReadSst2(TestData.Sst2Dev, skip: 0, take: 100);
        var testFile = Path.Combine(workDir, "test.tsv");
        File.WriteAllLines(testFile, testRows.Select(r => $"{r.Sentence}\t{r.Label}").Prepend("sentence\tlabel"));
        var model = Path.Combine(workDir, "model.zip");
        var metricsFile = Path.Combine(workDir, "metrics.json");

        var train = RunCli("text-classification",
            "--dataset", TestData.Sst2Train, "--has-header", "--label-col", "label", "--text-col", "sentence",
            "--test-dataset", testFile, "--max-rows", "200", "--epochs", "1", "--max-length", "32", "--batch-size", "16",
            "--output", model, "--metrics-json", metricsFile);
        TestContext.Out.WriteLine(train.StdOut);
        Assert.That(train.ExitCode, Is.EqualTo(0), train.ToString());
        Assert.That(train.StdOut, Does.Contain("Epoch 1/1"), "the trainer's progress is shown");

        using (var json = JsonDocument.Parse(File.ReadAllText(metricsFile)))
        {
            var root = json.RootElement;
            foreach (var key in new[] { "accuracy", "macroF1", "logLoss", "trainSeconds", "trainableParameters", "totalParameters", "modelBytes" })
                Assert.That(root.TryGetProperty(key, out _), Is.True, $"metrics JSON lacks '{key}': {root}");
            Assert.That(root.GetProperty("accuracy").GetDouble(), Is.InRange(0.0, 1.0));
            Assert.That(root.GetProperty("macroF1").GetDouble(), Is.InRange(0.0, 1.0));
            var logLoss = root.GetProperty("logLoss").GetDouble();
            Assert.That(logLoss, Is.GreaterThan(0.0).And.LessThan(10.0));
            Assert.That(root.GetProperty("trainSeconds").GetDouble(), Is.GreaterThan(0.0));
            var trainable = root.GetProperty("trainableParameters").GetInt64();
            var total = root.GetProperty("totalParameters").GetInt64();
            Assert.That(trainable, Is.GreaterThan(0).And.LessThan(total));
            Assert.That(root.GetProperty("method").GetString(), Is.EqualTo("LORA"));
            var epochs = root.GetProperty("epochs");
            Assert.That(epochs.GetArrayLength(), Is.EqualTo(1), "one entry per epoch");
            Assert.That(epochs[0].GetProperty("epoch").GetInt32(), Is.EqualTo(1));
            Assert.That(epochs[0].GetProperty("trainingLoss").GetDouble(), Is.GreaterThan(0.0));
            var modelBytes = root.GetProperty("modelBytes").GetInt64();
            Assert.That(modelBytes, Is.GreaterThan(0).And.EqualTo(new FileInfo(model).Length));
        }

        // Prediction in a new process, on a file with the text only (no header, no label column).
        var input = Path.Combine(workDir, "input.tsv");
        File.WriteAllLines(input, testRows.Select(r => r.Sentence));
        var predictions = Path.Combine(workDir, "predictions.tsv");
        var predict = RunCli("predict", "--model", model, "--dataset", input, "--text-col", "0", "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());

        var lines = File.ReadAllLines(predictions);
        Assert.That(lines, Has.Length.EqualTo(testRows.Count + 1), "a header and one line per input row");
        var header = lines[0].Split('\t');
        Assert.That(header[1], Is.EqualTo("PredictedLabel"));
        var classes = header.Skip(2).ToList();
        Assert.That(classes, Is.EquivalentTo(new[] { "0", "1" }), "one probability column per class, named by its label");
        for (int i = 1; i < lines.Length; i++)
        {
            var fields = lines[i].Split('\t');
            Assert.That(fields, Has.Length.EqualTo(header.Length), lines[i]);
            Assert.That(fields[0], Is.EqualTo(testRows[i - 1].Sentence), "rows keep the input order");
            var probabilities = fields.Skip(2).Select(f => double.Parse(f, CultureInfo.InvariantCulture)).ToList();
            Assert.That(probabilities, Is.All.InRange(0.0, 1.0));
            Assert.That(probabilities.Sum(), Is.EqualTo(1.0).Within(1e-4), lines[i]);
            Assert.That(fields[1], Is.EqualTo(classes[probabilities.IndexOf(probabilities.Max())]), "the predicted label is the most probable class");
        }
    }

    [Test]
    public void MissingDatasetFileFailsWithExitCodeOneAndNamesTheFile()
    {
        var missing = Path.Combine(workDir, "no-such-file.tsv");
        var result = RunCli("text-classification", "--dataset", missing, "--label-col", "1", "--text-col", "0",
            "--output", Path.Combine(workDir, "model.zip"));
        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.StdErr, Does.Contain("error:").And.Contain(missing));
        Assert.That(result.StdErr, Does.Not.Contain("   at "), "no stack trace without --verbose");
        Assert.That(File.Exists(Path.Combine(workDir, "model.zip")), Is.False);
    }

    [TestCase("--no-such-option", "x", "--no-such-option")]
    [TestCase("--method", "nope", "nope")]
    [TestCase("--rank", "0", "--rank")]
    [TestCase("--model-layers", "0", "--model-layers")]
    public void CommandLineMistakesExitWithTwo(string option, string value, string named)
    {
        var data = WriteTinyData();
        var result = RunCli("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0",
            "--output", Path.Combine(workDir, "model.zip"), option, value);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain(named));
    }

    [TestCase("lora", "LORA", "--rank", "2")]
    [TestCase("rslora", "LORA")]
    [TestCase("dora", "LORA")]
    [TestCase("loraplus", "LORA", "--loraplus-ratio", "8")]
    [TestCase("pissa", "LORA", "--rank", "2")]
    [TestCase("vera", "VERA", "--rank", "16")]
    [TestCase("ia3", "IA3")]
    [TestCase("bitfit", "BITFIT")]
    [TestCase("prompt", "PROMPT_TUNING", "--num-virtual-tokens", "4")]
    [TestCase("prefix", "PREFIX_TUNING", "--num-virtual-tokens", "4")]
    [TestCase("bottleneck", "BOTTLENECK", "--reduction-factor", "8")]
    [TestCase("full", "FULL")]
    public void EveryMethodTrainsSavesAndPredictsFromTheCommandLine(string method, string peftType, params string[] methodOptions)
    {
        var tiny = TinyBert.WriteDirectory();
        try
        {
            var data = WriteTinyData();
            var model = Path.Combine(workDir, "model.zip");
            var metrics = Path.Combine(workDir, "metrics.json");
            var train = RunCli(new[] { "text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
                "--max-length", "16", "--epochs", "1", "--batch-size", "8", "--output", model, "--metrics-json", metrics, "--method", method }.Concat(methodOptions).ToArray());
            Assert.That(train.ExitCode, Is.EqualTo(0), train.ToString());
            using (var json = JsonDocument.Parse(File.ReadAllText(metrics)))
                Assert.That(json.RootElement.GetProperty("method").GetString(), Is.EqualTo(peftType));
            var predictions = Path.Combine(workDir, "predictions.tsv");
            var predict = RunCli("predict", "--model", model, "--dataset", data, "--text-col", "0", "--output", predictions);
            Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
            Assert.That(File.ReadAllLines(predictions), Has.Length.EqualTo(File.ReadAllLines(data).Length + 1));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    [TestCase("bitfit", "--rank", "4")]
    [TestCase("lora", "--num-virtual-tokens", "5")]
    [TestCase("full", "--target-modules", "query")]
    public void MethodOptionThatDoesNotApplyIsAUsageErrorNamingBoth(string method, string option, string value)
    {
        var data = WriteTinyData();
        var result = RunCli("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0",
            "--output", Path.Combine(workDir, "model.zip"), "--method", method, option, value);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain(option).And.Contain("--method " + method));
    }

    [Test]
    public void TargetModulesThatMatchNothingListTheModulesThereAre()
    {
        var tiny = TinyBert.WriteDirectory();
        try
        {
            var data = WriteTinyData();
            var result = RunCli("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
                "--max-length", "16", "--output", Path.Combine(workDir, "model.zip"), "--method", "lora", "--target-modules", "q_proj,v_proj");
            Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
            Assert.That(result.StdErr, Does.Contain("q_proj").And.Contain("query, key, value, dense").And.Contain("encoder.layer.0.attention.self.query"));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    [Test]
    public void OutputBelowARegularFileIsRefusedBeforeTraining()
    {
        var data = WriteTinyData();
        var blocker = Path.Combine(workDir, "blocker");
        File.WriteAllText(blocker, "a regular file");
        var result = RunCli("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0",
            "--output", Path.Combine(blocker, "model.zip"));
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--output").And.Contain("cannot be written"));
        Assert.That(result.StdOut, Does.Not.Contain("Training"), "refused before training started");
    }

    [Test]
    public void SigtermDuringTrainingExitsWith130AndWritesNothing()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("SIGTERM is a POSIX signal");
        var tiny = TinyBert.WriteDirectory();
        try
        {
            var data = WriteTinyData(rows: 400);
            var model = Path.Combine(workDir, "out", "model.zip");
            var start = StartInfo("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
                "--epochs", "100000", "--max-length", "16", "--output", model, "--metrics-json", Path.Combine(workDir, "out", "metrics.json"));
            // As a shell user would: start a run that cannot finish (100,000 epochs), wait until it reports a finished epoch,
            // send SIGTERM, report the run's exit code. The shell starts the CLI with default signal handling.
            var shell = new ProcessStartInfo("/bin/bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workDir };
            shell.ArgumentList.Add("-c");
            shell.ArgumentList.Add("\"$@\" > cli.out 2> cli.err & pid=$!; " +
                "for i in $(seq 600); do grep -q 'Epoch 1/' cli.out && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done; " +
                "kill -TERM $pid; wait $pid; echo \"exit=$?\"");
            shell.ArgumentList.Add("cli");
            shell.ArgumentList.Add(start.FileName);
            foreach (var argument in start.ArgumentList) shell.ArgumentList.Add(argument);
            using var process = Process.Start(shell)!;
            var output = process.StandardOutput.ReadToEnd();
            Assert.That(process.WaitForExit(TimeSpan.FromMinutes(3)), Is.True, "the CLI did not stop after SIGTERM");
            var exit = System.Text.RegularExpressions.Regex.Match(output, @"exit=(\d+)");
            Assert.That(exit.Success, Is.True, output);
            var result = new CliResult(int.Parse(exit.Groups[1].Value, CultureInfo.InvariantCulture),
                File.ReadAllText(Path.Combine(workDir, "cli.out")), File.ReadAllText(Path.Combine(workDir, "cli.err")));
            Assert.That(result.StdOut, Does.Contain("Epoch 1/100000"), "cancelled during training, not before");
            Assert.That(result.ExitCode, Is.EqualTo(130), result.ToString());
            Assert.That(result.StdErr, Does.Contain("Cancelled"));
            var left = Directory.Exists(Path.Combine(workDir, "out")) ? Directory.GetFiles(Path.Combine(workDir, "out")) : Array.Empty<string>();
            Assert.That(left, Is.Empty, "nothing half-written");
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    /// <summary>Synthetic sentiment rows over the tiny vocabulary as a headerless TSV (text, label).</summary>
    private string WriteTinyData(int rows = 40)
    {
        var path = Path.Combine(workDir, "tiny.tsv");
        File.WriteAllLines(path, TinyTraining.Rows(rows, 1).Select(r => $"{r.Sentence}\t{r.Label}"));
        return path;
    }

    /// <summary>The built <c>mlnet-peft.dll</c>; the test project's build records its path (see the project file).</summary>
    private static string CliPath
    {
        get
        {
            var path = typeof(CliTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .SingleOrDefault(a => a.Key == "MlnetPeftCli")?.Value;
            Assert.That(path, Is.Not.Null.And.Not.Empty, "the test assembly does not record where mlnet-peft.dll is");
            Assert.That(File.Exists(path), Is.True, $"mlnet-peft.dll is not at '{path}'");
            return path!;
        }
    }

    private sealed record CliResult(int ExitCode, string StdOut, string StdErr)
    {
        public override string ToString() => $"exit code {ExitCode}\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}";
    }

    private ProcessStartInfo StartInfo(params string[] arguments)
    {
        // The dotnet host that runs the tests also runs the CLI.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workDir,
        };
        start.ArgumentList.Add(CliPath);
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        return start;
    }

    private CliResult RunCli(params string[] arguments)
    {
        using var process = Process.Start(StartInfo(arguments)) ?? throw new InvalidOperationException("The CLI process did not start.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(ProcessTimeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"mlnet-peft {string.Join(' ', arguments)} did not finish within {ProcessTimeout}.");
        }
        process.WaitForExit();
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    [Test]
    public void ImageClassificationTrainsOnClassFoldersAndPredictsImages()
    {
        var (pixels, labels) = Samples.FashionMnist.Read(Samples.FashionMnist.DefaultDirectory, train: true, maxCount: 300);
        var trainDir = Path.Combine(workDir, "train");
        var testDir = Path.Combine(workDir, "test");
        Samples.FashionMnist.WriteClassFolders(trainDir, Enumerable.Range(0, 200).ToList(), pixels, labels);
        var testFiles = Samples.FashionMnist.WriteClassFolders(testDir, Enumerable.Range(200, 100).ToList(), pixels, labels);
        var model = Path.Combine(workDir, "images.zip");
        var metricsFile = Path.Combine(workDir, "images.json");
        var train = RunCli("image-classification", "--dataset", trainDir, "--test-dataset", testDir, "--output", model,
            "--metrics-json", metricsFile, "--epochs", "1", "--image-size", "32", "--max-rows", "150", "--method", "lora", "--rank", "4");
        TestContext.Out.WriteLine(train.StdOut);
        Assert.That(train.ExitCode, Is.EqualTo(0), train.ToString());
        Assert.That(train.StdOut, Does.Contain("Epoch 1/1"));
        using (var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(metricsFile)))
        {
            var m = json.RootElement;
            foreach (var key in new[] { "accuracy", "macroF1", "logLoss", "trainSeconds", "trainableParameters", "totalParameters", "modelBytes" })
                Assert.That(m.TryGetProperty(key, out _), Is.True, $"metrics JSON key {key}");
            Assert.That(m.GetProperty("method").GetString(), Is.EqualTo("LORA"));
            Assert.That(m.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(model).Length));
        }

        var predictions = Path.Combine(workDir, "pred.tsv");
        var predict = RunCli("predict", "--model", model, "--dataset", testDir, "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var lines = File.ReadAllLines(predictions);
        Assert.That(lines, Has.Length.EqualTo(testFiles.Count + 1), "a header and one line per image");
        var header = lines[0].Split('\t');
        Assert.That(header[0], Is.EqualTo("ImagePath"));
        Assert.That(header[1], Is.EqualTo("PredictedLabel"));
        Assert.That(header.Skip(2), Is.EquivalentTo(Samples.FashionMnist.ClassNames), "one probability column per class");
        var first = lines[1].Split('\t');
        Assert.That(testFiles, Does.Contain(first[0]));
        Assert.That(first.Skip(2).Sum(v => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)), Is.EqualTo(1.0).Within(1e-4));

        var wrong = RunCli("predict", "--model", model, "--dataset", testDir, "--text-col", "0", "--output", predictions);
        Assert.That(wrong.ExitCode, Is.EqualTo(2), wrong.ToString());
        Assert.That(wrong.StdErr, Does.Contain("--text-col"));
    }

    [Test]
    public void ImageClassificationRejectsBadFoldersAndTextMethods()
    {
        var oneClass = Path.Combine(workDir, "one");
        Directory.CreateDirectory(Path.Combine(oneClass, "only"));
        File.WriteAllBytes(Path.Combine(oneClass, "only", "a.png"), Samples.FashionMnist.EncodePng(new byte[28 * 28]));
        var result = RunCli("image-classification", "--dataset", oneClass, "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(result.ExitCode, Is.Not.EqualTo(0), result.ToString());
        Assert.That(result.StdErr, Does.Contain(oneClass));
        Assert.That(File.Exists(Path.Combine(workDir, "m.zip")), Is.False);

        var method = RunCli("image-classification", "--dataset", oneClass, "--output", Path.Combine(workDir, "m.zip"), "--method", "prefix");
        Assert.That(method.ExitCode, Is.EqualTo(2), method.ToString());
        Assert.That(method.StdErr, Does.Contain("prefix").And.Contain("for images"));
    }
}
