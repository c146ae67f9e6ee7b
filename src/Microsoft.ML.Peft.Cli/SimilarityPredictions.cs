using System.Globalization;
using System.Text;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Cli;

/// <summary>What <c>predict</c> writes for a sentence-similarity model: the two sentences and the score per row.</summary>
internal static class SimilarityPredictions
{
    /// <summary>Whether the scored data is a similarity model's: its Score column is one Single rather than a vector of probabilities.</summary>
    public static bool Applies(IDataView scored) =>
        scored.Schema.GetColumnOrNull(SentenceSimilarityCommand.ScoreColumn)?.Type == NumberDataViewType.Single;

    /// <summary>Writes the text columns and the Single score (<paramref name="scoreColumn"/>, default <c>Score</c>) of each row as TSV.</summary>
    public static long Write(IDataView scored, IReadOnlyList<string> textNames, IReadOnlyList<string> headerNames, string path, string scoreColumn = SentenceSimilarityCommand.ScoreColumn)
    {
        var schema = scored.Schema;
        var textColumns = textNames.Select(n => schema.GetColumnOrNull(n) ?? throw new InvalidOperationException($"The scored data has no column '{n}'.")).ToList();
        var score = schema[scoreColumn];
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)) { NewLine = "\n" };
        writer.WriteLine(string.Join('\t', headerNames.Append(scoreColumn).Select(Clean)));
        using var cursor = scored.GetRowCursor(textColumns.Append(score));
        var textGetters = textColumns.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToList();
        var scoreGetter = cursor.GetGetter<float>(score);
        ReadOnlyMemory<char> text = default;
        float value = 0;
        var line = new StringBuilder();
        long rows = 0;
        while (cursor.MoveNext())
        {
            line.Clear();
            foreach (var getter in textGetters)
            {
                getter(ref text);
                line.Append(Clean(text.ToString())).Append('\t');
            }
            scoreGetter(ref value);
            line.Append(value.ToString("R", CultureInfo.InvariantCulture));
            writer.WriteLine(line);
            rows++;
        }
        return rows;
    }

    /// <summary>Tabs and line breaks inside a field would break the TSV layout; they become spaces.</summary>
    private static string Clean(string field) => field.Replace('\t', ' ').Replace('\r', ' ').Replace('\n', ' ');
}
