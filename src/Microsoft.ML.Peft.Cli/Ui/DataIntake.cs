using System.Globalization;
using System.Text;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using SixLabors.ImageSharp;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>
/// Reads a run's data as <c>auto</c> will (a delimited text file, a CoNLL file, a folder of class folders), checks it,
/// and describes it for the page: a preview, the detected columns, the classes. Errors are <see cref="InvalidDataException"/>
/// with a message that names the file.
/// </summary>
internal static class DataIntake
{
    private const int PreviewRows = 20;
    private const int SampleRows = 2000;
    private const int ImageSamples = 12;
    private static readonly string[] LabelNames = { "label", "labels", "class", "category", "sentiment", "target", "y", "score", "similarity", "tag" };
    private static readonly string[] UserNames = { "user", "userid", "user_id", "user-id", "users", "customer", "customerid", "customer_id", "client", "clientid", "member", "reviewer", "reviewerid" };
    private static readonly string[] ItemNames = { "item", "itemid", "item_id", "item-id", "items", "movie", "movieid", "movie_id", "product", "productid", "product_id", "film", "book", "bookid", "asin", "song", "track" };
    private static readonly string[] RatingNames = { "rating", "ratings", "score", "label", "stars", "rate", "value" };

    /// <summary>Separators the page may choose, by their <c>--separator</c> names.</summary>
    public static readonly IReadOnlyDictionary<string, char> Separators = new Dictionary<string, char>
    {
        ["TAB"] = '\t', ["COMMA"] = ',', ["SEMICOLON"] = ';', ["PIPE"] = '|',
    };

    /// <summary>Describes the data at <paramref name="path"/> (a file, or a folder for images) for <paramref name="scenario"/>.</summary>
    /// <param name="scenario">The run's scenario.</param>
    /// <param name="path">Full path on the server.</param>
    /// <param name="name">The name to show and to put in messages.</param>
    /// <param name="source"><c>upload</c> or <c>path</c>.</param>
    public static UiData Describe(Scenario scenario, string path, string name, string source) => scenario.Data switch
    {
        "delimited" => Delimited(scenario, path, name, source, null, null),
        "conll" => Conll(path, name, source, null),
        "images" => Images(path, name, source),
        "detection" => DetectionIntake.Describe(path, name, source),
        _ => throw new InvalidOperationException($"Unknown data kind '{scenario.Data}'."),
    };

    /// <summary>Reads a delimited file again with the separator and header the page chose.</summary>
    public static UiData Redescribe(Scenario scenario, UiData data, string? separator, bool? hasHeader, int? tagColumn) => scenario.Data switch
    {
        "delimited" => Delimited(scenario, data.Path, data.Name, data.Source, separator ?? data.Separator, hasHeader ?? data.HasHeader),
        "conll" => Conll(data.Path, data.Name, data.Source, tagColumn),
        _ => data,
    };

