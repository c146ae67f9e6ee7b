using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Peft.Cli.CodeGeneration;

/// <summary>What a property of the generated <c>ModelInput</c> or <c>ModelOutput</c> is: the model's column and its C# form.</summary>
/// <param name="ColumnName">The column's name in the model.</param>
/// <param name="Property">The C# property's name.</param>
/// <param name="Type">The column's type.</param>
/// <param name="IsLabel">An input the model's pipeline expects but does not predict from (the label its first step maps to a key).</param>
/// <param name="HasSlotNames">An output vector whose slots are named (a classifier's scores, by class).</param>
/// <param name="HasTextKeyValues">An output key (or vector of keys) whose key values are text (the class or tag names).</param>
internal sealed record CodeColumn(string ColumnName, string Property, DataViewType Type, bool IsLabel = false, bool HasSlotNames = false, bool HasTextKeyValues = false)
{
    /// <summary>The C# type of the property: text as string, numbers as their C# type, keys as uint (their raw type), vectors as arrays, images as MLImage.</summary>
    public string CSharpType => CSharpTypes.Name(Type, ColumnName);

    /// <summary>The attributes ML.NET needs to map the property: ColumnName always; VectorType with the size of a fixed-size vector; KeyType on an input key; ImageType with an image's size.</summary>
    public IReadOnlyList<string> Attributes(bool input)
    {
        var list = new List<string> { $"ColumnName({CSharpTypes.Literal(ColumnName)})" };
        var item = Type is VectorDataViewType v ? v.ItemType : Type;
        if (Type is VectorDataViewType { IsKnownSize: true } known)
            list.Add($"VectorType({string.Join(", ", known.Dimensions.Select(d => d.ToString(System.Globalization.CultureInfo.InvariantCulture)))})");
        if (input && item is KeyDataViewType key) list.Add($"KeyType({key.Count.ToString(System.Globalization.CultureInfo.InvariantCulture)})");
        if (Type is ImageDataViewType { Height: > 0, Width: > 0 } image)
            list.Add($"ImageType({image.Height.ToString(System.Globalization.CultureInfo.InvariantCulture)}, {image.Width.ToString(System.Globalization.CultureInfo.InvariantCulture)})");
        return list;
    }
}

/// <summary>
/// The columns of a saved model that generated code needs: the inputs (<c>ModelInput</c>: the columns the model cannot
/// score without, labels included when its pipeline maps them) and the outputs (<c>ModelOutput</c>: the columns it adds
/// or changes, labels excluded).
/// </summary>
internal sealed class ConsumptionModel
{
    public ConsumptionModel(IReadOnlyList<CodeColumn> inputs, IReadOnlyList<CodeColumn> outputs)
    {
        if (!inputs.Any(c => !c.IsLabel)) throw new InvalidOperationException("The model reads no column to predict from, so there is nothing for generated code to ask for.");
        if (outputs.Count == 0) throw new InvalidOperationException("The model adds no column, so there is nothing for generated code to print.");
        Inputs = inputs;
        Outputs = outputs;
    }

    /// <summary>The properties of <c>ModelInput</c>, in the model's column order.</summary>
    public IReadOnlyList<CodeColumn> Inputs { get; }

    /// <summary>The properties of <c>ModelOutput</c>: a column named PredictedLabel first, then the model's order.</summary>
    public IReadOnlyList<CodeColumn> Outputs { get; }

    /// <summary>The inputs read from the command line (the labels are not).</summary>
    public IEnumerable<CodeColumn> Features => Inputs.Where(c => !c.IsLabel);

    /// <summary>The columns of a loaded model: its input schema (from <c>mlContext.Model.Load</c>) bound to the model.</summary>
    public static ConsumptionModel FromModel(ITransformer model, DataViewSchema inputSchema)
    {
        var output = model.GetOutputSchema(inputSchema);
        var visible = inputSchema.Where(c => !c.IsHidden).ToList();
        // A column is an input when the model cannot bind without it. Labels that only training reads drop out this way
        // (a named-entity recognizer's tags, a recommender's rating); a pipeline that maps its label to a key keeps it.
        var required = visible.Where(c => !Binds(model, visible.Where(other => other.Index != c.Index))).Select(c => c.Name).ToHashSet(StringComparer.Ordinal);
        // The label of such a pipeline: a text (or number) column that its leading MapValueToKey steps turn into a key.
        var leading = Flatten(model).TakeWhile(t => t is ValueToKeyMappingTransformer).ToList();
        var keyed = leading.Aggregate(inputSchema, (schema, t) => t.GetOutputSchema(schema));
        var labels = visible.Where(c => c.Type is not KeyDataViewType && keyed.GetColumnOrNull(c.Name)?.Type is KeyDataViewType).Select(c => c.Name).ToHashSet(StringComparer.Ordinal);
        return FromSchemas(inputSchema, output, required, labels);
    }

