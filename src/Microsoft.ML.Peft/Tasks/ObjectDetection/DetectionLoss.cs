using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// The training targets of one image: for every location (in <see cref="DetectionOutputs"/>' order) its class (-1:
/// background), and for positives the distances to its box's sides and the centerness.
/// </summary>
internal sealed class DetectionTargets
{
    public DetectionTargets(int locations)
    {
        Classes = new int[locations];
        Array.Fill(Classes, -1);
        Boxes = new int[locations];
        Array.Fill(Boxes, -1);
        Distances = new float[locations * 4];
        Centerness = new float[locations];
    }

    /// <summary>The class of each location, -1 for background.</summary>
    public int[] Classes { get; }

    /// <summary>The index of the box of each positive location in the image's list, -1 for background.</summary>
    public int[] Boxes { get; }

    /// <summary>Left, top, right, bottom distances to the assigned box, four per location (0 for background).</summary>
    public float[] Distances { get; }

    /// <summary>sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b)) of each positive location (0 for background).</summary>
    public float[] Centerness { get; }

    public int PositiveCount => Classes.Count(c => c >= 0);
}

/// <summary>The detector's loss and its parts (scalars; the caller's dispose scope owns them).</summary>
internal readonly record struct DetectionLossValues(Tensor Total, Tensor Classification, Tensor Box, Tensor Centerness, int Positives);

/// <summary>
/// FCOS's training objective (Tian et al. 2019, with its later improvements): targets assigned to locations inside a box,
/// near its centre (centre sampling) and on the level whose size range holds the box's largest distance; sigmoid focal
/// loss over every location and class; GIoU loss of the distances of positives, weighted by their centerness targets;
/// binary cross-entropy of the centerness of positives.
/// </summary>
internal static class DetectionLoss
{
    /// <summary>Focal loss's weight of positives (Lin et al. 2017).</summary>
    public const float FocalAlpha = 0.25f;

    /// <summary>Focal loss's focusing exponent.</summary>
    public const float FocalGamma = 2f;

    /// <summary>Positives lie within this many strides of their box's centre (on each axis).</summary>
    public const float CenterSamplingRadius = 1.5f;

    /// <summary>
    /// The upper bounds of the largest distance (max of l, t, r, b) each level regresses, in input pixels: P3 up to 64, P4
    /// above 64 up to 128, P5 above 128 (FCOS's bounds for its first levels; its P6 and P7 fold into P5).
    /// </summary>
    public static readonly IReadOnlyList<float> DefaultSizeBounds = new[] { 64f, 128f };

