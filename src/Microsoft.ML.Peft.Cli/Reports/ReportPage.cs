using System.Globalization;
using System.Net;
using System.Text;

namespace Microsoft.ML.Peft.Cli.Reports;

/// <summary>
/// Renders the report as one static HTML page: inline CSS, charts as PNG data URIs, no script, and a content security
/// policy that forbids loading anything from outside the page. Every text from the data is HTML-escaped.
/// </summary>
internal static class ReportPage
{
    /// <summary>The page's content security policy: nothing is fetched, nothing runs; only inline styles and data: images.</summary>
    public const string ContentSecurityPolicy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    private const string Style = """
        :root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2f6fad; --best: #fff6d5; --bg: #f4f6f8; }
        * { box-sizing: border-box; }
        body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.5 system-ui, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
        main { max-width: 1180px; margin: 0 auto; padding: 24px; }
        header h1 { font-size: 24px; margin: 0 0 4px; }
        header .meta { color: var(--muted); }
        nav { margin: 12px 0 0; display: flex; flex-wrap: wrap; gap: 6px 16px; }
        nav a { color: var(--accent); text-decoration: none; }
        section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 16px 0; overflow-x: auto; }
        h2 { font-size: 18px; margin: 0 0 12px; }
        h3 { font-size: 15px; margin: 16px 0 8px; }
        table { border-collapse: collapse; }
        th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
        th { font-weight: 600; color: var(--muted); background: #fafbfc; white-space: nowrap; }
        .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        tr.best td { background: var(--best); }
        tr.average td { font-weight: 600; border-top: 2px solid var(--line); }
        .badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap; background: #eceff3; color: #3e4c59; }
        .badge.completed { background: #e3f4e8; color: #1e6b34; }
        .badge.pruned { background: #fff1d6; color: #8a5a00; }
        .badge.failed { background: #fde4e4; color: #a61b1b; }
        .badge.best { background: #2f6fad; color: #fff; margin-left: 6px; }
        .config code { display: inline-block; margin: 0 4px 2px 0; padding: 0 6px; border-radius: 4px; background: #f0f2f5; font-size: 12px; }
        .error { margin-top: 4px; color: #a61b1b; white-space: pre-wrap; overflow-wrap: anywhere; font: 12px/1.4 "DejaVu Sans Mono", monospace; }
        .charts { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 16px 20px; }
        figure { margin: 0; }
        img.chart { display: block; box-sizing: content-box; max-width: 100%; height: auto; border: 1px solid var(--line); }
        td.cell { text-align: right; font-variant-numeric: tabular-nums; min-width: 56px; }
        td.diagonal { font-weight: 700; }
        .text { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 680px; }
        img.thumb { display: block; width: 72px; height: auto; border: 1px solid var(--line); }
        img.thumb.pixelated { image-rendering: pixelated; }
        .wrong { color: #a61b1b; font-weight: 600; }
        .bar { display: inline-block; vertical-align: middle; width: 220px; height: 8px; margin-left: 10px; border-radius: 4px; background: var(--line); overflow: hidden; }
        .bar span { display: block; height: 100%; background: var(--accent); }
        .muted { color: var(--muted); }
        footer { color: var(--muted); font-size: 12px; text-align: center; margin: 24px 0 8px; }
        """;

    /// <summary>The page for <paramref name="data"/> with its already drawn <paramref name="charts"/>.</summary>
    public static string Render(ReportData data, IReadOnlyList<ReportChart> charts)
    {
        var sections = new List<(string Id, string Heading, string Body)>();
        if (data.Summary.Count > 0) sections.Add(("summary", "Summary", Summary(data)));
        if (data.Trials.Count > 0) sections.Add(("leaderboard", "Leaderboard", Leaderboard(data)));
        var curves = charts.Where(c => c.FileName is ReportCharts.LossFile or ReportCharts.MetricFile).ToList();
        if (curves.Count > 0) sections.Add(("curves", "Training curves", Figures(curves)));
        if (data.Classification is { } classification && classification.ClassNames.Count > 0)
            sections.Add(("classes", "Per-class results", Classes(classification, charts.FirstOrDefault(c => c.FileName == ReportCharts.ConfusionFile))));
        if (data.HardestExamples.Count > 0) sections.Add(("examples", "Hardest examples", Examples(data.HardestExamples)));
        if (ModelRows(data.Model) is { Count: > 0 } modelRows) sections.Add(("model", "Model size", Table(null, modelRows)));

        var html = new StringBuilder(64 * 1024);
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
            .Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
            .Append("<meta http-equiv=\"Content-Security-Policy\" content=\"").Append(ContentSecurityPolicy).Append("\">\n")
            .Append("<meta name=\"generator\" content=\"mlnet-peft\">\n")
            .Append("<link rel=\"icon\" href=\"data:,\">\n")
            .Append("<title>").Append(E(data.Title)).Append("</title>\n<style>\n").Append(Style).Append("</style>\n</head>\n<body>\n<main>\n");
        html.Append("<header>\n<h1>").Append(E(data.Title)).Append("</h1>\n<div class=\"meta\">")
            .Append("Task <strong>").Append(E(data.Task)).Append("</strong> · metric <strong>").Append(E(data.MetricName))
            .Append("</strong> (higher is better) · created ").Append(E(Utc(data.Created))).Append("</div>\n");
        if (sections.Count > 1)
        {
            html.Append("<nav>");
            foreach (var (id, heading, _) in sections) html.Append("<a href=\"#").Append(id).Append("\">").Append(E(heading)).Append("</a>");
            html.Append("</nav>\n");
        }
        html.Append("</header>\n");
        foreach (var (id, heading, body) in sections)
            html.Append("<section id=\"").Append(id).Append("\">\n<h2>").Append(E(heading)).Append("</h2>\n").Append(body).Append("</section>\n");
        html.Append("<footer>Made by mlnet-peft. This page is self-contained: it loads nothing from elsewhere.</footer>\n</main>\n</body>\n</html>\n");
        return html.ToString();
    }

