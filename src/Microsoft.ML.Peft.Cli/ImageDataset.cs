using System.Text;

namespace Microsoft.ML.Peft.Cli;

/// <summary>One image of an <see cref="ImageDataset"/>: its full path and its class (empty when the data set has no labels).</summary>
internal sealed class ImageDatasetRow
{
    /// <summary>The image file's full path.</summary>
    public string ImagePath { get; set; } = "";

    /// <summary>The class name; empty when the data set has no labels.</summary>
    public string Label { get; set; } = "";
}

/// <summary>How an <see cref="ImageDataset"/> was laid out on disk.</summary>
internal enum ImageDatasetLayout
{
    /// <summary>A folder with one sub-folder per class; the class is the sub-folder's name.</summary>
    ClassFolders,

    /// <summary>A folder of images without classes (prediction only).</summary>
    FlatFolder,

    /// <summary>A tab-separated file: image path, then label.</summary>
    Tsv,
}

/// <summary>
/// The CLI's image data: a folder with one sub-folder per class (torchvision's ImageFolder layout), a TSV file of
/// image paths and labels, or, for prediction, a folder of images.
/// </summary>
/// <remarks>
/// <para>Image files are recognised by extension (any case): jpg, jpeg, png, bmp, gif, webp, tif, tiff. Files and
/// folders whose names start with '.' are skipped. A class folder is searched recursively; images are listed in
/// ordinal order of their paths relative to the root, so a data set reads the same everywhere.</para>
/// <para>A TSV file has one image per line: the image path, a tab, the label (for prediction the label may be left
/// out, on every line). Relative paths are resolved against the TSV file's folder. The first line is taken as a
/// header when its first field is neither an existing file nor a name with an image extension. Blank lines are
/// skipped.</para>
/// </remarks>
internal sealed class ImageDataset
{
    /// <summary>The extensions of image files, with the dot, lower case.</summary>
    public static IReadOnlyList<string> ImageExtensions { get; } = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"];

    private const int MissingFilesNamed = 5;

    private ImageDataset(string path, string description, ImageDatasetLayout layout, IReadOnlyList<ImageDatasetRow> rows, bool hasLabels, IReadOnlyList<string> classes)
    {
        Path = path;
        Description = description;
        Layout = layout;
        Rows = rows;
        HasLabels = hasLabels;
        Classes = classes;
    }

    /// <summary>The full path of the folder or TSV file.</summary>
    public string Path { get; }

    /// <summary>What the data set is, for messages: <c>'data/train' (--dataset)</c>.</summary>
    public string Description { get; }

    /// <summary>How it was laid out.</summary>
    public ImageDatasetLayout Layout { get; }

    /// <summary>The images, in a deterministic order.</summary>
    public IReadOnlyList<ImageDatasetRow> Rows { get; }

    /// <summary>Whether every row has a label.</summary>
    public bool HasLabels { get; }

    /// <summary>The distinct labels in ordinal order (the class folders' names); empty without labels.</summary>
    public IReadOnlyList<string> Classes { get; }

    /// <summary>Reads a training or evaluation data set: a class-folder tree or a TSV of path and label, with at least two classes.</summary>
    /// <param name="dirOrTsv">The folder or TSV file, as given on the command line.</param>
    /// <param name="option">The option that named it, for messages.</param>
    /// <exception cref="FileNotFoundException">The path does not exist, or images listed in the TSV do not.</exception>
    /// <exception cref="InvalidDataException">The layout is wrong: no class folders, one class, an empty class folder, a bad TSV line.</exception>
    public static ImageDataset Read(string dirOrTsv, string option)
    {
        var (full, description) = Locate(dirOrTsv, option);
        var dataset = Directory.Exists(full)
            ? ReadFolder(full, description, forPrediction: false)
            : ReadTsv(full, description, labelRequired: true);
        if (dataset.Classes.Count < 2)
        {
            throw new InvalidDataException(dataset.Layout == ImageDatasetLayout.Tsv
                ? $"The dataset {description} has a single label ('{dataset.Classes[0]}'): a classifier needs at least two."
                : $"The dataset {description} has a single class folder ('{dataset.Classes[0]}'): a classifier needs at least two, one sub-folder per class.");
        }
        return dataset;
    }