    /// <summary>
    /// Assigns one image's boxes to the locations of <paramref name="levels"/>: a location is positive for a box when it
    /// lies strictly inside the box and inside the square of <see cref="CenterSamplingRadius"/> strides around the box's
    /// centre (clipped to the box), and the largest of its four distances lies in its level's range (above the previous
    /// bound, at most its own; <paramref name="sizeBounds"/> holds one bound per level but the last, default
    /// <see cref="DefaultSizeBounds"/>); a location several boxes claim goes to the smallest box. Errors name
    /// <paramref name="what"/> and the box at fault.
    /// </summary>
    public static DetectionTargets Assign(IReadOnlyList<DetectionLevel> levels, IReadOnlyList<DetectionBox> boxes, int classCount,
        IReadOnlyList<float>? sizeBounds = null, string what = "image")
    {
        sizeBounds ??= DefaultSizeBounds;
        if (sizeBounds.Count != levels.Count - 1)
            throw new ArgumentException($"{levels.Count} levels need {levels.Count - 1} size bounds; got {sizeBounds.Count}.", nameof(sizeBounds));
        for (int k = 0; k < boxes.Count; k++)
        {
            var box = boxes[k];
            if (!(float.IsFinite(box.XMin) && float.IsFinite(box.YMin) && float.IsFinite(box.XMax) && float.IsFinite(box.YMax)) || box.XMax <= box.XMin || box.YMax <= box.YMin)
                throw new ArgumentException($"{what}: box {k} ({box.XMin}, {box.YMin}, {box.XMax}, {box.YMax}) is not a box: it needs xmax > xmin and ymax > ymin.", nameof(boxes));
            if (box.Class < 0 || box.Class >= classCount)
                throw new ArgumentException($"{what}: box {k} has class {box.Class}; the detector knows classes 0 to {classCount - 1}.", nameof(boxes));
        }
        var targets = new DetectionTargets(levels.Sum(l => l.Count));
        int n = 0;
        for (int level = 0; level < levels.Count; level++)
        {
            var geometry = levels[level];
            float low = level == 0 ? 0 : sizeBounds[level - 1];
            float high = level == levels.Count - 1 ? float.PositiveInfinity : sizeBounds[level];
            float radius = CenterSamplingRadius * geometry.Stride;
            for (int i = 0; i < geometry.Height; i++)
            {
                float y = geometry.Y(i);
                for (int j = 0; j < geometry.Width; j++, n++)
                {
                    float x = geometry.X(j);
                    int best = -1;
                    float bestArea = float.PositiveInfinity;
                    for (int k = 0; k < boxes.Count; k++)
                    {
                        var box = boxes[k];
                        float l = x - box.XMin, t = y - box.YMin, r = box.XMax - x, b = box.YMax - y;
                        if (Math.Min(Math.Min(l, t), Math.Min(r, b)) <= 0) continue;
                        float cx = (box.XMin + box.XMax) / 2, cy = (box.YMin + box.YMax) / 2;
                        if (!(x > Math.Max(cx - radius, box.XMin) && x < Math.Min(cx + radius, box.XMax)
                            && y > Math.Max(cy - radius, box.YMin) && y < Math.Min(cy + radius, box.YMax))) continue;
                        float largest = Math.Max(Math.Max(l, t), Math.Max(r, b));
                        if (!(largest > low && largest <= high)) continue;
                        if (box.Area < bestArea)
                        {
                            best = k;
                            bestArea = box.Area;
                        }
                    }
                    if (best < 0) continue;
                    var chosen = boxes[best];
                    float dl = x - chosen.XMin, dt = y - chosen.YMin, dr = chosen.XMax - x, db = chosen.YMax - y;
                    targets.Classes[n] = chosen.Class;
                    targets.Boxes[n] = best;
                    targets.Distances[4 * n] = dl;
                    targets.Distances[4 * n + 1] = dt;
                    targets.Distances[4 * n + 2] = dr;
                    targets.Distances[4 * n + 3] = db;
                    targets.Centerness[n] = MathF.Sqrt(Math.Min(dl, dr) / Math.Max(dl, dr) * (Math.Min(dt, db) / Math.Max(dt, db)));
                }
            }
        }
        return targets;
    }