    /// <summary>HTML-escapes <paramref name="text"/>; control characters other than tab and line breaks become U+FFFD.</summary>
    public static string E(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        if (text.Any(c => char.IsControl(c) && c is not ('\t' or '\n' or '\r')))
            text = new string(text.Select(c => char.IsControl(c) && c is not ('\t' or '\n' or '\r') ? '\uFFFD' : c).ToArray());
        return WebUtility.HtmlEncode(text);
    }

    private static string Utc(DateTime time)
    {
        var utc = time.Kind == DateTimeKind.Local ? time.ToUniversalTime() : time;
        return utc.ToString("yyyy-MM-dd HH:mm:ss", Invariant) + " UTC";
    }

    private static string Summary(ReportData data)
    {
        var rows = data.Summary.Select(r => (E(r.Name), E(r.Value), IsNumber(r.Value))).ToList();
        return Table(null, rows);
    }

    private static bool IsNumber(string value) =>
        double.TryParse(value.Replace(" %", "").Replace("%", ""), NumberStyles.Float | NumberStyles.AllowThousands, Invariant, out _);

    /// <summary>A two-column name/value table; values flagged numeric are right-aligned.</summary>
    private static string Table(string? caption, IReadOnlyList<(string Name, string ValueHtml, bool Numeric)> rows)
    {
        var html = new StringBuilder("<table>\n");
        if (caption is not null) html.Append("<caption>").Append(E(caption)).Append("</caption>\n");
        foreach (var (name, value, numeric) in rows)
            html.Append("<tr><th scope=\"row\">").Append(name).Append("</th><td").Append(numeric ? " class=\"num\"" : "").Append('>')
                .Append(value).Append("</td></tr>\n");
        return html.Append("</table>\n").ToString();
    }

    /// <summary>Trials sorted by their metric, best first (trials without one last, in trial order).</summary>
    public static IReadOnlyList<ReportTrial> Ranked(IReadOnlyList<ReportTrial> trials) =>
        trials.OrderBy(t => t.Metric is { } m && double.IsFinite(m) ? 0 : 1)
            .ThenByDescending(t => t.Metric is { } m && double.IsFinite(m) ? m : 0)
            .ThenBy(t => t.Number)
            .ToList();

    private static string Leaderboard(ReportData data)
    {
        var html = new StringBuilder("<table>\n<thead><tr><th class=\"num\">Rank</th><th class=\"num\">Trial</th><th>Status</th>")
            .Append("<th class=\"num\">").Append(E(data.MetricName)).Append("</th><th class=\"num\">Seconds</th><th class=\"num\">Epochs</th><th>Configuration</th></tr></thead>\n<tbody>\n");
        var rank = 0;
        foreach (var trial in Ranked(data.Trials))
        {
            var hasMetric = trial.Metric is { } m && double.IsFinite(m);
            var best = trial.Number == data.BestTrial;
            html.Append(best ? "<tr class=\"best\">" : "<tr>")
                .Append("<td class=\"num\">").Append(hasMetric ? (++rank).ToString(Invariant) : "–").Append("</td>")
                .Append("<td class=\"num\">").Append(trial.Number.ToString(Invariant)).Append("</td>")
                .Append("<td><span class=\"badge ").Append(StatusClass(trial.Status)).Append("\">").Append(E(trial.Status)).Append("</span>")
                .Append(best ? "<span class=\"badge best\">best</span>" : "").Append("</td>")
                .Append("<td class=\"num\">").Append(hasMetric ? trial.Metric!.Value.ToString("F4", Invariant) : "–").Append("</td>")
                .Append("<td class=\"num\">").Append(Seconds(trial.Seconds)).Append("</td>")
                .Append("<td class=\"num\">").Append(trial.Epochs.Count.ToString(Invariant)).Append("</td>")
                .Append("<td class=\"config\">");
            foreach (var (name, value) in trial.Configuration) html.Append("<code>").Append(E(name)).Append('=').Append(E(value)).Append("</code>");
            if (!string.IsNullOrEmpty(trial.Error)) html.Append("<div class=\"error\">").Append(E(trial.Error)).Append("</div>");
            html.Append("</td></tr>\n");
        }
        return html.Append("</tbody>\n</table>\n").ToString();
    }

