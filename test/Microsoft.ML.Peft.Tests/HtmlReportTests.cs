using System.Text.RegularExpressions;
using Microsoft.ML.Peft.Cli;
using Microsoft.ML.Peft.Cli.Reports;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;
using SkiaSharp;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The visual training report: the page's sections, order and escaping; its charts (PNG files that are not blank); the
/// page opened in headless chromium (no console error, the charts visible in the screenshot); unwritable paths.
/// </summary>
[TestFixture]
public class HtmlReportTests
{
    private string folder = null!;

    [SetUp]
    public void SetUp()
    {
        folder = Path.Combine(Path.GetTempPath(), "peft-html-report-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(folder, recursive: true);

    private const string ScriptText = "<script>alert('pwned')</script> & \"quoted\"";

    private static readonly long[][] Confusion = [[50, 4, 1], [3, 40, 7], [0, 5, 45]];

    private static EpochMetrics Epoch(int epoch, int max, double loss, double? metric) =>
        new(epoch, max, loss, 100, metric is null ? null : "accuracy", metric, false);

    /// <summary>A 16 x 16 PNG: a red square on blue.</summary>
    private static byte[] Thumbnail()
    {
        using var bitmap = new SKBitmap(16, 16);
        for (var y = 0; y < 16; y++)
            for (var x = 0; x < 16; x++)
                bitmap.SetPixel(x, y, x is >= 4 and < 12 && y is >= 4 and < 12 ? new SKColor(220, 30, 30) : new SKColor(30, 60, 200));
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>Four trials (one pruned, one failed), a 3-class confusion matrix, three hard examples (one an image).</summary>
    private static ReportData Sample()
    {
        var trials = new[]
        {
            new ReportTrial(1, [("method", "lora"), ("rank", "8"), ("learning rate", "0.0003")], "completed", 0.81, 12.5,
                [Epoch(1, 3, 0.92, 0.70), Epoch(2, 3, 0.61, 0.78), Epoch(3, 3, 0.45, 0.81)], null),
            new ReportTrial(2, [("method", "ia3")], "pruned", 0.64, 4.2, [Epoch(1, 3, 1.05, 0.60), Epoch(2, 3, 0.88, 0.64)], null),
            new ReportTrial(3, [("method", "lora"), ("rank", "64")], "failed", null, 1.3, [], "CUDA out of memory <allocator> & retry"),
            new ReportTrial(4, [("method", "dora"), ("rank", "16")], "completed", 0.86, 130.25,
                [Epoch(1, 3, 0.85, 0.74), Epoch(2, 3, 0.50, 0.83), Epoch(3, 3, 0.31, 0.86)], null),
        };
        // Per-class metrics from the confusion matrix (rows true, columns predicted).
        var n = Confusion.Length;
        var precision = Enumerable.Range(0, n).Select(c => (double)Confusion[c][c] / Confusion.Sum(r => r[c])).ToArray();
        var recall = Enumerable.Range(0, n).Select(c => (double)Confusion[c][c] / Confusion[c].Sum()).ToArray();
        var f1 = precision.Zip(recall, (p, r) => 2 * p * r / (p + r)).ToArray();
        var classification = new ReportClassification(["negative", "neutral", "positive"],
            Confusion.Select(r => (IReadOnlyList<long>)r).ToArray(), precision, recall, f1, Confusion.Select(r => r.Sum()).ToArray());
        return new ReportData("Automated search: text-classification", "text-classification", new DateTime(2025, 3, 4, 5, 6, 7, DateTimeKind.Utc),
            "accuracy", [("Dataset", "sst2 <train>.tsv"), ("Budget", "900 s"), ("Best method", "dora")], trials, 4,
            new ReportModel(2_500_000, 294_912, 29_491_200, 100_000_000),
            classification,
            [
                new ReportExample(ScriptText, null, "positive", "negative", 3.25),
                new ReportExample(null, Thumbnail(), "neutral", "positive", 2.5),
                new ReportExample("plain but wrong\nsecond line", null, "negative", "neutral", 1.75),
            ]);
    }

    private static ReportData Empty() => new("Nothing yet", "ner", DateTime.UnixEpoch, "f1", [], [], null, new ReportModel(0, 0, 0, null), null, []);

    private static string Section(string html, string id)
    {
        var match = Regex.Match(html, $"<section id=\"{id}\">(.*?)</section>", RegexOptions.Singleline);
        Assert.That(match.Success, $"section '{id}' is missing");
        return match.Groups[1].Value;
    }

    [Test]
    public void PageHasEverySectionEscapedAndOrdered()
    {
        var data = Sample();
        var path = Path.Combine(folder, "report.html");
        HtmlReport.Write(data, path);
        var html = File.ReadAllText(path);

        Assert.That(html, Does.StartWith("<!DOCTYPE html>"));
        foreach (var id in new[] { "summary", "leaderboard", "curves", "classes", "examples", "model" }) Section(html, id);
        // Nothing runs and nothing is fetched: no script element at all, every src and href inside the page.
        Assert.That(html, Does.Not.Contain("<script").IgnoreCase);
        Assert.That(html, Does.Contain($"content=\"{ReportPage.ContentSecurityPolicy}\""));
        foreach (Match m in Regex.Matches(html, "(src|href)=\"([^\"]*)\"")) Assert.That(m.Groups[2].Value, Does.StartWith("data:").Or.StartWith("#"), m.Value);
        // Text from the data is escaped everywhere.
        Assert.That(html, Does.Contain("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"));
        Assert.That(html, Does.Contain("sst2 &lt;train&gt;.tsv"));
        Assert.That(html, Does.Contain("CUDA out of memory &lt;allocator&gt; &amp; retry"));
        Assert.That(html, Does.Contain("Created 2025-03-04 05:06:07 UTC").IgnoreCase);

        // Leaderboard: by metric, best first, the failed trial (no metric) last; ranks only for trials with a metric.
        var rows = Regex.Matches(Section(html, "leaderboard"), "<tr( class=\"best\")?><td class=\"num\">([^<]*)</td><td class=\"num\">(\\d+)</td>.*?</tr>")
            .Select(m => (Best: m.Groups[1].Success, Rank: m.Groups[2].Value, Trial: int.Parse(m.Groups[3].Value))).ToList();
        Assert.That(rows, Is.EqualTo(new[] { (true, "1", 4), (false, "2", 1), (false, "3", 2), (false, "–", 3) }));
        var board = Section(html, "leaderboard");
        foreach (var text in new[] { "0.8600", "0.8100", "0.6400", ">130<", ">12.5<", ">4.2<", "<code>rank=16</code>", "<code>learning rate=0.0003</code>", "badge failed", "badge pruned" })
            Assert.That(board, Does.Contain(text));

        // Charts: the two curves and the confusion heatmap, as PNG data URIs.
        Assert.That(Regex.Matches(html, "<img class=\"chart\" src=\"data:image/png;base64,[A-Za-z0-9+/=]+\"[^>]* data-file=\"([^\"]+)\"").Select(m => m.Groups[1].Value),
            Is.EqualTo(new[] { ReportCharts.LossFile, ReportCharts.MetricFile, ReportCharts.ConfusionFile }));

        // Per-class table: macro averages by hand. Precision 50/53, 40/49, 45/53 -> 0.8696; recall 50/55, 40/50, 45/50 -> 0.8697.
        var classes = Section(html, "classes");
        Assert.That(classes, Does.Contain("<td>macro average</td><td class=\"num\">0.8696</td><td class=\"num\">0.8697</td>"));
        Assert.That(classes, Does.Contain("<td class=\"num\">155</td></tr>"));
        Assert.That(classes, Does.Contain("<td>neutral</td><td class=\"num\">0.8163</td><td class=\"num\">0.8000</td><td class=\"num\">0.8081</td><td class=\"num\">50</td>"));
        Assert.That(Regex.Matches(classes, "<td class=\"cell[^\"]*\"[^>]*>(\\d+)</td>").Select(m => long.Parse(m.Groups[1].Value)), Is.EqualTo(Confusion.SelectMany(r => r)));

        // Hardest examples in the given order; the image as its own PNG bytes.
        var examples = Section(html, "examples");
        Assert.That(examples.IndexOf("3.2500", StringComparison.Ordinal), Is.LessThan(examples.IndexOf("2.5000", StringComparison.Ordinal)));
        Assert.That(examples.IndexOf("2.5000", StringComparison.Ordinal), Is.LessThan(examples.IndexOf("1.7500", StringComparison.Ordinal)));
        Assert.That(examples, Does.Contain("src=\"data:image/png;base64," + Convert.ToBase64String(data.HardestExamples[1].ImagePng!) + "\""));
        Assert.That(examples, Does.Contain("plain but wrong\nsecond line"));

        // Sizes: 2,500,000 B = 2.38 MiB, 100,000,000 B = 95.4 MiB, ratio 2.50 %; 294,912 of 29,491,200 parameters = 1.00 %.
        var model = Section(html, "model");
        foreach (var text in new[] { "2,500,000 bytes (2.38 MiB)", "100,000,000 bytes (95.4 MiB)", ">2.50 %<", "294,912", "29,491,200", "1.00 %<" })
            Assert.That(model, Does.Contain(text));
    }

    [Test]
    public void SectionsWithoutDataAreLeftOut()
    {
        var path = Path.Combine(folder, "empty.html");
        var charts = Path.Combine(folder, "charts");
        HtmlReport.Write(Empty(), path, charts);
        var html = File.ReadAllText(path);
        Assert.That(html, Does.Contain("<h1>Nothing yet</h1>"));
        Assert.That(html, Does.Not.Contain("<section"));
        Assert.That(html, Does.Not.Contain("<img"));
        Assert.That(html, Does.Not.Contain("<nav>"));
        Assert.That(Directory.GetFiles(charts), Is.Empty);

        // NER-like: per-class metrics without a confusion matrix, trials without a validation metric, no base model size.
        var data = Sample() with
        {
            Classification = new ReportClassification(["PER", "LOC"], null, [0.9, 0.5], [0.8, 0.25], [0.847, 0.333], [10, 4]),
            Trials = [new ReportTrial(1, [], "completed", null, 2, [Epoch(1, 2, 0.7, null), Epoch(2, 2, 0.4, null)], null)],
            Model = new ReportModel(1000, 10, 0, null),
            HardestExamples = [],
            Summary = [],
        };
        HtmlReport.Write(data, path, charts);
        html = File.ReadAllText(path);
        Assert.That(Directory.GetFiles(charts).Select(Path.GetFileName), Is.EqualTo(new[] { ReportCharts.LossFile }));
        Assert.That(html, Does.Not.Contain("id=\"summary\"").And.Not.Contain("id=\"examples\"").And.Not.Contain("Confusion"));
        Assert.That(Regex.Matches(html, "data-file=\"([^\"]+)\"").Select(m => m.Groups[1].Value), Is.EqualTo(new[] { ReportCharts.LossFile }));
        // Macro averages by hand: precision (0.9 + 0.5) / 2 = 0.7000, recall (0.8 + 0.25) / 2 = 0.5250.
        Assert.That(Section(html, "classes"), Does.Contain("<td>macro average</td><td class=\"num\">0.7000</td><td class=\"num\">0.5250</td>"));
        var model = Section(html, "model");
        Assert.That(model, Does.Contain("1,000 bytes").And.Not.Contain("Base model").And.Not.Contain("parameters"));
    }

    [Test]
    public void ChartPngsAreDrawn()
    {
        var charts = Path.Combine(folder, "charts");
        HtmlReport.Write(Sample(), Path.Combine(folder, "report.html"), charts);
        Assert.That(Directory.GetFiles(charts).Select(Path.GetFileName).Order(),
            Is.EqualTo(new[] { ReportCharts.ConfusionFile, ReportCharts.LossFile, ReportCharts.MetricFile }));
        foreach (var file in Directory.GetFiles(charts))
        {
            using var bitmap = SKBitmap.Decode(file);
            Assert.That(bitmap, Is.Not.Null, file);
            Assert.That(bitmap.Width, Is.GreaterThanOrEqualTo(300), file);
            var pixels = bitmap.Pixels;
            var inked = pixels.Count(p => p.Red < 235 || p.Green < 235 || p.Blue < 235);
            Assert.That(inked, Is.GreaterThan(pixels.Length / 50), $"{file}: {inked} of {pixels.Length} pixels are not white");
            Assert.That(pixels.Distinct().Count(), Is.GreaterThan(20), file);
        }

        // Each trial with epochs has its line in both curve charts (in its colour); trial 3 (failed, no epochs) has none.
        foreach (var name in new[] { ReportCharts.LossFile, ReportCharts.MetricFile })
        {
            using var bitmap = SKBitmap.Decode(Path.Combine(charts, name));
            var pixels = bitmap.Pixels;
            int Near(int rgb) => pixels.Count(p => Math.Abs(p.Red - (rgb >> 16)) <= 12 && Math.Abs(p.Green - ((rgb >> 8) & 0xFF)) <= 12 && Math.Abs(p.Blue - (rgb & 0xFF)) <= 12);
            foreach (var index in new[] { 0, 1, 3 }) Assert.That(Near(ReportCharts.TrialColor(index)), Is.GreaterThan(100), $"{name}: trial {index + 1}");
            Assert.That(Near(ReportCharts.TrialColor(2)), Is.LessThan(5), $"{name}: trial 3 has no epochs");
        }

        // The heatmap: the largest count (50) in the darkest blue fills a cell, the empty cell (0) is near white.
        using (var heatmap = SKBitmap.Decode(Path.Combine(charts, ReportCharts.ConfusionFile)))
        {
            var dark = heatmap.Pixels.Count(p => p.Red < 20 && p.Green < 60 && p.Blue is > 90 and < 125);
            Assert.That(dark, Is.GreaterThan(2000));
        }
    }

    [Test]
    public void PageRendersInHeadlessChromium()
    {
        HeadlessChromium.Require();
        var timeout = TimeSpan.FromSeconds(90);

        // The console check itself: a page that logs an error and throws must be caught.
        var control = Path.Combine(folder, "control.html");
        File.WriteAllText(control, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>control</title></head><body><p>control</p>"
            + "<script>console.error('control error'); missingFunction();</script></body></html>");
        var controlConsole = HeadlessChromium.Screenshot(control, Path.Combine(folder, "control.png"), 400, 300, timeout);
        Assert.That(controlConsole, Has.Some.Contains("control error"), "the console check does not see console.error");
        Assert.That(controlConsole, Has.Some.Contains("Uncaught"), "the console check does not see uncaught exceptions");

        var page = Path.Combine(folder, "report.html");
        var charts = Path.Combine(folder, "charts");
        HtmlReport.Write(Sample(), page, charts);
        var screenshot = Path.Combine(folder, "report.png");
        var console = HeadlessChromium.Screenshot(page, screenshot, 1280, 5000, timeout);
        TestContext.AddTestAttachment(screenshot, "the report in headless chromium");
        Assert.That(console, Is.Empty, "the page wrote to the console:\n" + string.Join("\n", console));

        // Each chart appears in the screenshot pixel for pixel (drawn at its natural size, device scale 1).
        using var shot = SKBitmap.Decode(screenshot);
        Assert.That(shot.Width, Is.EqualTo(1280));
        var shotPixels = shot.Pixels;
        var found = new List<(string Name, int X, int Y)>();
        foreach (var file in Directory.GetFiles(charts).Order())
        {
            using var chart = SKBitmap.Decode(file);
            var at = Locate(chart, shotPixels, shot.Width, shot.Height);
            Assert.That(at, Is.Not.Null, $"{Path.GetFileName(file)} is not visible in the screenshot");
            found.Add((Path.GetFileName(file), at!.Value.X, at.Value.Y));
            TestContext.Out.WriteLine($"{Path.GetFileName(file)} at {at.Value.X}, {at.Value.Y}");
        }
        // Page order: the curves side by side, the confusion matrix below them.
        var loss = found.Single(f => f.Name == ReportCharts.LossFile);
        var metric = found.Single(f => f.Name == ReportCharts.MetricFile);
        var confusion = found.Single(f => f.Name == ReportCharts.ConfusionFile);
        Assert.That(metric.Y, Is.EqualTo(loss.Y));
        Assert.That(metric.X, Is.GreaterThan(loss.X));
        Assert.That(confusion.Y, Is.GreaterThan(loss.Y + 380));
    }

    /// <summary>
    /// Where <paramref name="chart"/> lies in the screenshot (its top-left corner), matched pixel for pixel within a small
    /// tolerance on 99.5 % of its pixels; null when it is not there.
    /// </summary>
    private static (int X, int Y)? Locate(SKBitmap chart, SKColor[] shot, int width, int height)
    {
        const int tolerance = 8;
        static bool Same(SKColor a, SKColor b) =>
            Math.Abs(a.Red - b.Red) <= tolerance && Math.Abs(a.Green - b.Green) <= tolerance && Math.Abs(a.Blue - b.Blue) <= tolerance;
        var pixels = chart.Pixels;
        int w = chart.Width, h = chart.Height;
        // Anchor on the first clearly dark pixel (the title's text) and test each place in the screenshot with the same colour.
        var anchor = Array.FindIndex(pixels, p => p.Red + p.Green + p.Blue < 300);
        int ax = anchor % w, ay = anchor / w;
        var samples = Enumerable.Range(0, 400).Select(i => (X: i * 7919 % w, Y: i * 104729 % h)).ToArray();
        for (var y = ay; y <= height - h + ay; y++)
            for (var x = ax; x <= width - w + ax; x++)
            {
                if (!Same(shot[y * width + x], pixels[anchor])) continue;
                int ox = x - ax, oy = y - ay;
                if (samples.Count(s => !Same(shot[(oy + s.Y) * width + ox + s.X], pixels[s.Y * w + s.X])) > samples.Length / 100) continue;
                var wrong = 0;
                for (var cy = 0; cy < h; cy++)
                    for (var cx = 0; cx < w; cx++)
                        if (!Same(shot[(oy + cy) * width + ox + cx], pixels[cy * w + cx])) wrong++;
                if (wrong <= w * h / 200) return (ox, oy);
            }
        return null;
    }

    [Test]
    public void UnwritablePathsAreNamed()
    {
        // A regular file where a folder should be: not writable, even for root.
        var blocker = Path.Combine(folder, "not-a-folder");
        File.WriteAllText(blocker, "x");
        var report = Path.Combine(blocker, "report.html");

        var check = Assert.Throws<UsageException>(() => HtmlReport.CheckWritable(report))!;
        Assert.That(check.Message, Does.Contain(report).And.Contain("--report").And.Contain("cannot be written"));
        var directory = Assert.Throws<UsageException>(() => HtmlReport.CheckWritable(folder))!;
        Assert.That(directory.Message, Does.Contain(folder).And.Contain("is a directory"));
        var png = Assert.Throws<UsageException>(() => HtmlReport.CheckWritable(Path.Combine(folder, "ok.html"), pngDirectory: blocker, pngOption: "--charts"))!;
        Assert.That(png.Message, Does.Contain(blocker).And.Contain("--charts").And.Contain("is a file"));
        Assert.That(HtmlReport.CheckWritable(Path.Combine(folder, "new", "ok.html")), Is.EqualTo(Path.Combine(folder, "new", "ok.html")));

        var write = Assert.Throws<IOException>(() => HtmlReport.Write(Sample(), report))!;
        Assert.That(write.Message, Does.Contain(report).And.Contain("cannot be written"));
        var folderWrite = Assert.Throws<IOException>(() => HtmlReport.Write(Sample(), Path.Combine(folder, "r.html"), Path.Combine(blocker, "charts")))!;
        Assert.That(folderWrite.Message, Does.Contain(Path.Combine(blocker, "charts")));
        var isDirectory = Assert.Throws<IOException>(() => HtmlReport.Write(Sample(), folder))!;
        Assert.That(isDirectory.Message, Does.Contain(folder).And.Contain("directory"));
        // Nothing half-written is left behind.
        Assert.That(Directory.GetFiles(folder), Is.EqualTo(new[] { blocker }));
    }

    [Test]
    public void InconsistentClassListsAreRejected()
    {
        var data = Sample();
        var shortRecall = data with { Classification = data.Classification! with { Recall = [0.5, 0.5] } };
        Assert.That(Assert.Throws<ArgumentException>(() => HtmlReport.Write(shortRecall, Path.Combine(folder, "r.html")))!.Message,
            Does.Contain("Recall has 2 values for 3 classes"));
        var ragged = data with { Classification = data.Classification! with { Confusion = [[1, 2, 3], [4, 5], [6, 7, 8]] } };
        Assert.That(Assert.Throws<ArgumentException>(() => HtmlReport.Write(ragged, Path.Combine(folder, "r.html")))!.Message,
            Does.Contain("Row 1 ('neutral')").And.Contain("2 columns for 3 classes"));
        Assert.That(Directory.GetFiles(folder), Is.Empty);
    }

    [Test]
    public void NumbersAreFormattedInvariantly()
    {
        Assert.That(ReportPage.Bytes(512), Is.EqualTo("512 bytes"));
        Assert.That(ReportPage.Bytes(1536), Is.EqualTo("1,536 bytes (1.5 KiB)"));
        Assert.That(ReportPage.Bytes(3L * 1024 * 1024 * 1024), Is.EqualTo("3,221,225,472 bytes (3.0 GiB)"));
        Assert.That(ReportPage.Percent(0.0325), Is.EqualTo("3.25 %"));
        Assert.That(ReportPage.Percent(0.000523), Is.EqualTo("0.052 %"));
        Assert.That(ReportPage.Percent(0.00000012), Is.EqualTo("0.000012 %"));
        Assert.That(ReportPage.E("a\u0000b<"), Is.EqualTo("a\uFFFDb&lt;"));
    }
}
