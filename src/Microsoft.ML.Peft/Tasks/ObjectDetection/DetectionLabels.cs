using System.Globalization;
using System.Text;
using System.Xml;
using System.Xml.Linq;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>One labelled image of a detection data set: its file name, its size in pixels and its boxes (none for a background image).</summary>
/// <param name="FileName">The image's file name, relative to the images folder.</param>
/// <param name="Width">The image's width in pixels, as the labels give it.</param>
/// <param name="Height">The image's height in pixels, as the labels give it.</param>
/// <param name="Boxes">The boxes, in pixel coordinates of the image; empty for an image without objects.</param>
internal sealed record DetectionImage(string FileName, int Width, int Height, IReadOnlyList<DetectionBox> Boxes)
{
    /// <summary>Where the image's labels came from, for messages: <c>row 3 of 'labels.csv'</c> or <c>'voc/cat.xml'</c>; empty when made in code.</summary>
    public string Origin { get; init; } = "";
}

/// <summary>The labelled images of a detection data set and its classes; a box's <see cref="DetectionBox.Class"/> is its class's position in <see cref="Classes"/>.</summary>
/// <param name="Images">The images, in the order of their first appearance in the labels (CSV) or of their file names (VOC).</param>
/// <param name="Classes">The class names.</param>
internal sealed record DetectionDataset(IReadOnlyList<DetectionImage> Images, IReadOnlyList<string> Classes);

/// <summary>
/// Reads and writes detection labels in two layouts.
/// <list type="bullet">
/// <item>CSV, one row per box, with the header <c>filename,width,height,class,xmin,ymin,xmax,ymax</c> (the columns in any
/// order, names case-insensitive, other columns ignored; an optional <c>score</c> column is read into
/// <see cref="DetectionBox.Score"/>). An image may appear on several rows, with the same width and height on each. A row
/// whose class and four coordinates are all empty (<c>bg.jpg,640,480,,,,,</c>) lists an image without objects: a
/// background image, which trains the detector to find nothing there. Fields may be quoted (<c>"a,b.jpg"</c>).</item>
/// <item>Pascal VOC: a folder of XML files, one per image, each
/// <c>&lt;annotation&gt;&lt;filename/&gt;&lt;size&gt;&lt;width/&gt;&lt;height/&gt;&lt;/size&gt;&lt;object&gt;&lt;name/&gt;&lt;bndbox&gt;&lt;xmin/&gt;&lt;ymin/&gt;&lt;xmax/&gt;&lt;ymax/&gt;&lt;/bndbox&gt;&lt;/object&gt;...&lt;/annotation&gt;</c>;
/// an annotation without objects is a background image. VOC's <c>difficult</c> and <c>truncated</c> flags are ignored
/// (such boxes count like the others), and the coordinates are taken as they are written.</item>
/// </list>
/// Coordinates are pixels from the image's top-left corner, <c>xmin &lt; xmax</c> and <c>ymin &lt; ymax</c>, inside the
/// image. A box may go past the image's edge by up to <see cref="EdgeTolerance"/> pixel (rounding in annotation tools),
/// and is then clamped to the edge; further out, it is an error. Without a given class list, the classes are the names
/// found, sorted (ordinal); with one (a model's classes, for a test or prediction set), a name not in it is an error.
/// </summary>
internal static class DetectionLabels
{
    /// <summary>How far, in pixels, a box may go past the image's edge before it is an error; within it, it is clamped.</summary>
    public const float EdgeTolerance = 1f;

    /// <summary>The CSV columns, in the order <see cref="WriteCsv(string, IReadOnlyList{DetectionImage}, IReadOnlyList{string}, bool)"/> writes them.</summary>
    public static IReadOnlyList<string> CsvColumns { get; } = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"];

    /// <summary>The optional CSV column of prediction scores.</summary>
    public const string ScoreColumn = "score";