    private static string StatusClass(string status) => status.Trim().ToLowerInvariant() switch
    {
        "completed" => "completed",
        "pruned" => "pruned",
        "failed" => "failed",
        _ => "other",
    };

    private static string Seconds(double seconds) =>
        !double.IsFinite(seconds) ? "–" : seconds < 100 ? seconds.ToString("F1", Invariant) : seconds.ToString("N0", Invariant);

    private static string Figures(IEnumerable<ReportChart> charts)
    {
        var html = new StringBuilder("<div class=\"charts\">\n");
        foreach (var chart in charts) html.Append(Figure(chart));
        return html.Append("</div>\n").ToString();
    }

    private static string Figure(ReportChart chart) =>
        $"<figure><img class=\"chart\" src=\"data:image/png;base64,{Convert.ToBase64String(chart.Png)}\" width=\"{chart.Width.ToString(Invariant)}\" height=\"{chart.Height.ToString(Invariant)}\" alt=\"{E(chart.Title)}\" data-file=\"{E(chart.FileName)}\"></figure>\n";

    private static string Classes(ReportClassification c, ReportChart? heatmap)
    {
        var html = new StringBuilder();
        var n = c.ClassNames.Count;
        if (c.Confusion is { } confusion)
        {
            html.Append("<h3>Confusion matrix</h3>\n<div class=\"charts\">\n");
            if (heatmap is not null) html.Append(Figure(heatmap));
            var max = Math.Max(1, confusion.SelectMany(r => r).DefaultIfEmpty(0).Max());
            html.Append("<div>\n<p class=\"muted\">Rows: the true class; columns: the predicted class.</p>\n<table class=\"confusion\">\n<thead><tr><th>true \\ predicted</th>");
            foreach (var name in c.ClassNames) html.Append("<th class=\"num\">").Append(E(name)).Append("</th>");
            html.Append("<th class=\"num\">Total</th></tr></thead>\n<tbody>\n");
            for (var t = 0; t < n; t++)
            {
                html.Append("<tr><th scope=\"row\">").Append(E(c.ClassNames[t])).Append("</th>");
                for (var p = 0; p < n; p++)
                {
                    var count = confusion[t][p];
                    var alpha = (0.06 + 0.6 * count / max).ToString("0.###", Invariant);
                    html.Append("<td class=\"cell").Append(t == p ? " diagonal" : "").Append("\" style=\"background: rgba(47, 111, 173, ")
                        .Append(count == 0 ? "0" : alpha).Append(")\">").Append(count.ToString("N0", Invariant)).Append("</td>");
                }
                html.Append("<td class=\"num\">").Append(confusion[t].Sum().ToString("N0", Invariant)).Append("</td></tr>\n");
            }
            html.Append("</tbody>\n</table>\n</div>\n</div>\n<h3>Precision, recall and F1</h3>\n");
        }
        html.Append("<table>\n<thead><tr><th>Class</th><th class=\"num\">Precision</th><th class=\"num\">Recall</th><th class=\"num\">F1</th><th class=\"num\">Support</th></tr></thead>\n<tbody>\n");
        for (var i = 0; i < n; i++)
            html.Append("<tr><td>").Append(E(c.ClassNames[i])).Append("</td>").Append(Num(c.Precision[i])).Append(Num(c.Recall[i])).Append(Num(c.F1[i]))
                .Append("<td class=\"num\">").Append(c.Support[i].ToString("N0", Invariant)).Append("</td></tr>\n");
        html.Append("<tr class=\"average\"><td>macro average</td>").Append(Num(c.Precision.Average())).Append(Num(c.Recall.Average()))
            .Append(Num(c.F1.Average())).Append("<td class=\"num\">").Append(c.Support.Sum().ToString("N0", Invariant)).Append("</td></tr>\n");
        return html.Append("</tbody>\n</table>\n").ToString();
    }

