namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// COCO-style evaluation of detections, following pycocotools' <c>COCOeval.evaluateImg</c> and <c>accumulate</c>
/// (bounding boxes, area range "all", no crowd annotations):
/// <list type="number">
/// <item>per image and class, the detections sorted by descending score (stable) and cut to <c>maxDetections</c>;</item>
/// <item>per IoU threshold <c>t</c>, each detection in that order is matched to the not yet matched ground-truth box of
/// its class and image with the highest IoU, if that IoU is at least <c>t</c> (so each ground truth is matched at most
/// once), else it is a false positive;</item>
/// <item>per class, the detections of all images sorted by descending score (stable, images in order), cumulative true
/// and false positives give recall <c>tp / gt</c> and precision <c>tp / (tp + fp)</c>; precision is made monotone
/// non-increasing from the right; at each of the 101 recall levels <c>r = 0, 0.01, ..., 1</c> the interpolated
/// precision is the precision at the first point whose recall is at least <c>r</c> (0 if none); the class's AP is the
/// mean of these 101 values;</item>
/// <item>the mean over the classes that have ground truth (a class with detections but no ground truth is left out).</item>
/// </list>
/// </summary>
internal static class ObjectDetectionEvaluator
{
    /// <summary>
    /// The IoU thresholds of mAP@[0.5:0.95]: 0.5, 0.55, ..., 0.95, in double precision exactly as pycocotools' <c>np.linspace(.5, 0.95, 10)</c>
    /// gives them (<c>i * step + 0.5</c>, the last one 0.95), since an IoU equal to a threshold counts as a match.
    /// </summary>
    public static IReadOnlyList<double> IouThresholds { get; } = Linspace(0.5, 0.95, 10);

    /// <summary>The recall levels 0, 0.01, ..., 1 as <c>np.linspace(0, 1, 101)</c> gives them (0.35 is 0.35000000000000003, for instance).</summary>
    internal static IReadOnlyList<double> RecallThresholds { get; } = Linspace(0, 1, 101);

    /// <summary>The number of recall levels of the interpolated precision: 0, 0.01, ..., 1.</summary>
    public const int RecallLevels = 101;

    /// <summary>pycocotools' default limit of detections per image (and class) for bounding boxes.</summary>
    public const int DefaultMaxDetections = 100;

    /// <summary>Evaluates detections against ground truth.</summary>
    /// <param name="groundTruth">Per image, its ground-truth boxes (scores ignored); an image may have none.</param>
    /// <param name="predictions">Per image (the same images in the same order), the detected boxes with their scores.</param>
    /// <param name="classNames">The class names; box classes are indices into it.</param>
    /// <param name="maxDetections">The most detections kept per image and class, the highest-scored.</param>
    /// <exception cref="ArgumentException">The lists differ in length, a class is out of range, or a score is NaN.</exception>
    public static ObjectDetectionMetrics Evaluate(IReadOnlyList<IReadOnlyList<DetectionBox>> groundTruth, IReadOnlyList<IReadOnlyList<DetectionBox>> predictions,
        IReadOnlyList<string> classNames, int maxDetections = DefaultMaxDetections)
    {
        ArgumentNullException.ThrowIfNull(groundTruth);
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(classNames);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxDetections);
        if (groundTruth.Count != predictions.Count)
            throw new ArgumentException($"There are {groundTruth.Count} images of ground truth but {predictions.Count} of predictions; give both for the same images.", nameof(predictions));
        int classCount = classNames.Count;
        int thresholdCount = IouThresholds.Count;

        // Per class: every kept detection's score and, per threshold, whether it matched; and the ground-truth count.
        var scores = new List<float>[classCount];
        var matched = new List<bool[]>[classCount];
        var gtCount = new int[classCount];
        for (int c = 0; c < classCount; c++)
        {
            scores[c] = [];
            matched[c] = [];
        }
        int groundTruthTotal = 0, predictionTotal = 0;
        for (int image = 0; image < groundTruth.Count; image++)
        {
            var gts = groundTruth[image] ?? throw new ArgumentException($"The ground truth of image {image} is null.", nameof(groundTruth));
            var dts = predictions[image] ?? throw new ArgumentException($"The predictions of image {image} are null.", nameof(predictions));
            foreach (var g in gts) CheckClass(g, classCount, image, nameof(groundTruth));
            foreach (var d in dts)
            {
                CheckClass(d, classCount, image, nameof(predictions));
                if (float.IsNaN(d.Score)) throw new ArgumentException($"A prediction of image {image} has a NaN score.", nameof(predictions));
            }
            groundTruthTotal += gts.Count;
            for (int c = 0; c < classCount; c++)
            {
                var g = gts.Where(b => b.Class == c).ToList();
                gtCount[c] += g.Count;
                // Stable descending sort by score (Enumerable.OrderByDescending is stable), cut to maxDetections.
                var d = dts.Where(b => b.Class == c).OrderByDescending(b => b.Score).Take(maxDetections).ToList();
                if (d.Count == 0) continue;
                predictionTotal += d.Count;
                var ious = IouMatrix(d, g);
                var flags = new bool[d.Count][];
                for (int k = 0; k < d.Count; k++) flags[k] = new bool[thresholdCount];
                for (int t = 0; t < thresholdCount; t++)
                {
                    var gtTaken = new bool[g.Count];
                    for (int k = 0; k < d.Count; k++)
                    {
                        // pycocotools: the best IoU starts at min(t, 1 - 1e-10); a ground truth replaces the current
                        // best when its IoU is not below it, so ties go to the later ground truth.
                        double best = Math.Min(IouThresholds[t], 1 - 1e-10);
                        int match = -1;
                        for (int j = 0; j < g.Count; j++)
                        {
                            if (gtTaken[j] || ious[k, j] < best) continue;
                            best = ious[k, j];
                            match = j;
                        }
                        if (match < 0) continue;
                        gtTaken[match] = true;
                        flags[k][t] = true;
                    }
                }
                foreach (var box in d) scores[c].Add(box.Score);
                matched[c].AddRange(flags);
            }
        }

