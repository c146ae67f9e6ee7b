using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Classification;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>The output column a sentence-similarity model adds: a Single <c>Score</c> with ML.NET's regression annotations.</summary>
internal static class SimilaritySchema
{
    /// <summary>The estimator's output shape: the input columns and a Single <c>Score</c>.</summary>
    public static SchemaShape OutputShape(SchemaShape inputSchema, string scoreColumnName)
    {
        var result = inputSchema.ToDictionary(c => c.Name);
        var annotations = new SchemaShape(new[]
        {
            new SchemaShape.Column(AnnotationUtils.Kinds.ScoreColumnKind, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, false),
            new SchemaShape.Column(AnnotationUtils.Kinds.ScoreValueKind, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, false),
        });
        result[scoreColumnName] = new SchemaShape.Column(scoreColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false, annotations);
        return new SchemaShape(result.Values);
    }

    /// <summary>The transformer's output schema over <paramref name="input"/>: its columns, then the Single <c>Score</c>.</summary>
    public static OutputColumns Bind(DataViewSchema input, string scoreColumnName, IReadOnlyList<DataViewSchema.Column> inputColumns)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        var score = new DataViewSchema.Annotations.Builder();
        score.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreColumnKind.Regression.AsMemory());
        score.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreValueKind.Score.AsMemory());
        builder.AddColumn(scoreColumnName, NumberDataViewType.Single, score.ToAnnotations());
        return new OutputColumns(builder.ToSchema(), input.Count, inputColumns, (index, output) =>
        {
            // One output column, the Single score the scorer gives each row.
            ValueGetter<float> score = (ref float dst) => dst = (float)output();
            return score;
        });
    }
}