    /// <summary>
    /// The columns given the model's input and output schemas, the input columns it requires and which of those are
    /// labels. Outputs are the visible columns of <paramref name="output"/> that are new or of another type than in
    /// <paramref name="input"/>, except labels.
    /// </summary>
    public static ConsumptionModel FromSchemas(DataViewSchema input, DataViewSchema output, IReadOnlySet<string> required, IReadOnlySet<string> labels)
    {
        var names = new PropertyNames();
        var inputs = input.Where(c => !c.IsHidden && required.Contains(c.Name))
            .Select(c => new CodeColumn(c.Name, names.For(c.Name), Checked(c), IsLabel: labels.Contains(c.Name)))
            .ToList();
        names = new PropertyNames();
        var outputs = output.Where(c => !c.IsHidden && !labels.Contains(c.Name) && !(input.GetColumnOrNull(c.Name) is { IsHidden: false } same && same.Type.Equals(c.Type)))
            // The last column of a name is the one a prediction engine reads.
            .GroupBy(c => c.Name).Select(g => g.Last())
            .OrderBy(c => c.Name == "PredictedLabel" ? 0 : 1).ThenBy(c => c.Index)
            .Select(c => new CodeColumn(c.Name, names.For(c.Name), Checked(c),
                HasSlotNames: c.Type is VectorDataViewType && c.HasSlotNames(),
                HasTextKeyValues: c.HasKeyValues(TextDataViewType.Instance)))
            .ToList();
        return new ConsumptionModel(inputs, outputs);
    }

    private static DataViewType Checked(DataViewSchema.Column column)
    {
        _ = CSharpTypes.Name(column.Type, column.Name);
        return column.Type;
    }

    private static bool Binds(ITransformer model, IEnumerable<DataViewSchema.Column> columns)
    {
        var builder = new DataViewSchema.Builder();
        foreach (var column in columns) builder.AddColumn(column.Name, column.Type, column.Annotations);
        try
        {
            model.GetOutputSchema(builder.ToSchema());
            return true;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException or IndexOutOfRangeException or FormatException or NotSupportedException)
        {
            return false;
        }
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };

    /// <summary>C# identifiers for column names: other characters become '_', a leading digit or keyword is escaped, repeats are numbered.</summary>
    private sealed class PropertyNames
    {
        private readonly HashSet<string> used = new(StringComparer.Ordinal);

        public string For(string column)
        {
            var name = CSharpTypes.Identifier(column);
            var unique = name;
            for (int k = 2; !used.Add(unique); k++) unique = $"{name}_{k}";
            return unique;
        }
    }
}

/// <summary>How a column's ML.NET type is written in C#, read from a command-line value and printed.</summary>
internal static class CSharpTypes
{
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    {
        "abstract", "as", "base", "bool", "break", "byte", "case", "catch", "char", "checked", "class", "const", "continue", "decimal",
        "default", "delegate", "do", "double", "else", "enum", "event", "explicit", "extern", "false", "finally", "fixed", "float",
        "for", "foreach", "goto", "if", "implicit", "in", "int", "interface", "internal", "is", "lock", "long", "namespace", "new",
        "null", "object", "operator", "out", "override", "params", "private", "protected", "public", "readonly", "ref", "return",
        "sbyte", "sealed", "short", "sizeof", "stackalloc", "static", "string", "struct", "switch", "this", "throw", "true", "try",
        "typeof", "uint", "ulong", "unchecked", "unsafe", "ushort", "using", "virtual", "void", "volatile", "while",
    };

    /// <summary>The C# type of an ML.NET column type; a type generated code cannot hold is an error naming the column.</summary>
    public static string Name(DataViewType type, string column) => type switch
    {
        VectorDataViewType vector => ScalarName(vector.ItemType, column) + "[]",
        ImageDataViewType => "MLImage?",
        _ => ScalarName(type, column),
    };

