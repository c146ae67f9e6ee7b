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
        Weights = weights;
        Vocab = vocab;
        File = file;
        Sha256 = Convert.ToHexString(SHA256.HashData(file)).ToLowerInvariant();
    }

    public BaseModelSource Source { get; }
    public BertConfig Config { get; }
    public Dictionary<string, NamedArray> Weights { get; }
    public byte[] Vocab { get; }
    /// <summary>The weights file as read (ONNX or safetensors), for hashing and for embedding in a saved model.</summary>
    public byte[] File { get; }
    public string Sha256 { get; }

    /// <summary>A new backbone module with these weights (one per model: adapters are added to it).</summary>
    public IBackbone CreateBackbone() => new BertBackbone(this);

    public static LoadedBaseModel Parse(BaseModelSource source, (byte[] Weights, byte[] Vocab, string? ConfigJson) files)
    {
        var name = source.ToString();
        if (source.Kind == BaseModelKind.HuggingFace)
        {
            var config = BertConfig.FromJson(files.ConfigJson ?? throw new InvalidDataException($"{name}: config.json is missing."), name);
            return new LoadedBaseModel(source, config, ReadSafetensors(files.Weights, name), files.Vocab, files.Weights);
        }
        var (onnxConfig, weights) = OnnxBertImporter.Import(files.Weights, name);
        return new LoadedBaseModel(source, onnxConfig, weights, files.Vocab, files.Weights);
    }

    private static Dictionary<string, NamedArray> ReadSafetensors(byte[] bytes, string source) =>
        // Checkpoints of BertFor* tasks prefix the encoder with "bert."; keep the encoder's own names. Integer tensors
        // (position ids) are not weights.
        SafetensorsArrays.Read(bytes, $"{source}: model.safetensors", (key, isFloat) =>
            !isFloat ? null : key.StartsWith("bert.", StringComparison.Ordinal) ? key["bert.".Length..] : key);
}
