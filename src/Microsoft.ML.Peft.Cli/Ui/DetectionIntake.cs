using System.Globalization;
using Microsoft.ML.Peft.Tasks.ObjectDetection;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>
/// Reads an object-detection data set as <c>mlnet-peft object-detection</c> will (<see cref="ObjectDetectionDataset.Load"/>):
/// a folder holding the images and either a labels CSV (<c>filename,width,height,class,xmin,ymin,xmax,ymax</c>) or Pascal
/// VOC XML files, or the labels CSV itself with the images beside it. The labels' file names are relative to the images
/// folder, which is found as the folder that holds the files the labels name. Describes it for the page: images, boxes,
/// classes with their box counts, a table of boxes, thumbnails with the boxes drawn.
/// </summary>
internal static class DetectionIntake
{
    private const int PreviewRows = 20;
    private const int ImageSamples = 12;
    private const int MaxFolders = 2000;

    /// <summary>A data set found and read: its labels (CSV file or VOC folder), its images folder, and what the loader gave.</summary>
    private sealed record Found(string Labels, string Images, ObjectDetectionDataset Dataset, List<Row> Rows);

    private sealed class Row
    {
        public string ImagePath { get; set; } = "";
        public string[] Label { get; set; } = Array.Empty<string>();
        public float[] BoundingBoxes { get; set; } = Array.Empty<float>();
    }

    private static readonly object CacheGate = new();
    private static (string Key, Found Found)? cache;

    /// <summary>Describes the detection data at <paramref name="path"/> (a folder, or a labels CSV file); errors are <see cref="InvalidDataException"/> naming the file and row.</summary>
    /// <param name="path">Full path on the server.</param>
    /// <param name="name">The name to show and to put in messages instead of the folder's full path.</param>
    /// <param name="source"><c>upload</c> or <c>path</c>.</param>
    public static UiData Describe(string path, string name, string source)
    {
        // Messages and notes name an upload's files from its folder's name, never by their place on the server.
        string? shownRoot = source == "upload" ? (File.Exists(path) ? Path.GetDirectoryName(name) ?? "" : name) : null;
        var found = Read(path, name, shownRoot);
        var root = Root(path);
        var dataset = found.Dataset;
        var classes = dataset.Classes.Select(c => new UiClassCount(c, found.Rows.Sum(r => (long)r.Label.Count(l => l == c))))
            .OrderByDescending(c => c.Count).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
        var preview = new List<List<string>>();
        foreach (var row in found.Rows)
        {
            var file = Relative(found.Images, row.ImagePath);
            if (row.Label.Length == 0) preview.Add(new List<string> { file, "(no object)", "" });
            for (int i = 0; i < row.Label.Length; i++)
                preview.Add(new List<string> { file, row.Label[i], string.Join(", ", row.BoundingBoxes.Skip(4 * i).Take(4).Select(v => v.ToString("0.#", CultureInfo.InvariantCulture))) });
            if (preview.Count >= PreviewRows) break;
        }
        var samples = found.Rows.Take(ImageSamples).Select(r => new UiImage(Relative(found.Images, r.ImagePath),
            r.Label.Length == 0 ? "no object" : string.Join(", ", r.Label.GroupBy(l => l).Select(g => g.Count() > 1 ? $"{g.Key} x{g.Count()}" : g.Key)))).ToList();
        return new UiData
        {
            Source = source,
            Name = name,
            Path = found.Labels,
            ImagesFolder = found.Images,
            Rows = dataset.ImageCount,
            Boxes = dataset.BoxCount,
            Preview = new UiPreview { Columns = new List<string> { "image", "class", "box (xmin, ymin, xmax, ymax)" }, Rows = preview.Take(PreviewRows).ToList() },
            Detected = new UiColumns(),
            Classes = classes,
            Images = samples,
            Note = $"Labels: {Shown(root, shownRoot, found.Labels)}; images folder: {Shown(root, shownRoot, found.Images)}.",
        };
    }

    /// <summary>The image <paramref name="file"/> (relative to the images folder of <paramref name="data"/>) as a PNG at most <paramref name="side"/> pixels, its labelled boxes drawn.</summary>
    public static byte[] Thumbnail(UiData data, string file, int side)
    {
        if (data.ImagesFolder is null) throw new FileNotFoundException("This run's data has no images folder.");
        var images = Path.GetFullPath(data.ImagesFolder);
        var full = Path.GetFullPath(Path.Combine(images, file));
        if (!full.StartsWith(images + Path.DirectorySeparatorChar, StringComparison.Ordinal) || !ImageDataset.IsImageFile(full) || !File.Exists(full))
            throw new FileNotFoundException($"'{file}' is not an image of this run's data.");
        var found = Load(data.Path, images, Root(data.Path), null);
        var row = found.Rows.FirstOrDefault(r => string.Equals(Path.GetFullPath(r.ImagePath), full, StringComparison.Ordinal));
        var boxes = row is null ? new List<(string, float, float[])>()
            : row.Label.Select((l, i) => (l, float.NaN, row.BoundingBoxes.Skip(4 * i).Take(4).ToArray())).ToList();
        return DetectionPredictions.Render(full, boxes, found.Dataset.Classes, side);
    }

    private static string Root(string path) => Directory.Exists(path) ? Path.GetFullPath(path) : Path.GetDirectoryName(Path.GetFullPath(path))!;

    private static string Relative(string folder, string path) => Path.GetRelativePath(folder, path).Replace('\\', '/');