    /// <summary>Reads a labels file: a folder is read as Pascal VOC XML files, a file as CSV.</summary>
    /// <param name="path">The CSV file or the folder of VOC XML files.</param>
    /// <param name="classes">The fixed class list (a model's classes), or null to take the sorted names found.</param>
    /// <exception cref="FileNotFoundException">The path does not exist.</exception>
    /// <exception cref="InvalidDataException">The labels are not valid; the message names the file and row or line.</exception>
    public static DetectionDataset Read(string path, IReadOnlyList<string>? classes = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) return ReadVoc(path, classes);
        return ReadCsv(path, classes);
    }

    /// <summary>Reads a CSV labels file (see the class remarks for the layout).</summary>
    /// <param name="path">The CSV file.</param>
    /// <param name="classes">The fixed class list, or null to take the sorted names found.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is empty, has no header or misses a column, or a row is not valid; the message names the file and the row.</exception>
    public static DetectionDataset ReadCsv(string path, IReadOnlyList<string>? classes = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"The labels file '{path}' does not exist.", path);
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return ReadCsv(reader, $"'{path}'", classes);
    }

    /// <summary>Reads CSV labels from a reader.</summary>
    /// <param name="reader">The text.</param>
    /// <param name="source">The file's name for messages, such as <c>'labels.csv'</c>.</param>
    /// <param name="classes">The fixed class list, or null to take the sorted names found.</param>
    /// <exception cref="InvalidDataException">The text is empty, has no header or misses a column, or a row is not valid.</exception>
    public static DetectionDataset ReadCsv(TextReader reader, string source, IReadOnlyList<string>? classes = null)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(source);
        var fixedClasses = CheckClasses(classes);

        string? headerLine = reader.ReadLine();
        int lineNumber = 1;
        while (headerLine is not null && headerLine.Trim().Length == 0)
        {
            headerLine = reader.ReadLine();
            lineNumber++;
        }
        if (headerLine is null)
            throw new InvalidDataException($"The labels file {source} is empty; it needs the header '{string.Join(',', CsvColumns)}' and one row per box.");
        var header = SplitCsv(headerLine.TrimStart('\uFEFF'), source, lineNumber);
        if (!header.Any(h => CsvColumns.Contains(h.Trim(), StringComparer.OrdinalIgnoreCase)))
            throw new InvalidDataException(
                $"The labels file {source} has no header line: its first line is '{Shorten(headerLine)}'; the header '{string.Join(',', CsvColumns)}' was expected.");
        var columnIndex = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < header.Count; i++)
        {
            var name = header[i].Trim();
            if (name.Length > 0 && !columnIndex.TryAdd(name, i))
                throw new InvalidDataException($"The labels file {source} has the column '{name}' twice in its header (line {lineNumber}).");
        }
        var missing = CsvColumns.Where(c => !columnIndex.ContainsKey(c)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException(
                $"The labels file {source} misses the column{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing.Select(m => $"'{m}'"))} in its header (line {lineNumber}); the header '{string.Join(',', CsvColumns)}' was expected.");
        int[] at = CsvColumns.Select(c => columnIndex[c]).ToArray();
        int scoreAt = columnIndex.TryGetValue(ScoreColumn, out var s) ? s : -1;

        var builder = new Builder(source, fixedClasses);
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNumber++;
            if (line.Trim().Length == 0) continue;
            var where = $"row {lineNumber} of {source}";
            var fields = SplitCsv(line, source, lineNumber);
            int needed = Math.Max(at.Max(), scoreAt) + 1;
            if (fields.Count < needed)
                throw new InvalidDataException($"The labels {where} has {fields.Count} fields; the header has {header.Count} columns.");
            var fileName = fields[at[0]].Trim();
            if (fileName.Length == 0) throw new InvalidDataException($"The labels {where} has no file name.");
            int width = ParseSize(fields[at[1]], "width", where);
            int height = ParseSize(fields[at[2]], "height", where);
            var className = fields[at[3]].Trim();
            var coordinates = new[] { fields[at[4]], fields[at[5]], fields[at[6]], fields[at[7]] };
            bool noBox = className.Length == 0 && coordinates.All(c => c.Trim().Length == 0);
            if (noBox)
            {
                builder.Add(fileName, width, height, null, where);
                continue;
            }
            if (className.Length == 0) throw new InvalidDataException($"The labels {where} has a box but no class; leave the class and all four coordinates empty for an image without objects.");
            var emptyCoordinate = Array.FindIndex(coordinates, c => c.Trim().Length == 0);
            if (emptyCoordinate >= 0) throw new InvalidDataException($"The labels {where} has the class '{className}' but no {CsvColumns[4 + emptyCoordinate]}.");
            float xMin = ParseCoordinate(coordinates[0], "xmin", where);
            float yMin = ParseCoordinate(coordinates[1], "ymin", where);
            float xMax = ParseCoordinate(coordinates[2], "xmax", where);
            float yMax = ParseCoordinate(coordinates[3], "ymax", where);
            float score = 1f;
            if (scoreAt >= 0 && fields[scoreAt].Trim().Length > 0)
            {
                score = ParseCoordinate(fields[scoreAt], ScoreColumn, where);
                if (score < 0 || score > 1) throw new InvalidDataException($"The labels {where} has the score {Format(score)}; scores are from 0 to 1.");
            }
            builder.Add(fileName, width, height, (className, xMin, yMin, xMax, yMax, score), where);
        }
        if (builder.IsEmpty)
            throw new InvalidDataException($"The labels file {source} has a header but no rows; it needs one row per box (or per image without objects).");
        return builder.Build();
    }

    /// <summary>Reads a folder of Pascal VOC XML annotation files (every <c>*.xml</c> in it, not in sub-folders), in ordinal order of their names.</summary>
    /// <param name="folder">The folder.</param>
    /// <param name="classes">The fixed class list, or null to take the sorted names found.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">The folder holds no XML file, or a file is not a valid annotation; the message names the file and line.</exception>
    public static DetectionDataset ReadVoc(string folder, IReadOnlyList<string>? classes = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"The Pascal VOC annotation folder '{folder}' does not exist.");
        var files = Directory.GetFiles(folder, "*.xml").OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new InvalidDataException($"The Pascal VOC annotation folder '{folder}' holds no .xml file.");
        var builder = new Builder($"'{folder}'", CheckClasses(classes));
        foreach (var file in files)
        {
            XDocument document;
            try
            {
                document = XDocument.Load(file, LoadOptions.SetLineInfo);
            }
            catch (XmlException e)
            {
                throw new InvalidDataException($"The Pascal VOC annotation '{file}' is not valid XML (line {e.LineNumber}): {e.Message}", e);
            }
            var root = document.Root;
            if (root is null || root.Name.LocalName != "annotation")
                throw new InvalidDataException($"The Pascal VOC annotation '{file}' does not start with <annotation> (line {Line(root)}).");
            var fileName = Text(root, "filename", file).Trim();
            if (fileName.Length == 0) throw new InvalidDataException($"The Pascal VOC annotation '{file}' has an empty <filename> (line {Line(root.Element("filename"))}).");
            var size = Child(root, "size", file);
            var widthElement = Child(size, "width", file);
            var heightElement = Child(size, "height", file);
            int width = ParseSize(widthElement.Value, "width", $"'{file}' (line {Line(widthElement)})");
            int height = ParseSize(heightElement.Value, "height", $"'{file}' (line {Line(heightElement)})");
            var objects = root.Elements("object").ToList();
            if (objects.Count == 0) builder.Add(fileName, width, height, null, $"'{file}'");
            foreach (var item in objects)
            {
                var where = $"'{file}' (object on line {Line(item)})";
                var name = Text(item, "name", file).Trim();
                if (name.Length == 0) throw new InvalidDataException($"The Pascal VOC annotation {where} has an empty <name>.");
                var box = Child(item, "bndbox", file);
                float Coordinate(string n)
                {
                    var e = Child(box, n, file);
                    return ParseCoordinate(e.Value, n, $"'{file}' (line {Line(e)})");
                }
                builder.Add(fileName, width, height, (name, Coordinate("xmin"), Coordinate("ymin"), Coordinate("xmax"), Coordinate("ymax"), 1f), where);
            }
        }
        return builder.Build();
    }

    /// <summary>
    /// Checks that every image file is in the images folder and returns the full paths, in the order of <paramref name="images"/>.
    /// </summary>
    /// <param name="images">The labelled images.</param>
    /// <param name="imagesFolder">The folder the file names are relative to.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">An image file is missing; the message names it and the labels row or file that lists it.</exception>
    public static IReadOnlyList<string> ImagePaths(IReadOnlyList<DetectionImage> images, string imagesFolder)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(imagesFolder);
        if (!Directory.Exists(imagesFolder)) throw new DirectoryNotFoundException($"The images folder '{imagesFolder}' does not exist.");
        var paths = new List<string>(images.Count);
        foreach (var image in images)
        {
            var path = Path.GetFullPath(Path.Combine(imagesFolder, image.FileName));
            if (!File.Exists(path))
            {
                var listedIn = image.Origin.Length > 0 ? $", listed in {image.Origin}," : "";
                throw new FileNotFoundException($"The image file '{image.FileName}'{listedIn} is not in the images folder '{imagesFolder}'.", path);
            }
            paths.Add(path);
        }
        return paths;
    }

    /// <summary>
    /// Writes images and their boxes in the CSV layout, one row per box, and one row with empty class and coordinates
    /// per image without boxes; with <paramref name="withScore"/>, a <c>score</c> column is added (for predictions).
    /// </summary>
    /// <param name="path">The CSV file; its folder is created if needed.</param>
    /// <param name="images">The images and boxes.</param>
    /// <param name="classes">The class names, by class index.</param>
    /// <param name="withScore">Whether to add the score column.</param>
    public static void WriteCsv(string path, IReadOnlyList<DetectionImage> images, IReadOnlyList<string> classes, bool withScore)
    {
        ArgumentNullException.ThrowIfNull(path);
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        using var writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        WriteCsv(writer, images, classes, withScore);
    }

    /// <summary>Writes images and their boxes in the CSV layout to a writer (see <see cref="WriteCsv(string, IReadOnlyList{DetectionImage}, IReadOnlyList{string}, bool)"/>).</summary>
    /// <param name="writer">Where to write.</param>
    /// <param name="images">The images and boxes.</param>
    /// <param name="classes">The class names, by class index.</param>
    /// <param name="withScore">Whether to add the score column.</param>
    /// <exception cref="ArgumentException">A box's class is not an index into <paramref name="classes"/>.</exception>
    public static void WriteCsv(TextWriter writer, IReadOnlyList<DetectionImage> images, IReadOnlyList<string> classes, bool withScore)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(classes);
        writer.NewLine = "\n";
        writer.WriteLine(string.Join(',', CsvColumns) + (withScore ? "," + ScoreColumn : ""));
        foreach (var image in images)
        {
            var prefix = $"{Quote(image.FileName)},{image.Width.ToString(CultureInfo.InvariantCulture)},{image.Height.ToString(CultureInfo.InvariantCulture)}";
            if (image.Boxes.Count == 0)
            {
                writer.WriteLine(prefix + ",,,,," + (withScore ? "," : ""));
                continue;
            }
            foreach (var box in image.Boxes)
            {
                if (box.Class < 0 || box.Class >= classes.Count)
                    throw new ArgumentException($"A box of the image '{image.FileName}' has the class {box.Class}; there are {classes.Count} classes.", nameof(images));
                var row = $"{prefix},{Quote(classes[box.Class])},{Format(box.XMin)},{Format(box.YMin)},{Format(box.XMax)},{Format(box.YMax)}";
                writer.WriteLine(withScore ? row + "," + Format(box.Score) : row);
            }
        }
    }

    /// <summary>A number as the CSV holds it: invariant culture, shortest round-trip form (<c>12</c>, <c>12.5</c>).</summary>
    internal static string Format(float value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Quote(string field) =>
        field.IndexOfAny([',', '"', '\n', '\r']) >= 0 || field != field.Trim() ? "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : field;

    private static IReadOnlyList<string>? CheckClasses(IReadOnlyList<string>? classes)
    {
        if (classes is null) return null;
        if (classes.Count == 0) throw new ArgumentException("The class list is empty; give the model's classes, or null to take them from the labels.", nameof(classes));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in classes)
        {
            if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("The class list holds an empty name.", nameof(classes));
            if (!seen.Add(name)) throw new ArgumentException($"The class list holds '{name}' twice.", nameof(classes));
        }
        return classes;
    }

    private static int ParseSize(string text, string column, string where)
    {
        var t = text.Trim();
        if (!int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
        {
            // Some tools write sizes as "640.0".
            if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue)
                value = (int)d;
            else
                throw new InvalidDataException($"The labels {where} has the {column} '{Shorten(t)}', which is not a whole number of pixels.");
        }
        if (value <= 0) throw new InvalidDataException($"The labels {where} has the {column} {value}; an image's {column} must be positive.");
        return value;
    }

    private static float ParseCoordinate(string text, string column, string where)
    {
        var t = text.Trim();
        if (!float.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out float value) || !float.IsFinite(value))
            throw new InvalidDataException($"The labels {where} has the {column} '{Shorten(t)}', which is not a number.");
        return value;
    }

    private static XElement Child(XElement parent, string name, string file) =>
        parent.Element(name) ?? throw new InvalidDataException($"The Pascal VOC annotation '{file}' has no <{name}> in the <{parent.Name.LocalName}> on line {Line(parent)}.");

    private static string Text(XElement parent, string name, string file) => Child(parent, name, file).Value;

    private static int Line(XObject? node) => node is IXmlLineInfo info && info.HasLineInfo() ? info.LineNumber : 0;

    private static string Shorten(string text) => text.Length <= 60 ? text : text[..60] + "...";

    /// <summary>Splits one CSV line: commas separate fields; a field in double quotes may hold commas, and <c>""</c> inside quotes is a quote.</summary>
    private static List<string> SplitCsv(string line, string source, int lineNumber)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        bool quoted = false, wasQuoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < line.Length && line[i + 1] == '"')
                    {
                        field.Append('"');
                        i++;
                    }
                    else quoted = false;
                }
                else field.Append(c);
            }
            else if (c == '"' && field.ToString().Trim().Length == 0 && !wasQuoted)
            {
                field.Clear();
                quoted = wasQuoted = true;
            }
            else if (c == ',')
            {
                fields.Add(field.ToString());
                field.Clear();
                wasQuoted = false;
            }
            else field.Append(c);
        }
        if (quoted) throw new InvalidDataException($"The labels row {lineNumber} of {source} has a quote that is not closed.");
        fields.Add(field.ToString());
        return fields;
    }

    /// <summary>Collects rows into images, checking sizes, boxes and classes.</summary>
    private sealed class Builder(string source, IReadOnlyList<string>? fixedClasses)
    {
        private readonly List<(string FileName, int Width, int Height, string Origin, List<(string Class, DetectionBox Box)> Boxes)> images = [];
        private readonly Dictionary<string, int> byName = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int>? fixedIndex = fixedClasses?.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);

        public bool IsEmpty => images.Count == 0;

        public void Add(string fileName, int width, int height, (string Class, float XMin, float YMin, float XMax, float YMax, float Score)? box, string where)
        {
            if (byName.TryGetValue(fileName, out int index))
            {
                var first = images[index];
                if (first.Width != width || first.Height != height)
                    throw new InvalidDataException(
                        $"The labels {where} gives the image '{fileName}' the size {width}x{height}, but {first.Origin} gives it {first.Width}x{first.Height}.");
            }
            else
            {
                index = images.Count;
                byName.Add(fileName, index);
                images.Add((fileName, width, height, where, []));
            }
            if (box is not { } b) return;
            if (fixedIndex is not null && !fixedIndex.ContainsKey(b.Class))
                throw new InvalidDataException(
                    $"The labels {where} has the class '{b.Class}', which is not one of the model's classes: {string.Join(", ", fixedClasses!.Select(c => $"'{c}'"))}.");
            var described = $"({Format(b.XMin)}, {Format(b.YMin)}, {Format(b.XMax)}, {Format(b.YMax)})";
            if (b.XMax <= b.XMin) throw new InvalidDataException($"The labels {where} has the box {described} of '{fileName}' with xmax <= xmin; a box needs xmin < xmax.");
            if (b.YMax <= b.YMin) throw new InvalidDataException($"The labels {where} has the box {described} of '{fileName}' with ymax <= ymin; a box needs ymin < ymax.");
            if (b.XMin < -EdgeTolerance || b.YMin < -EdgeTolerance || b.XMax > width + EdgeTolerance || b.YMax > height + EdgeTolerance)
                throw new InvalidDataException(
                    $"The labels {where} has the box {described} outside the {width}x{height} image '{fileName}' (by more than {Format(EdgeTolerance)} pixel).");
            var clamped = new DetectionBox(Math.Max(0, b.XMin), Math.Max(0, b.YMin), Math.Min(width, b.XMax), Math.Min(height, b.YMax), -1, b.Score);
            if (clamped.XMax <= clamped.XMin || clamped.YMax <= clamped.YMin)
                throw new InvalidDataException($"The labels {where} has the box {described}, which is empty once clamped to the {width}x{height} image '{fileName}'.");
            images[index].Boxes.Add((b.Class, clamped));
        }

        public DetectionDataset Build()
        {
            IReadOnlyList<string> classes = fixedClasses
                ?? images.SelectMany(i => i.Boxes).Select(b => b.Class).Distinct(StringComparer.Ordinal).OrderBy(c => c, StringComparer.Ordinal).ToArray();
            if (classes.Count == 0)
                throw new InvalidDataException($"The labels {source} have no box at all, so no class; a detector needs at least one labelled object.");
            var index = fixedIndex ?? classes.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);
            var result = images.Select(i => new DetectionImage(i.FileName, i.Width, i.Height,
                i.Boxes.Select(b => b.Box with { Class = index[b.Class] }).ToArray()) { Origin = i.Origin }).ToArray();
            return new DetectionDataset(result, classes);
        }
    }
}
