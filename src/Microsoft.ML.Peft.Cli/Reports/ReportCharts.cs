using Microsoft.ML.Peft.Training;
using OxyPlot;
using OxyPlot.Axes;
using OxyPlot.Legends;
using OxyPlot.Series;
using OxyPlot.SkiaSharp;

namespace Microsoft.ML.Peft.Cli.Reports;

/// <summary>One chart of the report, drawn as a PNG (shown inline in the page and written to the PNG folder).</summary>
/// <param name="FileName">Its file name in the PNG folder, for example <c>loss.png</c>.</param>
/// <param name="Title">What it shows, used as the image's alternative text.</param>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Png">The encoded PNG.</param>
internal sealed record ReportChart(string FileName, string Title, int Width, int Height, byte[] Png);

/// <summary>
/// Draws the report's charts with OxyPlot on SkiaSharp: training loss and validation metric against the epoch (one line
/// per trial) and the confusion matrix as a heatmap. A chart whose data is missing is not drawn.
/// </summary>
internal static class ReportCharts
{
    /// <summary>File name of the training-loss chart.</summary>
    public const string LossFile = "loss.png";

    /// <summary>File name of the validation-metric chart.</summary>
    public const string MetricFile = "validation-metric.png";

    /// <summary>File name of the confusion-matrix heatmap.</summary>
    public const string ConfusionFile = "confusion-matrix.png";

    /// <summary>Trials named in a curve chart's legend at most (the best trial always is); the others are drawn without a legend entry.</summary>
    public const int MaxLegendEntries = 12;

    private const string Font = "DejaVu Sans";

    // Tableau 10: distinct hues that stay apart for colour-blind readers.
    private static readonly OxyColor[] Palette =
    {
        OxyColor.FromRgb(0x4E, 0x79, 0xA7), OxyColor.FromRgb(0xF2, 0x8E, 0x2B), OxyColor.FromRgb(0xE1, 0x57, 0x59),
        OxyColor.FromRgb(0x76, 0xB7, 0xB2), OxyColor.FromRgb(0x59, 0xA1, 0x4F), OxyColor.FromRgb(0xED, 0xC9, 0x48),
        OxyColor.FromRgb(0xB0, 0x7A, 0xA1), OxyColor.FromRgb(0xFF, 0x9D, 0xA7), OxyColor.FromRgb(0x9C, 0x75, 0x5F),
        OxyColor.FromRgb(0xBA, 0xB0, 0xAC),
    };

    private static readonly OxyColor Grid = OxyColor.FromRgb(0xE6, 0xE8, 0xEB);
    private static readonly OxyColor Text = OxyColor.FromRgb(0x22, 0x29, 0x33);

    /// <summary>The colour of the trial at <paramref name="index"/> in trial order (0-based), as 0xRRGGBB.</summary>
    public static int TrialColor(int index)
    {
        var c = Palette[index % Palette.Length];
        return (c.R << 16) | (c.G << 8) | c.B;
    }

    /// <summary>Draws every chart that <paramref name="data"/> has data for, in the order the page shows them.</summary>
    public static IReadOnlyList<ReportChart> Draw(ReportData data)
    {
        var charts = new List<ReportChart>();
        if (Curves(data, e => e.TrainingLoss) is { } loss)
            charts.Add(Render(LossFile, "Training loss per epoch", 530, 380,
                CurveChart("Training loss", "training loss", loss, data.BestTrial, LegendPosition.TopRight)));
        if (Curves(data, e => e.ValidationMetric) is { } metric)
            charts.Add(Render(MetricFile, $"Validation {data.MetricName} per epoch", 530, 380,
                CurveChart($"Validation {data.MetricName}", data.MetricName, metric, data.BestTrial, LegendPosition.BottomRight)));
        if (data.Classification is { Confusion: { } confusion } classification && classification.ClassNames.Count > 0)
        {
            var n = classification.ClassNames.Count;
            var side = Math.Clamp(200 + 70 * n, 360, 900);
            charts.Add(Render(ConfusionFile, "Confusion matrix (rows: true class, columns: predicted class)", side + 90, side,
                ConfusionChart(classification.ClassNames, confusion, side - 140)));
        }
        return charts;
    }

    /// <summary>Each trial with at least one finite value: its index in trial order, its number and its points.</summary>
    private static List<(int Index, int Number, List<DataPoint> Points)>? Curves(ReportData data, Func<EpochMetrics, double?> value)
    {
        var curves = new List<(int, int, List<DataPoint>)>();
        for (var i = 0; i < data.Trials.Count; i++)
        {
            var trial = data.Trials[i];
            var points = trial.Epochs
                .Where(e => value(e) is { } v && double.IsFinite(v))
                .OrderBy(e => e.Epoch)
                .Select(e => new DataPoint(e.Epoch, value(e)!.Value))
                .ToList();
            if (points.Count > 0) curves.Add((i, trial.Number, points));
        }
        return curves.Count > 0 ? curves : null;
    }

