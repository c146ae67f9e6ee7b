using Microsoft.ML.Peft.Methods.PrefixTuning;
using Microsoft.ML.Peft.Methods.PromptTuning;
using Microsoft.ML.Peft.Methods.Vera;
using Microsoft.ML.Peft.Methods.IA3;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using TorchSharp.PyBridge;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Hugging Face PEFT adapters against an independent PyTorch implementation (test/Reference/peft_reference.py: BERT's
/// forward, PEFT's formulas, mean pooling, in plain torch), on the real all-MiniLM-L6-v2 and real SST-2 sentences:
/// a model trained here and exported scores the same there, and an adapter written there scores the same here.
/// Needs Debian's python3-torch at /usr/bin/python3; .ci/run installs it and sets PEFT_REQUIRE_TORCH_REFERENCE=1, so
/// in CI a missing torch fails these tests instead of skipping them.
/// </summary>
[TestFixture]
[NonParallelizable]
public class PeftReferenceTests
{
    private const int SentenceCount = 40;
    private const double Tolerance = 1e-4;

    private static string Script => Path.Combine(PythonReference.ScriptFolder, "peft_reference.py");
    private static string SentencesFile => Path.Combine(TestData.SharedData, "sst2", "test-sentences.tsv");

    private string work = "";
    private string baseDirectory = "";
    private List<string> sentences = new();
    private MLContext ml = null!;

    /// <summary>
    /// The methods checked against the reference. Adding a method is one more case here: the script already applies
    /// LoRA (rsLoRA, DoRA), IA3, VeRA, prompt and prefix tuning, BitFit and full fine-tuning under PEFT's keys.
    /// </summary>
    private static IEnumerable<TestCaseData> Methods()
    {
        yield return new TestCaseData(new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = new[] { "query", "value" } }).SetName("LoraOnQueryAndValue");
        yield return new TestCaseData(new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseRslora = true }).SetName("RsLoraOnAllLinear");
        yield return new TestCaseData(new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseDora = true, TargetModules = new[] { "query", "value", "dense" } }).SetName("Dora");
        yield return new TestCaseData(new IA3Options()).SetName("IA3");
        yield return new TestCaseData(new VeraOptions { Rank = 32 }).SetName("Vera");
        yield return new TestCaseData(new PromptTuningOptions { NumVirtualTokens = 8 }).SetName("PromptTuning");
        yield return new TestCaseData(new PrefixTuningOptions { NumVirtualTokens = 8 }).SetName("PrefixTuning");
        yield return new TestCaseData(new BitFitOptions()).SetName("BitFit");
    }

    [OneTimeSetUp]
    public void WriteBaseModelAsHuggingFaceDirectory()
    {
        RequireTorch();
        work = Path.Combine(Path.GetTempPath(), "peft-reference-" + Guid.NewGuid().ToString("N"));
        baseDirectory = Path.Combine(work, "all-MiniLM-L6-v2");
        Directory.CreateDirectory(baseDirectory);
        // The embedded ONNX model's weights, as a Hugging Face checkpoint the script reads (BertModel's parameter names).
        var loaded = BaseModelSource.MiniLM().Load();
        File.WriteAllText(Path.Combine(baseDirectory, "config.json"), loaded.Config.ToJson());
        File.WriteAllBytes(Path.Combine(baseDirectory, "vocab.txt"), loaded.Vocab);
        var backbone = (BertBackbone)loaded.CreateBackbone();
        using (backbone.Model)
            Safetensors.SaveStateDict(Path.Combine(baseDirectory, "model.safetensors"), backbone.Model.state_dict());
        sentences = File.ReadLines(SentencesFile).Skip(1).Take(SentenceCount).Select(l => l.Split('\t')[0]).ToList();
        Assert.That(sentences, Has.Count.EqualTo(SentenceCount));
        ml = new MLContext(1);
    }

    [OneTimeTearDown]
    public void DeleteWorkDirectory()
    {
        if (work.Length > 0 && Directory.Exists(work)) Directory.Delete(work, recursive: true);
    }

    private static void RequireTorch() => PythonReference.Require("python3-torch libopenblas0-pthread", "torch");

    private static (int ExitCode, string StdOut, string StdErr) Run(params string[] arguments) =>
        PythonReference.Run(TimeSpan.FromMinutes(10), arguments);

    /// <summary>The script's class probabilities of <see cref="sentences"/> with the adapter in <paramref name="adapter"/>.</summary>
    private float[][] ReferenceScores(string adapter)
    {
        var output = Path.Combine(work, $"reference-{Guid.NewGuid():N}.json");
        var (exit, stdout, stderr) = Run(Script, "score", "--base", baseDirectory, "--adapter", adapter, "--sentences", SentencesFile,
            "--limit", SentenceCount.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", output);
        Assert.That(exit, Is.EqualTo(0), $"peft_reference.py score failed:\n{stdout}\n{stderr}");
        using var json = JsonDocument.Parse(File.ReadAllText(output));
        Assert.That(json.RootElement.GetProperty("sentences").EnumerateArray().Select(s => s.GetString()), Is.EqualTo(sentences));
        return json.RootElement.GetProperty("probabilities").EnumerateArray()
            .Select(row => row.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray()).ToArray();
    }

    private static double MaxDifference(float[][] a, float[][] b)
    {
        Assert.That(a.Select(r => r.Length), Is.EqualTo(b.Select(r => r.Length)));
        return a.Zip(b).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
    }

    [TestCaseSource(nameof(Methods))]
    public void ExportedModelScoresTheSameInPyTorch(PeftMethodOptions method)
    {
        // A few training steps on real SST-2 rows, so that the adapter is away from its identity start (LoRA's B is not zero).
        var rows = Rows.Sst2(TestData.Sst2Train, skip: 0, take: 64);
        var data = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        using var model = ml.MulticlassClassification.Trainers.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            Sentence1ColumnName = nameof(SentenceRow.Sentence),
            Method = method,
            MaxEpoch = 1,
            BatchSize = 16,
            MaxSequenceLength = 64,
        }).Fit(data);
        var adapter = Path.Combine(work, "exported-" + method.PeftType);
        ml.Model.ExportPeftAdapter(model, adapter);
        var state = Safetensors.LoadStateDict(Path.Combine(adapter, "adapter_model.safetensors"));
        try
        {
            foreach (var (key, tensor) in state.Where(p => p.Key.Contains("lora_B")))
                Assert.That(tensor.abs().max().item<float>(), Is.GreaterThan(0f), $"{key} trained away from zero");
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }

        var ours = model.Score(sentences, null);
        var reference = ReferenceScores(adapter);
        var difference = MaxDifference(ours, reference);
        TestContext.Out.WriteLine($"{method.PeftType}: max |ours - reference| = {difference:E2} over {SentenceCount} sentences x {ours[0].Length} classes");
        Assert.That(difference, Is.LessThanOrEqualTo(Tolerance));
        Assert.That(ours.Select(r => r.Max()).Min(), Is.LessThan(0.999f), "scores not saturated, so the comparison means something");

        // Imported back, the same probabilities exactly.
        using var imported = ml.Model.ImportPeftAdapter(adapter, new PeftAdapterImportOptions { Sentence1ColumnName = nameof(SentenceRow.Sentence) });
        Assert.That(imported.Score(sentences, null), Is.EqualTo(ours));
    }

    [Test]
    public void AdapterWrittenByTheReferenceScoresTheSameHere()
    {
        var adapter = Path.Combine(work, "written-by-python");
        var (exit, stdout, stderr) = Run(Script, "write-lora", "--base", baseDirectory, "--out", adapter, "--rank", "4", "--alpha", "16",
            "--classes", "3", "--seed", "5", "--targets", "query,key,value");
        Assert.That(exit, Is.EqualTo(0), $"peft_reference.py write-lora failed:\n{stdout}\n{stderr}");

        // The default base model is all-MiniLM-L6-v2, which the adapter names as sentence-transformers/all-MiniLM-L6-v2.
        using var imported = ml.Model.ImportPeftAdapter(adapter);
        Assert.That(imported.ClassNames, Is.EqualTo(new[] { "0", "1", "2" }));
        Assert.That(imported.AdaptedModules, Has.Count.EqualTo(6 * 3));
        var ours = imported.Score(sentences, null);
        var reference = ReferenceScores(adapter);
        var difference = MaxDifference(ours, reference);
        TestContext.Out.WriteLine($"Python-written LoRA: max |ours - reference| = {difference:E2}");
        Assert.That(difference, Is.LessThanOrEqualTo(Tolerance));

        // The adapter matters: without it the same head gives other probabilities.
        var bare = Path.Combine(work, "python-bare");
        Directory.CreateDirectory(bare);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))!.AsObject();
        File.WriteAllText(Path.Combine(bare, "adapter_config.json"), config.ToJsonString());
        var tensors = Safetensors.LoadStateDict(Path.Combine(adapter, "adapter_model.safetensors"));
        foreach (var (key, tensor) in tensors) if (key.Contains("lora_B")) tensor.zero_();
        Safetensors.SaveStateDict(Path.Combine(bare, "adapter_model.safetensors"), tensors);
        foreach (var t in tensors.Values) t.Dispose();
        using var withoutAdapter = ml.Model.ImportPeftAdapter(bare);
        Assert.That(MaxDifference(withoutAdapter.Score(sentences, null), ours), Is.GreaterThan(100 * Tolerance));
    }
}
