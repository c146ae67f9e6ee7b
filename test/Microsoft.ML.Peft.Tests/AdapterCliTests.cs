using System.Diagnostics;
using System.Reflection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>export-adapter</c>, <c>import-adapter</c> and <c>text-classification --init-adapter</c>, run as separate processes on the tiny BERT.</summary>
[TestFixture]
[NonParallelizable]
public class AdapterCliTests
{
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromMinutes(10);
    private string work = "";
    private string tiny = "";

    [SetUp]
    public void CreateWorkDirectory()
    {
        work = Path.Combine(Path.GetTempPath(), "mlnet-peft-adapter-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        tiny = TinyBert.WriteDirectory();
    }

    [TearDown]
    public void DeleteWorkDirectory()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        if (Directory.Exists(tiny)) Directory.Delete(tiny, recursive: true);
    }

    private string WriteData(string name, int rows, bool threeClasses = false)
    {
        var path = Path.Combine(work, name);
        File.WriteAllLines(path, TinyTraining.Rows(rows, 1).Select((r, i) => $"{r.Sentence}\t{(threeClasses && i % 3 == 2 ? "neutral" : r.Label)}"));
        return path;
    }

    private string Train(string data, params string[] more)
    {
        var model = Path.Combine(work, $"model-{Guid.NewGuid():N}.zip");
        var result = RunCli(new[] { "text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
            "--epochs", "2", "--max-length", "16", "--batch-size", "8", "--output", model }.Concat(more).ToArray());
        Assert.That(result.ExitCode, Is.EqualTo(0), result.ToString());
        return model;
    }

    [Test]
    public void ExportImportAndPredictGiveTheSamePredictions()
    {
        var data = WriteData("train.tsv", 40);
        var model = Train(data);
        var adapter = Path.Combine(work, "adapter");
        var export = RunCli("export-adapter", "--model", model, "--format", "hf", "--output", adapter);
        Assert.That(export.ExitCode, Is.EqualTo(0), export.ToString());
        Assert.That(Directory.GetFiles(adapter).Select(Path.GetFileName), Is.EquivalentTo(new[] { "adapter_config.json", "adapter_model.safetensors", "README.md" }));

        var imported = Path.Combine(work, "imported.zip");
        var import = RunCli("import-adapter", "--adapter", adapter, "--base-model", tiny, "--output", imported);
        Assert.That(import.ExitCode, Is.EqualTo(0), import.ToString());
        Assert.That(import.StdOut, Does.Contain("LORA"));

        var input = Path.Combine(work, "input.tsv");
        File.WriteAllLines(input, TinyTraining.Rows(12, 9).Select(r => r.Sentence));
        string Predict(string modelFile)
        {
            var output = Path.Combine(work, $"predictions-{Guid.NewGuid():N}.tsv");
            var predict = RunCli("predict", "--model", modelFile, "--dataset", input, "--text-col", "0", "--output", output);
            Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
            return File.ReadAllText(output);
        }
        var original = Predict(model);
        var fromAdapter = Predict(imported);
        Assert.That(original.Split('\n')[0].Split('\t').Skip(1), Is.EqualTo(new[] { "PredictedLabel", "positive", "negative" }), "class names kept");
        Assert.That(fromAdapter, Is.EqualTo(original), "the imported adapter predicts exactly as the model it was exported from");
    }

    [Test]
    public void TrainingStartsFromAnAdapterAndRefusesAnotherClassCount()
    {
        var data = WriteData("train.tsv", 40);
        var adapter = Path.Combine(work, "adapter");
        var export = RunCli("export-adapter", "--model", Train(data, "--rank", "2"), "--output", adapter);
        Assert.That(export.ExitCode, Is.EqualTo(0), export.ToString());

        // The adapter decides the method: a method option beside it would be silently overridden, so it is refused.
        var clash = RunCli("text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--model", tiny,
            "--epochs", "1", "--max-length", "16", "--init-adapter", adapter, "--rank", "6", "--output", Path.Combine(work, "clash.zip"));
        Assert.That(clash.ExitCode, Is.EqualTo(2), clash.ToString());
        Assert.That(clash.StdErr, Does.Contain("--init-adapter").And.Contain("--rank"));

        var continued = Train(data, "--init-adapter", adapter);
        var again = Path.Combine(work, "again");
        Assert.That(RunCli("export-adapter", "--model", continued, "--output", again).ExitCode, Is.EqualTo(0));
        Assert.That(File.ReadAllText(Path.Combine(again, "adapter_config.json")), Does.Contain("\"r\": 2"), "the adapter's options are kept");

        var three = WriteData("three.tsv", 45, threeClasses: true);
        var refused = RunCli("text-classification", "--dataset", three, "--label-col", "1", "--text-col", "0", "--model", tiny,
            "--epochs", "1", "--max-length", "16", "--init-adapter", adapter, "--output", Path.Combine(work, "refused.zip"));
        Assert.That(refused.ExitCode, Is.EqualTo(1), refused.ToString());
        Assert.That(refused.StdErr, Does.Contain("2 classes").And.Contain("3"));
        Assert.That(File.Exists(Path.Combine(work, "refused.zip")), Is.False);
    }

    [Test]
    public void BadAdapterAndWrongFormatAreReported()
    {
        var adapter = Path.Combine(work, "broken");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), "{\"peft_type\": \"NOPE\"}");
        var import = RunCli("import-adapter", "--adapter", adapter, "--base-model", tiny, "--output", Path.Combine(work, "x.zip"));
        Assert.That(import.ExitCode, Is.EqualTo(1), import.ToString());
        Assert.That(import.StdErr, Does.Contain("NOPE").And.Contain("LORA"));
        Assert.That(File.Exists(Path.Combine(work, "x.zip")), Is.False);

        var format = RunCli("export-adapter", "--model", Path.Combine(work, "model.zip"), "--format", "onnx", "--output", adapter);
        Assert.That(format.ExitCode, Is.EqualTo(2), format.ToString());
        Assert.That(format.StdErr, Does.Contain("onnx"));

        var missing = RunCli("import-adapter", "--adapter", Path.Combine(work, "none"), "--output", Path.Combine(work, "x.zip"));
        Assert.That(missing.ExitCode, Is.EqualTo(1), missing.ToString());
        Assert.That(missing.StdErr, Does.Contain("--adapter"));
    }

    private sealed record CliResult(int ExitCode, string StdOut, string StdErr)
    {
        public override string ToString() => $"exit code {ExitCode}\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}";
    }

    private CliResult RunCli(params string[] arguments)
    {
        var cli = typeof(AdapterCliTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "MlnetPeftCli").Value!;
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = work,
        };
        start.ArgumentList.Add(cli);
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("The CLI process did not start.");
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
}