    /// <summary>
    /// The loss of a batch: <paramref name="boxes"/>[b] are image b's boxes in input pixels (an empty list: background
    /// only). Focal loss summed over locations and classes, GIoU loss summed with centerness-target weights, centerness
    /// BCE summed; the first and last divided by the number of positives (at least 1), the GIoU by the sum of weights.
    /// </summary>
    public static DetectionLossValues Compute(DetectionOutputs outputs, IReadOnlyList<IReadOnlyList<DetectionBox>> boxes, IReadOnlyList<float>? sizeBounds = null)
    {
        int batch = (int)outputs.BatchSize, classes = outputs.ClassCount;
        if (boxes.Count != batch) throw new ArgumentException($"The batch has {batch} images but {boxes.Count} box lists.", nameof(boxes));
        int locations = (int)outputs.ClassLogits.shape[1];
        var device = outputs.ClassLogits.device;
        var oneHot = new float[(long)batch * locations * classes];
        var positives = new List<long>();
        var targetDistances = new List<float>();
        var targetCenterness = new List<float>();
        for (int b = 0; b < batch; b++)
        {
            var targets = Assign(outputs.Levels, boxes[b], classes, sizeBounds, $"image {b} of the batch");
            for (int n = 0; n < locations; n++)
            {
                int c = targets.Classes[n];
                if (c < 0) continue;
                long flat = (long)b * locations + n;
                oneHot[flat * classes + c] = 1;
                positives.Add(flat);
                for (int s = 0; s < 4; s++) targetDistances.Add(targets.Distances[4 * n + s]);
                targetCenterness.Add(targets.Centerness[n]);
            }
        }

        using var scope = NewDisposeScope();
        int count = positives.Count;
        float normaliser = Math.Max(1, count);
        var labels = tensor(oneHot, new long[] { batch, locations, classes }).to(device);
        var classification = SigmoidFocalLoss(outputs.ClassLogits, labels).sum().div(normaliser);
        Tensor box, centerness;
        if (count == 0)
        {
            // No positives: the regression and centerness terms are zero, with gradients (of zero) to keep the graph whole.
            box = outputs.Distances.sum().mul(0);
            centerness = outputs.CenternessLogits.sum().mul(0);
        }
        else
        {
            var index = tensor(positives.ToArray()).to(device);
            var predicted = outputs.Distances.reshape(-1, 4).index_select(0, index);
            var targetBox = tensor(targetDistances.ToArray(), new long[] { count, 4 }).to(device);
            var weights = tensor(targetCenterness.ToArray()).to(device);
            box = GIoULoss(predicted, targetBox).mul(weights).sum().div(weights.sum().clamp_min(1e-6));
            var centernessLogits = outputs.CenternessLogits.reshape(-1).index_select(0, index);
            centerness = nn.functional.binary_cross_entropy_with_logits(centernessLogits, weights, reduction: nn.Reduction.Sum).div(normaliser);
        }
        var total = classification.add(box).add(centerness);
        return new DetectionLossValues(total.MoveToOuterDisposeScope(), classification.MoveToOuterDisposeScope(), box.MoveToOuterDisposeScope(),
            centerness.MoveToOuterDisposeScope(), count);
    }

    /// <summary>
    /// Sigmoid focal loss of each element (not reduced): <c>-alpha_t (1 - p_t)^gamma log(p_t)</c>, where p is the
    /// sigmoid of the logit, p_t = p for a target 1 and 1 - p for 0, alpha_t = alpha for 1 and 1 - alpha for 0.
    /// </summary>
    public static Tensor SigmoidFocalLoss(Tensor logits, Tensor targets, float alpha = FocalAlpha, float gamma = FocalGamma)
    {
        using var scope = NewDisposeScope();
        // Out of place throughout: autograd keeps the intermediate values it needs.
        var p = logits.sigmoid();
        var crossEntropy = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction: nn.Reduction.None);
        var negatives = targets.neg().add(1);
        // 1 - p_t = p (1 - t) + (1 - p) t
        var miss = p.mul(negatives).add(p.neg().add(1).mul(targets));
        var alphaT = targets.mul(alpha).add(negatives.mul(1 - alpha));
        return crossEntropy.mul(miss.pow(gamma)).mul(alphaT).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// 1 - GIoU of boxes given as distances (l, t, r, b) [n, 4] from a shared location: both boxes contain it, so the
    /// intersection's width is min(l) + min(r) and the enclosing box's is max(l) + max(r) (heights alike). Per row.
    /// </summary>
    public static Tensor GIoULoss(Tensor predicted, Tensor target)
    {
        using var scope = NewDisposeScope();
        var (pl, pt, pr, pb) = (predicted[.., 0], predicted[.., 1], predicted[.., 2], predicted[.., 3]);
        var (tl, tt, tr, tb) = (target[.., 0], target[.., 1], target[.., 2], target[.., 3]);
        var predictedArea = pl.add(pr).mul(pt.add(pb));
        var targetArea = tl.add(tr).mul(tt.add(tb));
        var intersection = minimum(pl, tl).add(minimum(pr, tr)).mul(minimum(pt, tt).add(minimum(pb, tb)));
        var union = predictedArea.add(targetArea).sub(intersection);
        var enclosing = maximum(pl, tl).add(maximum(pr, tr)).mul(maximum(pt, tt).add(maximum(pb, tb)));
        var iou = intersection.div(union.clamp_min(1e-6));
        var giou = iou.sub(enclosing.sub(union).div(enclosing.clamp_min(1e-6)));
        return giou.neg().add(1).MoveToOuterDisposeScope();
    }
}
