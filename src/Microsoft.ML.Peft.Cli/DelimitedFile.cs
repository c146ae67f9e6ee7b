using System.Globalization;
using System.Text;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peft.Cli;

/// <summary>How a delimited text file is laid out: separator and whether its first line names the columns.</summary>
internal sealed record TextFileFormat(char Separator, bool HasHeader)
{
    /// <summary>Comma-separated files may quote fields that contain commas; other separators read fields verbatim.</summary>
    public bool AllowQuoting => Separator == ',';

    /// <summary>Parses <c>TAB</c>, <c>COMMA</c>, <c>SEMICOLON</c>, <c>SPACE</c>, <c>PIPE</c> (any case), <c>\t</c>, or a single character.</summary>
    public static char ParseSeparator(string? text)
    {
        if (string.IsNullOrEmpty(text)) return '\t';
        switch (text.ToUpperInvariant())
        {
            case "TAB" or "\\T": return '\t';
            case "COMMA": return ',';
            case "SEMICOLON": return ';';
            case "SPACE": return ' ';
            case "PIPE": return '|';
        }
        if (text.Length == 1 && text[0] != '"' && text[0] != '\r' && text[0] != '\n') return text[0];
        throw new ArgumentException($"The separator '{text}' (--separator) is not valid: give TAB, COMMA, SEMICOLON, SPACE, PIPE or a single character.");
    }
}

/// <summary>A delimited text file to read with ML.NET's <see cref="TextLoader"/>; its first line is read here to map column names to indices.</summary>
internal sealed class DelimitedFile
{
    private DelimitedFile(string path, string description, TextFileFormat format, IReadOnlyList<string> firstLine)
    {
        Path = path;
        Description = description;
        Format = format;
        FirstLineFields = firstLine;
    }

    /// <summary>The full path.</summary>
    public string Path { get; }

    /// <summary>What the file is, for messages: <c>dataset '...' (--dataset)</c>.</summary>
    public string Description { get; }

    public TextFileFormat Format { get; }

    /// <summary>The fields of the first line: the column names when the file has a header.</summary>
    public IReadOnlyList<string> FirstLineFields { get; }

    /// <summary>The column names, or null without a header.</summary>
    public IReadOnlyList<string>? Header => Format.HasHeader ? FirstLineFields : null;

    /// <summary>Checks that the file exists and reads its first line.</summary>
    /// <param name="path">The file as given on the command line.</param>
    /// <param name="option">The option that named it, for messages.</param>
    /// <param name="format">Separator and header.</param>
    public static DelimitedFile Open(string path, string option, TextFileFormat format)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"The file name given to {option} is empty.");
        var full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new FileNotFoundException($"The file '{path}' ({option}) is a directory, not a file.", full);
        if (!File.Exists(full)) throw new FileNotFoundException($"The file '{path}' ({option}) does not exist.", full);
        string? first;
        using (var reader = new StreamReader(full, Encoding.UTF8, detectEncodingFromByteOrderMarks: true))
            first = reader.ReadLine();
        if (first is null) throw new InvalidDataException($"The file '{path}' ({option}) is empty.");
        return new DelimitedFile(full, $"'{path}' ({option})", format, SplitLine(first.TrimStart('\uFEFF'), format));
    }

    /// <summary>
    /// Maps a column given on the command line to its 0-based index: a header name (exact, then ignoring case) when the
    /// file has a header, else a 0-based index.
    /// </summary>
    public int ResolveColumn(string spec, string option)
    {
        if (string.IsNullOrWhiteSpace(spec)) throw new ArgumentException($"The column given to {option} is empty.");
        if (Header is { } header)
        {
            int found = IndexOf(header, spec, StringComparison.Ordinal);
            if (found < 0) found = IndexOf(header, spec, StringComparison.OrdinalIgnoreCase);
            if (found >= 0) return found;
            if (!IsIndex(spec, out _))
                throw new ArgumentException($"The column '{spec}' ({option}) is not in the header of {Description}. Its columns are: {string.Join(", ", header.Select(h => $"'{h}'"))}.");
        }
        if (!IsIndex(spec, out int index))
            throw new ArgumentException($"The column '{spec}' ({option}) is a name, but {Description} has no header; give a 0-based column index, or --has-header if its first line names the columns.");
        if (index >= FirstLineFields.Count)
            throw new ArgumentException($"The column index {index} ({option}) is out of range: the first line of {Description} has {FirstLineFields.Count} column(s), indices 0 to {FirstLineFields.Count - 1}.");
        return index;
    }

    /// <summary>A name for column <paramref name="index"/> in output files: its header name, or <paramref name="fallback"/>.</summary>
    public string ColumnName(int index, string fallback) => Header is { } header && index < header.Count && header[index].Length > 0 ? header[index] : fallback;

    /// <summary>Reads the given columns as text, each under the given name, at most <paramref name="maxRows"/> rows.</summary>
    public IDataView Load(MLContext mlContext, IEnumerable<(string Name, int Index)> columns, long? maxRows) =>
        Load(mlContext, columns.Select(c => (c.Name, c.Index, DataKind.String)), maxRows);

    /// <summary>Reads the given columns, each under the given name and as the given kind (a number that does not parse is missing: NaN), at most <paramref name="maxRows"/> rows.</summary>
    public IDataView Load(MLContext mlContext, IEnumerable<(string Name, int Index, DataKind Kind)> columns, long? maxRows) =>
        Load(mlContext, columns.Select(c => new TextLoader.Column(c.Name, c.Kind, c.Index)), maxRows);

    /// <summary>Reads the given loader columns (vector columns too), at most <paramref name="maxRows"/> rows.</summary>
    public IDataView Load(MLContext mlContext, IEnumerable<TextLoader.Column> columns, long? maxRows)
    {
        var options = new TextLoader.Options
        {
            Columns = columns.ToArray(),
            HasHeader = Format.HasHeader,
            Separators = new[] { Format.Separator },
            AllowQuoting = Format.AllowQuoting,
        };
        IDataView data = mlContext.Data.LoadFromTextFile(Path, options);
        return maxRows is { } max ? mlContext.Data.TakeRows(data, max) : data;
    }

    private static int IndexOf(IReadOnlyList<string> names, string name, StringComparison comparison)
    {
        for (int i = 0; i < names.Count; i++)
            if (string.Equals(names[i], name, comparison)) return i;
        return -1;
    }

    private static bool IsIndex(string text, out int index) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out index);

    /// <summary>Splits one line on the separator; with quoting, a field in double quotes may hold the separator and <c>""</c>.</summary>
    internal static List<string> SplitLine(string line, TextFileFormat format)
    {
        if (!format.AllowQuoting) return line.Split(format.Separator).Select(f => f.Trim()).ToList();
        var fields = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == format.Separator) { fields.Add(field.ToString().Trim()); field.Clear(); }
            else field.Append(c);
        }
        fields.Add(field.ToString().Trim());
        return fields;
    }
}