        var ap50 = new double[classCount];
        var apMean = new double[classCount];
        double sum50 = 0, sum75 = 0, sumAll = 0;
        int evaluated = 0;
        int t75 = 5; // 0.5 + 5 * 0.05
        for (int c = 0; c < classCount; c++)
        {
            if (gtCount[c] == 0)
            {
                ap50[c] = apMean[c] = double.NaN;
                continue;
            }
            evaluated++;
            // Stable descending sort by score across images (numpy's mergesort on -score).
            var order = Enumerable.Range(0, scores[c].Count).OrderByDescending(i => scores[c][i]).ToArray();
            double total = 0;
            for (int t = 0; t < thresholdCount; t++)
            {
                double ap = AveragePrecision(order.Select(i => matched[c][i][t]).ToArray(), gtCount[c]);
                total += ap;
                if (t == 0) ap50[c] = ap;
                if (t == t75) sum75 += ap;
            }
            apMean[c] = total / thresholdCount;
            sum50 += ap50[c];
            sumAll += apMean[c];
        }
        return new ObjectDetectionMetrics(
            evaluated > 0 ? sum50 / evaluated : 0, evaluated > 0 ? sum75 / evaluated : 0, evaluated > 0 ? sumAll / evaluated : 0,
            classNames.ToArray(), ap50, apMean, gtCount, groundTruth.Count, groundTruthTotal, predictionTotal);
    }

    /// <summary>
    /// The 101-point interpolated average precision of detections in descending score order, given whether each is a
    /// true positive, for a class with <paramref name="groundTruthCount"/> ground-truth boxes (positive).
    /// </summary>
    internal static double AveragePrecision(IReadOnlyList<bool> truePositives, int groundTruthCount)
    {
        int n = truePositives.Count;
        var recall = new double[n];
        var precision = new double[n];
        int tp = 0, fp = 0;
        for (int i = 0; i < n; i++)
        {
            if (truePositives[i]) tp++; else fp++;
            recall[i] = (double)tp / groundTruthCount;
            // pycocotools adds np.spacing(1) to the denominator, which changes nothing here since tp + fp >= 1.
            precision[i] = (double)tp / (tp + fp);
        }
        for (int i = n - 1; i > 0; i--)
            if (precision[i - 1] < precision[i]) precision[i - 1] = precision[i];
        double sum = 0;
        int at = 0;
        for (int r = 0; r < RecallLevels; r++)
        {
            // np.searchsorted(rc, recThrs, side='left'): the first index with recall >= level.
            double level = RecallThresholds[r];
            while (at < n && recall[at] < level) at++;
            if (at < n) sum += precision[at];
        }
        return sum / RecallLevels;
    }

    /// <summary>IoUs in double precision, as pycocotools computes them.</summary>
    private static double[,] IouMatrix(List<DetectionBox> detections, List<DetectionBox> groundTruth)
    {
        var result = new double[detections.Count, groundTruth.Count];
        for (int i = 0; i < detections.Count; i++)
            for (int j = 0; j < groundTruth.Count; j++) result[i, j] = BoxGeometry.IouDouble(detections[i], groundTruth[j]);
        return result;
    }

    /// <summary>numpy's <c>linspace(start, stop, count)</c>: <c>i * ((stop - start) / (count - 1)) + start</c>, the last value exactly <paramref name="stop"/>.</summary>
    private static double[] Linspace(double start, double stop, int count)
    {
        double step = (stop - start) / (count - 1);
        var values = new double[count];
        for (int i = 0; i < count; i++) values[i] = i * step + start;
        values[count - 1] = stop;
        return values;
    }

    private static void CheckClass(in DetectionBox box, int classCount, int image, string parameter)
    {
        if (box.Class < 0 || box.Class >= classCount)
            throw new ArgumentException($"A box of image {image} has the class {box.Class}; there are {classCount} classes (0 to {classCount - 1}).", parameter);
    }
}
