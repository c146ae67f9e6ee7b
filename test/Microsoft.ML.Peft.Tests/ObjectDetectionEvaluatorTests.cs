using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The COCO-style evaluator on cases computed by hand with pycocotools' algorithm (COCOeval.evaluateImg and
/// accumulate): greedy matching by descending score, precision made monotone from the right, interpolated precision at
/// the recall levels np.linspace(0, 1, 101) (first point whose recall is at least the level), AP the mean of those 101
/// values, mAP the mean over classes with ground truth, and mAP@[0.5:0.95] the mean over IoU 0.5, 0.55, ..., 0.95.
/// </summary>
[TestFixture]
public class ObjectDetectionEvaluatorTests
{
    private static readonly string[] OneClass = ["raccoon"];

    private static DetectionBox Box(float x0, float y0, float x1, float y1, int cls = 0, float score = 1f) => new(x0, y0, x1, y1, cls, score);

    private static IReadOnlyList<DetectionBox> Image(params DetectionBox[] boxes) => boxes;

    private static ObjectDetectionMetrics Evaluate(IReadOnlyList<DetectionBox>[] gt, IReadOnlyList<DetectionBox>[] predictions, string[]? classes = null) =>
        ObjectDetectionEvaluator.Evaluate(gt, predictions, classes ?? OneClass);

