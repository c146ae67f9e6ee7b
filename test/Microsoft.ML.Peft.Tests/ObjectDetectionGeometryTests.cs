using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>IoU, generalised IoU, clipping and class-wise non-maximum suppression on hand-computed boxes.</summary>
[TestFixture]
public class ObjectDetectionGeometryTests
{
    private static DetectionBox Box(float x0, float y0, float x1, float y1, int cls = 0, float score = 1f) => new(x0, y0, x1, y1, cls, score);

    [Test]
    public void BoxProperties()
    {
        var box = Box(2, 3, 12, 8);
        Assert.That((box.Width, box.Height, box.Area, box.Score), Is.EqualTo((10f, 5f, 50f, 1f)));
        Assert.That(Box(5, 5, 3, 9).Area, Is.EqualTo(0f), "inverted");
    }

    [Test]
    public void IouOfOverlappingDisjointAndNestedBoxes()
    {
        // Half overlap: intersection 5 * 10 = 50, union 100 + 100 - 50 = 150.
        Assert.That(BoxGeometry.Iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)), Is.EqualTo(1f / 3).Within(1e-6));
        Assert.That(BoxGeometry.Iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)), Is.EqualTo(0f), "touching edges");
        Assert.That(BoxGeometry.Iou(Box(0, 0, 10, 10), Box(2, 2, 4, 4)), Is.EqualTo(0.04f).Within(1e-6), "nested: 4 / 100");
        Assert.That(BoxGeometry.Iou(Box(1, 2, 3, 4), Box(1, 2, 3, 4, cls: 5, score: 0.1f)), Is.EqualTo(1f), "class and score ignored");
        Assert.That(BoxGeometry.Iou(Box(1, 1, 1, 1), Box(1, 1, 1, 1)), Is.EqualTo(0f), "empty boxes");
        var matrix = BoxGeometry.IouMatrix([Box(0, 0, 10, 10), Box(0, 0, 10, 5)], [Box(5, 0, 15, 10), Box(0, 0, 10, 10), Box(50, 50, 60, 60)]);
        Assert.That(matrix.GetLength(0), Is.EqualTo(2));
        Assert.That(matrix.GetLength(1), Is.EqualTo(3));
        Assert.That(matrix[0, 1], Is.EqualTo(1f));
        Assert.That(matrix[1, 0], Is.EqualTo(25f / 125).Within(1e-6), "(0,0,10,5) and (5,0,15,10): 25 / (50 + 100 - 25)");
        Assert.That(matrix[1, 2], Is.EqualTo(0f));
    }

    [Test]
    public void GeneralizedIou()
    {
        Assert.That(BoxGeometry.GeneralizedIou(Box(0, 0, 4, 4), Box(0, 0, 4, 4)), Is.EqualTo(1f));
        // Disjoint unit squares 1 apart: IoU 0, enclosing (0,0,3,1) area 3, union 2: 0 - (3 - 2) / 3.
        Assert.That(BoxGeometry.GeneralizedIou(Box(0, 0, 1, 1), Box(2, 0, 3, 1)), Is.EqualTo(-1f / 3).Within(1e-6));
        // Half overlap: the enclosing box is the union, so GIoU = IoU = 1/3.
        Assert.That(BoxGeometry.GeneralizedIou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)), Is.EqualTo(1f / 3).Within(1e-6));
        // Diagonal: (0,0,2,2) and (1,1,3,3): IoU 1 / 7, enclosing 9, union 7: 1/7 - 2/9.
        Assert.That(BoxGeometry.GeneralizedIou(Box(0, 0, 2, 2), Box(1, 1, 3, 3)), Is.EqualTo(1f / 7 - 2f / 9).Within(1e-6));
    }

    [Test]
    public void ClipKeepsClassAndScore()
    {
        Assert.That(BoxGeometry.Clip(Box(-5, 3, 120, 90, 2, 0.4f), 100, 80), Is.EqualTo(Box(0, 3, 100, 80, 2, 0.4f)));
        var outside = BoxGeometry.Clip(Box(110, 10, 130, 20), 100, 80);
        Assert.That(outside.Area, Is.EqualTo(0f));
    }

    [Test]
    public void NonMaximumSuppressionIsClassWiseAndOrdered()
    {
        var boxes = new[]
        {
            Box(0, 0, 10, 10, 0, 0.9f),     // 0: kept
            Box(1, 0, 11, 10, 0, 0.8f),     // 1: IoU with 0 = 90 / 110 = 0.82 > 0.5, same class: suppressed
            Box(1, 0, 11, 10, 1, 0.7f),     // 2: same place, other class: kept
            Box(50, 50, 60, 60, 0, 0.95f),  // 3: kept, first
            Box(5, 0, 15, 10, 0, 0.85f),    // 4: IoU with 0 = 50 / 150 = 0.33 <= 0.5: kept
            Box(70, 70, 80, 80, 0, 0.05f),  // 5: below the score threshold
            Box(20, 20, 30, 30, 1, 0.7f),   // 6: ties with 2, later in the input: after it
        };
        var kept = BoxGeometry.NonMaximumSuppression(boxes, scoreThreshold: 0.1f, iouThreshold: 0.5f, maxDetections: 100);
        Assert.That(kept, Is.EqualTo(new[] { boxes[3], boxes[0], boxes[4], boxes[2], boxes[6] }));
        Assert.That(BoxGeometry.NonMaximumSuppression(boxes, 0.1f, 0.5f, 2), Is.EqualTo(new[] { boxes[3], boxes[0] }));
        // At IoU threshold 0.3, box 4 (IoU 0.33 with box 0) is suppressed too; at 0.9 box 1 (0.82) is not.
        Assert.That(BoxGeometry.NonMaximumSuppression(boxes, 0.1f, 0.3f, 100), Does.Not.Contain(boxes[4]));
        Assert.That(BoxGeometry.NonMaximumSuppression(boxes, 0.1f, 0.9f, 100), Does.Contain(boxes[1]));
        // IoU exactly at the threshold is not above it: (0,0,10,10) and (0,0,10,5) have IoU 50 / 100 = 0.5.
        Assert.That(BoxGeometry.NonMaximumSuppression([Box(0, 0, 10, 10, 0, 0.9f), Box(0, 0, 10, 5, 0, 0.8f)], 0f, 0.5f, 10), Has.Count.EqualTo(2), "IoU 0.5 = threshold: not suppressed");
        Assert.That(BoxGeometry.NonMaximumSuppression([Box(0, 0, 10, 10, 0, 0.9f), Box(0, 0, 10, 5, 0, 0.8f)], 0f, 0.49f, 10), Has.Count.EqualTo(1));
        // Deterministic: reversing the input of equal-score boxes reverses their order and nothing else.
        var ties = Enumerable.Range(0, 5).Select(i => Box(i * 20, 0, i * 20 + 10, 10, 0, 0.5f)).ToArray();
        Assert.That(BoxGeometry.NonMaximumSuppression(ties, 0f, 0.5f, 10), Is.EqualTo(ties));
        Assert.That(BoxGeometry.NonMaximumSuppression(ties.Reverse().ToArray(), 0f, 0.5f, 10), Is.EqualTo(ties.Reverse()));
        Assert.Throws<ArgumentException>(() => BoxGeometry.NonMaximumSuppression([Box(0, 0, 1, 1, 0, float.NaN)], 0f, 0.5f, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => BoxGeometry.NonMaximumSuppression(boxes, 0f, 1.5f, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => BoxGeometry.NonMaximumSuppression(boxes, 0f, 0.5f, 0));
    }
}