    /// <summary>A path as the page shows it: for an upload, relative to the data's root under <paramref name="shownRoot"/>; else the server path.</summary>
    private static string Shown(string root, string? shownRoot, string path)
    {
        if (shownRoot is null) return path;
        var relative = Relative(root, path);
        return relative == "." ? shownRoot : shownRoot.Length == 0 ? relative : shownRoot.TrimEnd('/') + "/" + relative;
    }

    /// <summary>Finds the labels and the images folder under <paramref name="path"/> and reads them with the CLI's loader.</summary>
    private static Found Read(string path, string name, string? shownRoot)
    {
        var full = Path.GetFullPath(path);
        var root = Root(full);
        string labels;
        if (File.Exists(full))
        {
            if (!full.EndsWith(".csv", StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"'{name}' is not a labels CSV file: give the CSV (filename,width,height,class,xmin,ymin,xmax,ymax) or the folder that holds the images and their labels.");
            labels = full;
        }
        else if (Directory.Exists(full)) labels = FindLabels(full, name);
        else throw new InvalidDataException($"'{name}' does not exist.");
        // The images folder: the folder holding the files the labels name; the folders with the most images are tried first.
        var folders = Folders(root).Select(f => (Folder: f, Count: Directory.EnumerateFiles(f).Count(ImageDataset.IsImageFile)))
            .Where(f => f.Count > 0).OrderByDescending(f => f.Count).ThenBy(f => f.Folder.Length).ThenBy(f => f.Folder, StringComparer.Ordinal).Select(f => f.Folder).ToList();
        if (folders.Count == 0) throw new InvalidDataException($"'{name}' has no image files (JPEG, PNG, BMP, GIF, WebP, TIFF) beside its labels.");
        Exception? first = null;
        foreach (var folder in folders)
        {
            try
            {
                return Load(labels, folder, root, shownRoot);
            }
            catch (InvalidDataException e) when (e.InnerException is FileNotFoundException missing && missing.FileName != labels)
            {
                first ??= e;
            }
        }
        throw first!;
    }

    /// <summary>
    /// Reads <paramref name="labels"/> against <paramref name="images"/> (cached for the thumbnails); errors become
    /// <see cref="InvalidDataException"/> naming the file and row (under <paramref name="shownRoot"/> for an upload).
    /// </summary>
    private static Found Load(string labels, string images, string root, string? shownRoot)
    {
        var stamp = File.Exists(labels) ? File.GetLastWriteTimeUtc(labels) : Directory.GetLastWriteTimeUtc(labels);
        var key = labels + "\n" + images + "\n" + stamp.Ticks.ToString(CultureInfo.InvariantCulture);
        lock (CacheGate)
            if (cache is { } c && c.Key == key) return c.Found;
        ObjectDetectionDataset dataset;
        try
        {
            dataset = ObjectDetectionDataset.Load(new MLContext(1), labels, images);
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException or ArgumentException or FormatException or System.Xml.XmlException)
        {
            var message = shownRoot is null ? e.Message
                : e.Message.Replace(root + Path.DirectorySeparatorChar, shownRoot.Length == 0 ? "" : shownRoot + "/", StringComparison.Ordinal).Replace(root, shownRoot, StringComparison.Ordinal);
            throw new InvalidDataException($"'{(string.IsNullOrEmpty(shownRoot) ? root : shownRoot)}' is not an object-detection data set this app can read: {message}", e);
        }
        var rows = new MLContext(1).Data.CreateEnumerable<Row>(dataset.Data, reuseRowObject: false).ToList();
        var found = new Found(labels, images, dataset, rows);
        lock (CacheGate) cache = (key, found);
        return found;
    }

    /// <summary><paramref name="root"/> and its folders (not hidden), breadth first, at most <see cref="MaxFolders"/>.</summary>
    private static List<string> Folders(string root)
    {
        var result = new List<string>();
        var queue = new Queue<string>();
        queue.Enqueue(root);
        while (queue.Count > 0 && result.Count < MaxFolders)
        {
            var folder = queue.Dequeue();
            result.Add(folder);
            foreach (var sub in Directory.EnumerateDirectories(folder).Where(d => !Path.GetFileName(d).StartsWith('.')).Order(StringComparer.Ordinal))
                queue.Enqueue(sub);
        }
        return result;
    }

    /// <summary>The labels in <paramref name="root"/>: a CSV (the shallowest; <c>labels</c> or <c>annotations</c> in its name first), else the folder with the most Pascal VOC XML files.</summary>
    private static string FindLabels(string root, string name)
    {
        var folders = Folders(root);
        var csv = folders.SelectMany(f => Directory.EnumerateFiles(f, "*.csv").Where(p => !Path.GetFileName(p).StartsWith('.')))
            .OrderBy(p => Path.GetRelativePath(root, p).Count(c => c == Path.DirectorySeparatorChar))
            .ThenByDescending(p => Path.GetFileName(p).Contains("label", StringComparison.OrdinalIgnoreCase) || Path.GetFileName(p).Contains("annotation", StringComparison.OrdinalIgnoreCase))
            .ThenBy(p => p, StringComparer.Ordinal).FirstOrDefault();
        if (csv is not null) return csv;
        var voc = folders.Select(f => (Folder: f, Count: Directory.EnumerateFiles(f, "*.xml").Count())).Where(f => f.Count > 0)
            .OrderByDescending(f => f.Count).ThenBy(f => f.Folder, StringComparer.Ordinal).Select(f => f.Folder).FirstOrDefault();
        return voc ?? throw new InvalidDataException(
            $"'{name}' has no labels: put a CSV file (filename,width,height,class,xmin,ymin,xmax,ymax, one row per box) or Pascal VOC XML files (one per image) beside the images.");
    }
}
