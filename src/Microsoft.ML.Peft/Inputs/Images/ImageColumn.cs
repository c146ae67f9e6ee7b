using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>The three forms an image column may take.</summary>
internal enum ImageColumnKind
{
    /// <summary>An encoded image file's bytes: a vector of <see cref="byte"/>, of known or variable size (<c>LoadRawImageBytes</c>, or <c>byte[]</c> rows).</summary>
    Bytes,

    /// <summary>An ML.NET image, <see cref="MLImage"/> (<c>LoadImages</c>).</summary>
    Image,

    /// <summary>Text: the path of an image file, relative ones resolved against the image folder or the current directory.</summary>
    Path,
}

/// <summary>
/// The image column of an ML.NET data view, bound once: finds it, checks its type, and decodes the image of each row
/// into a <see cref="DecodedImage"/>, with errors that name the row and the column.
/// </summary>
internal sealed class ImageColumn
{
    /// <summary>Said in errors about a column of the wrong type.</summary>
    internal const string AcceptedTypes =
        "image bytes (a vector of Byte, as mlContext.Transforms.LoadRawImageBytes or byte[] rows give), " +
        "an image (as mlContext.Transforms.LoadImages gives) or a file path (text)";

    private ImageColumn(DataViewSchema.Column column, ImageColumnKind kind, string optionName, string? imageFolder)
    {
        Column = column;
        Kind = kind;
        OptionName = optionName;
        ImageFolder = imageFolder;
    }

    /// <summary>The column in the schema it was bound to.</summary>
    public DataViewSchema.Column Column { get; }

    /// <summary>What the column holds.</summary>
    public ImageColumnKind Kind { get; }

    /// <summary>The option that named the column, for messages.</summary>
    public string OptionName { get; }

    /// <summary>The folder relative paths are resolved against; null for the current directory. Only used for <see cref="ImageColumnKind.Path"/>.</summary>
    public string? ImageFolder { get; }

