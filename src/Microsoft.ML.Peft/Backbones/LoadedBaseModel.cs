using System.Security.Cryptography;
using Microsoft.ML.Peft.Backbones.Bert;
using TorchSharp.PyBridge;

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

    private static Dictionary<string, NamedArray> ReadSafetensors(byte[] bytes, string source)
    {
        Dictionary<string, TorchSharp.torch.Tensor> tensors;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            tensors = Safetensors.LoadStateDict(stream, leaveOpen: false, keysToKeep: null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{source}: model.safetensors could not be read: {e.Message}", e);
        }
        var result = new Dictionary<string, NamedArray>();
        foreach (var (key, tensor) in tensors)
        {
            using (tensor)
            {
                if (!tensor.is_floating_point()) continue;
                using var asFloat = tensor.to_type(TorchSharp.torch.ScalarType.Float32).contiguous();
                // Checkpoints of BertFor* tasks prefix the encoder with "bert."; keep the encoder's own names.
                var name = key.StartsWith("bert.", StringComparison.Ordinal) ? key["bert.".Length..] : key;
                result[name] = new NamedArray(asFloat.shape, asFloat.data<float>().ToArray()) { SourceName = key };
            }
        }
        return result;
    }
}