    private static string Num(double value) => $"<td class=\"num\">{(double.IsFinite(value) ? value.ToString("F4", Invariant) : "–")}</td>";

    private static string Examples(IReadOnlyList<ReportExample> examples)
    {
        var html = new StringBuilder("<p class=\"muted\">The evaluation rows with the highest loss, highest first.</p>\n")
            .Append("<table>\n<thead><tr><th class=\"num\">#</th><th>Example</th><th>Label</th><th>Predicted</th><th class=\"num\">Loss</th></tr></thead>\n<tbody>\n");
        for (var i = 0; i < examples.Count; i++)
        {
            var example = examples[i];
            html.Append("<tr><td class=\"num\">").Append((i + 1).ToString(Invariant)).Append("</td><td>");
            if (example.ImagePng is { } png)
            {
                if (PngSize(png) is { } size)
                    html.Append("<img class=\"thumb").Append(size.Width <= 64 ? " pixelated" : "").Append("\" src=\"data:image/png;base64,")
                        .Append(Convert.ToBase64String(png)).Append("\" alt=\"example ").Append((i + 1).ToString(Invariant)).Append("\">");
                else html.Append("<span class=\"muted\">(the image is not a PNG)</span>");
            }
            if (!string.IsNullOrEmpty(example.Text)) html.Append("<div class=\"text\">").Append(E(example.Text)).Append("</div>");
            var wrong = example.Predicted != example.Label;
            html.Append("</td><td>").Append(E(example.Label)).Append("</td><td").Append(wrong ? " class=\"wrong\"" : "").Append('>')
                .Append(E(example.Predicted)).Append("</td><td class=\"num\">")
                .Append(double.IsFinite(example.Loss) ? example.Loss.ToString("F4", Invariant) : "–").Append("</td></tr>\n");
        }
        return html.Append("</tbody>\n</table>\n").ToString();
    }

    /// <summary>The width and height in a PNG's header, or null when <paramref name="png"/> is not a PNG.</summary>
    public static (int Width, int Height)? PngSize(byte[] png)
    {
        ReadOnlySpan<byte> signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        if (png.Length < 24 || !png.AsSpan(0, 8).SequenceEqual(signature) || !png.AsSpan(12, 4).SequenceEqual("IHDR"u8)) return null;
        var width = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16, 4));
        var height = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20, 4));
        return width > 0 && height > 0 ? (width, height) : null;
    }

    private static List<(string Name, string ValueHtml, bool Numeric)> ModelRows(ReportModel model)
    {
        var rows = new List<(string, string, bool)>();
        if (model.ModelBytes > 0) rows.Add(("Model file", Bytes(model.ModelBytes), true));
        if (model.BaseModelBytes is { } baseBytes && baseBytes > 0)
        {
            rows.Add(("Base model file", Bytes(baseBytes), true));
            if (model.ModelBytes > 0) rows.Add(("Model / base model", Percent((double)model.ModelBytes / baseBytes), true));
        }
        if (model.TotalParameters > 0)
        {
            var share = (double)model.TrainableParameters / model.TotalParameters;
            rows.Add(("Trainable parameters", model.TrainableParameters.ToString("N0", Invariant), true));
            rows.Add(("Total parameters", model.TotalParameters.ToString("N0", Invariant), true));
            var width = Math.Clamp(share * 100, 0, 100).ToString("0.##", Invariant);
            rows.Add(("Trainable share", $"{Percent(share)}<span class=\"bar\"><span style=\"width: {width}%\"></span></span>", true));
        }
        return rows;
    }

    /// <summary>A byte count with its binary-prefixed size: <c>2,500,000 bytes (2.4 MiB)</c>.</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["KiB", "MiB", "GiB", "TiB"];
        var text = bytes.ToString("N0", Invariant) + " bytes";
        if (bytes < 1024) return text;
        double value = bytes;
        var unit = -1;
        while (value >= 1024 && unit < units.Length - 1) { value /= 1024; unit++; }
        return $"{text} ({value.ToString(value < 10 ? "0.0#" : "0.0", Invariant)} {units[unit]})";
    }

    /// <summary>A fraction as a percentage: two decimals from 0.1 %, two significant digits below.</summary>
    public static string Percent(double fraction)
    {
        var percent = fraction * 100;
        if (!double.IsFinite(percent)) return "–";
        if (percent == 0 || Math.Abs(percent) >= 0.1) return percent.ToString("F2", Invariant) + " %";
        var decimals = Math.Min(15, 1 - (int)Math.Floor(Math.Log10(Math.Abs(percent))));
        return Math.Round(percent, decimals).ToString("0.###############", Invariant) + " %";
    }
}
