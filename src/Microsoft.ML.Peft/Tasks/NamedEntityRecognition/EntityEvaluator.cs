using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// Reads gold and predicted tag sequences from two columns of a data view (vectors of keys whose key values are the tag
/// names, as <c>MapValueToKey</c> makes from a text vector) and scores them with <see cref="EntityScoring"/>.
/// </summary>
internal static class EntityEvaluator
{
    public static EntityMetrics Evaluate(IDataView data, string labelColumnName, string predictedLabelColumnName)
    {
        if (data is null) throw new ArgumentNullException(nameof(data));
        if (string.IsNullOrEmpty(labelColumnName)) throw new ArgumentException("The label column name is empty.", nameof(labelColumnName));
        if (string.IsNullOrEmpty(predictedLabelColumnName))
            throw new ArgumentException("The predicted label column name is empty.", nameof(predictedLabelColumnName));
        var label = TagColumn.Find(data.Schema, labelColumnName, "label", nameof(labelColumnName));
        var predicted = TagColumn.Find(data.Schema, predictedLabelColumnName, "predicted label", nameof(predictedLabelColumnName));
        return EntityScoring.Compute(ReadSentences(data, label, predicted));
    }

    private static IEnumerable<(IReadOnlyList<string> Gold, IReadOnlyList<string> Predicted)> ReadSentences(
        IDataView data, TagColumn label, TagColumn predicted)
    {
        using var cursor = data.GetRowCursor(new[] { label.Column, predicted.Column });
        var labelGetter = cursor.GetGetter<VBuffer<uint>>(label.Column);
        var predictedGetter = cursor.GetGetter<VBuffer<uint>>(predicted.Column);
        VBuffer<uint> labelKeys = default, predictedKeys = default;
        long row = 0;
        while (cursor.MoveNext())
        {
            row++;
            labelGetter(ref labelKeys);
            predictedGetter(ref predictedKeys);
            if (labelKeys.Length != predictedKeys.Length)
                throw new ArgumentException(
                    $"Row {row}: the label column '{label.Column.Name}' has {labelKeys.Length} tags but the predicted label column '{predicted.Column.Name}' has {predictedKeys.Length}; both need one tag per word.",
                    nameof(data));
            yield return (label.Names(labelKeys, row), predicted.Names(predictedKeys, row));
        }
    }

    /// <summary>A vector-of-keys column with its key value names.</summary>
    private sealed class TagColumn
    {
        private readonly string[] keyNames;
        private readonly string role;

        private TagColumn(DataViewSchema.Column column, string[] keyNames, string role)
        {
            Column = column;
            this.keyNames = keyNames;
            this.role = role;
        }

        public DataViewSchema.Column Column { get; }

        public static TagColumn Find(DataViewSchema schema, string name, string role, string parameter)
        {
            var found = schema.GetColumnOrNull(name);
            if (found is null)
                throw new ArgumentException(
                    $"The {role} column '{name}' is not in the data (columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => c.Name))}).",
                    parameter);
            var column = found.Value;
            if (column.Type is not VectorDataViewType { ItemType: KeyDataViewType key } || key.RawType != typeof(uint))
                throw new ArgumentException(
                    $"The {role} column '{name}' is {column.Type}; it must be a vector of keys (UInt32), one tag per word, as MapValueToKey makes from a text vector.",
                    parameter);
            var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues);
            if (annotation is null || annotation.Value.Type is not VectorDataViewType { ItemType: TextDataViewType })
                throw new ArgumentException(
                    $"The {role} column '{name}' has no key value names (text key values naming the tags); map the tags with MapValueToKey from text.",
                    parameter);
            VBuffer<ReadOnlyMemory<char>> values = default;
            column.GetKeyValues(ref values);
            var names = values.DenseValues().Select(v => v.ToString()).ToArray();
            if ((ulong)names.Length != key.Count)
                throw new ArgumentException(
                    $"The {role} column '{name}' has {names.Length} key value names for {key.Count} keys.", parameter);
            return new TagColumn(column, names, role);
        }

        public string[] Names(VBuffer<uint> keys, long row)
        {
            var tags = new string[keys.Length];
            int i = 0;
            foreach (uint key in keys.DenseValues())
            {
                if (key == 0 || key > keyNames.Length)
                    throw new ArgumentException(
                        $"Row {row}, word {i + 1}: the {role} column '{Column.Name}' has a missing key (an unknown tag, key {key}); every word needs a tag the key type knows.",
                        "data");
                tags[i++] = keyNames[key - 1];
            }
            return tags;
        }
    }
}
