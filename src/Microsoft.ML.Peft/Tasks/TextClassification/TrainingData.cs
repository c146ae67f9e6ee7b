using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>Rows read from an <see cref="IDataView"/> for training or validation: text(s) and zero-based class index.</summary>
internal sealed class TrainingData
{
    public List<string> First { get; } = new();
    public List<string>? Second { get; init; }
    public List<int> Labels { get; } = new();
    public int MissingLabelRows { get; set; }
    public int EmptyTextRows { get; set; }
    public int Count => Labels.Count;

    /// <summary>
    /// Checks the columns and reads every row with a label; rows with a missing key are skipped and counted, or with
    /// <paramref name="keepUnlabelled"/> kept with the label -1 (and counted), so that row i is the input's row i.
    /// </summary>
    public static TrainingData Read(IDataView data, PeftTextClassificationTrainer.Options options, string what, out LabelInfo label, bool keepUnlabelled = false)
    {
        string labelColumn = options.LabelColumnName, sentence1Column = options.Sentence1ColumnName;
        string? sentence2Column = options.Sentence2ColumnName;
        var schema = data.Schema;
        var labelCol = ColumnChecks.Find(schema, labelColumn, "LabelColumnName", what);
        if (labelCol.Type is not KeyDataViewType keyType || labelCol.Type.RawType != typeof(uint))
            throw new ArgumentException(
                $"The label column '{labelColumn}' of the {what} has type {labelCol.Type}; PeftTextClassification needs a key type. " +
                $"Convert it first: mlContext.Transforms.Conversion.MapValueToKey(\"{labelColumn}\").", "LabelColumnName");
        if (keyType.Count < 2 || keyType.Count > 100_000)
            throw new ArgumentException($"The label column '{labelColumn}' has {keyType.Count} key values; between 2 and 100000 are supported.", "LabelColumnName");
        label = LabelInfo.FromColumn(labelCol, keyType);
        var first = ColumnChecks.FindText(schema, sentence1Column, "Sentence1ColumnName", what);
        DataViewSchema.Column? second = sentence2Column is null ? null : ColumnChecks.FindText(schema, sentence2Column, "Sentence2ColumnName", what);

        var result = new TrainingData { Second = second is null ? null : new List<string>() };
        var columns = new List<DataViewSchema.Column> { labelCol, first };
        if (second is not null) columns.Add(second.Value);
        using var cursor = data.GetRowCursor(columns);
        var labelGetter = cursor.GetGetter<uint>(labelCol);
        var firstGetter = cursor.GetGetter<ReadOnlyMemory<char>>(first);
        var secondGetter = second is null ? null : cursor.GetGetter<ReadOnlyMemory<char>>(second.Value);
        uint key = 0;
        ReadOnlyMemory<char> a = default, b = default;
        while (cursor.MoveNext())
        {
            labelGetter(ref key);
            bool missing = key == 0 || key > keyType.Count;
            if (missing)
            {
                result.MissingLabelRows++;
                if (!keepUnlabelled) continue;
            }
            firstGetter(ref a);
            result.First.Add(a.ToString());
            bool empty = a.Span.IsWhiteSpace();
            if (secondGetter is not null)
            {
                secondGetter(ref b);
                result.Second!.Add(b.ToString());
                empty &= b.Span.IsWhiteSpace();
            }
            if (empty) result.EmptyTextRows++;
            result.Labels.Add(missing ? -1 : (int)key - 1);
        }
        return result;
    }
}

/// <summary>Column look-ups with errors that name the column and the option.</summary>
internal static class ColumnChecks
{
    public static DataViewSchema.Column Find(DataViewSchema schema, string name, string option, string what)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException($"{option} is empty.", option);
        return schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(option,
            $"The {what} has no column '{name}' ({option}). Its columns are: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => c.Name))}.");
    }

    public static DataViewSchema.Column FindText(DataViewSchema schema, string name, string option, string what)
    {
        var column = Find(schema, name, option, what);
        if (column.Type is not TextDataViewType)
            throw new ArgumentException($"The column '{name}' ({option}) of the {what} has type {column.Type}; a text column is needed.", option);
        return column;
    }
}
