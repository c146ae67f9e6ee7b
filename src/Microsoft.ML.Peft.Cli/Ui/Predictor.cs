using System.Globalization;
using System.Text;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>What the model of a run predicts for one input (the "try it" step).</summary>
/// <param name="Predicted">The predicted class, or the similarity score or rating as text, or the tags.</param>
/// <param name="Scores">Class probabilities, highest first (classification).</param>
/// <param name="Score">The similarity (sentence similarity), or the predicted rating (recommendation).</param>
/// <param name="Tokens">Each word and its tag (named entities).</param>
/// <param name="Boxes">The detected boxes, best first (object detection).</param>
/// <param name="Image">The image with the boxes drawn, as a <c>data:image/png;base64,</c> URL (object detection).</param>
internal sealed record UiPrediction(string Predicted, IReadOnlyList<UiScore>? Scores, double? Score, IReadOnlyList<UiToken>? Tokens,
    IReadOnlyList<UiBox>? Boxes = null, string? Image = null);

/// <summary>A detected box: its class, score, and corners in the image's pixels.</summary>
internal sealed record UiBox(string Label, double Score, double Xmin, double Ymin, double Xmax, double Ymax);

/// <summary>A class and its probability.</summary>
internal sealed record UiScore(string Label, double Score);

/// <summary>A word and its predicted tag.</summary>
internal sealed record UiToken(string Word, string Tag);

/// <summary>
/// Scores one input with a run's saved model through the same code as <c>mlnet-peft predict</c> (an input file in the
/// run's <c>try</c> folder, the predictions file read back), one prediction at a time.
/// </summary>
internal sealed class Predictor
{
    private readonly SemaphoreSlim gate = new(1, 1);

    /// <summary>Predicts for <paramref name="text"/> (and <paramref name="text2"/>) or the image at <paramref name="imagePath"/>.</summary>
    public Task<UiPrediction> PredictAsync(Scenario scenario, string folder, string? text, string? text2, string? imagePath, CancellationToken cancel) =>
        InWorkFolderAsync(folder, (model, work) => Predict(scenario, model, work, text, text2, imagePath), cancel);

    /// <summary>The rating a recommender predicts for <paramref name="user"/> and <paramref name="item"/>, both ids it was trained on.</summary>
    public Task<UiPrediction> PredictRatingAsync(string folder, string? user, string? item, CancellationToken cancel)
    {
        var userId = Id(user, "user");
        var itemId = Id(item, "item");
        return InWorkFolderAsync(folder, (model, work) =>
        {
            var input = Path.Combine(work, "input.tsv");
            var output = Path.Combine(work, "predictions.tsv");
            File.WriteAllText(input, "user\titem\n" + userId + "\t" + itemId + "\n", new UTF8Encoding(false));
            RecommendationPredictions.Run(model, input, new TextFileFormat('\t', true), "user", "item", null, output, null, knownIdsOnly: true);
            var lines = File.ReadAllLines(output);
            if (lines.Length < 2) throw new InvalidDataException("The model wrote no prediction.");
            var header = lines[0].Split('\t');
            var values = lines[1].Split('\t');
            int column = header.Length - 1;
            if (values.Length != header.Length) throw new InvalidDataException("The predictions file is not laid out as expected.");
            double rating = double.Parse(values[column], NumberStyles.Float, CultureInfo.InvariantCulture);
            return new UiPrediction(rating.ToString("0.###", CultureInfo.InvariantCulture), null, rating, null);
        }, cancel);
    }

    private static string Id(string? id, string field)
    {
        if (string.IsNullOrWhiteSpace(id)) throw new ArgumentException($"Type the {field} id to predict for.");
        id = id.Trim();
        if (id.Length > 1024 || id.IndexOfAny(new[] { '\t', '\r', '\n', '"' }) >= 0)
            throw new ArgumentException($"The {field} id must be one line of at most 1,024 characters, without tabs or quotes.");
        return id;
    }

