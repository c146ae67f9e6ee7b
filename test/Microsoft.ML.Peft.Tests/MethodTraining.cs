using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// A short training of the tiny BERT with one method through <see cref="PeftTextClassificationTrainer"/>, then a save
/// and a load in a fresh context, for the methods' end-to-end tests.
/// </summary>
internal static class MethodTraining
{
    public sealed record Result(IReadOnlyList<EpochMetrics> History, float[][] Trained, float[][] Loaded, Dictionary<string, float[]> Saved, string MethodJson);

    public static Result TrainSaveAndLoad(string tinyBert, PeftMethodOptions method, float learningRate = 2e-2f, int epochs = 4, Action<PeftTextClassificationTrainer.Options>? configure = null)
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(32, 2));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var keyed = keyMap.Transform(data);
        var options = TinyTraining.Options(tinyBert);
        options.Method = method;
        options.LearningRate = learningRate;
        options.MaxEpoch = epochs;
        configure?.Invoke(options);
        var path = Path.Combine(Path.GetTempPath(), $"peft-method-{Guid.NewGuid():N}.zip");
        try
        {
            using var trained = ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(keyed);
            AssertBaseModelUnchanged(trained, tinyBert);
            var scores = Scores(trained, keyed);
            ml.Model.Save(trained, keyed.Schema, path);
            var saved = Saved(trained);
            var fresh = new MLContext(5);
            var loaded = fresh.Model.Load(path, out _);
            try
            {
                var peft = (PeftTextClassificationTransformer)loaded;
                return new Result(trained.TrainingHistory, scores, Scores(loaded, keyed), saved,
                    MethodRegistry.ToJson(peft.Model.Adapted.Method.Options).ToJsonString());
            }
            finally
            {
                (loaded as IDisposable)?.Dispose();
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>The largest difference between two sets of class probabilities.</summary>
    public static double MaxDifference(float[][] a, float[][] b) =>
        a.Zip(b).SelectMany(p => p.First.Zip(p.Second, (x, y) => Math.Abs(x - y))).Max();

    private static float[][] Scores(ITransformer model, IDataView data) => model.Transform(data).GetColumn<float[]>("Score").ToArray();

    private static Dictionary<string, float[]> Saved(PeftTextClassificationTransformer model)
    {
        var state = model.Model.SavedState();
        try
        {
            return state.ToDictionary(t => Format.AdapterState.FullKey(t.Key, t.TopLevel), t => t.Value.detach().cpu().contiguous().data<float>().ToArray());
        }
        finally
        {
            foreach (var t in state) t.Value.Dispose();
        }
    }

    /// <summary>Every weight of the base model after training equals the file's.</summary>
    private static void AssertBaseModelUnchanged(PeftTextClassificationTransformer trained, string tinyBert)
    {
        var original = BaseModelSource.FromHuggingFace(tinyBert).Load().Weights;
        int compared = 0;
        foreach (var (name, parameter) in trained.Model.Adapted.Backbone.Module.named_parameters())
        {
            if (!original.TryGetValue(name, out var array)) continue;
            Assert.That(parameter.detach().cpu().contiguous().data<float>().ToArray(), Is.EqualTo(array.Data), $"base weight {name} changed");
            compared++;
        }
        Assert.That(compared, Is.EqualTo(original.Count), "every base weight is in the network");
    }
}
