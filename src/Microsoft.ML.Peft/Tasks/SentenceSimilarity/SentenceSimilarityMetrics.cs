using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// How well predicted similarity scores agree with the labels: Pearson's linear correlation and Spearman's rank
/// correlation (tied values share their average rank), the metrics of STS benchmarks. Both are in [-1, 1], higher is
/// better, and neither depends on the scores' scale, so a model whose scores fall outside the label range is not
/// penalised for it. Compute them with <c>mlContext.Regression.EvaluateSentenceSimilarity(...)</c>.
/// </summary>
public sealed class SentenceSimilarityMetrics
{
    internal SentenceSimilarityMetrics(double pearson, double spearman, long rowCount, long skippedRows)
    {
        Pearson = pearson;
        Spearman = spearman;
        RowCount = rowCount;
        SkippedRowCount = skippedRows;
    }

    /// <summary>Pearson's correlation of scores and labels; NaN when either is constant over the rows.</summary>
    public double Pearson { get; }

    /// <summary>Spearman's rank correlation of scores and labels; NaN when either is constant over the rows.</summary>
    public double Spearman { get; }

    /// <summary>Rows evaluated.</summary>
    public long RowCount { get; }

    /// <summary>Rows skipped because the label or the score is NaN (missing).</summary>
    public long SkippedRowCount { get; }

    /// <summary>Reads labels and scores (Single or Double columns) and computes the metrics; errors name the column at fault.</summary>
    internal static SentenceSimilarityMetrics Evaluate(IDataView data, string labelColumnName, string scoreColumnName)
    {
        if (data is null) throw new ArgumentNullException(nameof(data));
        var label = Find(data.Schema, labelColumnName, nameof(labelColumnName));
        var score = Find(data.Schema, scoreColumnName, nameof(scoreColumnName));
        var labels = new List<double>();
        var scores = new List<double>();
        long skipped = 0;
        using var cursor = data.GetRowCursor(new[] { label, score });
        var labelGetter = Reader(cursor, label);
        var scoreGetter = Reader(cursor, score);
        while (cursor.MoveNext())
        {
            double l = labelGetter(), s = scoreGetter();
            if (double.IsNaN(l) || double.IsNaN(s))
            {
                skipped++;
                continue;
            }
            labels.Add(l);
            scores.Add(s);
        }
        if (labels.Count < 2)
            throw new ArgumentException($"Correlations need at least two rows with a label and a score; the data has {labels.Count} ({skipped} skipped for a missing value).", nameof(data));
        return new SentenceSimilarityMetrics(Correlation.Pearson(scores, labels), Correlation.Spearman(scores, labels), labels.Count, skipped);
    }

    private static DataViewSchema.Column Find(DataViewSchema schema, string name, string parameter)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException($"{parameter} is empty.", parameter);
        var column = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(parameter,
            $"The data has no column '{name}' ({parameter}). Its columns are: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => c.Name))}.");
        if (column.Type != NumberDataViewType.Single && column.Type != NumberDataViewType.Double)
            throw new ArgumentException($"The column '{name}' ({parameter}) has type {column.Type}; Single or Double is needed.", parameter);
        return column;
    }

    private static Func<double> Reader(DataViewRow row, DataViewSchema.Column column)
    {
        if (column.Type == NumberDataViewType.Double)
        {
            var getter = row.GetGetter<double>(column);
            return () =>
            {
                double v = 0;
                getter(ref v);
                return v;
            };
        }
        var single = row.GetGetter<float>(column);
        return () =>
        {
            float v = 0;
            single(ref v);
            return v;
        };
    }
}
