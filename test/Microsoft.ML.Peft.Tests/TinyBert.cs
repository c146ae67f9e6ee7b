using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Backbones.Bert;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>A small randomly initialised BERT written as a Hugging Face directory, for fast tests of mechanics.</summary>
internal static class TinyBert
{
    public static BertConfig Config => new()
    {
        VocabSize = Vocabulary.Count,
        HiddenSize = 32,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        IntermediateSize = 64,
        MaxPositionEmbeddings = 40,
        TypeVocabSize = 2,
    };

    public static readonly IReadOnlyList<string> Vocabulary = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }
        .Concat("the a an is was good bad great awful movie film plot actor fun boring not very and but it this that of to".Split(' '))
        .Concat("abcdefghijklmnopqrstuvwxyz".Select(c => c.ToString()))
        .Concat("abcdefghijklmnopqrstuvwxyz".Select(c => "##" + c))
        .Distinct()
        .ToList();

    /// <summary>Writes config.json, vocab.txt and model.safetensors into a new folder and returns it.</summary>
    public static string WriteDirectory(int seed = 7)
    {
        var dir = TestTemp.Track(Path.Combine(Path.GetTempPath(), "peft-tiny-bert-" + Guid.NewGuid().ToString("N")));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJson());
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"), Vocabulary);
        using var model = Randomized(new BertModel(Config), seed);
        var state = model.state_dict();
        Safetensors.SaveStateDict(Path.Combine(dir, "model.safetensors"), state);
        return dir;
    }

    public static BertModel CreateModel(int seed = 3)
    {
        var model = Randomized(new BertModel(Config), seed);
        model.eval();
        return model;
    }

    /// <summary>Random weights as PyTorch's default initialisation draws them (embeddings N(0, 1), Linear U(-1/sqrt(in), 1/sqrt(in)), LayerNorm 1 and 0), from a seeded generator.</summary>
    public static BertModel Randomized(BertModel model, int seed)
    {
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        {
            foreach (var (name, parameter) in model.named_parameters())
            {
                if (name.EndsWith("LayerNorm.weight")) parameter.fill_(1);
                else if (name.EndsWith("LayerNorm.bias")) parameter.zero_();
                else if (name.StartsWith("embeddings.")) parameter.normal_(0, 1, generator);
                else
                {
                    var bound = 1 / Math.Sqrt(parameter.shape.Length == 2 ? parameter.shape[1] : Config.HiddenSize);
                    parameter.uniform_(-bound, bound, generator);
                }
            }
        }
        return model;
    }

    /// <summary>Applies a method to a model under the default adapter name.</summary>
    public static AdaptedBackbone Adapt(BertModel model, PeftMethodOptions options, Generator? generator = null) =>
        new(new BertBackbone(model), options, generator);

    public static (Tensor Ids, Tensor Mask, Tensor Types) RandomBatch(int rows, int length, int seed = 5)
    {
        var generator = new Generator((ulong)seed);
        var ids = randint(5, Vocabulary.Count, new long[] { rows, length }, generator: generator);
        var mask = ones(rows, length, ScalarType.Int64);
        mask[0, TensorIndex.Slice(length - 2)] = 0; // one row with padding
        var types = zeros(rows, length, ScalarType.Int64);
        return (ids, mask, types);
    }
}
