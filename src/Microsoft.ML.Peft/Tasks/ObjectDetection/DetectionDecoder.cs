using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// Turns the detector's outputs into boxes as FCOS does at inference: each location and class scores
/// sqrt(sigmoid(class logit) x sigmoid(centerness logit)); per level, the <c>topKPerLevel</c> best scores above the
/// threshold become boxes (location minus left/top, plus right/bottom distances) clipped to the image; then class-wise
/// non-maximum suppression and the <c>maxDetections</c> best overall.
/// </summary>
internal static class DetectionDecoder
{
    /// <summary>FCOS's candidates per level before suppression.</summary>
    public const int DefaultTopKPerLevel = 1000;

    /// <summary>The most boxes per image by default (COCO's evaluation limit).</summary>
    public const int DefaultMaxDetections = 100;

    /// <summary>
    /// Boxes of each image of the batch, best score first, in input pixel coordinates (callers rescale them to the
    /// original image). Reads the outputs without gradients.
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<DetectionBox>> Decode(DetectionOutputs outputs, float scoreThreshold, float iouThreshold,
        int maxDetections = DefaultMaxDetections, int topKPerLevel = DefaultTopKPerLevel)
    {
        if (!(scoreThreshold >= 0 && scoreThreshold < 1)) throw new ArgumentOutOfRangeException(nameof(scoreThreshold), scoreThreshold, "The score threshold must be in [0, 1).");
        if (!(iouThreshold > 0 && iouThreshold <= 1)) throw new ArgumentOutOfRangeException(nameof(iouThreshold), iouThreshold, "The IoU threshold must be in (0, 1].");
        if (maxDetections < 1) throw new ArgumentOutOfRangeException(nameof(maxDetections), maxDetections, "At least one detection per image must be allowed.");
        if (topKPerLevel < 1) throw new ArgumentOutOfRangeException(nameof(topKPerLevel), topKPerLevel, "At least one candidate per level must be allowed.");
        int batch = (int)outputs.BatchSize, classes = outputs.ClassCount;
        int locations = (int)outputs.ClassLogits.shape[1];
        float[] scores, distances;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var s = outputs.ClassLogits.sigmoid().mul(outputs.CenternessLogits.sigmoid().unsqueeze(-1)).sqrt();
            scores = s.cpu().contiguous().data<float>().ToArray();
            distances = outputs.Distances.detach().cpu().contiguous().data<float>().ToArray();
        }
        var points = outputs.Locations();
        var result = new IReadOnlyList<DetectionBox>[batch];
        for (int b = 0; b < batch; b++)
        {
            var candidates = new List<DetectionBox>();
            int start = 0;
            foreach (var level in outputs.Levels)
            {
                var levelCandidates = new List<(float Score, int Location, int Class)>();
                for (int n = start; n < start + level.Count; n++)
                {
                    long offset = ((long)b * locations + n) * classes;
                    for (int c = 0; c < classes; c++)
                    {
                        float score = scores[offset + c];
                        if (score > scoreThreshold) levelCandidates.Add((score, n, c));
                    }
                }
                foreach (var (score, n, c) in levelCandidates.OrderByDescending(x => x.Score).Take(topKPerLevel))
                {
                    long d = ((long)b * locations + n) * 4;
                    var (x, y) = points[n];
                    candidates.Add(new DetectionBox(
                        Math.Clamp(x - distances[d], 0, outputs.ImageWidth), Math.Clamp(y - distances[d + 1], 0, outputs.ImageHeight),
                        Math.Clamp(x + distances[d + 2], 0, outputs.ImageWidth), Math.Clamp(y + distances[d + 3], 0, outputs.ImageHeight),
                        c, score));
                }
                start += level.Count;
            }
            result[b] = BoxGeometry.NonMaximumSuppression(candidates, float.NegativeInfinity, iouThreshold, maxDetections);
        }
        return result;
    }
}