    private static PlotModel NewModel(string title) => new()
    {
        Title = title,
        TitleFontSize = 15,
        TitleFontWeight = FontWeights.Bold,
        DefaultFont = Font,
        DefaultFontSize = 12,
        TextColor = Text,
        TitleColor = Text,
        PlotAreaBorderColor = OxyColor.FromRgb(0xB8, 0xBE, 0xC6),
        PlotAreaBorderThickness = new OxyThickness(1),
        Background = OxyColors.White,
        Padding = new OxyThickness(8, 8, 16, 8),
    };

    private static PlotModel CurveChart(string title, string yTitle, List<(int Index, int Number, List<DataPoint> Points)> curves,
        int? bestTrial, LegendPosition legendPosition)
    {
        var model = NewModel(title);
        var maxEpoch = curves.Max(c => c.Points[^1].X);
        model.Axes.Add(new LinearAxis
        {
            Position = AxisPosition.Bottom, Title = "epoch", Minimum = 0.8, Maximum = Math.Max(maxEpoch, 1) + 0.2,
            MajorStep = Math.Max(1, Math.Ceiling(maxEpoch / 10)), MinorStep = 1, StringFormat = "0",
            MajorGridlineStyle = LineStyle.Solid, MajorGridlineColor = Grid, TicklineColor = Grid,
        });
        model.Axes.Add(new LinearAxis
        {
            Position = AxisPosition.Left, Title = yTitle, MajorGridlineStyle = LineStyle.Solid, MajorGridlineColor = Grid,
            TicklineColor = Grid, MinimumPadding = 0.06, MaximumPadding = 0.06,
        });
        // The legend beside the plot, so that it hides no point of a curve.
        const bool inside = false;
        model.Legends.Add(new Legend
        {
            LegendPosition = inside ? legendPosition : LegendPosition.RightTop, LegendPlacement = inside ? LegendPlacement.Inside : LegendPlacement.Outside,
            LegendBackground = OxyColor.FromAColor(220, OxyColors.White), LegendBorder = inside ? Grid : OxyColors.Undefined, LegendFontSize = 11, LegendPadding = 6,
        });
        // The best trial is drawn last (on top), thicker, and always named in the legend.
        var named = curves.Where(c => c.Number == bestTrial).Concat(curves.Where(c => c.Number != bestTrial)).Take(MaxLegendEntries)
            .Select(c => c.Number).ToHashSet();
        foreach (var (index, number, points) in curves.OrderBy(c => c.Number == bestTrial))
        {
            var best = number == bestTrial;
            var series = new LineSeries
            {
                Title = named.Contains(number) ? (best ? $"trial {number} (best)" : $"trial {number}") : null,
                Color = OxyColor.FromUInt32(0xFF000000u | (uint)TrialColor(index)),
                StrokeThickness = best ? 3.5 : 2,
                MarkerType = MarkerType.Circle,
                MarkerSize = best ? 4.5 : 3,
                MarkerFill = OxyColor.FromUInt32(0xFF000000u | (uint)TrialColor(index)),
            };
            series.Points.AddRange(points);
            model.Series.Add(series);
        }
        return model;
    }

    private static PlotModel ConfusionChart(IReadOnlyList<string> classNames, IReadOnlyList<IReadOnlyList<long>> confusion, int plotSide)
    {
        var n = classNames.Count;
        var model = NewModel("Confusion matrix");
        // HeatMapSeries data is [x, y]: x the predicted class (columns), y the true class (rows, first at the top).
        var values = new double[n, n];
        for (var t = 0; t < n; t++)
            for (var p = 0; p < n; p++)
                values[p, t] = confusion[t][p];
        model.Axes.Add(new LinearColorAxis
        {
            Position = AxisPosition.Right, Palette = OxyPalette.Interpolate(200, OxyColor.FromRgb(0xF7, 0xFB, 0xFF), OxyColor.FromRgb(0x08, 0x30, 0x6B)),
            Minimum = 0, Title = "count", TicklineColor = Grid,
        });
        // The column names turn when they would not fit side by side (about 7 pixels a character).
        var turn = n * classNames.Max(c => c.Length) * 7 > plotSide;
        model.Axes.Add(new CategoryAxis
        {
            Position = AxisPosition.Bottom, Key = "predicted", Title = "predicted class", ItemsSource = classNames, GapWidth = 0, Angle = turn ? -45 : 0,
        });
        model.Axes.Add(new CategoryAxis
        {
            Position = AxisPosition.Left, Key = "true", Title = "true class", ItemsSource = classNames, GapWidth = 0, StartPosition = 1, EndPosition = 0,
            AxisTitleDistance = 8,
        });
        model.Series.Add(new HeatMapSeries
        {
            X0 = 0, X1 = n - 1, Y0 = 0, Y1 = n - 1, Data = values, XAxisKey = "predicted", YAxisKey = "true",
            RenderMethod = HeatMapRenderMethod.Rectangles, LabelFormatString = "0", LabelFontSize = n > 8 ? 0.25 : 0.2,
        });
        return model;
    }

    private static ReportChart Render(string fileName, string title, int width, int height, PlotModel model)
    {
        using var stream = new MemoryStream();
        // No text shaping: it needs HarfBuzz's native library, which the SkiaSharp packages here do not bring.
        new PngExporter { Width = width, Height = height, UseTextShaping = false }.Export(model, stream);
        return new ReportChart(fileName, title, width, height, stream.ToArray());
    }
}
