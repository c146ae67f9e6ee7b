using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Adapters.Lora;
using Microsoft.ML.Peft.Models;
using Microsoft.ML.Peft.Text;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.TextClassification;

/// <summary>Identity of the base model a fine-tuned model was trained on; saved instead of its weights.</summary>
internal sealed class BaseModelReference
{
    public BaseModelKind Kind { get; set; }
    public string Name { get; set; } = "";
    public string? Path { get; set; }
    public string? VocabPath { get; set; }
    public string Sha256 { get; set; } = "";
    public long Size { get; set; }
    public bool LowerCase { get; set; } = true;

    public static BaseModelReference From(LoadedBaseModel model) => new()
    {
        Kind = model.Source.Kind,
        Name = model.Source.Name,
        Path = model.Source.Path,
        VocabPath = model.Source.VocabPath,
        Sha256 = model.Sha256,
        Size = model.File.LongLength,
        LowerCase = model.Source.LowerCase,
    };

    public override string ToString() => $"{Name} ({Size:N0} bytes, SHA-256 {Sha256})";
}

/// <summary>Everything about a fine-tuned text classifier except tensors; saved as JSON in the model file.</summary>
internal sealed class TextClassificationMetadata
{
    public int FormatVersion { get; set; } = ModelFormat.CurrentVersion;
    public BaseModelReference BaseModel { get; set; } = new();
    public bool BaseModelEmbedded { get; set; }
    public BertConfig Config { get; set; } = new();
    public int Rank { get; set; }
    public float Alpha { get; set; }
    public float LoraDropout { get; set; }
    public List<string> TargetModules { get; set; } = new();
    public List<string> AdaptedModules { get; set; } = new();
    public int ClassCount { get; set; }
    public string? LabelValueKind { get; set; }
    public List<string>? LabelValues { get; set; }
    public string Sentence1ColumnName { get; set; } = "";
    public string? Sentence2ColumnName { get; set; }
    public string ScoreColumnName { get; set; } = "";
    public string PredictedLabelColumnName { get; set; } = "";
    public int MaxSequenceLength { get; set; }
    public int BatchSize { get; set; }
    public float HeadDropout { get; set; }
    public string Device { get; set; } = "cpu";

    [JsonIgnore]
    public LabelInfo Label => new(ClassCount, LabelValueKind, LabelValues);

    [JsonIgnore]
    public LoraOptions Lora => new() { Rank = Rank, Alpha = Alpha, Dropout = LoraDropout, TargetModules = TargetModules.ToArray() };
}

/// <summary>
/// A BERT encoder with LoRA layers and a classification head, with its tokenizer and metadata: what the trainer
/// fits and the transformer scores with. Forward passes are serialised with a lock, so one instance can serve
/// several cursors.
/// </summary>
internal sealed class TextClassificationModel : IDisposable
{
    private const string PeftPrefix = "base_model.model.";
    private readonly object gate = new();

    public TextClassificationModel(TextClassificationMetadata metadata, LoadedBaseModel baseModel, Device device)
    {
        Metadata = metadata;
        Vocab = baseModel.Vocab;
        BaseModelFile = metadata.BaseModelEmbedded ? baseModel.File : null;
        Device = device;
        Encoder = new TextEncoder(baseModel.Vocab, metadata.BaseModel.LowerCase, metadata.MaxSequenceLength);
        Module = new SequenceClassifier(baseModel.Config, metadata.ClassCount, metadata.HeadDropout);
        BertWeights.Load(Module.Bert, baseModel.Weights, baseModel.Source.ToString());
        var adapted = LoraInjector.Inject(Module.Bert, metadata.Lora);
        if (metadata.AdaptedModules.Count > 0 && !adapted.SequenceEqual(metadata.AdaptedModules))
            throw new InvalidDataException($"The adapter was trained on modules [{string.Join(", ", metadata.AdaptedModules)}] but its target patterns now select [{string.Join(", ", adapted)}].");
        metadata.AdaptedModules = adapted.ToList();
        Module.FreezeBase();
        Module.to(device);
    }

    public TextClassificationMetadata Metadata { get; }
    public SequenceClassifier Module { get; }
    public TextEncoder Encoder { get; }
    public byte[] Vocab { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }
    public LabelInfo Label => Metadata.Label;

