using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Models;
using Microsoft.ML.Peft.TextClassification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftTextClassificationTransformer), null, typeof(SignatureLoadModel),
    "PEFT text classification", PeftTextClassificationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.TextClassification;

/// <summary>
/// A fitted LoRA text classifier. <see cref="Transform"/> adds <c>Score</c> (class probabilities) and
/// <c>PredictedLabel</c> (a key of the training label's type) lazily, one forward pass per batch of rows; it works with
/// <c>PredictionEngine</c> and saves with <c>mlContext.Model.Save</c> (adapter, head, configuration and a reference to the
/// base model, or the base model itself with <see cref="PeftTextClassificationTrainer.Options.EmbedBaseModel"/>).
/// </summary>
public sealed class PeftTextClassificationTransformer : ITransformer, IDisposable
{
    internal const string LoaderSignature = "PeftTextClassifier";
    private const string MetadataStream = "Metadata.json";
    private const string VocabStream = "Vocab";
    private const string AdapterStream = "Adapter.safetensors";
    private const string BaseModelStream = "BaseModel";

    private readonly IHost host;
    private readonly TextClassificationModel model;
    private long truncatedRows;

    internal PeftTextClassificationTransformer(IHostEnvironment env, TextClassificationModel model)
    {
        host = env.Register(nameof(PeftTextClassificationTransformer));
        this.model = model;
        model.Module.eval();
        // The adapter is fixed from now on: fold it into the base weights so scoring costs no extra matmuls.
        model.Module.MergeAdapters();
    }

    /// <summary>Parameters that training updated (LoRA matrices and the head).</summary>
    public long TrainableParameterCount => model.TrainableParameterCount;

    /// <summary>All parameters of the model, base encoder included.</summary>
    public long TotalParameterCount => model.TotalParameterCount;

    /// <summary>Number of classes.</summary>
    public int ClassCount => model.Metadata.ClassCount;

    /// <summary>The full names of the Linear layers that carry a LoRA adapter.</summary>
    public IReadOnlyList<string> AdaptedModules => model.Metadata.AdaptedModules;

    /// <summary>The base model this classifier was trained on.</summary>
    public string BaseModelDescription => model.Metadata.BaseModel.ToString();

    /// <summary>The text column read when scoring.</summary>
    public string Sentence1ColumnName => model.Metadata.Sentence1ColumnName;

    /// <summary>The second text column of sentence-pair models, or null.</summary>
    public string? Sentence2ColumnName => model.Metadata.Sentence2ColumnName;

    /// <summary>The output column of class probabilities.</summary>
    public string ScoreColumnName => model.Metadata.ScoreColumnName;

    /// <summary>The output column of the predicted key.</summary>
    public string PredictedLabelColumnName => model.Metadata.PredictedLabelColumnName;

    /// <summary>The class names in score order: the label's key values, or the key numbers 1..N without them.</summary>
    public IReadOnlyList<string> ClassNames => model.Metadata.Label.ClassNames;

    /// <summary>Rows scored so far whose text was longer than the maximum sequence length and was truncated.</summary>
    public long TruncatedRowCount => Interlocked.Read(ref truncatedRows);

    internal int BatchSize => model.Metadata.BatchSize;

    internal TextClassificationModel Model => model;

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Bind(inputSchema).Schema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(this, input ?? throw new ArgumentNullException(nameof(input)));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(this, inputSchema);

    internal float[][] Score(IReadOnlyList<string> first, IReadOnlyList<string>? second)
    {
        var result = model.Predict(first, second, out var truncated);
        if (truncated > 0 && Interlocked.Add(ref truncatedRows, truncated) == truncated)
        {
            using var ch = host.Start("Scoring");
            ch.Warning($"Some rows are longer than MaxSequenceLength={model.Metadata.MaxSequenceLength} tokens and are truncated; TruncatedRowCount counts them.");
        }
        return result;
    }