    /// <summary>
    /// Reads images to predict: a folder of images (no labels), a class-folder tree (labels kept, one class is
    /// enough, empty class folders are skipped) or a TSV whose label column is optional.
    /// </summary>
    /// <param name="path">The folder or TSV file, as given on the command line.</param>
    /// <param name="option">The option that named it, for messages.</param>
    /// <exception cref="FileNotFoundException">The path does not exist, or images listed in the TSV do not.</exception>
    /// <exception cref="InvalidDataException">There are no images, or a TSV line is bad.</exception>
    public static ImageDataset ReadForPrediction(string path, string option)
    {
        var (full, description) = Locate(path, option);
        return Directory.Exists(full)
            ? ReadFolder(full, description, forPrediction: true)
            : ReadTsv(full, description, labelRequired: false);
    }

    /// <summary>Whether a file name has one of the <see cref="ImageExtensions"/>.</summary>
    public static bool IsImageFile(string path) =>
        ImageExtensions.Contains(System.IO.Path.GetExtension(path).ToLowerInvariant());

    private static (string Full, string Description) Locate(string path, string option)
    {
        ArgumentNullException.ThrowIfNull(option);
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"The dataset path given to {option} is empty.");
        var full = System.IO.Path.GetFullPath(path);
        var description = $"'{path}' ({option})";
        if (!Directory.Exists(full) && !File.Exists(full))
            throw new FileNotFoundException($"The dataset {description} does not exist: give a folder with one sub-folder of images per class, or a TSV file of image paths and labels.", full);
        return (full, description);
    }

    private static ImageDataset ReadFolder(string root, string description, bool forPrediction)
    {
        var classFolders = Directory.EnumerateDirectories(root)
            .Where(d => !IsHidden(d))
            .OrderBy(d => System.IO.Path.GetFileName(d), StringComparer.Ordinal)
            .ToList();
        var looseImages = Directory.EnumerateFiles(root)
            .Where(f => !IsHidden(f) && IsImageFile(f))
            .OrderBy(f => System.IO.Path.GetFileName(f), StringComparer.Ordinal)
            .ToList();
        var extensions = string.Join(", ", ImageExtensions.Select(e => e[1..]));

        if (classFolders.Count == 0)
        {
            if (forPrediction)
            {
                if (looseImages.Count == 0)
                    throw new InvalidDataException($"The folder {description} holds no image files ({extensions}) and no class sub-folders.");
                var flat = looseImages.Select(f => new ImageDatasetRow { ImagePath = f }).ToList();
                return new ImageDataset(root, description, ImageDatasetLayout.FlatFolder, flat, hasLabels: false, []);
            }
            throw new InvalidDataException(looseImages.Count > 0
                ? $"The folder {description} holds {looseImages.Count} images but no class sub-folders: put each class's images in a sub-folder named after the class."
                : $"The folder {description} has no class sub-folders: give a folder with one sub-folder of images ({extensions}) per class.");
        }
        if (looseImages.Count > 0)
        {
            throw new InvalidDataException(
                $"The folder {description} holds {looseImages.Count} images (such as '{System.IO.Path.GetFileName(looseImages[0])}') beside its class sub-folders " +
                $"({string.Join(", ", classFolders.Take(5).Select(d => $"'{System.IO.Path.GetFileName(d)}'"))}{(classFolders.Count > 5 ? ", ..." : "")}): " +
                "each image must be in the sub-folder of its class.");
        }

        var rows = new List<ImageDatasetRow>();
        var classes = new List<string>();
        foreach (var folder in classFolders)
        {
            var name = System.IO.Path.GetFileName(folder);
            var images = ListImages(folder);
            if (images.Count == 0)
            {
                if (forPrediction) continue;
                throw new InvalidDataException($"The class folder '{name}' of the dataset {description} holds no image files ({extensions}).");
            }
            classes.Add(name);
            rows.AddRange(images.Select(f => new ImageDatasetRow { ImagePath = f, Label = name }));
        }
        if (rows.Count == 0)
            throw new InvalidDataException($"The class folders of the dataset {description} hold no image files ({extensions}).");
        return new ImageDataset(root, description, ImageDatasetLayout.ClassFolders, rows, hasLabels: true, classes);
    }

    private static List<string> ListImages(string folder)
    {
        var found = new List<string>();
        var pending = new Stack<string>();
        pending.Push(folder);
        while (pending.Count > 0)
        {
            var dir = pending.Pop();
            found.AddRange(Directory.EnumerateFiles(dir).Where(f => !IsHidden(f) && IsImageFile(f)));
            foreach (var sub in Directory.EnumerateDirectories(dir))
                if (!IsHidden(sub)) pending.Push(sub);
        }
        found.Sort(StringComparer.Ordinal);
        return found;
    }

    private static bool IsHidden(string path) => System.IO.Path.GetFileName(path).StartsWith('.');

    private static ImageDataset ReadTsv(string file, string description, bool labelRequired)
    {
        var folder = System.IO.Path.GetDirectoryName(file)!;
        var lines = File.ReadAllLines(file, Encoding.UTF8);
        var rows = new List<ImageDatasetRow>();
        var missing = new List<string>();
        int missingCount = 0;
        int? fieldCount = null;
        for (int i = 0; i < lines.Length; i++)
        {
            var line = i == 0 ? lines[i].TrimStart('\uFEFF') : lines[i];
            if (string.IsNullOrWhiteSpace(line)) continue;
            var fields = line.Split('\t');
            int lineNumber = i + 1;
            if (fields.Length != 2 && (labelRequired || fields.Length != 1))
            {
                throw new InvalidDataException(
                    $"Line {lineNumber} of the dataset {description} has {fields.Length} tab-separated fields; expected {(labelRequired ? "2: the image path and the label" : "the image path, then optionally the label")}.");
            }
            if (fieldCount is { } count && count != fields.Length)
                throw new InvalidDataException($"Line {lineNumber} of the dataset {description} has {fields.Length} tab-separated fields, but the lines before it have {count}: give a label on every line or on none.");

            var imagePath = fields[0].Trim();
            string resolved = imagePath.Length == 0 ? "" : ResolvePath(folder, imagePath, lineNumber, description);
            if (rows.Count == 0 && fieldCount is null && IsHeader(imagePath, resolved))
            {
                fieldCount = fields.Length;
                continue;
            }
            fieldCount = fields.Length;
            if (imagePath.Length == 0) throw new InvalidDataException($"Line {lineNumber} of the dataset {description} has an empty image path.");
            var label = fields.Length > 1 ? fields[1].Trim() : "";
            if (fields.Length > 1 && label.Length == 0) throw new InvalidDataException($"Line {lineNumber} of the dataset {description} has an empty label.");
            if (!File.Exists(resolved))
            {
                if (missing.Count < MissingFilesNamed) missing.Add($"'{imagePath}' (line {lineNumber})");
                missingCount++;
            }
            rows.Add(new ImageDatasetRow { ImagePath = resolved, Label = label });
        }
        if (missingCount > 0)
        {
            throw new FileNotFoundException(
                $"{missingCount} image file{(missingCount == 1 ? "" : "s")} listed in the dataset {description} do{(missingCount == 1 ? "es" : "")} not exist: {string.Join(", ", missing)}{(missingCount > missing.Count ? ", ..." : "")}. " +
                $"Relative paths are resolved against the TSV file's folder '{folder}'.");
        }
        if (rows.Count == 0) throw new InvalidDataException($"The dataset {description} lists no images.");
        bool hasLabels = fieldCount == 2;
        var classes = hasLabels ? rows.Select(r => r.Label).Distinct().OrderBy(l => l, StringComparer.Ordinal).ToList() : [];
        return new ImageDataset(file, description, ImageDatasetLayout.Tsv, rows, hasLabels, classes);
    }

    private static string ResolvePath(string folder, string imagePath, int lineNumber, string description)
    {
        try
        {
            return System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, imagePath));
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new InvalidDataException($"Line {lineNumber} of the dataset {description} has an image path that is not valid ('{imagePath}'): {e.Message}", e);
        }
    }

    private static bool IsHeader(string firstField, string resolved) =>
        !(resolved.Length > 0 && File.Exists(resolved)) && !IsImageFile(firstField);
}