    private static string ScalarName(DataViewType type, string column) => type switch
    {
        TextDataViewType => "string",
        BooleanDataViewType => "bool",
        KeyDataViewType key => RawName(key.RawType, column, type),
        NumberDataViewType number => RawName(number.RawType, column, type),
        DateTimeDataViewType => "DateTime",
        DateTimeOffsetDataViewType => "DateTimeOffset",
        TimeSpanDataViewType => "TimeSpan",
        _ => throw new NotSupportedException($"The model's column '{column}' has type {type}, which generated code does not map to a C# type."),
    };

    private static string RawName(Type raw, string column, DataViewType type) =>
        raw == typeof(float) ? "float" : raw == typeof(double) ? "double" : raw == typeof(sbyte) ? "sbyte" : raw == typeof(byte) ? "byte"
        : raw == typeof(short) ? "short" : raw == typeof(ushort) ? "ushort" : raw == typeof(int) ? "int" : raw == typeof(uint) ? "uint"
        : raw == typeof(long) ? "long" : raw == typeof(ulong) ? "ulong"
        : throw new NotSupportedException($"The model's column '{column}' has type {type}, which generated code does not map to a C# type.");

    /// <summary>The property's initial value (after the declaration), so that a non-nullable property starts valid.</summary>
    public static string Initializer(DataViewType type) => type switch
    {
        VectorDataViewType => " = [];",
        TextDataViewType => " = \"\";",
        _ => "",
    };

    /// <summary>A C# expression that turns the command-line string <paramref name="value"/> into the column's value.</summary>
    public static string Parse(DataViewType type, string value) => type switch
    {
        TextDataViewType => value,
        ImageDataViewType => $"MLImage.CreateFromFile({value})",
        // Words (a named-entity recognizer's sentence).
        VectorDataViewType { ItemType: TextDataViewType } => $"{value}.Split(' ', StringSplitOptions.RemoveEmptyEntries)",
        // Raw image bytes (LoadRawImageBytes): the file's content.
        VectorDataViewType { ItemType: NumberDataViewType n } when n.RawType == typeof(byte) => $"File.ReadAllBytes({value})",
        VectorDataViewType vector => $"{value}.Split(',').Select(v => {ParseScalar(vector.ItemType, "v.Trim()")}).ToArray()",
        _ => ParseScalar(type, value),
    };

    private static string ParseScalar(DataViewType type, string value)
    {
        var csharp = ScalarName(type, "");
        return type switch
        {
            TextDataViewType => value,
            BooleanDataViewType => $"bool.Parse({value})",
            _ => $"{csharp}.Parse({value}, CultureInfo.InvariantCulture)",
        };
    }

    /// <summary>What the usage line shows for a value of this type.</summary>
    public static string Placeholder(CodeColumn column) => column.Type switch
    {
        ImageDataViewType => $"<{column.ColumnName}: image file>",
        VectorDataViewType { ItemType: TextDataViewType } => $"<{column.ColumnName}: words separated by spaces>",
        VectorDataViewType { ItemType: NumberDataViewType n } when n.RawType == typeof(byte) => $"<{column.ColumnName}: file>",
        VectorDataViewType => $"<{column.ColumnName}: numbers separated by commas>",
        _ => $"<{column.ColumnName}>",
    };

    /// <summary>A C# identifier for <paramref name="name"/>.</summary>
    public static string Identifier(string name)
    {
        var chars = name.Select(c => char.IsLetterOrDigit(c) || c == '_' ? c : '_').ToArray();
        var identifier = chars.Length == 0 ? "_" : new string(chars);
        if (char.IsDigit(identifier[0])) identifier = "_" + identifier;
        return Keywords.Contains(identifier) ? "@" + identifier : identifier;
    }

    /// <summary>A C# string literal of <paramref name="text"/>.</summary>
    public static string Literal(string text)
    {
        var builder = new System.Text.StringBuilder("\"");
        foreach (var c in text)
        {
            builder.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\0' => "\\0",
                _ when char.IsControl(c) || char.IsSurrogate(c) || c is '\u2028' or '\u2029' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return builder.Append('"').ToString();
    }
}