    /// <summary>Checks the input's text columns and builds the output schema.</summary>
    internal OutputColumns Bind(DataViewSchema input)
    {
        var meta = model.Metadata;
        var text = new List<DataViewSchema.Column> { ColumnChecks.FindText(input, meta.Sentence1ColumnName, "Sentence1ColumnName", "input") };
        if (meta.Sentence2ColumnName is not null) text.Add(ColumnChecks.FindText(input, meta.Sentence2ColumnName, "Sentence2ColumnName", "input"));
        var label = meta.Label;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        var score = new DataViewSchema.Annotations.Builder();
        label.AddSlotNames(score);
        score.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreColumnKind.MulticlassClassification.AsMemory());
        score.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreValueKind.Score.AsMemory());
        builder.AddColumn(meta.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, label.ClassCount), score.ToAnnotations());
        var predicted = new DataViewSchema.Annotations.Builder();
        label.AddKeyValues(predicted);
        builder.AddColumn(meta.PredictedLabelColumnName, label.KeyType, predicted.ToAnnotations());
        return new OutputColumns(builder.ToSchema(), input.Count, text);
    }

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "PEFTTXTC",
        verWrittenCur: 0x00010001,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(PeftTextClassificationTransformer).Assembly.FullName);

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        using var adapter = new MemoryStream();
        model.SaveAdapter(adapter);
        var adapterBytes = adapter.ToArray();
        ctx.Writer.Write(ModelFormat.CurrentVersion);
        // The adapter's hash lets loading detect a damaged entry whose values would otherwise still parse.
        ctx.Writer.Write(Convert.ToHexString(SHA256.HashData(adapterBytes)));
        ctx.SaveBinaryStream(MetadataStream, w => w.Write(JsonSerializer.Serialize(model.Metadata)));
        ctx.SaveBinaryStream(VocabStream, w => ModelFormat.WriteBytes(w, model.Vocab));
        ctx.SaveBinaryStream(AdapterStream, w => ModelFormat.WriteBytes(w, adapterBytes));
        if (model.Metadata.BaseModelEmbedded)
            ctx.SaveBinaryStream(BaseModelStream, w => ModelFormat.WriteBytes(w, model.BaseModelFile!));
    }

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftTextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        const string what = "PEFT text classification model";
        int version = ctx.Reader.ReadInt32();
        if (version < 1 || version > ModelFormat.CurrentVersion)
            throw new InvalidDataException($"The {what} has format version {version}; this library reads versions 1 to {ModelFormat.CurrentVersion}. Upgrade Microsoft.ML.Peft.");
        string adapterHash = ctx.Reader.ReadString();
        TextClassificationMetadata? metadata = null;
        byte[]? vocab = null, embedded = null;
        if (!ctx.TryLoadBinaryStream(MetadataStream, r => metadata = ModelFormat.ReadMetadata(r.ReadString())))
            throw new InvalidDataException($"The {what} has no '{MetadataStream}' entry: the file is incomplete.");
        if (!ctx.TryLoadBinaryStream(VocabStream, r => vocab = ModelFormat.ReadBytes(r, 64 << 20, "vocabulary")))
            throw new InvalidDataException($"The {what} has no '{VocabStream}' entry: the file is incomplete.");
        if (metadata!.BaseModelEmbedded && !ctx.TryLoadBinaryStream(BaseModelStream, r => embedded = ModelFormat.ReadBytes(r, int.MaxValue, "base model")))
            throw new InvalidDataException($"The {what} says it embeds its base model, but has no '{BaseModelStream}' entry.");

        var baseModel = BaseModelLocator.Resolve(metadata, vocab!, embedded);
        var device = TorchBackend.ParseDevice(metadata.Device);
        var model = new TextClassificationModel(metadata, baseModel, device);
        try
        {
            byte[]? adapter = null;
            if (!ctx.TryLoadBinaryStream(AdapterStream, r => adapter = ModelFormat.ReadBytes(r, 1L << 31, "adapter")))
                throw new InvalidDataException($"The {what} has no '{AdapterStream}' entry: the file is incomplete.");
            if (Convert.ToHexString(SHA256.HashData(adapter!)) != adapterHash)
                throw new InvalidDataException($"The {what}'s adapter entry is damaged: its SHA-256 differs from the one saved with it.");
            using (var stream = new MemoryStream(adapter!, writable: false)) model.LoadAdapter(stream, what);
            return new PeftTextClassificationTransformer(env, model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => model.Dispose();
}

/// <summary>Version and validation of the saved format.</summary>
internal static class ModelFormat
{
    /// <summary>Version 1: metadata JSON, vocabulary, adapter safetensors (Hugging Face PEFT names), optional base model.</summary>
    public const int CurrentVersion = 1;

    public static void WriteBytes(BinaryWriter writer, byte[] bytes)
    {
        writer.Write(bytes.LongLength);
        writer.Write(bytes);
    }

    public static byte[] ReadBytes(BinaryReader reader, long limit, string what)
    {
        long length = reader.ReadInt64();
        if (length < 0 || length > limit) throw new InvalidDataException($"The saved {what} claims {length} bytes, which is not valid.");
        var bytes = reader.ReadBytes((int)length);
        if (bytes.Length != length) throw new InvalidDataException($"The saved {what} is truncated: {bytes.Length} of {length} bytes.");
        return bytes;
    }

    public static TextClassificationMetadata ReadMetadata(string json)
    {
        TextClassificationMetadata? metadata;
        try
        {
            metadata = JsonSerializer.Deserialize<TextClassificationMetadata>(json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The model's metadata is not valid JSON: {e.Message}", e);
        }
        if (metadata is null) throw new InvalidDataException("The model's metadata is empty.");
        metadata.Config.Validate("saved model configuration");
        _ = metadata.Label; // validates class count and key values
        metadata.Lora.Validate();
        if (metadata.MaxSequenceLength < 3 || metadata.MaxSequenceLength > metadata.Config.MaxPositionEmbeddings)
            throw new InvalidDataException($"The saved MaxSequenceLength {metadata.MaxSequenceLength} is not valid for this base model.");
        if (metadata.BatchSize <= 0) throw new InvalidDataException($"The saved BatchSize {metadata.BatchSize} is not valid.");
        if (string.IsNullOrEmpty(metadata.Sentence1ColumnName) || string.IsNullOrEmpty(metadata.ScoreColumnName) || string.IsNullOrEmpty(metadata.PredictedLabelColumnName))
            throw new InvalidDataException("The saved column names are incomplete.");
        if (metadata.BaseModel.Sha256.Length != 64) throw new InvalidDataException("The saved base-model hash is not a SHA-256 hex string.");
        return metadata;
    }
}

/// <summary>
/// Finds the base model of a saved classifier: embedded in the file, at a location given to
/// <see cref="PeftModelOperations.LoadWithBaseModel"/>, at the stored path, or the embedded MiniLM package; and checks its SHA-256.
/// </summary>
internal static class BaseModelLocator
{
    internal static readonly AsyncLocal<string?> Override = new();

    public static LoadedBaseModel Resolve(TextClassificationMetadata metadata, byte[] vocab, byte[]? embedded)
    {
        var reference = metadata.BaseModel;
        if (embedded is not null) return Parse(reference, metadata, embedded, vocab, "the model file itself");

        var given = Override.Value;
        if (given is not null) return Parse(reference, metadata, ReadWeights(reference, given), vocab, given);

        if (reference.Path is not null && (File.Exists(reference.Path) || Directory.Exists(reference.Path)))
            return Parse(reference, metadata, ReadWeights(reference, reference.Path), vocab, reference.Path);

        if (reference.Kind == BaseModelKind.EmbeddedMiniLM)
            return Parse(reference, metadata, BaseModelSource.MiniLM().ReadFiles().Weights, vocab, $"package {BaseModelSource.MiniLMPackage}");

        throw new FileNotFoundException(
            $"The base model {reference} is not at its stored location '{reference.Path}'. Pass its location with " +
            "mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out schema), or train with EmbedBaseModel = true for a self-contained file.");
    }

    private static byte[] ReadWeights(BaseModelReference reference, string location)
    {
        if (reference.Kind == BaseModelKind.HuggingFace || Directory.Exists(location))
        {
            var file = Directory.Exists(location) ? Path.Combine(location, "model.safetensors") : location;
            if (!File.Exists(file)) throw new FileNotFoundException($"The base model weights '{file}' do not exist.", file);
            return File.ReadAllBytes(file);
        }
        if (!File.Exists(location)) throw new FileNotFoundException($"The base model file '{location}' does not exist.", location);
        return File.ReadAllBytes(location);
    }

    private static LoadedBaseModel Parse(BaseModelReference reference, TextClassificationMetadata metadata, byte[] weights, byte[] vocab, string where)
    {
        var hash = Convert.ToHexString(SHA256.HashData(weights)).ToLowerInvariant();
        if (hash != reference.Sha256)
            throw new InvalidDataException(
                $"The base model found at {where} ({weights.LongLength:N0} bytes, SHA-256 {hash}) is not the one this model was trained on: " +
                $"{reference}. Supply the original base model file.");
        var source = reference.Kind switch
        {
            BaseModelKind.HuggingFace => BaseModelSource.FromHuggingFace(reference.Path ?? "."),
            BaseModelKind.Onnx => BaseModelSource.FromOnnx(reference.Path ?? "model.onnx", reference.VocabPath, reference.LowerCase),
            _ => BaseModelSource.MiniLM(),
        };
        var loaded = LoadedBaseModel.Parse(source, (weights, vocab, metadata.Config.ToJson()));
        if (loaded.Config.ToJson() != metadata.Config.ToJson())
            throw new InvalidDataException($"The base model at {where} has configuration {loaded.Config.ToJson()}, the saved model expects {metadata.Config.ToJson()}.");
        return loaded;
    }
}
