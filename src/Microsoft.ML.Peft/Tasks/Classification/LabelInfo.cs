using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>
/// The label's key type: class count and, when the training label had them, its key values (the original label
/// strings or numbers), so the predicted label is the same key type and <c>MapKeyToValue</c> restores the values.
/// </summary>
internal sealed class LabelInfo
{
    private static readonly Dictionary<string, DataViewType> SupportedValueTypes = new()
    {
        ["Text"] = TextDataViewType.Instance,
        ["Single"] = NumberDataViewType.Single,
        ["Double"] = NumberDataViewType.Double,
        ["Int32"] = NumberDataViewType.Int32,
        ["Int64"] = NumberDataViewType.Int64,
        ["UInt32"] = NumberDataViewType.UInt32,
        ["UInt64"] = NumberDataViewType.UInt64,
        ["Int16"] = NumberDataViewType.Int16,
        ["UInt16"] = NumberDataViewType.UInt16,
        ["Byte"] = NumberDataViewType.Byte,
        ["SByte"] = NumberDataViewType.SByte,
        ["Boolean"] = BooleanDataViewType.Instance,
    };

    public LabelInfo(int classCount, string? valueKind, IReadOnlyList<string>? values, int minClassCount = 2)
    {
        if (classCount < minClassCount) throw new InvalidDataException($"The label has {classCount} classes; at least {minClassCount} are needed.");
        if (values is not null && values.Count != classCount)
            throw new InvalidDataException($"The label lists {values.Count} key values for {classCount} classes.");
        if (values is not null && (valueKind is null || !SupportedValueTypes.ContainsKey(valueKind)))
            throw new InvalidDataException($"Key values of kind '{valueKind}' are not supported.");
        ClassCount = classCount;
        ValueKind = values is null ? null : valueKind;
        Values = values;
    }

    public int ClassCount { get; }

    /// <summary>Name of the key values' item type (Text, Single, Int32, ...), or null without key values.</summary>
    public string? ValueKind { get; }

    /// <summary>The key values in invariant text form, or null.</summary>
    public IReadOnlyList<string>? Values { get; }

    public KeyDataViewType KeyType => new(typeof(uint), (ulong)ClassCount);

    /// <summary>Reads class count and key values from a key-typed label column.</summary>
    public static LabelInfo FromColumn(DataViewSchema.Column column, KeyDataViewType keyType, int minClassCount = 2)
    {
        int count = checked((int)keyType.Count);
        var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues);
        if (annotation is null || annotation.Value.Type is not VectorDataViewType vector) return new LabelInfo(count, null, null, minClassCount);
        var kind = SupportedValueTypes.FirstOrDefault(p => p.Value.Equals(vector.ItemType)).Key;
        if (kind is null) return new LabelInfo(count, null, null, minClassCount);
        var method = typeof(LabelInfo).GetMethod(nameof(ReadValues), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(vector.ItemType.RawType);
        var values = (List<string>)method.Invoke(null, new object[] { column })!;
        return new LabelInfo(count, kind, values.Count == count ? values : null, minClassCount);
    }

    private static List<string> ReadValues<T>(DataViewSchema.Column column)
    {
        VBuffer<T> buffer = default;
        column.GetKeyValues(ref buffer);
        return buffer.DenseValues().Select(v => Convert.ToString(v is ReadOnlyMemory<char> m ? m.ToString() : (object?)v, CultureInfo.InvariantCulture) ?? "").ToList();
    }

    /// <summary>Class names for the score's slot names: the key values, or the key numbers 1..N.</summary>
    public IReadOnlyList<string> ClassNames => Values ?? Enumerable.Range(1, ClassCount).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();

    /// <summary>Adds the key-values annotation to a builder, in the original item type.</summary>
    public void AddKeyValues(DataViewSchema.Annotations.Builder builder)
    {
        if (Values is null || ValueKind is null) return;
        var itemType = SupportedValueTypes[ValueKind];
        var method = typeof(LabelInfo).GetMethod(nameof(AddTyped), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .MakeGenericMethod(itemType.RawType);
        method.Invoke(this, new object[] { builder, itemType });
    }

    private void AddTyped<T>(DataViewSchema.Annotations.Builder builder, PrimitiveDataViewType itemType)
    {
        var values = Values!.Select(v => Parse<T>(v)).ToArray();
        ValueGetter<VBuffer<T>> getter = (ref VBuffer<T> dst) => new VBuffer<T>(values.Length, values).CopyTo(ref dst);
        builder.AddKeyValues(values.Length, itemType, getter);
    }

    private static T Parse<T>(string text)
    {
        if (typeof(T) == typeof(ReadOnlyMemory<char>)) return (T)(object)text.AsMemory();
        try
        {
            return (T)Convert.ChangeType(text, typeof(T), CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new InvalidDataException($"The saved key value '{text}' is not a valid {typeof(T).Name}.", e);
        }
    }

    /// <summary>Throws when a validation set's label has other classes than the training data's (count or key values).</summary>
    public void CheckSameClasses(LabelInfo validation, string labelColumn)
    {
        if (validation.ClassCount != ClassCount)
            throw new ArgumentException($"The validation set's label '{labelColumn}' has {validation.ClassCount} key values, the training data's {ClassCount}; map both with the same MapValueToKey transformer.", "ValidationSet");
        if (Values is not null && validation.Values is not null && !Values.SequenceEqual(validation.Values))
            throw new ArgumentException($"The validation set's label '{labelColumn}' has other classes ([{string.Join(", ", validation.Values.Take(10))}]) than the training data's ([{string.Join(", ", Values.Take(10))}]); map both with the same MapValueToKey transformer.", "ValidationSet");
    }

    /// <summary>Slot-names annotation (class names) for the score vector.</summary>
    public void AddSlotNames(DataViewSchema.Annotations.Builder builder)
    {
        var names = ClassNames.Select(n => n.AsMemory()).ToArray();
        ValueGetter<VBuffer<ReadOnlyMemory<char>>> getter = (ref VBuffer<ReadOnlyMemory<char>> dst) =>
            new VBuffer<ReadOnlyMemory<char>>(names.Length, names).CopyTo(ref dst);
        builder.AddSlotNames(names.Length, getter);
    }
}
