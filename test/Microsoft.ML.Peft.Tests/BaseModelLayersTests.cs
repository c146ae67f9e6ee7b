using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// <see cref="BaseModelSource.WithLayers"/>: a base model cut to its first layers, checked against the checkpoint that
/// holds only those layers (written here by hand from the tiny BERT's file, as a one-layer model would be saved).
/// </summary>
[TestFixture]
public class BaseModelLayersTests
{
    private string tinyBert = "";
    private string firstLayerOnly = "";

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    [OneTimeSetUp]
    public void WriteModels()
    {
        tinyBert = TinyBert.WriteDirectory();
        firstLayerOnly = TestTemp.Track(Path.Combine(Path.GetTempPath(), "peft-tiny-bert-first-layer-" + Guid.NewGuid().ToString("N")));
        Directory.CreateDirectory(firstLayerOnly);
        var config = TinyBert.Config;
        config.NumHiddenLayers = 1;
        File.WriteAllText(Path.Combine(firstLayerOnly, "config.json"), config.ToJson());
        File.Copy(Path.Combine(tinyBert, "vocab.txt"), Path.Combine(firstLayerOnly, "vocab.txt"));
        var state = Safetensors.LoadStateDict(Path.Combine(tinyBert, "model.safetensors"));
        try
        {
            foreach (var key in state.Keys.Where(k => k.StartsWith("encoder.layer.1.", StringComparison.Ordinal)).ToList())
            {
                state[key].Dispose();
                state.Remove(key);
            }
            Assert.That(state.Keys.Any(k => k.StartsWith("encoder.layer.0.", StringComparison.Ordinal)), "the tiny BERT's first layer is in the file");
            Safetensors.SaveStateDict(Path.Combine(firstLayerOnly, "model.safetensors"), state);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    [OneTimeTearDown]
    public void RemoveModels()
    {
        foreach (var dir in new[] { tinyBert, firstLayerOnly })
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    [Test]
    public void TheFirstLayerOfTheModelIsTheEncoderOfTheCheckpointThatHoldsOnlyIt()
    {
        var cut = BaseModelSource.FromHuggingFace(tinyBert).WithLayers(1).Load();
        var reference = BaseModelSource.FromHuggingFace(firstLayerOnly).Load();
        var whole = BaseModelSource.FromHuggingFace(tinyBert).Load();
        Assert.That(cut.Config.ToJson(), Is.EqualTo(reference.Config.ToJson()));
        Assert.That(cut.Weights.Keys.Order(), Is.EqualTo(reference.Weights.Keys.Order()), "the layers above the first are dropped");
        Assert.That(cut.Sha256, Is.EqualTo(whole.Sha256), "the identity is still the file's");

        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 2, 9, 12, 15, 3, 0, 2, 10, 14, 3, 0, 0 }, new long[] { 2, 6 });
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0 }, new long[] { 2, 6 });
        var types = zeros_like(ids);
        Tensor Hidden(LoadedBaseModel model)
        {
            var backbone = (ITextBackbone)model.CreateBackbone();
            backbone.Module.eval();
            using var mode = inference_mode();
            return backbone.Forward(ids, mask, types);
        }
        var fromCut = Hidden(cut);
        var fromReference = Hidden(reference);
        var fromWhole = Hidden(whole);
        Assert.That(fromCut.shape, Is.EqualTo(fromReference.shape));
        Assert.That(fromCut.sub(fromReference).abs().max().item<float>(), Is.EqualTo(0f));
        Assert.That(fromCut.sub(fromWhole).abs().max().item<float>(), Is.GreaterThan(1e-3f), "the second layer changes the output: it was left out");
    }

    [Test]
    public void AModelTrainedOnTheFirstLayersEqualsOneTrainedOnTheirCheckpointAndLoadsBackWithThem()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(24, 3));
        ITransformer Train(BaseModelSource source)
        {
            var options = TinyTraining.Options(tinyBert);
            options.BaseModel = source;
            options.MaxEpoch = 1;
            return ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        }
        float[][] Scores(ITransformer model) =>
            ml.Data.CreateEnumerable<ScoreRow>(model.Transform(data), reuseRowObject: false).Select(r => r.Score).ToArray();

        var cut = Train(BaseModelSource.FromHuggingFace(tinyBert).WithLayers(1));
        var reference = Train(BaseModelSource.FromHuggingFace(firstLayerOnly));
        var scores = Scores(cut);
        var referenceScores = Scores(reference);
        for (int i = 0; i < scores.Length; i++)
            Assert.That(scores[i], Is.EqualTo(referenceScores[i]).Within(1e-5f), $"row {i}");
        var peft = ((IEnumerable<ITransformer>)cut).OfType<PeftTextClassificationTransformer>().Single();
        Assert.That(peft.BaseModelDescription, Does.Contain("first 1 layer"));

        var path = TestTemp.Track(Path.Combine(Path.GetTempPath(), $"peft-first-layer-{Guid.NewGuid():N}.zip"));
        ml.Model.Save(cut, data.Schema, path);
        var loaded = new MLContext(2).Model.Load(path, out _);
        var loadedScores = Scores(loaded);
        for (int i = 0; i < scores.Length; i++)
            Assert.That(loadedScores[i], Is.EqualTo(scores[i]).Within(1e-6f), $"row {i} after loading");
        Assert.That(((IEnumerable<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single().BaseModelDescription, Does.Contain("first 1 layer"));

        var adapterDir = Path.Combine(Path.GetTempPath(), $"peft-first-layer-adapter-{Guid.NewGuid():N}");
        var e = Assert.Throws<InvalidOperationException>(() => ml.Model.ExportPeftAdapter(peft, adapterDir));
        Assert.That(e!.Message, Does.Contain("first 1 encoder layer(s)").And.Contain("WithLayers").And.Contain("ONNX"));
        Assert.That(Directory.Exists(adapterDir), Is.False, "nothing is written");
        foreach (var model in new[] { cut, reference, loaded })
            foreach (var part in (IEnumerable<ITransformer>)model) (part as IDisposable)?.Dispose();
        File.Delete(path);
    }

    [Test]
    public void ALayerCountOutsideTheModelIsRefusedNamingTheOption()
    {
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => BaseModelSource.MiniLM().WithLayers(0));
        Assert.That(zero!.ParamName, Is.EqualTo("layers"));

        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(8, 1));
        var options = TinyTraining.Options(tinyBert);
        options.BaseModel = BaseModelSource.FromHuggingFace(tinyBert).WithLayers(3);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(keyed));
        Assert.That(e!.Message, Does.Contain("2 encoder layers").And.Contain("first 3").And.Contain("WithLayers"));
    }
}