    /// <summary>Runs <paramref name="predict"/> (given the model file and a new work folder) one at a time; the work folder goes afterwards.</summary>
    private async Task<UiPrediction> InWorkFolderAsync(string folder, Func<string, string, UiPrediction> predict, CancellationToken cancel)
    {
        var model = Path.Combine(folder, "model.zip");
        if (!File.Exists(model)) throw new InvalidOperationException("This run has no model yet: train it first.");
        var work = Path.Combine(folder, "try", Guid.NewGuid().ToString("N"));
        await gate.WaitAsync(cancel);
        try
        {
            Directory.CreateDirectory(work);
            return await Task.Run(() => predict(model, work), cancel);
        }
        finally
        {
            gate.Release();
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static UiPrediction Predict(Scenario scenario, string model, string work, string? text, string? text2, string? imagePath)
    {
        var output = Path.Combine(work, "predictions.tsv");
        switch (scenario.Data)
        {
            case "images":
            {
                if (imagePath is null) throw new ArgumentException("Give an image to classify.");
                var images = Path.Combine(work, "images");
                Directory.CreateDirectory(images);
                File.Copy(imagePath, Path.Combine(images, "image" + Path.GetExtension(imagePath)));
                ImagePredictions.Run(model, ImageDataset.ReadForPrediction(images, "the image"), output, null);
                return Classification(output, 1);
            }
            case "detection":
            {
                if (imagePath is null) throw new ArgumentException("Give an image to detect objects in.");
                var images = Path.Combine(work, "images");
                var drawn = Path.Combine(work, "drawn");
                Directory.CreateDirectory(images);
                var name = "image" + Path.GetExtension(imagePath);
                File.Copy(imagePath, Path.Combine(images, name));
                var csv = Path.Combine(work, "predictions.csv");
                DetectionPredictions.Run(model, ImageDataset.ReadForPrediction(images, "the image"), csv, null, drawn);
                var boxes = DetectionPredictions.ReadBack(csv, Array.Empty<string>()).GetValueOrDefault(name) ?? new();
                var list = boxes.OrderByDescending(b => b.Score).Select(b => new UiBox(b.Class, Math.Round(b.Score, 6), b.Box[0], b.Box[1], b.Box[2], b.Box[3])).ToList();
                var png = Path.Combine(drawn, "image.png");
                var image = File.Exists(png) ? "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(png)) : null;
                return new UiPrediction(list.Count == 1 ? "1 box" : $"{list.Count} boxes", null, null, null, list, image);
            }
            case "conll":
            {
                var sentence = Clean(text, "text");
                var input = Path.Combine(work, "input.txt");
                File.WriteAllText(input, sentence + "\n", new UTF8Encoding(false));
                NerPredictions.Run(model, input, output, null);
                var tokens = File.ReadAllLines(output).Where(l => l.Length > 0).Select(l =>
                {
                    int at = l.LastIndexOf(' ');
                    return at < 0 ? new UiToken(l, "") : new UiToken(l[..at], l[(at + 1)..]);
                }).ToList();
                return new UiPrediction(string.Join(' ', tokens.Select(t => t.Tag)), null, null, tokens);
            }
            default:
            {
                bool pairs = scenario.Roles.Contains("text2");
                var first = Clean(text, "text");
                var second = pairs ? Clean(text2, "text2") : null;
                var input = Path.Combine(work, "input.tsv");
                File.WriteAllText(input, (pairs ? "text\ttext2\n" : "text\n") + first + (pairs ? "\t" + second : "") + "\n", new UTF8Encoding(false));
                PredictCommand.Run(model, input, new TextFileFormat('\t', true), "text", pairs ? "text2" : null, output, null);
                if (scenario.LabelKind == "number")
                {
                    var lines = File.ReadAllLines(output);
                    var header = lines[0].Split('\t');
                    var values = lines[1].Split('\t');
                    double score = double.Parse(values[Array.IndexOf(header, "Score")], NumberStyles.Float, CultureInfo.InvariantCulture);
                    return new UiPrediction(score.ToString("0.###", CultureInfo.InvariantCulture), null, score, null);
                }
                return Classification(output, pairs ? 2 : 1);
            }
        }
    }

    /// <summary>Reads the first row of a classification predictions file: input columns, PredictedLabel, one probability per class.</summary>
    private static UiPrediction Classification(string output, int inputColumns)
    {
        var lines = File.ReadAllLines(output);
        if (lines.Length < 2) throw new InvalidDataException("The model wrote no prediction.");
        var header = lines[0].Split('\t');
        var values = lines[1].Split('\t');
        int predicted = Array.IndexOf(header, TextClassificationCommand.PredictedLabelColumn);
        if (predicted < inputColumns - 1 || values.Length != header.Length) throw new InvalidDataException("The predictions file is not laid out as expected.");
        var scores = header.Skip(predicted + 1).Select((label, i) => new UiScore(label,
                double.Parse(values[predicted + 1 + i], NumberStyles.Float, CultureInfo.InvariantCulture)))
            .OrderByDescending(s => s.Score).ToList();
        return new UiPrediction(values[predicted], scores, null, null);
    }

    private static string Clean(string? text, string field)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException($"Type something in '{field}' to predict.");
        if (text.Length > 10_000) throw new ArgumentException($"'{field}' is longer than 10,000 characters.");
        // One row of a tab-separated file: tabs and line breaks become spaces.
        return string.Join(' ', text.Split(new[] { '\t', '\r', '\n' }, StringSplitOptions.RemoveEmptyEntries)).Trim();
    }
}
