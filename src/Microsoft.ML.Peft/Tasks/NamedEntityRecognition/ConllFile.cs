namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>One sentence of a CoNLL file: its words, their tags, and the 1-based line of its first word.</summary>
/// <param name="Words">The tokens of the sentence (column 0).</param>
/// <param name="Tags">The tag of each token.</param>
/// <param name="FirstLine">The 1-based line of the first token, for messages.</param>
public sealed record ConllSentence(string[] Words, string[] Tags, int FirstLine);

/// <summary>The sentences of a CoNLL file and the layout they were read with.</summary>
public sealed class ConllData
{
    /// <summary>Sentences read with a layout.</summary>
    public ConllData(IReadOnlyList<ConllSentence> sentences, int tagColumn, int columnCount, int docStartLines)
    {
        Sentences = sentences;
        TagColumn = tagColumn;
        ColumnCount = columnCount;
        DocStartLines = docStartLines;
    }

    /// <summary>The sentences, in file order.</summary>
    public IReadOnlyList<ConllSentence> Sentences { get; }

    /// <summary>The 0-based column the tags were read from.</summary>
    public int TagColumn { get; }

    /// <summary>Columns per token line.</summary>
    public int ColumnCount { get; }

    /// <summary>The <c>-DOCSTART-</c> lines skipped.</summary>
    public int DocStartLines { get; }
}

/// <summary>
/// Reads the CoNLL column format: one token a line, columns separated by spaces (tabs and runs of whitespace are
/// tolerated), a blank line between sentences, <c>-DOCSTART-</c> lines (and the blank line after them) skipped. The word is
/// column 0. Layouts in use: <c>token tag 0</c> and <c>token pos chunk tag</c>. Without an explicit tag column the tags are
/// the last column after the first whose values are all BIO tags (O, B-X, I-X): the NER tags of <c>token pos chunk tag</c>,
/// not its chunk tags.
/// </summary>
public static class ConllFile
{
    private const string DocStart = "-DOCSTART-";
    private static readonly char[] Separators = { ' ', '\t' };

    /// <summary>Reads a CoNLL file; <paramref name="tagColumn"/> (0-based, at least 1) overrides the detected tag column.</summary>
    public static ConllData Read(string path, int? tagColumn = null)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("The CoNLL file path is empty.", nameof(path));
        if (!File.Exists(path)) throw new FileNotFoundException($"The CoNLL file '{path}' does not exist.", path);
        using var reader = File.OpenText(path);
        return Parse(reader, path, tagColumn);
    }

    /// <summary>Parses CoNLL text; <paramref name="description"/> names the source in errors (a path).</summary>
    public static ConllData Parse(TextReader reader, string description, int? tagColumn = null)
    {
        if (reader is null) throw new ArgumentNullException(nameof(reader));
        var sentences = new List<(string[][] Rows, int[] Lines)>();
        var rows = new List<string[]>();
        var lines = new List<int>();
        int columnCount = 0, firstTokenLine = 0, docStarts = 0, lineNumber = 0;

        void EndSentence()
        {
            if (rows.Count > 0) sentences.Add((rows.ToArray(), lines.ToArray()));
            rows.Clear();
            lines.Clear();
        }

        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNumber++;
            var columns = line.Split(Separators, StringSplitOptions.RemoveEmptyEntries);
            if (columns.Length == 0)
            {
                // Also the blank line after -DOCSTART-, which ends no sentence.
                EndSentence();
                continue;
            }
            if (columns[0] == DocStart)
            {
                EndSentence();
                docStarts++;
                continue;
            }
            if (columnCount == 0)
            {
                if (columns.Length < 2)
                    throw new InvalidDataException(
                        $"{description}, line {lineNumber}: {columns.Length} column; a CoNLL token line needs the word and at least a tag column ('token tag 0' or 'token pos chunk tag').");
                columnCount = columns.Length;
                firstTokenLine = lineNumber;
            }
            else if (columns.Length != columnCount)
            {
                throw new InvalidDataException(
                    $"{description}, line {lineNumber}: {columns.Length} columns, but the first token line ({firstTokenLine}) has {columnCount}; every token line needs the same columns.");
            }
            rows.Add(columns);
            lines.Add(lineNumber);
        }
        EndSentence();
        if (sentences.Count == 0)
            throw new InvalidDataException(
                $"{description}: no token lines in {lineNumber} line{(lineNumber == 1 ? "" : "s")}; the file is empty.");

        int column = tagColumn is int chosen ? CheckTagColumn(chosen, columnCount, description, firstTokenLine) : DetectTagColumn(sentences, columnCount, description);
        var result = new List<ConllSentence>(sentences.Count);
        foreach (var (sentenceRows, sentenceLines) in sentences)
        {
            var words = new string[sentenceRows.Length];
            var tags = new string[sentenceRows.Length];
            for (int i = 0; i < sentenceRows.Length; i++)
            {
                words[i] = sentenceRows[i][0];
                tags[i] = sentenceRows[i][column];
                if (!BioTags.IsBio(tags[i]))
                    throw new InvalidDataException(
                        $"{description}, line {sentenceLines[i]}: '{tags[i]}' in the tag column {column} (0-based) is not a BIO tag (O, B-X or I-X).");
            }
            result.Add(new ConllSentence(words, tags, sentenceLines[0]));
        }
        return new ConllData(result, column, columnCount, docStarts);
    }

    private static int CheckTagColumn(int column, int columnCount, string description, int firstTokenLine)
    {
        if (column < 1 || column >= columnCount)
            throw new InvalidDataException(
                $"{description}, line {firstTokenLine}: the tag column {column} (0-based) is out of range; token lines have {columnCount} columns, column 0 is the word, so the tag column is 1 to {columnCount - 1}.");
        return column;
    }

    private static int DetectTagColumn(List<(string[][] Rows, int[] Lines)> sentences, int columnCount, string description)
    {
        // For each candidate column, the first value that is not a BIO tag (null: all are).
        var firstMismatch = new (string Value, int Line)?[columnCount];
        foreach (var (rows, lines) in sentences)
            for (int i = 0; i < rows.Length; i++)
                for (int c = 1; c < columnCount; c++)
                    if (firstMismatch[c] is null && !BioTags.IsBio(rows[i][c])) firstMismatch[c] = (rows[i][c], lines[i]);
        for (int c = columnCount - 1; c >= 1; c--)
            if (firstMismatch[c] is null) return c;
        var reasons = Enumerable.Range(1, columnCount - 1)
            .Select(c => $"column {c} has '{firstMismatch[c]!.Value.Value}' at line {firstMismatch[c]!.Value.Line}");
        throw new InvalidDataException(
            $"{description}, line {sentences[0].Lines[0]}: no column holds only BIO tags (O, B-X, I-X): {string.Join("; ", reasons)}. Use --tag-col N (0-based) to name the tag column.");
    }

    /// <summary>Plain text for prediction: one sentence per non-blank line, words split on whitespace.</summary>
    public static IReadOnlyList<string[]> ReadPlainText(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("The text file path is empty.", nameof(path));
        if (!File.Exists(path)) throw new FileNotFoundException($"The text file '{path}' does not exist.", path);
        var sentences = File.ReadLines(path)
            .Select(line => line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
            .Where(words => words.Length > 0)
            .ToList();
        if (sentences.Count == 0) throw new InvalidDataException($"{path}: no text; the file is empty or blank.");
        return sentences;
    }
}