    /// <summary>Fails with a clear message when <paramref name="path"/> holds binary content (a NUL byte, or bytes that are not UTF-8) in its first 64 KB.</summary>
    public static void CheckText(string path, string name, string what)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new InvalidDataException($"'{name}' does not exist.");
        if (info.Length == 0) throw new InvalidDataException($"'{name}' is empty: {what} needs at least one line of data.");
        var buffer = new byte[(int)Math.Min(info.Length, 65536)];
        using (var stream = File.OpenRead(path)) stream.ReadExactly(buffer);
        if (Array.IndexOf(buffer, (byte)0) >= 0)
            throw new InvalidDataException($"'{name}' is not a text file (it has binary content): {what} is expected.");
        // Cut a character split by the 64 KB boundary before checking the encoding.
        int length = buffer.Length;
        if (length < info.Length)
            while (length > 0 && length > buffer.Length - 4 && (buffer[length - 1] & 0xC0) == 0x80) length--;
        if (length < info.Length && length > 0 && buffer[length - 1] >= 0xC0) length--;
        try
        {
            new UTF8Encoding(false, throwOnInvalidBytes: true).GetCharCount(buffer, 0, length);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException($"'{name}' is not UTF-8 text: {what} is expected (save it as UTF-8).");
        }
    }

    private static UiData Delimited(Scenario scenario, string path, string name, string source, string? separatorName, bool? hasHeader)
    {
        CheckText(path, name, "a delimited text file (tab- or comma-separated, one row a line)");
        var lines = new List<string>();
        long rows = 0;
        using (var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true))
        {
            string? line;
            while ((line = reader.ReadLine()) is not null)
            {
                if (line.Length == 0) continue;
                if (lines.Count < SampleRows + 1) lines.Add(lines.Count == 0 ? line.TrimStart('\uFEFF') : line);
                rows++;
            }
        }
        if (lines.Count == 0) throw new InvalidDataException($"'{name}' has no lines of data.");
        char separator = separatorName is null ? DetectSeparator(lines, name)
            : Separators.TryGetValue(separatorName, out var chosen) ? chosen : throw new ArgumentException($"The separator '{separatorName}' is not one of {string.Join(", ", Separators.Keys)}.");
        var format = new TextFileFormat(separator, false);
        var table = lines.Select(l => DelimitedFile.SplitLine(l, format)).ToList();
        int columns = table[0].Count;
        if (columns < 2)
            throw new InvalidDataException($"'{name}' has a single column with the separator {SeparatorName(separator)}: {scenario.Name.ToLowerInvariant()} needs {RolesText(scenario)}.");
        int bad = table.FindIndex(r => r.Count != columns);
        if (bad >= 0)
            throw new InvalidDataException($"Line {bad + 1} of '{name}' has {table[bad].Count} fields where the first line has {columns} (separator {SeparatorName(separator)}).");
        bool header = hasHeader ?? DetectHeader(table);
        var names = header ? table[0].Select((h, i) => string.IsNullOrWhiteSpace(h) ? i.ToString(CultureInfo.InvariantCulture) : h).ToList()
            : Enumerable.Range(0, columns).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
        var body = header ? table.Skip(1).ToList() : table;
        if (body.Count == 0) throw new InvalidDataException($"'{name}' has a header but no rows.");
        var detected = DetectColumns(scenario, names, body);
        var data = new UiData
        {
            Source = source,
            Name = name,
            Path = path,
            Rows = header ? rows - 1 : rows,
            Separator = SeparatorName(separator),
            HasHeader = header,
            Header = header ? names : null,
            Preview = new UiPreview { Columns = names, Rows = body.Take(PreviewRows).ToList() },
            Detected = detected,
        };
        data.Classes = ClassCounts(scenario, data, detected.Label);
        return data;
    }

    /// <summary>The classes of <paramref name="label"/> with their counts over the whole file (classification scenarios), else null.</summary>
    public static List<UiClassCount>? ClassCounts(Scenario scenario, UiData data, string? label)
    {
        if (scenario.LabelKind != "category" || scenario.Data != "delimited" || label is null || data.Separator is null) return null;
        int index = data.Preview.Columns.IndexOf(label);
        if (index < 0) return null;
        var format = new TextFileFormat(Separators[data.Separator], data.HasHeader);
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        using var reader = new StreamReader(data.Path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        string? line;
        bool first = true;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0) continue;
            if (first && data.HasHeader)
            {
                first = false;
                continue;
            }
            first = false;
            var fields = DelimitedFile.SplitLine(line, format);
            if (index >= fields.Count) continue;
            var value = fields[index].Trim();
            counts[value] = counts.GetValueOrDefault(value) + 1;
            if (counts.Count > 1000) return null;
        }
        return counts.OrderByDescending(c => c.Value).ThenBy(c => c.Key, StringComparer.Ordinal).Select(c => new UiClassCount(c.Key, c.Value)).ToList();
    }

    private static string SeparatorName(char separator) => Separators.First(s => s.Value == separator).Key;

    private static char DetectSeparator(List<string> lines, string name)
    {
        var sample = lines.Take(50).ToList();
        foreach (var candidate in new[] { '\t', ',', ';', '|' })
        {
            var format = new TextFileFormat(candidate, false);
            var counts = sample.Select(l => DelimitedFile.SplitLine(l, format).Count).ToList();
            if (counts[0] >= 2 && counts.All(c => c == counts[0])) return candidate;
        }
        throw new InvalidDataException($"'{name}' is not a delimited file this app can read: no separator (tab, comma, semicolon, pipe) gives the same number of columns (at least two) on every line.");
    }

    private static bool IsNumber(string text) => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    /// <summary>The first line is a header when a column is numeric below it but not in it, or when no first-line value recurs below it.</summary>
    private static bool DetectHeader(List<List<string>> table)
    {
        if (table.Count < 2) return false;
        var body = table.Skip(1).ToList();
        for (int c = 0; c < table[0].Count; c++)
            if (!IsNumber(table[0][c]) && body.All(r => IsNumber(r[c]))) return true;
        // A short label-like first row whose values never appear again (as header names do not).
        return table[0].All(v => v.Length is > 0 and <= 40 && !IsNumber(v))
            && Enumerable.Range(0, table[0].Count).All(c => body.All(r => !string.Equals(r[c], table[0][c], StringComparison.Ordinal)))
            && table[0].Any(v => LabelNames.Contains(v.Trim().ToLowerInvariant()) || v.Trim().ToLowerInvariant().Contains("sentence", StringComparison.Ordinal) || v.Trim().ToLowerInvariant().Contains("text", StringComparison.Ordinal));
    }

    /// <summary>The columns <paramref name="scenario"/> needs, in words.</summary>
    private static string RolesText(Scenario scenario) =>
        scenario.Roles.Contains("user") ? "three (a user id, an item id and a rating)"
        : scenario.Roles.Contains("text2") ? "three (texts and a label)" : "two (texts and a label)";

    private static bool IsInteger(string text) => long.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out _);

    /// <summary>
    /// Ratings: the user and item columns by their names (user, userId, item, movie, product...), else the first two columns of
    /// integers; the rating is a numeric column named rating, score or label, else the numeric column with the fewest values.
    /// </summary>
    private static UiColumns DetectRatingColumns(List<string> names, List<List<string>> body, int[] distinct, bool[] numeric)
    {
        int n = names.Count;
        string Key(int c) => names[c].Trim().ToLowerInvariant();
        var used = new HashSet<int>();
        int Pick(IEnumerable<int> candidates)
        {
            foreach (var c in candidates)
                if (used.Add(c)) return c;
            return -1;
        }
        var all = Enumerable.Range(0, n).ToList();
        var integers = all.Where(c => body.All(r => IsInteger(r[c]))).ToList();
        int user = Pick(all.Where(c => UserNames.Contains(Key(c))));
        int item = Pick(all.Where(c => ItemNames.Contains(Key(c))));
        int rating = Pick(all.Where(c => numeric[c] && RatingNames.Contains(Key(c))));
        if (user < 0) user = Pick(integers.Where(c => c != rating));
        if (item < 0) item = Pick(integers.Where(c => c != rating));
        if (rating < 0) rating = Pick(all.Where(c => numeric[c] && distinct[c] >= 2).OrderBy(c => distinct[c]));
        return new UiColumns
        {
            User = user >= 0 ? names[user] : null,
            Item = item >= 0 ? names[item] : null,
            Label = rating >= 0 ? names[rating] : null,
        };
    }

    private static UiColumns DetectColumns(Scenario scenario, List<string> names, List<List<string>> body)
    {
        int n = names.Count;
        var meanLength = Enumerable.Range(0, n).Select(c => body.Average(r => (double)r[c].Length)).ToArray();
        var distinct = Enumerable.Range(0, n).Select(c => body.Select(r => r[c].Trim()).Distinct(StringComparer.Ordinal).Count()).ToArray();
        var numeric = Enumerable.Range(0, n).Select(c => body.All(r => IsNumber(r[c]))).ToArray();
        bool Named(int c) => LabelNames.Contains(names[c].Trim().ToLowerInvariant());
        if (scenario.Roles.Contains("user")) return DetectRatingColumns(names, body, distinct, numeric);
        int label;
        if (scenario.LabelKind == "number")
        {
            var candidates = Enumerable.Range(0, n).Where(c => numeric[c]).ToList();
            label = candidates.Count == 0 ? -1 : candidates.OrderByDescending(Named).ThenByDescending(c => distinct[c]).First();
        }
        else
        {
            var candidates = Enumerable.Range(0, n).Where(c => distinct[c] >= 2 && distinct[c] <= Math.Max(2, Math.Min(100, body.Count / 2))).ToList();
            label = candidates.Count == 0 ? -1 : candidates.OrderByDescending(Named).ThenBy(c => distinct[c]).ThenBy(c => meanLength[c]).First();
        }
        var texts = Enumerable.Range(0, n).Where(c => c != label && !numeric[c]).OrderByDescending(c => meanLength[c]).ToList();
        // Two text columns keep the file's order (the first one is the first sentence).
        var chosen = texts.Take(scenario.Roles.Contains("text2") ? 2 : 1).Order().ToList();
        return new UiColumns
        {
            Label = label >= 0 ? names[label] : null,
            Text = chosen.Count > 0 ? names[chosen[0]] : null,
            Text2 = scenario.Roles.Contains("text2") && chosen.Count > 1 ? names[chosen[1]] : null,
            ValidationFraction = scenario.Validation ? 0.2 : null,
        };
    }

    private static UiData Conll(string path, string name, string source, int? tagColumn)
    {
        CheckText(path, name, "a CoNLL file (one word and its tag a line, a blank line between sentences)");
        ConllData conll;
        try
        {
            conll = NerCommand.Read(path, "the data file", tagColumn, null);
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"'{name}' is not a CoNLL file this app can read: {e.Message.Replace(path, name, StringComparison.Ordinal)}");
        }
        var tags = conll.Sentences.SelectMany(s => s.Tags).GroupBy(t => t, StringComparer.Ordinal)
            .Select(g => new UiClassCount(g.Key, g.LongCount())).OrderByDescending(c => c.Count).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
        if (!tags.Any(t => t.Name == "O"))
            throw new InvalidDataException($"The tags of '{name}' have no 'O' (outside any entity): it does not look like BIO-tagged CoNLL data.");
        return new UiData
        {
            Source = source,
            Name = name,
            Path = path,
            Rows = conll.Sentences.Count,
            Preview = new UiPreview
            {
                Columns = new List<string> { "words", "tags" },
                Rows = conll.Sentences.Take(PreviewRows).Select(s => new List<string> { string.Join(' ', s.Words), string.Join(' ', s.Tags) }).ToList(),
            },
            Detected = new UiColumns { TagColumn = tagColumn, ValidationFraction = 0.2 },
            Classes = tags,
        };
    }

    private static UiData Images(string path, string name, string source)
    {
        ImageDataset set;
        try
        {
            set = ImageDataset.Read(path, "the data folder");
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException or ArgumentException)
        {
            throw new InvalidDataException($"'{name}' is not an image dataset this app can read: {e.Message.Replace(path, name, StringComparison.Ordinal)}");
        }
        var root = Directory.Exists(path) ? path : Path.GetDirectoryName(path)!;
        var classes = set.Rows.GroupBy(r => r.Label, StringComparer.Ordinal).Select(g => new UiClassCount(g.Key, g.LongCount()))
            .OrderBy(c => c.Name, StringComparer.Ordinal).ToList();
        if (classes.Count < 2) throw new InvalidDataException($"'{name}' has images of {classes.Count} class; image classification needs at least two (one sub-folder per class).");
        // A few images of each class, for thumbnails; paths relative to the data folder.
        var perClass = Math.Max(1, ImageSamples / classes.Count);
        var sample = set.Rows.GroupBy(r => r.Label, StringComparer.Ordinal).SelectMany(g => g.Take(perClass))
            .Select(r => new UiImage(Path.GetRelativePath(root, r.ImagePath).Replace('\\', '/'), r.Label))
            .Where(i => !i.File.StartsWith("..", StringComparison.Ordinal)).Take(ImageSamples).ToList();
        return new UiData
        {
            Source = source,
            Name = name,
            Path = path,
            Rows = set.Rows.Count,
            Preview = new UiPreview
            {
                Columns = new List<string> { "image", "label" },
                Rows = set.Rows.Take(PreviewRows).Select(r => new List<string> { Path.GetRelativePath(root, r.ImagePath).Replace('\\', '/'), r.Label }).ToList(),
            },
            Detected = new UiColumns { ValidationFraction = 0.2 },
            Classes = classes,
            Images = sample,
        };
    }

    /// <summary>Checks that an uploaded image can be decoded; the message names the file.</summary>
    public static void CheckImage(string path, string name)
    {
        try
        {
            if (Image.Identify(path) is null) throw new InvalidDataException($"'{name}' is not an image this app can read.");
        }
        catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or NotSupportedException)
        {
            throw new InvalidDataException($"'{name}' is not an image this app can read (JPEG, PNG, BMP, GIF, WebP or TIFF): {e.Message}");
        }
    }
}
