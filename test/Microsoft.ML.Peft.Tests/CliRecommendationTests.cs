using System.Globalization;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>recommendation</c>, <c>recommendation-adapt</c> and <c>predict</c> on their models, as separate processes on MovieLens-100K slices.</summary>
public partial class CliTests
{
    /// <summary>MovieLens-100K lines (header skipped) in timestamp order: user|item|rating|timestamp.</summary>
    private static List<string> MovieLensByTime() =>
        File.ReadLines(Path.Combine(TestData.SharedData, "movielens-100k", "u.data")).Skip(1)
            .Select((line, k) => (line, k, time: long.Parse(line.Split('|')[3], CultureInfo.InvariantCulture)))
            .OrderBy(r => r.time).ThenBy(r => r.k).Select(r => r.line).ToList();

    private string WriteRatings(string name, IEnumerable<string> lines)
    {
        var path = Path.Combine(workDir, name);
        File.WriteAllLines(path, lines.Prepend("user|item|rating|timestamp"));
        return path;
    }

    private static JsonElement Metrics(string path, params string[] keys)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        var root = json.RootElement.Clone();
        foreach (var key in keys) Assert.That(root.TryGetProperty(key, out _), Is.True, $"metrics JSON lacks '{key}': {root}");
        return root;
    }

    [Test]
    public void RecommendationTrainsAdaptsAndPredicts()
    {
        var ratings = MovieLensByTime();
        var basePath = WriteRatings("base.data", ratings.Take(12000));
        var newPath = WriteRatings("new.data", ratings.Skip(12000).Take(3000));
        var testLines = ratings.Skip(15000).Take(1500).ToList();
        var testPath = WriteRatings("test.data", testLines);
        var columns = new[] { "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--label-col", "rating" };
        string[] Args(params string[] args) => args.Concat(columns).ToArray();

        var model = Path.Combine(workDir, "base.zip");
        var run = RunCli(Args("recommendation", "--dataset", basePath, "--test-dataset", testPath, "--iterations", "10", "--rank", "16", "--seed", "2",
            "--output", model, "--metrics-json", Path.Combine(workDir, "base.json")));
        TestContext.Out.WriteLine(run.StdOut);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var baseMetrics = Metrics(Path.Combine(workDir, "base.json"), "rmse", "mae", "trainSeconds", "trainableParameters", "modelBytes");
        Assert.That(baseMetrics.GetProperty("rmse").GetDouble(), Is.InRange(0.8, 1.3));
        Assert.That(baseMetrics.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(model).Length));
        Assert.That(baseMetrics.GetProperty("testRows").GetInt64(), Is.EqualTo(1500));

        var adapted = Path.Combine(workDir, "adapted.zip");
        run = RunCli(Args("recommendation-adapt", "--model", model, "--dataset", newPath, "--test-dataset", testPath, "--method", "lora", "--seed", "2",
            "--output", adapted, "--metrics-json", Path.Combine(workDir, "adapted.json")));
        TestContext.Out.WriteLine(run.StdOut);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var adaptedMetrics = Metrics(Path.Combine(workDir, "adapted.json"), "rmse", "mae", "trainSeconds", "trainableParameters", "modelBytes", "baseRmse", "method", "newUsers");
        Assert.That(adaptedMetrics.GetProperty("method").GetString(), Is.EqualTo("lora"));
        Assert.That(adaptedMetrics.GetProperty("baseRmse").GetDouble(), Is.EqualTo(baseMetrics.GetProperty("rmse").GetDouble()).Within(1e-9), "the base scored on the same test ratings");
        Assert.That(adaptedMetrics.GetProperty("trainableParameters").GetInt64(), Is.LessThan(baseMetrics.GetProperty("trainableParameters").GetInt64()));
        Assert.That(new FileInfo(adapted).Length, Is.LessThan(new FileInfo(model).Length), "the adapted file refers to the base's tables");
        Assert.That(adaptedMetrics.GetProperty("newUsers").GetInt32(), Is.GreaterThan(0), "later ratings bring users the base never saw");

        // predict in a new process: one score per test row, whose RMSE is the one reported.
        var predictions = Path.Combine(workDir, "scores.tsv");
        run = RunCli("predict", "--model", adapted, "--dataset", testPath, "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--output", predictions);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var lines = File.ReadAllLines(predictions);
        Assert.That(lines[0], Is.EqualTo("user\titem\tScore"));
        Assert.That(lines, Has.Length.EqualTo(testLines.Count + 1));
        double squared = 0;
        for (int k = 0; k < testLines.Count; k++)
        {
            var fields = lines[k + 1].Split('\t');
            var expected = testLines[k].Split('|');
            Assert.That(fields[..2], Is.EqualTo(expected[..2]), "rows keep the input order");
            double error = double.Parse(fields[2], CultureInfo.InvariantCulture) - double.Parse(expected[2], CultureInfo.InvariantCulture);
            squared += error * error;
        }
        Assert.That(Math.Sqrt(squared / testLines.Count), Is.EqualTo(adaptedMetrics.GetProperty("rmse").GetDouble()).Within(1e-4));

        // The base moved: predict finds it with --base-model.
        var moved = Path.Combine(workDir, "moved-base.zip");
        File.Move(model, moved);
        run = RunCli("predict", "--model", adapted, "--dataset", testPath, "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--output", predictions);
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("base.zip").And.Contain("does not exist"));
        run = RunCli("predict", "--model", adapted, "--base-model", moved, "--dataset", testPath, "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--output", predictions);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
    }

    [Test]
    public void NeuralRecommenderTrainsAndPredicts()
    {
        var ratings = MovieLensByTime();
        var trainPath = WriteRatings("train.data", ratings.Take(6000));
        var testLines = ratings.Skip(6000).Take(500).ToList();
        var testPath = WriteRatings("test.data", testLines);
        var columns = new[] { "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--label-col", "rating" };
        var model = Path.Combine(workDir, "ncf.zip");
        var run = RunCli(new[] { "recommendation", "--model-kind", "ncf", "--rank", "8", "--hidden-layers", "16,8", "--iterations", "3", "--dataset", trainPath,
            "--test-dataset", testPath, "--output", model, "--metrics-json", Path.Combine(workDir, "ncf.json") }.Concat(columns).ToArray());
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var metrics = Metrics(Path.Combine(workDir, "ncf.json"), "rmse", "mae", "trainSeconds", "trainableParameters", "modelBytes", "modelKind");
        Assert.That(metrics.GetProperty("modelKind").GetString(), Is.EqualTo("ncf"));
        Assert.That(metrics.GetProperty("rank").GetInt32(), Is.EqualTo(8));
        Assert.That(metrics.GetProperty("rmse").GetDouble(), Is.InRange(0.7, 1.5));

        var predictions = Path.Combine(workDir, "scores.tsv");
        run = RunCli("predict", "--model", model, "--dataset", testPath, "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--output", predictions);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var scores = File.ReadAllLines(predictions).Skip(1).Select(l => double.Parse(l.Split('\t')[2], CultureInfo.InvariantCulture)).ToList();
        var labels = testLines.Select(l => double.Parse(l.Split('|')[2], CultureInfo.InvariantCulture)).ToList();
        Assert.That(Math.Sqrt(scores.Zip(labels, (p, l) => (p - l) * (p - l)).Average()), Is.EqualTo(metrics.GetProperty("rmse").GetDouble()).Within(1e-4));

        // recommendation-adapt reads the kind from the file and adapts the neural model (LoRA on its tables and layers).
        var newPath = WriteRatings("new.data", ratings.Skip(6500).Take(1500));
        var adapted = Path.Combine(workDir, "ncf-adapted.zip");
        run = RunCli(new[] { "recommendation-adapt", "--model", model, "--dataset", newPath, "--test-dataset", testPath, "--iterations", "2",
            "--output", adapted, "--metrics-json", Path.Combine(workDir, "ncf-adapted.json") }.Concat(columns).ToArray());
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        var adaptedMetrics = Metrics(Path.Combine(workDir, "ncf-adapted.json"), "rmse", "baseRmse", "method", "modelKind");
        Assert.That((adaptedMetrics.GetProperty("modelKind").GetString(), adaptedMetrics.GetProperty("method").GetString()), Is.EqualTo(("ncf", "lora")));
        Assert.That(adaptedMetrics.GetProperty("trainableParameters").GetInt64(), Is.LessThan(metrics.GetProperty("trainableParameters").GetInt64()));
        run = RunCli("predict", "--model", adapted, "--dataset", testPath, "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--output", predictions);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());

        run = RunCli(new[] { "recommendation", "--hidden-layers", "16", "--dataset", trainPath, "--output", model }.Concat(columns).ToArray());
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--hidden-layers applies to --model-kind ncf"));
    }

    [Test]
    public void RecommendationBadInputExitsWithClearErrors()
    {
        var ratings = MovieLensByTime();
        var columns = new[] { "--has-header", "--separator", "|", "--user-col", "user", "--item-col", "item", "--label-col", "rating" };
        string[] Args(params string[] args) => args.Concat(columns).ToArray();
        var basePath = WriteRatings("base.data", ratings.Take(3000));
        var model = Path.Combine(workDir, "base.zip");
        var run = RunCli(Args("recommendation", "--dataset", basePath, "--iterations", "2", "--rank", "4", "--output", model));
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());

        // A rating that is not a number: the file, the row and the column.
        var nan = WriteRatings("nan.data", ratings.Skip(3000).Take(5).Append("7|8|four|0"));
        run = RunCli(Args("recommendation", "--dataset", nan, "--output", Path.Combine(workDir, "x.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("nan.data").And.Contain("data row 6").And.Contain("--label-col rating"));

        // An empty adaptation set; one whose users and items the base never saw; ratings outside the base's range.
        var empty = WriteRatings("empty.data", Array.Empty<string>());
        run = RunCli(Args("recommendation-adapt", "--model", model, "--dataset", empty, "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("empty.data").And.Contain("no ratings"));
        var strangers = WriteRatings("strangers.data", Enumerable.Range(0, 20).Select(k => $"x{k}|y{k}|3|0"));
        run = RunCli(Args("recommendation-adapt", "--model", model, "--dataset", strangers, "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("None of the adaptation data's").And.Contain("nothing to adapt"));
        var tooHigh = WriteRatings("high.data", ratings.Skip(3000).Take(20).Append("1|1|9|0"));
        run = RunCli(Args("recommendation-adapt", "--model", model, "--dataset", tooHigh, "--test-dataset", tooHigh, "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("outside the range").And.Contain("[1, 5]"));

        // A base model file of another kind, and a file that is no model at all.
        var notModel = Path.Combine(workDir, "notes.zip");
        File.WriteAllText(notModel, "not a model");
        var ok = WriteRatings("new.data", ratings.Skip(3000).Take(200));
        run = RunCli(Args("recommendation-adapt", "--model", notModel, "--dataset", ok, "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--model").And.Contain("notes.zip").And.Contain("is not an ML.NET model"));
        var mlContext = new MLContext(1);
        var keys = mlContext.Data.LoadFromEnumerable(new[] { new RatingRow { User = "a", Item = "b", Label = 1 } });
        var otherKind = Path.Combine(workDir, "keys.zip");
        mlContext.Model.Save(mlContext.Transforms.Conversion.MapValueToKey("User").Fit(keys), keys.Schema, otherKind);
        run = RunCli(Args("recommendation-adapt", "--model", otherKind, "--dataset", ok, "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("keys.zip").And.Contain("another kind"));

        run = RunCli(Args("recommendation-adapt", "--model", model, "--dataset", ok, "--method", "dora", "--output", Path.Combine(workDir, "a.zip")));
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--method must be lora, bias or full"));
    }
}
