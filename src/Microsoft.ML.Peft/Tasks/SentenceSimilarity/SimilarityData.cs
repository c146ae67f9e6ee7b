using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>Sentence pairs and their Single labels read from an <see cref="IDataView"/> for training or validation.</summary>
internal sealed class SimilarityData
{
    public List<string> First { get; } = new();
    public List<string> Second { get; } = new();
    public List<float> Labels { get; } = new();

    /// <summary>Rows skipped because their label is NaN (ML.NET's missing value for Single).</summary>
    public int MissingLabelRows { get; private set; }

    /// <summary>Rows whose two sentences are both empty (kept, encoded as <c>[CLS] [SEP]</c>).</summary>
    public int EmptyTextRows { get; private set; }

    public int Count => Labels.Count;

    /// <summary>
    /// Checks the columns (errors name the option) and reads every row; a NaN label is skipped and counted, an infinite
    /// one is an error naming its row.
    /// </summary>
    public static SimilarityData Read(IDataView data, PeftSentenceSimilarityTrainer.Options options, string what)
    {
        var schema = data.Schema;
        var labelCol = ColumnChecks.Find(schema, options.LabelColumnName, nameof(options.LabelColumnName), what);
        if (labelCol.Type != NumberDataViewType.Single)
            throw new ArgumentException(
                $"The label column '{options.LabelColumnName}' ({nameof(options.LabelColumnName)}) of the {what} has type {labelCol.Type}; " +
                $"PeftSentenceSimilarity needs Single (float) scores. Convert it first: mlContext.Transforms.Conversion.ConvertType(\"{options.LabelColumnName}\", outputKind: DataKind.Single).",
                nameof(options.LabelColumnName));
        var first = ColumnChecks.FindText(schema, options.Sentence1ColumnName, nameof(options.Sentence1ColumnName), what);
        var second = ColumnChecks.FindText(schema, options.Sentence2ColumnName, nameof(options.Sentence2ColumnName), what);

        var result = new SimilarityData();
        using var cursor = data.GetRowCursor(new[] { labelCol, first, second });
        var labelGetter = cursor.GetGetter<float>(labelCol);
        var firstGetter = cursor.GetGetter<ReadOnlyMemory<char>>(first);
        var secondGetter = cursor.GetGetter<ReadOnlyMemory<char>>(second);
        float label = 0;
        ReadOnlyMemory<char> a = default, b = default;
        long row = 0;
        while (cursor.MoveNext())
        {
            row++;
            labelGetter(ref label);
            if (float.IsNaN(label))
            {
                result.MissingLabelRows++;
                continue;
            }
            if (float.IsInfinity(label))
                throw new InvalidDataException($"Row {row} of the {what} has the label {label} in column '{options.LabelColumnName}'; scores must be finite.");
            firstGetter(ref a);
            secondGetter(ref b);
            result.First.Add(a.ToString());
            result.Second.Add(b.ToString());
            if (a.Span.IsWhiteSpace() && b.Span.IsWhiteSpace()) result.EmptyTextRows++;
            result.Labels.Add(label);
        }
        return result;
    }
}
