using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Models loaded from files trained on the same base model share its frozen weights and still score as private copies do.</summary>
[TestFixture]
public class SharedBaseTests
{
    private static readonly string[] Sentences = { "the movie was good", "awful plot and boring actor", "great fun", "" };
    private string tiny = "";
    private readonly Dictionary<string, string> files = new();

    [OneTimeSetUp]
    public void TrainModels()
    {
        tiny = TinyBert.WriteDirectory(seed: 21);
        var ml = new MLContext(2);
        foreach (var (name, method, seed) in new (string, PeftMethodOptions, int)[]
                 { ("lora1", new LoraOptions { Rank = 2 }, 1), ("lora2", new LoraOptions { Rank = 4 }, 2), ("bitfit", new BitFitOptions(), 3) })
        {
            var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(32, seed));
            var options = TinyTraining.Options(tiny);
            options.Method = method;
            options.MaxEpoch = 2;
            options.Seed = seed;
            var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
            var path = Path.Combine(Path.GetTempPath(), $"peft-shared-{name}-{Guid.NewGuid():N}.zip");
            ml.Model.Save(model, data.Schema, path);
            files[name] = path;
            foreach (var d in model.OfType<IDisposable>()) d.Dispose();
        }
    }

    [OneTimeTearDown]
    public void Clean()
    {
        foreach (var f in files.Values) File.Delete(f);
    }

    private static (ITransformer Chain, PeftTextClassificationTransformer Peft) Load(MLContext ml, string path, bool share)
    {
        var chain = ml.Model.LoadPeft(path, new PeftLoadOptions { ShareBaseModel = share }, out _);
        return (chain, ((TransformerChain<ITransformer>)chain).OfType<PeftTextClassificationTransformer>().Single());
    }

    private static float[][] Score(MLContext ml, ITransformer model)
    {
        var data = ml.Data.LoadFromEnumerable(Sentences.Select(s => new SentenceRow { Sentence = s, Label = "positive" }));
        return ml.Data.CreateEnumerable<ScoreRow>(model.Transform(data), reuseRowObject: false).Select(r => r.Score).ToArray();
    }

    /// <summary>Address of the storage behind a backbone parameter.</summary>
    private static IntPtr Weight(PeftTextClassificationTransformer peft, string name)
    {
        using var storage = peft.Model.Adapted.Backbone.Module.named_parameters().Single(p => p.name == name).parameter.storage<float>();
        return storage.data_ptr();
    }

    [Test]
    public void ModelsOfOneBaseShareItsFrozenWeightsAndScoreAsPrivateCopies()
    {
        var ml = new MLContext(1);
        var (chain1, lora1) = Load(ml, files["lora1"], share: true);
        var (chain2, lora2) = Load(ml, files["lora2"], share: true);
        var (chainBitFit, bitfit) = Load(ml, files["bitfit"], share: true);
        var (private1, lora1Private) = Load(ml, files["lora1"], share: false);
        var (privateBitFit, bitfitPrivate) = Load(ml, files["bitfit"], share: false);
        try
        {
            Assert.That(lora1.SharesBaseModel && lora2.SharesBaseModel && bitfit.SharesBaseModel, Is.True);
            Assert.That(lora1Private.SharesBaseModel, Is.False);
            const string embeddings = "embeddings.word_embeddings.weight", query = "encoder.layer.0.attention.self.query.weight", queryBias = "encoder.layer.0.attention.self.query.bias";
            // One copy of the frozen weights: same storage in every sharing model, not in the private one.
            Assert.That(Weight(lora2, embeddings), Is.EqualTo(Weight(lora1, embeddings)));
            Assert.That(Weight(bitfit, query), Is.EqualTo(Weight(lora1, query)));
            Assert.That(Weight(lora1Private, embeddings), Is.Not.EqualTo(Weight(lora1, embeddings)));
            // What BitFit trains is its own; LoRA's frozen bias is shared.
            Assert.That(Weight(bitfit, queryBias), Is.Not.EqualTo(Weight(lora1, queryBias)));
            Assert.That(Weight(lora2, queryBias), Is.EqualTo(Weight(lora1, queryBias)));

            var shared1 = Score(ml, chain1);
            var sharedBitFit = Score(ml, chainBitFit);
            Assert.That(Score(ml, chain2), Is.Not.EqualTo(shared1), "two different adapters");
            AssertClose(shared1, Score(ml, private1));
            AssertClose(sharedBitFit, Score(ml, privateBitFit));

            // The first model going away leaves the shared weights to the others.
            lora1.Dispose();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            AssertClose(Score(ml, chainBitFit), sharedBitFit);
        }
        finally
        {
            foreach (var m in new[] { lora2, bitfit, lora1Private, bitfitPrivate }) m.Dispose();
        }
    }

    private static void AssertClose(float[][] actual, float[][] expected)
    {
        for (int i = 0; i < expected.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f), $"row {i}");
    }

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }
}