    /// <summary>Finds the image column in a schema and checks its type.</summary>
    /// <param name="schema">The data's schema.</param>
    /// <param name="columnName">The column's name.</param>
    /// <param name="optionName">The option that named it, for messages (<c>ImageColumnName</c>, <c>--image-col</c>).</param>
    /// <param name="imageFolder">The folder relative paths in a text column are resolved against; null for the current directory.</param>
    /// <exception cref="ArgumentOutOfRangeException">There is no such column.</exception>
    /// <exception cref="ArgumentException">The column is of another type than <see cref="AcceptedTypes"/>.</exception>
    public static ImageColumn Bind(DataViewSchema schema, string columnName, string optionName, string? imageFolder)
    {
        ArgumentNullException.ThrowIfNull(schema);
        ArgumentNullException.ThrowIfNull(optionName);
        if (string.IsNullOrEmpty(columnName)) throw new ArgumentException($"No image column was given ({optionName}).", optionName);
        var column = schema.GetColumnOrNull(columnName) ?? throw new ArgumentOutOfRangeException(optionName,
            $"The input has no image column '{columnName}' ({optionName}). Its columns are: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"))}.");
        var kind = KindOf(column.Type) ?? throw new ArgumentException(
            $"The image column '{columnName}' ({optionName}) is of type {column.Type}; it must hold {AcceptedTypes}.", optionName);
        return new ImageColumn(column, kind, optionName, imageFolder);
    }

    /// <summary>Checks the image column in a schema shape, for an estimator's <c>GetOutputSchema</c>.</summary>
    /// <param name="inputSchema">The input's shape.</param>
    /// <param name="columnName">The column's name.</param>
    /// <param name="optionName">The option that named it, for messages.</param>
    /// <exception cref="ArgumentOutOfRangeException">There is no such column.</exception>
    /// <exception cref="ArgumentException">The column is of another type than <see cref="AcceptedTypes"/>.</exception>
    public static void CheckShape(SchemaShape inputSchema, string columnName, string optionName)
    {
        ArgumentNullException.ThrowIfNull(optionName);
        if (string.IsNullOrEmpty(columnName)) throw new ArgumentException($"No image column was given ({optionName}).", optionName);
        if (!inputSchema.TryFindColumn(columnName, out var column))
            throw new ArgumentOutOfRangeException(optionName, $"The input has no image column '{columnName}' ({optionName}).");
        bool ok = column.Kind switch
        {
            SchemaShape.Column.VectorKind.Scalar => column.ItemType is TextDataViewType or ImageDataViewType,
            _ => column.ItemType == NumberDataViewType.Byte,
        };
        if (!ok)
        {
            string found = column.Kind == SchemaShape.Column.VectorKind.Scalar ? $"{column.ItemType}" : $"a vector of {column.ItemType}";
            throw new ArgumentException($"The image column '{columnName}' ({optionName}) is of type {found}; it must hold {AcceptedTypes}.", optionName);
        }
    }

    /// <summary>
    /// Makes a function that decodes the image of <paramref name="row"/>'s current row. Errors name the row as
    /// <c>row N</c>, N counting from 1 (<see cref="DataViewRow.Position"/> + 1), and the column.
    /// </summary>
    /// <param name="row">A row or cursor over data with this column (the column must be active).</param>
    /// <param name="maxShorterSide">The longest the decoded image's shorter side may be (see <see cref="ImageDecoder.Decode"/>).</param>
    /// <returns>A function to call once per row; each call decodes anew.</returns>
    /// <exception cref="InvalidDataException">From the function: the row holds no image, or one that cannot be decoded.</exception>
    /// <exception cref="FileNotFoundException">From the function: the path in the row names no file.</exception>
    public Func<DecodedImage> Getter(DataViewRow row, int maxShorterSide)
    {
        ArgumentNullException.ThrowIfNull(row);
        if (maxShorterSide <= 0) throw new ArgumentOutOfRangeException(nameof(maxShorterSide), maxShorterSide, "The largest shorter side kept for decoded images must be positive.");
        // The row's schema may be another object than the bound one (a transformed view): find the column by name there.
        var column = row.Schema.GetColumnOrNull(Column.Name) ?? throw new ArgumentOutOfRangeException(OptionName, $"The data has no image column '{Column.Name}' ({OptionName}).");
        if (KindOf(column.Type) != Kind)
            throw new ArgumentException($"The image column '{Column.Name}' ({OptionName}) is of type {column.Type} here, but {Column.Type} when it was bound.", OptionName);
        switch (Kind)
        {
            case ImageColumnKind.Bytes:
            {
                var getter = Upstream<VBuffer<byte>>(row, column);
                VBuffer<byte> buffer = default;
                return () =>
                {
                    Read(getter, ref buffer, row);
                    var source = $"in row {RowNumber(row)} of column '{Column.Name}'";
                    if (buffer.Length == 0) throw new InvalidDataException($"The image {source} is empty (0 bytes): the row holds no image.");
                    if (buffer.IsDense) return ImageDecoder.Decode(buffer.GetValues(), source, maxShorterSide);
                    return ImageDecoder.Decode(buffer.DenseValues().ToArray(), source, maxShorterSide);
                };
            }
            case ImageColumnKind.Image:
            {
                var getter = Upstream<MLImage>(row, column);
                // The same variable is handed back to the loader, which disposes the previous row's image.
                MLImage image = null!;
                return () =>
                {
                    Read(getter, ref image, row);
                    var source = $"in row {RowNumber(row)} of column '{Column.Name}'";
                    if (image is null) throw new InvalidDataException($"The image {source} is missing (the row holds no image; was its path empty?).");
                    return ImageDecoder.FromMLImage(image, source, maxShorterSide);
                };
            }
            default:
            {
                var getter = Upstream<ReadOnlyMemory<char>>(row, column);
                ReadOnlyMemory<char> text = default;
                return () =>
                {
                    Read(getter, ref text, row);
                    var path = text.Span.Trim().ToString();
                    if (path.Length == 0) throw new InvalidDataException($"The image path in row {RowNumber(row)} of column '{Column.Name}' is empty.");
                    string full;
                    try
                    {
                        full = System.IO.Path.GetFullPath(ImageFolder is null ? path : System.IO.Path.Combine(ImageFolder, path));
                    }
                    catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
                    {
                        throw new InvalidDataException($"The image path '{path}' in row {RowNumber(row)} of column '{Column.Name}' is not a valid path: {e.Message}", e);
                    }
                    var where = full == path ? $"'{path}'" : $"'{path}' ({full})";
                    var source = $"{where} (row {RowNumber(row)} of column '{Column.Name}'{(ImageFolder is null || System.IO.Path.IsPathRooted(path) ? "" : $", image folder '{ImageFolder}'")})";
                    return ImageDecoder.FromFile(full, maxShorterSide, source);
                };
            }
        }
    }

    private static ImageColumnKind? KindOf(DataViewType type) => type switch
    {
        VectorDataViewType vector when vector.ItemType == NumberDataViewType.Byte => ImageColumnKind.Bytes,
        ImageDataViewType => ImageColumnKind.Image,
        TextDataViewType => ImageColumnKind.Path,
        _ => null,
    };

    private static long RowNumber(DataViewRow row) => row.Position + 1;

    private ValueGetter<T> Upstream<T>(DataViewRow row, DataViewSchema.Column column)
    {
        if (!row.IsColumnActive(column))
            throw new InvalidOperationException($"The image column '{column.Name}' ({OptionName}) is not active in the cursor it is read from.");
        return row.GetGetter<T>(column);
    }

    private void Read<T>(ValueGetter<T> getter, ref T value, DataViewRow row)
    {
        try
        {
            getter(ref value);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not OperationCanceledException)
        {
            // Loaders upstream (LoadImages, LoadRawImageBytes) fail on missing or unreadable files without saying which row.
            throw new InvalidDataException($"Reading the image in row {RowNumber(row)} of column '{Column.Name}' ({OptionName}) failed: {e.Message}", e);
        }
    }
}
