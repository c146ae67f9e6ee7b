namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// Geometry of boxes in continuous pixel coordinates: intersection over union, generalised IoU, clipping, and
/// class-wise non-maximum suppression. An empty or inverted box has area 0.
/// </summary>
internal static class BoxGeometry
{
    /// <summary>The area of the intersection of two boxes (0 when they do not overlap).</summary>
    public static float IntersectionArea(in DetectionBox a, in DetectionBox b)
    {
        float w = Math.Min(a.XMax, b.XMax) - Math.Max(a.XMin, b.XMin);
        float h = Math.Min(a.YMax, b.YMax) - Math.Max(a.YMin, b.YMin);
        return w > 0 && h > 0 ? w * h : 0f;
    }

    /// <summary>Intersection over union, from 0 to 1; 0 when the union is empty (two empty boxes). Classes and scores are ignored.</summary>
    public static float Iou(in DetectionBox a, in DetectionBox b)
    {
        float intersection = IntersectionArea(a, b);
        float union = a.Area + b.Area - intersection;
        return union > 0 ? intersection / union : 0f;
    }

    /// <summary>Intersection over union computed in double precision (as pycocotools does, for matching at exact thresholds); 0 when the union is empty.</summary>
    public static double IouDouble(in DetectionBox a, in DetectionBox b)
    {
        double w = Math.Min((double)a.XMax, b.XMax) - Math.Max((double)a.XMin, b.XMin);
        double h = Math.Min((double)a.YMax, b.YMax) - Math.Max((double)a.YMin, b.YMin);
        double intersection = w > 0 && h > 0 ? w * h : 0;
        double areaA = Math.Max(0, (double)a.XMax - a.XMin) * Math.Max(0, (double)a.YMax - a.YMin);
        double areaB = Math.Max(0, (double)b.XMax - b.XMin) * Math.Max(0, (double)b.YMax - b.YMin);
        double union = areaA + areaB - intersection;
        return union > 0 ? intersection / union : 0;
    }

    /// <summary>The IoU of every box of <paramref name="a"/> (rows) with every box of <paramref name="b"/> (columns).</summary>
    public static float[,] IouMatrix(IReadOnlyList<DetectionBox> a, IReadOnlyList<DetectionBox> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var result = new float[a.Count, b.Count];
        for (int i = 0; i < a.Count; i++)
        {
            var ai = a[i];
            for (int j = 0; j < b.Count; j++) result[i, j] = Iou(ai, b[j]);
        }
        return result;
    }

    /// <summary>
    /// Generalised IoU (Rezatofighi et al., 2019): <c>IoU - (C - U) / C</c>, with <c>C</c> the area of the smallest box
    /// enclosing both and <c>U</c> their union; from -1 (far apart) to 1 (identical). 0 when the enclosing box is empty.
    /// </summary>
    public static float GeneralizedIou(in DetectionBox a, in DetectionBox b)
    {
        float intersection = IntersectionArea(a, b);
        float union = a.Area + b.Area - intersection;
        float iou = union > 0 ? intersection / union : 0f;
        float enclosing = (Math.Max(a.XMax, b.XMax) - Math.Min(a.XMin, b.XMin)) * (Math.Max(a.YMax, b.YMax) - Math.Min(a.YMin, b.YMin));
        return enclosing > 0 ? iou - (enclosing - union) / enclosing : iou;
    }

    /// <summary>The box clipped to the image <c>[0, width] x [0, height]</c> (class and score kept); a box wholly outside becomes empty (zero width or height).</summary>
    public static DetectionBox Clip(in DetectionBox box, float width, float height)
    {
        float xMin = Math.Clamp(box.XMin, 0, width), xMax = Math.Clamp(box.XMax, 0, width);
        float yMin = Math.Clamp(box.YMin, 0, height), yMax = Math.Clamp(box.YMax, 0, height);
        return box with { XMin = xMin, YMin = yMin, XMax = Math.Max(xMin, xMax), YMax = Math.Max(yMin, yMax) };
    }

    /// <summary>
    /// Class-wise greedy non-maximum suppression, as torchvision's <c>batched_nms</c> followed by a score filter and a
    /// top-k: the boxes whose score is at least <paramref name="scoreThreshold"/> are taken by descending score (ties
    /// in input order); a box is dropped when its IoU with an already kept box of the same class is above
    /// <paramref name="iouThreshold"/>; at most <paramref name="maxDetections"/> are kept. Boxes of different classes
    /// never suppress each other. Empty boxes are dropped.
    /// </summary>
    /// <param name="boxes">The candidate boxes.</param>
    /// <param name="scoreThreshold">The lowest score kept.</param>
    /// <param name="iouThreshold">The IoU above which a lower-scored box of the same class is suppressed, in [0, 1].</param>
    /// <param name="maxDetections">The most boxes returned (positive).</param>
    /// <returns>The kept boxes, by descending score, ties in input order: the same input always gives the same output.</returns>
    /// <exception cref="ArgumentException">A score is NaN, or a threshold or the maximum is out of range.</exception>
    public static List<DetectionBox> NonMaximumSuppression(IReadOnlyList<DetectionBox> boxes, float scoreThreshold, float iouThreshold, int maxDetections)
    {
        ArgumentNullException.ThrowIfNull(boxes);
        if (!(iouThreshold >= 0 && iouThreshold <= 1)) throw new ArgumentOutOfRangeException(nameof(iouThreshold), iouThreshold, "The IoU threshold must be in [0, 1].");
        if (float.IsNaN(scoreThreshold)) throw new ArgumentOutOfRangeException(nameof(scoreThreshold), scoreThreshold, "The score threshold must be a number.");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxDetections);
        var order = new List<int>(boxes.Count);
        for (int i = 0; i < boxes.Count; i++)
        {
            var box = boxes[i];
            if (float.IsNaN(box.Score)) throw new ArgumentException($"The box {i} has a NaN score.", nameof(boxes));
            if (box.Score >= scoreThreshold && box.Area > 0) order.Add(i);
        }
        // List.Sort is not stable: the index breaks ties so that equal scores keep the input order.
        order.Sort((i, j) =>
        {
            int byScore = boxes[j].Score.CompareTo(boxes[i].Score);
            return byScore != 0 ? byScore : i.CompareTo(j);
        });
        var kept = new List<DetectionBox>(Math.Min(maxDetections, order.Count));
        var keptByClass = new Dictionary<int, List<DetectionBox>>();
        foreach (int i in order)
        {
            if (kept.Count == maxDetections) break;
            var box = boxes[i];
            if (!keptByClass.TryGetValue(box.Class, out var same)) keptByClass[box.Class] = same = [];
            bool suppressed = false;
            foreach (var other in same)
            {
                if (Iou(box, other) > iouThreshold)
                {
                    suppressed = true;
                    break;
                }
            }
            if (suppressed) continue;
            same.Add(box);
            kept.Add(box);
        }
        return kept;
    }
}
