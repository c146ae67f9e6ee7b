using System.Security.Cryptography;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>A parsed base model: configuration, weights by Hugging Face name, vocabulary and the identity of its file.</summary>
internal sealed class LoadedBaseModel
{
    private LoadedBaseModel(BaseModelSource source, BertConfig config, Dictionary<string, NamedArray> weights, byte[] vocab, byte[] file)
    {
        Source = source;
        Config = config;
        this.weights = weights;
        Vocab = vocab;
        this.file = file;
        Sha256 = Convert.ToHexString(SHA256.HashData(file)).ToLowerInvariant();
    }

    private Dictionary<string, NamedArray>? weights;
    private byte[]? file;

    public BaseModelSource Source { get; }
    public BertConfig Config { get; }
    /// <summary>The parsed weights by Hugging Face name (until <see cref="ReleaseParsed"/>).</summary>
    public Dictionary<string, NamedArray> Weights => weights ?? throw Released();
    public byte[] Vocab { get; }
    /// <summary>The weights file as read (ONNX or safetensors), for hashing and for embedding in a saved model (until <see cref="ReleaseParsed"/>).</summary>
    public byte[] File => file ?? throw Released();
    public string Sha256 { get; }

    /// <summary>
    /// Drops this object's references to the parsed weights and the file's bytes (twice the model's size in managed
    /// memory) once a model has been built from them, so they are not kept alive through training by a caller that
    /// still holds this object. A model that embeds the base model keeps its own reference to the file.
    /// </summary>
    public void ReleaseParsed() => (weights, file) = (null, null);

    private InvalidOperationException Released() =>
        new($"The parsed weights of {Source} were released after the model was built; load the base model again.");

    /// <summary>A new backbone module with these weights (one per model: adapters are added to it).</summary>
    public IBackbone CreateBackbone() => new BertBackbone(this);

    public static LoadedBaseModel Parse(BaseModelSource source, (byte[] Weights, byte[] Vocab, string? ConfigJson) files)
    {
        var name = source.ToString();
        BertConfig config;
        Dictionary<string, NamedArray> weights;
        if (source.Kind == BaseModelKind.HuggingFace)
        {
            config = BertConfig.FromJson(files.ConfigJson ?? throw new InvalidDataException($"{name}: config.json is missing."), name);
            weights = ReadSafetensors(files.Weights, name);
        }
        else
        {
            (config, weights) = OnnxBertImporter.Import(files.Weights, name);
        }
        if (source.Layers is int layers) KeepFirstLayers(config, weights, layers, name);
        return new LoadedBaseModel(source, config, weights, files.Vocab, files.Weights);
    }

    /// <summary>
    /// <see cref="BaseModelSource.WithLayers"/>: the configuration gets <paramref name="layers"/> layers and the weights of
    /// the layers above them are dropped (Hugging Face names: <c>encoder.layer.{i}.</c>).
    /// </summary>
    private static void KeepFirstLayers(BertConfig config, Dictionary<string, NamedArray> weights, int layers, string source)
    {
        if (layers > config.NumHiddenLayers)
            throw new ArgumentException($"{source}: the model has {config.NumHiddenLayers} encoder layers; it cannot keep the first {layers} (BaseModelSource.WithLayers; --model-layers on the command line).");
        const string prefix = "encoder.layer.";
        foreach (var key in weights.Keys.ToList())
        {
            if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
            int end = key.IndexOf('.', prefix.Length);
            if (end > prefix.Length && int.TryParse(key.AsSpan(prefix.Length, end - prefix.Length), System.Globalization.NumberStyles.None,
                    System.Globalization.CultureInfo.InvariantCulture, out var layer) && layer >= layers)
                weights.Remove(key);
        }
        config.NumHiddenLayers = layers;
    }

    private static Dictionary<string, NamedArray> ReadSafetensors(byte[] bytes, string source) =>
        // Checkpoints of BertFor* tasks prefix the encoder with "bert."; keep the encoder's own names. Integer tensors
        // (position ids) are not weights.
        SafetensorsArrays.Read(bytes, $"{source}: model.safetensors", (key, isFloat) =>
            !isFloat ? null : key.StartsWith("bert.", StringComparison.Ordinal) ? key["bert.".Length..] : key);
}
