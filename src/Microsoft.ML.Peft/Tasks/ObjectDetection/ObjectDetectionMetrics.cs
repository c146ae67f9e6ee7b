namespace Microsoft.ML.Peft;

/// <summary>
/// COCO-style detection metrics (the algorithm of pycocotools' <c>COCOeval</c>, all areas, up to 100 detections per
/// image and class): average precision is the mean of the interpolated precision at the 101 recall levels 0, 0.01, ...,
/// 1, per class, then averaged over the classes that have ground truth. A detection counts as correct when it matches,
/// by descending score, the unmatched ground-truth box of its class with the highest IoU at or above the threshold.
/// </summary>
public sealed record ObjectDetectionMetrics
{
    internal ObjectDetectionMetrics(double meanAveragePrecision50, double meanAveragePrecision75, double meanAveragePrecision,
        IReadOnlyList<string> classNames, IReadOnlyList<double> perClassAveragePrecision50, IReadOnlyList<double> perClassAveragePrecision,
        IReadOnlyList<int> perClassGroundTruthCount, int imageCount, int groundTruthCount, int predictionCount)
    {
        MeanAveragePrecision50 = meanAveragePrecision50;
        MeanAveragePrecision75 = meanAveragePrecision75;
        MeanAveragePrecision = meanAveragePrecision;
        ClassNames = classNames;
        PerClassAveragePrecision50 = perClassAveragePrecision50;
        PerClassAveragePrecision = perClassAveragePrecision;
        PerClassGroundTruthCount = perClassGroundTruthCount;
        ImageCount = imageCount;
        GroundTruthCount = groundTruthCount;
        PredictionCount = predictionCount;
    }

    /// <summary>Mean average precision at IoU 0.5 (mAP@0.5, the metric named <c>map50</c>), from 0 to 1; 0 when no class has ground truth.</summary>
    public double MeanAveragePrecision50 { get; }

    /// <summary>Mean average precision at IoU 0.75, from 0 to 1.</summary>
    public double MeanAveragePrecision75 { get; }

    /// <summary>
    /// Mean average precision averaged over the IoU thresholds 0.5, 0.55, ..., 0.95 (mAP@[0.5:0.95], COCO's headline
    /// metric, named <c>map</c>), from 0 to 1.
    /// </summary>
    public double MeanAveragePrecision { get; }

    /// <summary>The class names, by class index.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Per class (by class index), the average precision at IoU 0.5; <see cref="double.NaN"/> for a class without ground truth, which is left out of the mean.</summary>
    public IReadOnlyList<double> PerClassAveragePrecision50 { get; }

    /// <summary>Per class, the average precision averaged over the IoU thresholds 0.5 to 0.95; <see cref="double.NaN"/> for a class without ground truth.</summary>
    public IReadOnlyList<double> PerClassAveragePrecision { get; }

    /// <summary>Per class, the number of ground-truth boxes.</summary>
    public IReadOnlyList<int> PerClassGroundTruthCount { get; }

    /// <summary>The number of images evaluated, with or without ground truth.</summary>
    public int ImageCount { get; }

    /// <summary>The number of ground-truth boxes.</summary>
    public int GroundTruthCount { get; }

    /// <summary>The number of predicted boxes evaluated (after the per-image, per-class limit).</summary>
    public int PredictionCount { get; }

    /// <summary>The number of classes that have ground truth, over which the means are taken.</summary>
    public int EvaluatedClassCount => PerClassGroundTruthCount.Count(c => c > 0);
}
