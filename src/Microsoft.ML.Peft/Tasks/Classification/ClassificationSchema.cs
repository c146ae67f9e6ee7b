using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>The output columns every PEFT classifier adds (ML.NET's multiclass conventions), as estimators and transformers declare them.</summary>
internal static class ClassificationSchema
{
    /// <summary>
    /// The estimator's output shape: the input columns, a <c>Score</c> vector with slot names and a key-typed
    /// <c>PredictedLabel</c> with the label's annotations. The label must be a key type (errors name the option).
    /// </summary>
    public static SchemaShape OutputShape(SchemaShape inputSchema, string labelColumnName, string scoreColumnName, string predictedLabelColumnName)
    {
        if (!inputSchema.TryFindColumn(labelColumnName, out var label))
            throw new ArgumentOutOfRangeException("LabelColumnName", $"The input has no label column '{labelColumnName}'.");
        if (!label.IsKey)
            throw new ArgumentException($"The label column '{labelColumnName}' must be a key type; add mlContext.Transforms.Conversion.MapValueToKey(\"{labelColumnName}\").", "LabelColumnName");
        var result = inputSchema.ToDictionary(c => c.Name);
        var scoreAnnotations = new List<SchemaShape.Column>
        {
            new(AnnotationUtils.Kinds.SlotNames, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false),
        };
        result[scoreColumnName] = new SchemaShape.Column(scoreColumnName, SchemaShape.Column.VectorKind.Vector,
            NumberDataViewType.Single, false, new SchemaShape(scoreAnnotations));
        result[predictedLabelColumnName] = new SchemaShape.Column(predictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar,
            NumberDataViewType.UInt32, true, label.Annotations);
        return new SchemaShape(result.Values);
    }

    /// <summary>
    /// The transformer's output schema over <paramref name="input"/>: its columns, then <c>Score</c> (probabilities, the class
    /// names as slot names, multiclass score annotations) and <c>PredictedLabel</c> (a key with the label's values).
    /// <paramref name="inputColumns"/> are the columns scoring reads.
    /// </summary>
    public static OutputColumns Bind(DataViewSchema input, LabelInfo label, string scoreColumnName, string predictedLabelColumnName,
        IReadOnlyList<DataViewSchema.Column> inputColumns)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        var score = new DataViewSchema.Annotations.Builder();
        label.AddSlotNames(score);
        score.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreColumnKind.MulticlassClassification.AsMemory());
        score.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreValueKind.Score.AsMemory());
        builder.AddColumn(scoreColumnName, new VectorDataViewType(NumberDataViewType.Single, label.ClassCount), score.ToAnnotations());
        var predicted = new DataViewSchema.Annotations.Builder();
        label.AddKeyValues(predicted);
        builder.AddColumn(predictedLabelColumnName, label.KeyType, predicted.ToAnnotations());
        return new OutputColumns(builder.ToSchema(), input.Count, inputColumns);
    }
}
