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
        var predictedColumn = data.Schema.GetColumnOrNull(predictedLabelColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(predictedLabelColumnName), $"The {what} has no predicted label column '{predictedLabelColumnName}'.");
        // The predicted label as the detector writes it (keys), or after MapKeyToValue (class names).
        bool predictedNames = predictedColumn.Type is VectorDataViewType { ItemType: TextDataViewType };
        if (!predictedNames && predictedColumn.Type is not VectorDataViewType { ItemType: KeyDataViewType })
            throw new ArgumentException($"The predicted label column '{predictedLabelColumnName}' must be a vector of keys (the detector's output) or of class names (after MapKeyToValue).", nameof(predictedLabelColumnName));
        var predictedBoxColumn = DetectionColumns.Boxes(data.Schema, predictedBoundingBoxColumnName, nameof(predictedBoundingBoxColumnName), what);
        var scoreColumn = data.Schema.GetColumnOrNull(scoreColumnName) ?? throw new ArgumentOutOfRangeException(nameof(scoreColumnName), $"The {what} has no score column '{scoreColumnName}'.");
        if (scoreColumn.Type is not VectorDataViewType { ItemType: var scoreItem } || !scoreItem.Equals(NumberDataViewType.Single))
            throw new ArgumentException($"The score column '{scoreColumnName}' must be a vector of Single, one per detection.", nameof(scoreColumnName));
        if (!predictedNames && ((KeyDataViewType)((VectorDataViewType)predictedColumn.Type).ItemType).Count != keyType.Count)
            throw new ArgumentException($"The predicted label column '{predictedLabelColumnName}' has {((KeyDataViewType)((VectorDataViewType)predictedColumn.Type).ItemType).Count} classes, the label column '{labelColumnName}' {keyType.Count}: score with the detector trained on this label.", nameof(predictedLabelColumnName));
        var label = LabelInfo.FromColumn(labelColumn, keyType, minClassCount: 1);
        var classIndex = label.ClassNames.Select((name, i) => (name, i)).GroupBy(p => p.name).ToDictionary(g => g.Key, g => g.First().i);
        var truth = new List<IReadOnlyList<DetectionBox>>();
        var predictions = new List<IReadOnlyList<DetectionBox>>();
        using var cursor = data.GetRowCursor(new[] { labelColumn, boxColumn, predictedColumn, predictedBoxColumn, scoreColumn });
        var readLabels = cursor.GetGetter<VBuffer<uint>>(labelColumn);
        var readBoxes = cursor.GetGetter<VBuffer<float>>(boxColumn);
        var readPredicted = predictedNames ? null : cursor.GetGetter<VBuffer<uint>>(predictedColumn);
        var readPredictedNames = predictedNames ? cursor.GetGetter<VBuffer<ReadOnlyMemory<char>>>(predictedColumn) : null;
        VBuffer<ReadOnlyMemory<char>> names = default;
        var readPredictedBoxes = cursor.GetGetter<VBuffer<float>>(predictedBoxColumn);
        var readScores = cursor.GetGetter<VBuffer<float>>(scoreColumn);
        VBuffer<uint> keys = default, predictedKeys = default;
        VBuffer<float> boxes = default, predictedBoxes = default, scores = default;
        while (cursor.MoveNext())
        {
            long row = cursor.Position + 1;
            readLabels(ref keys);
            readBoxes(ref boxes);
            uint[] p;
            if (readPredicted is not null)
            {
                readPredicted(ref predictedKeys);
                p = predictedKeys.DenseValues().ToArray();
            }
            else
            {
                readPredictedNames!(ref names);
                p = names.DenseValues().Select((n, i) => classIndex.TryGetValue(n.ToString(), out int c) ? (uint)(c + 1)
                    : throw new InvalidDataException($"Row {row}: detection {i + 1} of column '{predictedLabelColumnName}' is the class '{n}', not one of the label's classes [{string.Join(", ", label.ClassNames.Take(10))}].")).ToArray();
            }
            readPredictedBoxes(ref predictedBoxes);
            readScores(ref scores);
            // Ground truth is checked as training checks it, without the image (its size is not in the scored data).
            truth.Add(DetectionColumns.ReadBoxes(keys.DenseValues().ToArray(), boxes.DenseValues().ToArray(), label.ClassCount, int.MaxValue / 2, int.MaxValue / 2,
                row, labelColumnName, boundingBoxColumnName));
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