    public IEnumerable<Parameter> TrainableParameters() => Module.parameters().Where(p => p.requires_grad);

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.numel());

    public long TotalParameterCount => Module.parameters().Sum(p => p.numel());

    /// <summary>Tensors of a batch on the model's device: input ids, attention mask, token types.</summary>
    public (Tensor Ids, Tensor Mask, Tensor Types) ToTensors(EncodedBatch batch)
    {
        var shape = new long[] { batch.Rows, batch.Length };
        return (tensor(batch.InputIds, shape).to(Device), tensor(batch.AttentionMask, shape).to(Device), tensor(batch.TokenTypeIds, shape).to(Device));
    }

    /// <summary>
    /// Class probabilities of each row (eval mode, no gradients). Any number of rows: they are sorted by length and
    /// scored <see cref="TextClassificationMetadata.BatchSize"/> at a time, so short rows are not padded to long ones.
    /// </summary>
    public float[][] Predict(IReadOnlyList<string> first, IReadOnlyList<string>? second, out int truncatedRows)
    {
        var rows = Encoder.Tokenize(first, second);
        truncatedRows = rows.Count(r => r.Truncated);
        var order = Enumerable.Range(0, rows.Length).OrderBy(i => rows[i].Ids.Length).ToArray();
        var result = new float[rows.Length][];
        int classes = Metadata.ClassCount;
        lock (gate)
        {
            Module.eval();
            for (int start = 0; start < order.Length; start += Metadata.BatchSize)
            {
                var chunk = order.AsSpan(start, Math.Min(Metadata.BatchSize, order.Length - start)).ToArray();
                var batch = Encoder.Pad(chunk.Select(i => rows[i]).ToList());
                using var scope = NewDisposeScope();
                using var mode = inference_mode();
                var (ids, mask, types) = ToTensors(batch);
                var flat = nn.functional.softmax(Module.forward(ids, mask, types), 1).cpu().data<float>().ToArray();
                for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = flat.AsSpan(r * classes, classes).ToArray();
            }
        }
        return result;
    }

    /// <summary>The trainable tensors (LoRA layers and head) under Hugging Face PEFT's key names.</summary>
    public Dictionary<string, Tensor> AdapterStateDict()
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, parameter) in Module.named_parameters())
        {
            if (!parameter.requires_grad) continue;
            result[ToPeftName(name)] = parameter.detach().cpu();
        }
        return result;
    }

    /// <summary>Loads tensors saved by <see cref="AdapterStateDict"/>, checking names and shapes.</summary>
    public void LoadAdapterStateDict(IReadOnlyDictionary<string, Tensor> state, string source)
    {
        var expected = Module.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        var unexpected = state.Keys.Except(expected.Select(p => ToPeftName(p.name))).ToList();
        if (unexpected.Count > 0) throw new InvalidDataException($"{source}: unexpected adapter tensors {string.Join(", ", unexpected.Take(5))}.");
        using (no_grad())
        {
            foreach (var (name, parameter) in expected)
            {
                var key = ToPeftName(name);
                if (!state.TryGetValue(key, out var value)) throw new InvalidDataException($"{source}: the adapter tensor '{key}' is missing.");
                if (!value.shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException($"{source}: '{key}' has shape [{string.Join(", ", value.shape)}], expected [{string.Join(", ", parameter.shape)}].");
                if (value.dtype != ScalarType.Float32) throw new InvalidDataException($"{source}: '{key}' is {value.dtype}, expected Float32.");
                if (!value.isfinite().all().item<bool>()) throw new InvalidDataException($"{source}: '{key}' contains NaN or infinite values.");
                parameter.copy_(value);
            }
        }
    }

    public void SaveAdapter(Stream stream)
    {
        var state = AdapterStateDict();
        try
        {
            Safetensors.SaveStateDict(stream, state, leaveOpen: true);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    public void LoadAdapter(Stream stream, string source)
    {
        Dictionary<string, Tensor> state;
        try
        {
            state = Safetensors.LoadStateDict(stream, leaveOpen: true, keysToKeep: null);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not InvalidDataException)
        {
            throw new InvalidDataException($"{source}: the adapter weights cannot be read ({e.Message}).", e);
        }
        try
        {
            LoadAdapterStateDict(state, source);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    internal static string ToPeftName(string moduleName) =>
        PeftPrefix + moduleName.Replace(".lora.lora_A.", ".lora_A.", StringComparison.Ordinal).Replace(".lora.lora_B.", ".lora_B.", StringComparison.Ordinal);

    public void Dispose() => Module.Dispose();
}
