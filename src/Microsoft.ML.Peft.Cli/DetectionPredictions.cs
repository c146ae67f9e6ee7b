using System.Globalization;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using Microsoft.ML.Transforms;
using SkiaSharp;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary>
/// <c>predict</c> for object detectors: one CSV row per detected box in the labels' layout
/// (<c>filename,width,height,class,xmin,ymin,xmax,ymax</c>) plus <c>score</c>, and with <c>--draw</c> the images with
/// their boxes drawn.
/// </summary>
internal static class DetectionPredictions
{
    public static int Run(string modelPath, ImageDataset dataset, string output, string? baseModelPath, string? drawFolder)
    {
        var console = Terminal.Out;
        var outputPath = OutputFiles.Check(output, "--output");
        string? draw = null;
        if (drawFolder is not null)
        {
            draw = Path.GetFullPath(drawFolder);
            try
            {
                Directory.CreateDirectory(draw);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"The folder '{drawFolder}' (--draw) cannot be created: {e.Message}");
            }
        }
        var mlContext = new MLContext(1);
        using var cancellation = Cancellation.Attach(mlContext);
        var model = PredictCommand.LoadModel(mlContext, modelPath, baseModelPath, out _);
        var transformers = PredictCommand.Flatten(model).ToList();
        try
        {
            var detector = transformers.OfType<PeftObjectDetectionTransformer>().SingleOrDefault()
                ?? throw new ArgumentException($"The model '{modelPath}' (--model) is not an object detector.");
            // Each image's size, read from its header (the CSV gives the original image's width and height).
            var sizes = dataset.Rows.Select(r => Size(r.ImagePath)).ToList();
            IDataView data = mlContext.Data.LoadFromEnumerable(dataset.Rows.Select(r => new ImageRow { ImagePath = r.ImagePath }).ToList());
            // The label mapper at the head of the chain is not needed for scoring (the images have no labels here).
            foreach (var transformer in transformers.SkipWhile(t => t is ValueToKeyMappingTransformer))
                data = transformer.Transform(data);
            console.MarkupLine($"Detecting in [green]{Markup.Escape(dataset.Description)}[/] (score threshold {detector.ScoreThreshold.ToString(CultureInfo.InvariantCulture)})");
            var paths = dataset.Rows.Select(r => r.ImagePath).ToList();
            long boxes = 0;
            OutputFiles.WriteAtomically(outputPath, temporary =>
            {
                using var writer = new StreamWriter(temporary);
                boxes = ObjectDetectionDataset.WritePredictions(data, paths, sizes, detector.ClassNames, writer);
            });
            console.MarkupLine($"Wrote {boxes.ToString(CultureInfo.InvariantCulture)} boxes in {paths.Count.ToString(CultureInfo.InvariantCulture)} images to [green]{Markup.Escape(outputPath)}[/]");
            if (draw is not null)
            {
                var predictions = ReadBack(outputPath, detector.ClassNames);
                for (int i = 0; i < paths.Count; i++)
                    Draw(paths[i], predictions.TryGetValue(Path.GetFileName(paths[i]), out var found) ? found : new List<(string, float, float[])>(), detector.ClassNames,
                        Path.Combine(draw, Path.GetFileNameWithoutExtension(paths[i]) + ".png"));
                console.MarkupLine($"Drew the boxes on {paths.Count.ToString(CultureInfo.InvariantCulture)} images in [green]{Markup.Escape(draw)}[/]");
            }
            return 0;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    /// <summary>The width and height of an image file, from its header.</summary>
    private static (int Width, int Height) Size(string path)
    {
        using var codec = SKCodec.Create(path) ?? throw new InvalidDataException($"The image '{path}' cannot be read (not an image SkiaSharp decodes).");
        return (codec.Info.Width, codec.Info.Height);
    }

    /// <summary>The boxes of the predictions CSV just written, by file name: class, score and xmin, ymin, xmax, ymax.</summary>
    internal static Dictionary<string, List<(string Class, float Score, float[] Box)>> ReadBack(string csv, IReadOnlyList<string> classes)
    {
        var result = new Dictionary<string, List<(string, float, float[])>>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(csv).Skip(1))
        {
            var f = line.Split(',');
            // The writer quotes a file name with a comma; such images are drawn without their boxes' names looked up by split.
            if (f.Length != 9) continue;
            if (!result.TryGetValue(f[0], out var list)) result[f[0]] = list = new List<(string, float, float[])>();
            if (f[3].Length == 0) continue;
            var box = f.Skip(4).Take(4).Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            list.Add((f[3], float.Parse(f[8], CultureInfo.InvariantCulture), box));
        }
        return result;
    }