    [Test]
    public void PerfectPredictionsScoreOne()
    {
        // Every ground truth predicted exactly (IoU 1 >= every threshold): at each threshold tp = 1, 2, 3 with no false
        // positive, so precision is 1 at every recall level and AP = 101 / 101 = 1.
        var gt = new[] { Image(Box(10, 10, 50, 60), Box(70, 20, 90, 40)), Image(Box(0, 0, 30, 30)) };
        var predictions = new[] { Image(Box(10, 10, 50, 60, score: 0.9f), Box(70, 20, 90, 40, score: 0.7f)), Image(Box(0, 0, 30, 30, score: 0.8f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(1.0).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(1.0).Within(1e-12));
        Assert.That(m.MeanAveragePrecision75, Is.EqualTo(1.0).Within(1e-12));
        Assert.That((m.ImageCount, m.GroundTruthCount, m.PredictionCount, m.EvaluatedClassCount), Is.EqualTo((2, 3, 3, 1)));
    }

    [Test]
    public void FalsePositiveRankedFirstHalvesPrecision()
    {
        // Sorted: FP (0.9), TP (0.8). Cumulative tp = [0, 1], fp = [1, 1]; recall = [0, 1]; precision = [0, 0.5],
        // made monotone from the right: [0.5, 0.5]. Level 0 -> first recall >= 0 is index 0 -> 0.5; levels 0.01..1 ->
        // index 1 -> 0.5. AP = 101 * 0.5 / 101 = 0.5 at every threshold (the TP is exact).
        var gt = new[] { Image(Box(10, 10, 50, 50)) };
        var predictions = new[] { Image(Box(60, 60, 90, 90, score: 0.9f), Box(10, 10, 50, 50, score: 0.8f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(0.5).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(0.5).Within(1e-12));
    }

    [Test]
    public void FalsePositiveRankedLastDoesNotLowerAp()
    {
        // Sorted: TP (0.9), FP (0.1): recall = [1, 1], precision = [1, 0.5] -> monotone [1, 0.5]; every level finds
        // index 0 (recall 1 >= level), precision 1: AP = 1.
        var gt = new[] { Image(Box(10, 10, 50, 50)) };
        var predictions = new[] { Image(Box(10, 10, 50, 50, score: 0.9f), Box(60, 60, 90, 90, score: 0.1f)) };
        Assert.That(Evaluate(gt, predictions).MeanAveragePrecision50, Is.EqualTo(1.0).Within(1e-12));
    }

    [Test]
    public void MissedGroundTruthCapsRecall()
    {
        // Two ground truths, one found exactly: recall = [0.5], precision = [1]. Levels 0, 0.01, ..., 0.50 (51 levels;
        // linspace gives exactly 0.5 at index 50) have precision 1, levels 0.51..1 have none (0): AP = 51 / 101.
        var gt = new[] { Image(Box(10, 10, 50, 50), Box(60, 60, 100, 100)) };
        var predictions = new[] { Image(Box(10, 10, 50, 50, score: 0.9f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(51.0 / 101).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(51.0 / 101).Within(1e-12));
    }

    [Test]
    public void RecallLevelsAreNumpyLinspace()
    {
        // 20 ground truths, 7 exact detections: recall = 1/20 ... 7/20 = 0.35, precision 1. np.linspace(0, 1, 101)[35]
        // is 0.35000000000000003 > 0.35, so only the levels 0..0.34 (35 of them) find a point: AP = 35 / 101, not 36 / 101.
        var gtBoxes = Enumerable.Range(0, 20).Select(i => Box(i * 10, 0, i * 10 + 8, 8)).ToArray();
        var predicted = gtBoxes.Take(7).Select((b, i) => b with { Score = 0.9f - i * 0.01f }).ToArray();
        var m = Evaluate([gtBoxes], [predicted]);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(35.0 / 101).Within(1e-12));
    }

    [Test]
    public void TwoClassesAverageOverClassesWithGroundTruth()
    {
        // Class 0 ("cat"): one exact TP -> AP 1. Class 1 ("dog"): FP (0.9) then exact TP (0.6) -> AP 0.5 (as in
        // FalsePositiveRankedFirstHalvesPrecision). Class 2 ("fox"): a prediction but no ground truth -> left out.
        // mAP = (1 + 0.5) / 2 = 0.75. The dog FP lies on the cat box: classes never match each other.
        var gt = new[] { Image(Box(0, 0, 40, 40, 0), Box(50, 50, 90, 90, 1)) };
        var predictions = new[] { Image(Box(0, 0, 40, 40, 0, 0.8f), Box(0, 0, 40, 40, 1, 0.9f), Box(50, 50, 90, 90, 1, 0.6f), Box(5, 5, 30, 30, 2, 0.95f)) };
        var m = Evaluate(gt, predictions, ["cat", "dog", "fox"]);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(0.75).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(0.75).Within(1e-12));
        Assert.That(m.PerClassAveragePrecision50[0], Is.EqualTo(1.0).Within(1e-12));
        Assert.That(m.PerClassAveragePrecision50[1], Is.EqualTo(0.5).Within(1e-12));
        Assert.That(m.PerClassAveragePrecision50[2], Is.NaN);
        Assert.That(m.PerClassGroundTruthCount, Is.EqualTo(new[] { 1, 1, 0 }));
        Assert.That(m.EvaluatedClassCount, Is.EqualTo(2));
        Assert.That(m.ClassNames, Is.EqualTo(new[] { "cat", "dog", "fox" }));
    }

    [Test]
    public void DuplicateDetectionIsAFalsePositive()
    {
        // Ground truth (0,0,100,100). Detections: A (0,0,100,72) score 0.9, IoU 7200/10000 = 0.72; B exact, score 0.8.
        // Thresholds 0.5..0.7 (5 of them): A matches first (TP), B finds the ground truth taken (FP) -> precision
        // [1, 0.5], recall [1, 1] -> AP 1. Thresholds 0.75..0.95 (5): A is below (FP), B matches -> AP 0.5 as above.
        // mAP@0.5 = 1, mAP@0.75 = 0.5, mAP = (5 * 1 + 5 * 0.5) / 10 = 0.75.
        var gt = new[] { Image(Box(0, 0, 100, 100)) };
        var predictions = new[] { Image(Box(0, 0, 100, 72, score: 0.9f), Box(0, 0, 100, 100, score: 0.8f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(1.0).Within(1e-12));
        Assert.That(m.MeanAveragePrecision75, Is.EqualTo(0.5).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(0.75).Within(1e-12));
    }

    [Test]
    public void ExactDuplicateAfterTheMatchChangesNothing()
    {
        // Two exact copies: TP then FP (ground truth already matched): precision [1, 0.5] -> AP 1 at every threshold.
        var gt = new[] { Image(Box(0, 0, 100, 100)) };
        var predictions = new[] { Image(Box(0, 0, 100, 100, score: 0.9f), Box(0, 0, 100, 100, score: 0.8f)) };
        var m = Evaluate(gt, predictions);
        Assert.That((m.MeanAveragePrecision50, m.MeanAveragePrecision), Is.EqualTo((1.0, 1.0)));
        Assert.That(m.PredictionCount, Is.EqualTo(2));
    }

    [TestCase(58f, 0.2, TestName = "IoU 0.58 counts at 0.5 and 0.55: map = 2/10")]
    [TestCase(60f, 0.3, TestName = "IoU exactly 0.6 counts at 0.5, 0.55 and 0.6 (IoU >= threshold): map = 3/10")]
    [TestCase(62f, 0.3, TestName = "IoU 0.62 counts at 0.5, 0.55 and 0.6: map = 3/10")]
    public void SingleBoxCountsUpToItsIou(float height, double expectedMap)
    {
        // Ground truth (0,0,100,100), one detection (0,0,100,h): IoU = 100h / 10000 = h / 100. At a threshold t <= IoU
        // the detection is a TP (AP 1), above it an FP with the ground truth missed (AP 0). pycocotools matches when
        // IoU >= t, and np.linspace(.5, .95, 10)[2] is exactly the double 0.6, which 60 / 100 also is.
        var gt = new[] { Image(Box(0, 0, 100, 100)) };
        var predictions = new[] { Image(Box(0, 0, 100, height, score: 0.5f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(1.0));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo(expectedMap).Within(1e-12));
    }

    [Test]
    public void NoPredictionsScoreZero()
    {
        var gt = new[] { Image(Box(0, 0, 10, 10)), Image(Box(5, 5, 20, 20)) };
        var m = Evaluate(gt, [Image(), Image()]);
        Assert.That((m.MeanAveragePrecision50, m.MeanAveragePrecision, m.PredictionCount), Is.EqualTo((0.0, 0.0, 0)));
    }

    [Test]
    public void ImagesWithoutGroundTruthOnlyAddFalsePositives()
    {
        // Image 1: ground truth, found exactly (0.9). Image 2: background, a detection there (0.95) is an FP. Image 3:
        // background, nothing predicted (no effect). Across images by score: FP (0.95), TP (0.9) -> AP 0.5.
        var gt = new[] { Image(Box(10, 10, 50, 50)), Image(), Image() };
        var predictions = new[] { Image(Box(10, 10, 50, 50, score: 0.9f)), Image(Box(10, 10, 50, 50, score: 0.95f)), Image() };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(0.5).Within(1e-12));
        Assert.That((m.ImageCount, m.GroundTruthCount, m.PredictionCount), Is.EqualTo((3, 1, 2)));

        // Only background images: no class has ground truth, the means are 0 and every class is left out.
        var none = Evaluate([Image(), Image()], [Image(Box(0, 0, 5, 5, score: 0.5f)), Image()]);
        Assert.That((none.MeanAveragePrecision50, none.EvaluatedClassCount), Is.EqualTo((0.0, 0)));
        Assert.That(none.PerClassAveragePrecision50[0], Is.NaN);
    }

    [Test]
    public void MatchingTakesTheHighestIouGroundTruthAndEachOnlyOnce()
    {
        // Ground truths G1 (0,0,100,100) and G2 (0,20,100,120). Detection A (0,15,100,115), score 0.9: IoU with G1 =
        // 8500 / 11500 = 0.739, with G2 = 9500 / 10500 = 0.905. Detection B = G1 exactly, score 0.8 (IoU with G2 =
        // 8000 / 12000 = 0.667).
        // Thresholds 0.5..0.9 (9): A takes G2 (the highest IoU), B takes G1: two TPs, AP 1. (A rule taking the first
        // ground truth above the threshold would give A G1 and, at 0.7..0.9, leave B an FP.)
        // Threshold 0.95: A matches nothing (FP); B takes G1 (TP): recall [0, 0.5], precision [0, 0.5] -> [0.5, 0.5];
        // the 51 levels 0..0.5 get 0.5: AP = 25.5 / 101. mAP = (9 + 25.5 / 101) / 10.
        var gt = new[] { Image(Box(0, 0, 100, 100), Box(0, 20, 100, 120)) };
        var predictions = new[] { Image(Box(0, 15, 100, 115, score: 0.9f), Box(0, 0, 100, 100, score: 0.8f)) };
        var m = Evaluate(gt, predictions);
        Assert.That(m.MeanAveragePrecision50, Is.EqualTo(1.0).Within(1e-12));
        Assert.That(m.MeanAveragePrecision, Is.EqualTo((9 + 25.5 / 101) / 10).Within(1e-12));
    }

    [Test]
    public void AtMostOneHundredDetectionsPerImageAndClass()
    {
        // 101 detections on one image: 100 far-away FPs scored 0.99..0.5, then the exact TP at 0.1. pycocotools keeps
        // the 100 best per image and class, so the TP is cut and AP = 0; with a limit of 101 it is the 101st point:
        // recall 1 at precision 1/101 -> AP = 1/101.
        var gt = new[] { Image(Box(0, 0, 10, 10)) };
        var many = Enumerable.Range(0, 100).Select(i => Box(200, 200, 220, 220, score: 0.99f - i * 0.004f)).Append(Box(0, 0, 10, 10, score: 0.1f)).ToArray();
        Assert.That(Evaluate(gt, [many]).MeanAveragePrecision50, Is.EqualTo(0.0));
        Assert.That(ObjectDetectionEvaluator.Evaluate(gt, [many], OneClass, maxDetections: 101).MeanAveragePrecision50, Is.EqualTo(1.0 / 101).Within(1e-12));
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        var gt = new[] { Image(Box(0, 0, 10, 10)) };
        Assert.That(Assert.Throws<ArgumentException>(() => Evaluate(gt, [Image(), Image()]))!.Message, Does.Contain("1 images of ground truth but 2"));
        Assert.That(Assert.Throws<ArgumentException>(() => Evaluate(gt, [Image(Box(0, 0, 10, 10, cls: 3))]))!.Message, Does.Contain("class 3"));
        Assert.That(Assert.Throws<ArgumentException>(() => Evaluate(gt, [Image(Box(0, 0, 10, 10, score: float.NaN))]))!.Message, Does.Contain("NaN"));
    }
}
