using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// The words of a sentence column: a text column is split on white space; a vector of text holds the words already
/// (pre-tokenised, empty items skipped). Errors name the column and the option.
/// </summary>
internal sealed class SentenceColumn
{
    private readonly DataViewSchema.Column column;
    private readonly bool isVector;

    public SentenceColumn(DataViewSchema schema, string name, string option, string what)
    {
        column = ColumnChecks.Find(schema, name, option, what);
        isVector = column.Type is VectorDataViewType { ItemType: TextDataViewType };
        if (!isVector && column.Type is not TextDataViewType)
            throw new ArgumentException($"The column '{name}' ({option}) of the {what} has type {column.Type}; named-entity recognition needs text " +
                "(split into words on white space) or a vector of text (one word per item).", option);
    }

    public DataViewSchema.Column Column => column;

    /// <summary>A reader of the current row's words.</summary>
    public Func<string[]> Reader(DataViewRow row)
    {
        if (isVector)
        {
            var getter = row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(column);
            VBuffer<ReadOnlyMemory<char>> words = default;
            return () =>
            {
                getter(ref words);
                return words.DenseValues().Select(w => w.ToString()).Where(w => !string.IsNullOrWhiteSpace(w)).ToArray();
            };
        }
        var text = row.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        return () =>
        {
            text(ref value);
            return Words(value.ToString());
        };
    }

    /// <summary>The words of a text: split on white space.</summary>
    public static string[] Words(string text) => text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>Sentences and their tags (0-based indices into the label's key values) read for training or validation.</summary>
internal sealed class NerData
{
    public List<string[]> Sentences { get; } = new();
    public List<int[]> Tags { get; } = new();
    public int EmptySentences { get; private set; }

    /// <summary>
    /// Reads every row: the words of the sentence column and the label vector of key-typed tags, one per word. The label's
    /// key values are the tag names (<c>MapValueToKey</c> on a vector of text tags). A row whose tag count differs from its
    /// word count, or that has a missing tag (key 0), is an error naming the row; an empty sentence with no tags is skipped and counted.
    /// </summary>
    public static NerData Read(IDataView data, string sentenceColumn, string labelColumn, string what, out LabelInfo label)
    {
        var schema = data.Schema;
        var sentence = new SentenceColumn(schema, sentenceColumn, "Sentence1ColumnName", what);
        var labelCol = ColumnChecks.Find(schema, labelColumn, "LabelColumnName", what);
        if (labelCol.Type is not VectorDataViewType { ItemType: KeyDataViewType keyType } || keyType.RawType != typeof(uint))
            throw new ArgumentException($"The label column '{labelColumn}' of the {what} has type {labelCol.Type}; named-entity recognition needs a vector of " +
                $"key-typed tags, one per word: mlContext.Transforms.Conversion.MapValueToKey(\"{labelColumn}\") on a vector of text tags.", "LabelColumnName");
        if (keyType.Count < 2 || keyType.Count > 10_000)
            throw new ArgumentException($"The label column '{labelColumn}' has {keyType.Count} tags; between 2 and 10000 are supported.", "LabelColumnName");
        label = LabelInfo.FromColumn(labelCol, keyType);
        if (label.Values is null || label.ValueKind != "Text")
            throw new ArgumentException($"The label column '{labelColumn}' of the {what} has no text key values; its keys must name the tags (O, B-PER, I-PER...): " +
                $"map a vector of text tags with MapValueToKey(\"{labelColumn}\").", "LabelColumnName");
        BioTags.Validate(label.Values, $"the tags of the label column '{labelColumn}'");

        var result = new NerData();
        using var cursor = data.GetRowCursor(new[] { sentence.Column, labelCol });
        var words = sentence.Reader(cursor);
        var tagsGetter = cursor.GetGetter<VBuffer<uint>>(labelCol);
        VBuffer<uint> tags = default;
        long row = 0;
        while (cursor.MoveNext())
        {
            row++;
            var sentenceWords = words();
            tagsGetter(ref tags);
            var keys = tags.DenseValues().ToArray();
            if (keys.Length != sentenceWords.Length)
                throw new ArgumentException($"Row {row} of the {what}: the label '{labelColumn}' has {keys.Length} tags but the sentence '{sentenceColumn}' has " +
                    $"{sentenceWords.Length} words{(sentence.Column.Type is TextDataViewType ? " (split on white space)" : "")}; give one tag per word.", "LabelColumnName");
            if (keys.Length == 0)
            {
                result.EmptySentences++;
                continue;
            }
            int missing = Array.FindIndex(keys, k => k == 0 || k > keyType.Count);
            if (missing >= 0)
                throw new ArgumentException($"Row {row} of the {what}: the tag of word {missing + 1} ('{sentenceWords[missing]}') in '{labelColumn}' is missing " +
                    "(key 0: a tag the MapValueToKey transformer did not know, or an empty value).", "LabelColumnName");
            result.Sentences.Add(sentenceWords);
            result.Tags.Add(keys.Select(k => (int)k - 1).ToArray());
        }
        return result;
    }
}