    private static readonly SKColor[] Colors =
    {
        new(230, 25, 75), new(60, 180, 75), new(0, 130, 200), new(245, 130, 48), new(145, 30, 180), new(70, 240, 240), new(240, 50, 230), new(210, 245, 60),
    };

    /// <summary>Writes <paramref name="imagePath"/> as PNG with each box outlined in its class's colour and labelled with the class and score.</summary>
    private static void Draw(string imagePath, IReadOnlyList<(string Class, float Score, float[] Box)> boxes, IReadOnlyList<string> classes, string output) =>
        File.WriteAllBytes(output, Render(imagePath, boxes, classes, null));

    /// <summary>
    /// <paramref name="imagePath"/> as PNG bytes with each box outlined in its class's colour and labelled with the class and
    /// (when it has one) its score; with <paramref name="maxSide"/>, scaled down so that its longer side is at most that.
    /// </summary>
    internal static byte[] Render(string imagePath, IReadOnlyList<(string Class, float Score, float[] Box)> boxes, IReadOnlyList<string> classes, int? maxSide)
    {
        using var decoded = SKBitmap.Decode(imagePath) ?? throw new InvalidDataException($"The image '{Path.GetFileName(imagePath)}' cannot be decoded.");
        float scale = maxSide is int side && Math.Max(decoded.Width, decoded.Height) > side ? (float)side / Math.Max(decoded.Width, decoded.Height) : 1f;
        using var bitmap = scale < 1f
            ? decoded.Resize(new SKImageInfo(Math.Max(1, (int)(decoded.Width * scale)), Math.Max(1, (int)(decoded.Height * scale))), SKFilterQuality.Medium) ?? throw new InvalidDataException($"The image '{Path.GetFileName(imagePath)}' cannot be scaled.")
            : decoded.Copy();
        using var canvas = new SKCanvas(bitmap);
        float stroke = Math.Max(2, Math.Min(bitmap.Width, bitmap.Height) / 150f);
        float textSize = Math.Max(12, stroke * 6);
        foreach (var (name, score, original) in boxes)
        {
            var b = original.Select(v => v * scale).ToArray();
            var color = Colors[Math.Max(0, IndexOf(classes, name)) % Colors.Length];
            using var outline = new SKPaint { Color = color, Style = SKPaintStyle.Stroke, StrokeWidth = stroke, IsAntialias = true };
            canvas.DrawRect(SKRect.Create(b[0], b[1], b[2] - b[0], b[3] - b[1]), outline);
            var text = float.IsNaN(score) ? name : $"{name} {score.ToString("F2", CultureInfo.InvariantCulture)}";
            using var ink = new SKPaint { Color = SKColors.White, IsAntialias = true, TextSize = textSize, Typeface = SKTypeface.Default };
            float width = ink.MeasureText(text);
            float top = Math.Max(0, b[1] - textSize - 4);
            using var fill = new SKPaint { Color = color, Style = SKPaintStyle.Fill };
            canvas.DrawRect(SKRect.Create(b[0], top, width + 6, textSize + 4), fill);
            canvas.DrawText(text, b[0] + 3, top + textSize, ink);
        }
        using var image = SKImage.FromBitmap(bitmap);
        using var encoded = image.Encode(SKEncodedImageFormat.Png, 100);
        return encoded.ToArray();
    }

    private static int IndexOf(IReadOnlyList<string> list, string value)
    {
        for (int i = 0; i < list.Count; i++)
            if (list[i] == value) return i;
        return -1;
    }

    private sealed class ImageRow
    {
        public string ImagePath { get; set; } = "";
    }
}
