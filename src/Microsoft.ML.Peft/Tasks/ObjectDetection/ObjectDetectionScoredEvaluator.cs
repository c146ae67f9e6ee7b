using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Classification;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>Reads ground truth and detections from a scored data view (the detector's columns) and evaluates them with <see cref="ObjectDetectionEvaluator"/>.</summary>
internal static class ObjectDetectionScoredEvaluator
{
    public static ObjectDetectionMetrics Evaluate(IDataView data, string labelColumnName, string boundingBoxColumnName, string predictedLabelColumnName,
        string predictedBoundingBoxColumnName, string scoreColumnName)
    {
        ArgumentNullException.ThrowIfNull(data);
        const string what = "scored data";
        var (labelColumn, keyType) = DetectionColumns.Label(data.Schema, labelColumnName, nameof(labelColumnName), what);
        var boxColumn = DetectionColumns.Boxes(data.Schema, boundingBoxColumnName, nameof(boundingBoxColumnName), what);
        var (predictedColumn, predictedKey) = DetectionColumns.Label(data.Schema, predictedLabelColumnName, nameof(predictedLabelColumnName), what);
        var predictedBoxColumn = DetectionColumns.Boxes(data.Schema, predictedBoundingBoxColumnName, nameof(predictedBoundingBoxColumnName), what);
        var scoreColumn = data.Schema.GetColumnOrNull(scoreColumnName) ?? throw new ArgumentOutOfRangeException(nameof(scoreColumnName), $"The {what} has no score column '{scoreColumnName}'.");
        if (scoreColumn.Type is not VectorDataViewType { ItemType: var scoreItem } || !scoreItem.Equals(NumberDataViewType.Single))
            throw new ArgumentException($"The score column '{scoreColumnName}' must be a vector of Single, one per detection.", nameof(scoreColumnName));
        if (predictedKey.Count != keyType.Count)
            throw new ArgumentException($"The predicted label column '{predictedLabelColumnName}' has {predictedKey.Count} classes, the label column '{labelColumnName}' {keyType.Count}: score with the detector trained on this label.", nameof(predictedLabelColumnName));
        var label = LabelInfo.FromColumn(labelColumn, keyType, minClassCount: 1);
        var truth = new List<IReadOnlyList<DetectionBox>>();
        var predictions = new List<IReadOnlyList<DetectionBox>>();
        using var cursor = data.GetRowCursor(new[] { labelColumn, boxColumn, predictedColumn, predictedBoxColumn, scoreColumn });
        var readLabels = cursor.GetGetter<VBuffer<uint>>(labelColumn);
        var readBoxes = cursor.GetGetter<VBuffer<float>>(boxColumn);
        var readPredicted = cursor.GetGetter<VBuffer<uint>>(predictedColumn);
        var readPredictedBoxes = cursor.GetGetter<VBuffer<float>>(predictedBoxColumn);
        var readScores = cursor.GetGetter<VBuffer<float>>(scoreColumn);
        VBuffer<uint> keys = default, predictedKeys = default;
        VBuffer<float> boxes = default, predictedBoxes = default, scores = default;
        while (cursor.MoveNext())
        {
            long row = cursor.Position + 1;
            readLabels(ref keys);
            readBoxes(ref boxes);
            readPredicted(ref predictedKeys);
            readPredictedBoxes(ref predictedBoxes);
            readScores(ref scores);
            // Ground truth is checked as training checks it, without the image (its size is not in the scored data).
            truth.Add(DetectionColumns.ReadBoxes(keys.DenseValues().ToArray(), boxes.DenseValues().ToArray(), label.ClassCount, int.MaxValue / 2, int.MaxValue / 2,
                row, labelColumnName, boundingBoxColumnName));
            var p = predictedKeys.DenseValues().ToArray();
            var s = scores.DenseValues().ToArray();
            var c = predictedBoxes.DenseValues().ToArray();
            if (s.Length != p.Length)
                throw new InvalidDataException($"Row {row}: the score column '{scoreColumnName}' holds {s.Length} values for the {p.Length} keys of column '{predictedLabelColumnName}'; it must hold one per detection.");
            if (c.Length != 4 * p.Length)
                throw new InvalidDataException($"Row {row}: the predicted bounding-box column '{predictedBoundingBoxColumnName}' holds {c.Length} values for the {p.Length} keys of column '{predictedLabelColumnName}'; it must hold 4 per key.");
            var detections = new DetectionBox[p.Length];
            for (int i = 0; i < p.Length; i++)
            {
                if (p[i] == 0 || p[i] > label.ClassCount)
                    throw new InvalidDataException($"Row {row}: detection {i + 1} of column '{predictedLabelColumnName}' has the key {p[i]}, not one of the {label.ClassCount} classes.");
                if (!float.IsFinite(s[i])) throw new InvalidDataException($"Row {row}: score {i + 1} of column '{scoreColumnName}' is {s[i]}.");
                detections[i] = new DetectionBox(c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3], (int)p[i] - 1, s[i]);
            }
            predictions.Add(detections);
        }
        return ObjectDetectionEvaluator.Evaluate(truth, predictions, label.ClassNames);
    }
}
