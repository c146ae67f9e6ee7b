using System.Text;

namespace Microsoft.ML.Peft.Cli.Reports;

/// <summary>
/// The visual training report: one static HTML page that needs no network (styles inline, charts as PNG data URIs, no
/// script) with the summary, the leaderboard, loss and validation curves per trial, the confusion matrix, per-class
/// precision/recall/F1, the hardest examples and the model's size. Its charts can also be written as PNG files.
/// </summary>
internal static class HtmlReport
{
    /// <summary>
    /// Checks, before any work starts, that the report (and the PNG folder, when given) can be written: creates their
    /// folders and writes a probe file. Returns the report's full path. Throws a <see cref="UsageException"/> naming the
    /// path and its option otherwise.
    /// </summary>
    public static string CheckWritable(string htmlPath, string option = "--report", string? pngDirectory = null, string pngOption = "--report-png")
    {
        var full = OutputFiles.Check(htmlPath, option);
        if (pngDirectory is not null) CheckFolder(pngDirectory, pngOption);
        return full;
    }

    /// <summary>
    /// Writes the page for <paramref name="data"/> to <paramref name="htmlPath"/> and, with <paramref name="pngDirectory"/>,
    /// each chart as a PNG file there (<see cref="ReportCharts.LossFile"/>, <see cref="ReportCharts.MetricFile"/>,
    /// <see cref="ReportCharts.ConfusionFile"/>; only those with data). Files are written to a temporary name and moved
    /// into place. Throws an <see cref="ArgumentException"/> for inconsistent data and an <see cref="IOException"/>
    /// naming the path that cannot be written.
    /// </summary>
    public static void Write(ReportData data, string htmlPath, string? pngDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentException.ThrowIfNullOrWhiteSpace(htmlPath);
        Validate(data);
        var charts = ReportCharts.Draw(data);
        var html = ReportPage.Render(data, charts);
        if (pngDirectory is not null)
        {
            var folder = Path.GetFullPath(pngDirectory);
            Save(folder, "The report's chart folder", () => Directory.CreateDirectory(folder));
            foreach (var chart in charts)
            {
                var path = Path.Combine(folder, chart.FileName);
                Save(path, "The report's chart", () => OutputFiles.WriteAtomically(path, temporary => File.WriteAllBytes(temporary, chart.Png)));
            }
        }
        var full = Path.GetFullPath(htmlPath);
        Save(full, "The report", () =>
        {
            if (Directory.Exists(full)) throw new IOException("it is a directory; give a file name");
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            OutputFiles.WriteAtomically(full, temporary => File.WriteAllText(temporary, html, new UTF8Encoding(false)));
        });
    }

    private static void Save(string path, string what, Action save)
    {
        try
        {
            save();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{what} '{path}' cannot be written: {e.Message}", e);
        }
    }

    private static void CheckFolder(string folder, string option)
    {
        var full = Path.GetFullPath(folder);
        if (File.Exists(full)) throw new UsageException($"The folder '{folder}' ({option}) is a file; give a folder.");
        try
        {
            Directory.CreateDirectory(full);
            var probe = Path.Combine(full, $".report.{Guid.NewGuid():N}.probe");
            File.WriteAllBytes(probe, Array.Empty<byte>());
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"The folder '{folder}' ({option}) cannot be written: {e.Message}");
        }
    }

    /// <summary>Checks that the lists of <paramref name="data"/> agree with each other (a bug in the caller otherwise).</summary>
    private static void Validate(ReportData data)
    {
        if (data.Classification is not { } c) return;
        var n = c.ClassNames.Count;
        foreach (var (name, count) in new[] { ("Precision", c.Precision.Count), ("Recall", c.Recall.Count), ("F1", c.F1.Count), ("Support", c.Support.Count) })
            if (count != n) throw new ArgumentException($"The report's per-class {name} has {count} values for {n} classes.", nameof(data));
        if (c.Confusion is { } confusion)
        {
            if (confusion.Count != n) throw new ArgumentException($"The report's confusion matrix has {confusion.Count} rows for {n} classes.", nameof(data));
            for (var i = 0; i < n; i++)
                if (confusion[i].Count != n)
                    throw new ArgumentException($"Row {i} ('{c.ClassNames[i]}') of the report's confusion matrix has {confusion[i].Count} columns for {n} classes.", nameof(data));
        }
    }
}
