using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Inputs;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Our TorchSharp BERT forward pass against ONNX Runtime running the same ONNX file.</summary>
[TestFixture]
public class OnnxParityTests
{
    [Test]
    public void TheEmbeddedModelReadFromTheAssemblyFileEqualsTheLoadedImagesResource()
    {
        // The model is read with file reads at the offset the PE metadata gives; the runtime's resource stream is the reference.
        var (weights, vocab, config) = BaseModelSource.MiniLM().ReadFiles();
        var assembly = BaseModelSource.FindMiniLMAssembly();
        byte[] Resource(string suffix)
        {
            var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith(suffix, StringComparison.Ordinal));
            using var stream = assembly.GetManifestResourceStream(name)!;
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        }
        Assert.That(weights, Is.EqualTo(Resource("model.onnx")));
        Assert.That(vocab, Is.EqualTo(Resource("vocab.txt")));
        Assert.That(weights.Length, Is.GreaterThan(80_000_000));
        Assert.That(config, Is.Null);
    }

    [Test]
    public void MiniLMLastHiddenStateMatchesOnnxRuntime()
    {
        var sentences = TestData.ReadSst2(TestData.Sst2Dev, skip: 0, take: 16).Select(r => r.Sentence).ToList();
        var loaded = BaseModelSource.MiniLM().Load();
        Assert.That(loaded.Config.NumHiddenLayers, Is.EqualTo(6));
        Assert.That(loaded.Config.HiddenSize, Is.EqualTo(384));
        Assert.That(loaded.Config.NumAttentionHeads, Is.EqualTo(12));

        var batch = new TextEncoder(loaded.Vocab, lowerCase: true, maxLength: 128).Encode(sentences);
        using var scope = NewDisposeScope();
        using var model = new BertModel(loaded.Config);
        BertWeights.Load(model, loaded.Weights, "MiniLM");
        model.eval();
        float[] ours;
        using (no_grad())
        {
            var output = model.forward(
                tensor(batch.InputIds, new long[] { batch.Rows, batch.Length }),
                tensor(batch.AttentionMask, new long[] { batch.Rows, batch.Length }),
                tensor(batch.TokenTypeIds, new long[] { batch.Rows, batch.Length }));
            ours = output.data<float>().ToArray();
        }

        using var session = new InferenceSession(loaded.File);
        int[] dims = { batch.Rows, batch.Length };
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(batch.InputIds, dims)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(batch.AttentionMask, dims)),
            NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(batch.TokenTypeIds, dims)),
        };
        using var results = session.Run(inputs);
        var reference = results.First(r => r.Name == "last_hidden_state").AsTensor<float>().ToArray();

        Assert.That(ours.Length, Is.EqualTo(reference.Length));
        int hidden = loaded.Config.HiddenSize;
        double maxDiff = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            if (batch.AttentionMask[i / hidden] == 0) continue; // padding positions carry no meaning
            maxDiff = Math.Max(maxDiff, Math.Abs(ours[i] - reference[i]));
        }
        TestContext.Out.WriteLine($"max |ours - onnxruntime| over {batch.Rows} SST-2 sentences (length {batch.Length}): {maxDiff:E3}");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(1e-4), "measured 2.3e-6 on these sentences; 1e-3 would hide a wrong LayerNorm epsilon");
    }
}
