using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using NUnit.Framework;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Export to and import from Hugging Face PEFT's adapter directory, on the tiny BERT: the files PEFT expects, an exact
/// round trip, adapters as Python PEFT writes them (its defaults, no block of ours), the errors, and training from an adapter.
/// </summary>
[TestFixture]
[NonParallelizable]
public class HuggingFacePeftTests
{
    private static readonly string[] Sentences = { "the movie was good", "awful plot and boring actor", "it is not fun", "", "great great great", "a very bad film" };

    private string tiny = "";
    private string work = "";
    private MLContext ml = null!;
    private PeftTextClassificationTransformer trained = null!;

    [OneTimeSetUp]
    public void TrainTinyModel()
    {
        tiny = TinyBert.WriteDirectory(seed: 7);
        ml = new MLContext(1);
        var options = TinyTraining.Options(tiny);
        options.Method = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = new[] { "query", "value" } };
        trained = Train(options);
    }

    [OneTimeTearDown]
    public void DeleteTinyModel()
    {
        trained.Dispose();
        Directory.Delete(tiny, recursive: true);
    }

    [SetUp]
    public void CreateWorkDirectory()
    {
        work = Path.Combine(Path.GetTempPath(), "peft-hf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
    }

    [TearDown]
    public void DeleteWorkDirectory()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    }

    private PeftTextClassificationTransformer Train(PeftTextClassificationTrainer.Options options, int classes = 2)
    {
        var rows = TinyTraining.Rows(48, 3);
        if (classes == 3) rows = rows.Select((r, i) => i % 3 == 2 ? new SentenceRow { Sentence = r.Sentence, Label = "neutral" } : r).ToList();
        var data = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        return ml.MulticlassClassification.Trainers.PeftTextClassification(options).Fit(data);
    }

    private string Export(ITransformer model)
    {
        var dir = Path.Combine(work, "adapter");
        ml.Model.ExportPeftAdapter(model, dir);
        return dir;
    }

    private PeftAdapterImportOptions ImportOptions(string? baseDir = null) => new()
    {
        BaseModel = BaseModelSource.FromHuggingFace(baseDir ?? tiny),
        Sentence1ColumnName = "Sentence",
    };

    private static Dictionary<string, float[]> Tensors(string adapterDir)
    {
        var state = Safetensors.LoadStateDict(Path.Combine(adapterDir, "adapter_model.safetensors"));
        try
        {
            return state.ToDictionary(p => p.Key, p => p.Value.data<float>().ToArray());
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    private static JsonObject Config(string adapterDir) => JsonNode.Parse(File.ReadAllText(Path.Combine(adapterDir, "adapter_config.json")))!.AsObject();

    private static void WriteConfig(string adapterDir, JsonObject config) =>
        File.WriteAllText(Path.Combine(adapterDir, "adapter_config.json"), config.ToJsonString());

    [Test]
    public void ExportWritesTheFilesAndFieldsPeftReads()
    {
        var dir = Export(trained);
        Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "adapter_config.json", "adapter_model.safetensors", "README.md" }));
        var config = Config(dir);
        Assert.That(config["peft_type"]!.GetValue<string>(), Is.EqualTo("LORA"));
        Assert.That(config["task_type"]!.GetValue<string>(), Is.EqualTo("SEQ_CLS"));
        Assert.That(config["r"]!.GetValue<int>(), Is.EqualTo(4));
        Assert.That(config["lora_alpha"]!.GetValue<double>(), Is.EqualTo(8));
        Assert.That(config["lora_dropout"]!.GetValue<double>(), Is.EqualTo(0));
        Assert.That(config["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()), Is.EqualTo(new[] { "query", "value" }));
        Assert.That(config["bias"]!.GetValue<string>(), Is.EqualTo("none"));
        Assert.That(config["use_rslora"]!.GetValue<bool>(), Is.False);
        Assert.That(config["use_dora"]!.GetValue<bool>(), Is.False);
        Assert.That(config["fan_in_fan_out"]!.GetValue<bool>(), Is.False);
        Assert.That(config["init_lora_weights"]!.GetValue<bool>(), Is.True);
        Assert.That(config["modules_to_save"]!.AsArray().Select(t => t!.GetValue<string>()), Is.EqualTo(new[] { "classifier" }));
        Assert.That(config["base_model_name_or_path"]!.GetValue<string>(), Is.EqualTo(Path.GetFullPath(tiny)));
        Assert.That(config["inference_mode"]!.GetValue<bool>(), Is.True);
        Assert.That(config.ContainsKey("revision") && config["revision"] is null, Is.True, "revision: null");
        Assert.That(config.Select(p => p.Key).Where(k => k.Any(char.IsUpper)), Is.Empty, "PEFT's snake_case fields only");
        Assert.That(config.Select(p => p.Key), Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal), "keys sorted, as PEFT writes them");

        var extra = config["microsoft_ml_peft"]!.AsObject();
        Assert.That(extra["pooling"]!.GetValue<string>(), Is.EqualTo("mean"));
        Assert.That(extra["class_names"]!.AsArray().Select(t => t!.GetValue<string>()), Is.EqualTo(trained.ClassNames));
        Assert.That(extra["max_sequence_length"]!.GetValue<int>(), Is.EqualTo(16));
        Assert.That(extra["lower_case"]!.GetValue<bool>(), Is.True);
        var sha = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(tiny, "model.safetensors")))).ToLowerInvariant();
        Assert.That(extra["base_model"]!["sha256"]!.GetValue<string>(), Is.EqualTo(sha));

        var expectedKeys = new[] { 0, 1 }.SelectMany(layer => new[] { "query", "value" }.SelectMany(m => new[] { "A", "B" }
                .Select(ab => $"base_model.model.bert.encoder.layer.{layer}.attention.self.{m}.lora_{ab}.weight")))
            .Append("base_model.model.classifier.weight").Append("base_model.model.classifier.bias");
        var tensors = Tensors(dir);
        Assert.That(tensors.Keys, Is.EquivalentTo(expectedKeys));
        Assert.That(tensors["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"], Has.Length.EqualTo(4 * 32), "A is r x in");
        Assert.That(tensors["base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight"].Any(v => v != 0), Is.True, "B trained away from zero");
        Assert.That(tensors["base_model.model.classifier.weight"], Has.Length.EqualTo(2 * 32));

        var readme = File.ReadAllText(Path.Combine(dir, "README.md"));
        Assert.That(readme, Does.Contain("mean").And.Contain("attention mask").And.Contain(sha));
    }

    [Test]
    public void ExportThenImportRoundTripsExactly()
    {
        var dir = Export(trained);
        using var imported = ml.Model.ImportPeftAdapter(dir, ImportOptions());
        Assert.That(imported.Method, Is.EqualTo("LORA"));
        Assert.That(imported.ClassNames, Is.EqualTo(trained.ClassNames));
        Assert.That(imported.AdaptedModules, Is.EqualTo(trained.AdaptedModules));
        Assert.That(imported.Sentence1ColumnName, Is.EqualTo("Sentence"));
        var expected = trained.Score(Sentences, null);
        var actual = imported.Score(Sentences, null);
        for (int i = 0; i < Sentences.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]), Sentences[i]);

        // Exported again, the tensors are the same bits.
        var again = Path.Combine(work, "again");
        ml.Model.ExportPeftAdapter(imported, again);
        var first = Tensors(dir);
        var second = Tensors(again);
        Assert.That(second.Keys, Is.EquivalentTo(first.Keys));
        foreach (var key in first.Keys) Assert.That(second[key], Is.EqualTo(first[key]), key);

        // The imported model saves as an ML.NET model and loads back with the same scores.
        var zip = Path.Combine(work, "imported.zip");
        var schema = ml.Data.LoadFromEnumerable(new[] { new SentenceRow() }).Schema;
        ml.Model.Save(imported, schema, zip);
        // With its own base weights it merges as the trained model did: the same bits. Sharing the base (the default)
        // scores with the adapter unmerged: the same within float rounding.
        var loaded = (PeftTextClassificationTransformer)new MLContext(2).Model.LoadPeft(zip, new PeftLoadOptions { ShareBaseModel = false }, out _);
        var shared = (PeftTextClassificationTransformer)new MLContext(2).Model.Load(zip, out _);
        using (loaded)
        using (shared)
        {
            Assert.That(shared.SharesBaseModel, Is.True);
            var reloaded = loaded.Score(Sentences, null);
            var sharedScores = shared.Score(Sentences, null);
            for (int i = 0; i < Sentences.Length; i++)
            {
                Assert.That(reloaded[i], Is.EqualTo(expected[i]), Sentences[i]);
                Assert.That(sharedScores[i], Is.EqualTo(expected[i]).Within(1e-5f), Sentences[i]);
            }
        }
    }

    [Test]
    public void AllLinearIsExportedAsTheAdaptedModulesAndImportsBack()
    {
        var options = TinyTraining.Options(tiny);
        options.MaxEpoch = 1;
        options.Method = new LoraOptions { Rank = 2, Dropout = 0 };
        using var model = Train(options);
        var dir = Export(model);
        var targets = Config(dir)["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        Assert.That(targets, Is.EqualTo(model.AdaptedModules), "PEFT reads a list as module names: the adapted modules themselves");
        Assert.That(targets, Has.Count.EqualTo(2 * 6), "six Linear layers in each of the two layers");
        using var imported = ml.Model.ImportPeftAdapter(dir, ImportOptions());
        Assert.That(imported.AdaptedModules, Is.EqualTo(model.AdaptedModules));
        Assert.That(imported.Score(Sentences, null), Is.EqualTo(model.Score(Sentences, null)));
    }

    /// <summary>An adapter as Python PEFT writes one: its own fields only, PEFT's defaults left out, no block of ours.</summary>
    private string WritePythonStyleAdapter(JsonObject? overrides = null, int rank = 4, int classes = 3, Action<Dictionary<string, Tensor>>? editTensors = null)
    {
        var dir = Path.Combine(work, "python-adapter");
        Directory.CreateDirectory(dir);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "SEQ_CLS",
            ["r"] = rank,
            ["target_modules"] = new JsonArray("value", "query"),
            ["modules_to_save"] = new JsonArray("classifier", "score"),
            ["base_model_name_or_path"] = "/somewhere/" + Path.GetFileName(tiny),
            ["inference_mode"] = true,
            ["peft_version"] = "0.17.0",
            ["alpha_pattern"] = new JsonObject(),
            ["layers_to_transform"] = null,
        };
        foreach (var (key, value) in overrides ?? new JsonObject()) config[key] = value?.DeepClone();
        WriteConfig(dir, config);
        using var generator = new Generator(42);
        var state = new Dictionary<string, Tensor>();
        foreach (var layer in new[] { 0, 1 })
            foreach (var module in new[] { "query", "value" })
            {
                var prefix = $"base_model.model.bert.encoder.layer.{layer}.attention.self.{module}";
                state[prefix + ".lora_A.weight"] = randn(new long[] { rank, 32 }, generator: generator).mul_(0.3);
                state[prefix + ".lora_B.weight"] = randn(new long[] { 32, rank }, generator: generator).mul_(0.3);
            }
        state["base_model.model.classifier.weight"] = randn(new long[] { classes, 32 }, generator: generator);
        state["base_model.model.classifier.bias"] = randn(new long[] { classes }, generator: generator);
        editTensors?.Invoke(state);
        Safetensors.SaveStateDict(Path.Combine(dir, "adapter_model.safetensors"), state);
        foreach (var t in state.Values) t.Dispose();
        return dir;
    }

    [Test]
    public void PythonStyleAdapterImportsWithPeftDefaultsAndNumberedClasses()
    {
        var dir = WritePythonStyleAdapter();
        using var imported = ml.Model.ImportPeftAdapter(dir, ImportOptions());
        Assert.That(imported.ClassCount, Is.EqualTo(3), "from the classifier's rows");
        Assert.That(imported.ClassNames, Is.EqualTo(new[] { "0", "1", "2" }));
        Assert.That(imported.AdaptedModules, Has.Count.EqualTo(4));
        var lora = imported.Model.Adapted.Backbone.Linears().Select(l => l.Module.Adapter("default")).OfType<LoraLayer>().ToList();
        Assert.That(lora, Has.Count.EqualTo(4));
        // PEFT's lora_alpha default is 8 (this library's is 16): scaling 8 / 4.
        Assert.That(lora.Select(l => l.Scaling), Is.All.EqualTo(2f));
        var scores = imported.Score(Sentences, null);
        Assert.That(scores.Select(s => s.Length), Is.All.EqualTo(3));
        Assert.That(scores.Select(s => s.Sum()), Is.All.EqualTo(1f).Within(1e-5f));
    }

    [Test]
    public void TheAdapterChangesTheScoresAsLoraShould()
    {
        // The same adapter with B = 0 scores like the head on the bare encoder; the real B changes the scores.
        var dir = WritePythonStyleAdapter();
        using var withB = ml.Model.ImportPeftAdapter(dir, ImportOptions());
        var scores = withB.Score(Sentences, null);
        Directory.Delete(dir, recursive: true);
        dir = WritePythonStyleAdapter(editTensors: state =>
        {
            foreach (var key in state.Keys.Where(k => k.EndsWith("lora_B.weight")).ToList()) state[key].zero_();
        });
        using var zeroB = ml.Model.ImportPeftAdapter(dir, ImportOptions());
        var bare = zeroB.Score(Sentences, null);
        Assert.That(scores.Zip(bare).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second))), Is.GreaterThan(1e-3));
    }

    private static IEnumerable<TestCaseData> BadAdapters()
    {
        yield return new TestCaseData(new JsonObject { ["peft_type"] = "NOPE" }, new[] { "NOPE", "LORA" }).SetName("UnknownPeftTypeListsTheKnownOnes");
        yield return new TestCaseData(new JsonObject { ["layers_to_transform"] = new JsonArray(0) }, new[] { "layers_to_transform" }).SetName("UnsupportedFieldIsNamed");
        yield return new TestCaseData(new JsonObject { ["bias"] = "all" }, new[] { "'bias'" }).SetName("BiasOtherThanNoneIsRefused");
        yield return new TestCaseData(new JsonObject { ["init_lora_weights"] = "pissa" }, new[] { "init_lora_weights" }).SetName("PissaResidualBaseIsRefused");
        yield return new TestCaseData(new JsonObject { ["r"] = 0 }, new[] { "Rank" }).SetName("RankOutOfRange");
        yield return new TestCaseData(new JsonObject { ["target_modules"] = new JsonArray("no_such_module") }, new[] { "no_such_module" }).SetName("TargetModulesThatDoNotFit");
        yield return new TestCaseData(new JsonObject { ["task_type"] = "CAUSAL_LM" }, new[] { "CAUSAL_LM" }).SetName("OtherTaskType");
        yield return new TestCaseData(new JsonObject { ["modules_to_save"] = new JsonArray("pooler") }, new[] { "pooler" }).SetName("OtherModulesToSave");
        yield return new TestCaseData(new JsonObject { ["base_model_name_or_path"] = "bert-base-uncased" }, new[] { "bert-base-uncased", "peft-tiny-bert-" }).SetName("BaseModelNameMismatch");
    }

    [TestCaseSource(nameof(BadAdapters))]
    public void BadConfigIsAnErrorNamingTheCause(JsonObject overrides, string[] named)
    {
        var dir = WritePythonStyleAdapter(overrides);
        var e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        foreach (var part in named) Assert.That(e.Message, Does.Contain(part));
        Assert.That(e.Message, Does.Contain(dir), "names the adapter");
    }

    [TestCase(0, "NumVirtualTokens")]
    [TestCase(1000, "NumVirtualTokens")]
    public void VirtualTokensOutOfRangeAreAnErrorNamingTheField(int tokens, string named)
    {
        var options = TinyTraining.Options(tiny);
        options.MaxEpoch = 1;
        options.Method = new Microsoft.ML.Peft.Methods.PromptTuning.PromptTuningOptions { NumVirtualTokens = 4 };
        options.MaxSequenceLength = 12;
        using var model = Train(options);
        var dir = Export(model);
        var config = Config(dir);
        config["num_virtual_tokens"] = tokens;
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(e.Message, Does.Contain(named).And.Contain(dir));
    }

    [Test]
    public void BaseModelNameCheckCanBeTurnedOff()
    {
        var dir = WritePythonStyleAdapter(new JsonObject { ["base_model_name_or_path"] = "bert-base-uncased" });
        var options = ImportOptions();
        options.CheckBaseModelName = false;
        using var imported = ml.Model.ImportPeftAdapter(dir, options);
        Assert.That(imported.ClassCount, Is.EqualTo(3));
    }

    [Test]
    public void TensorProblemsAreErrorsNamingTheTensor()
    {
        const string key = "base_model.model.bert.encoder.layer.1.attention.self.value.lora_A.weight";
        var dir = WritePythonStyleAdapter(editTensors: s => { s[key].Dispose(); s[key] = zeros(4, 31); });
        var e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(e.Message, Does.Contain(key).And.Contain("[4, 31]"));

        Directory.Delete(dir, recursive: true);
        dir = WritePythonStyleAdapter(editTensors: s => { s[key].Dispose(); s.Remove(key); });
        e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(e.Message, Does.Contain(key).And.Contain("missing"));

        Directory.Delete(dir, recursive: true);
        const string extra = "base_model.model.bert.encoder.layer.0.attention.self.key.lora_A.weight";
        dir = WritePythonStyleAdapter(editTensors: s => s[extra] = zeros(4, 32));
        e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(e.Message, Does.Contain(extra).And.Contain("unexpected"));

        Directory.Delete(dir, recursive: true);
        dir = WritePythonStyleAdapter(editTensors: s => { s["base_model.model.classifier.weight"].Dispose(); s.Remove("base_model.model.classifier.weight"); });
        e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(e.Message, Does.Contain("base_model.model.classifier.weight"));
    }

    [Test]
    public void MissingOrMalformedConfigIsAnError()
    {
        var missingDir = Path.Combine(work, "nothing-here");
        Assert.Throws<DirectoryNotFoundException>(() => ml.Model.ImportPeftAdapter(missingDir, ImportOptions()));

        var dir = WritePythonStyleAdapter();
        File.Delete(Path.Combine(dir, "adapter_config.json"));
        var missing = Assert.Throws<FileNotFoundException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(missing.Message, Does.Contain("adapter_config.json"));

        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), "{\"peft_type\": \"LORA\", ");
        var malformed = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(malformed.Message, Does.Contain("adapter_config.json").And.Contain("not valid JSON"));

        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), "{\"r\": 8}");
        var untyped = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions()))!;
        Assert.That(untyped.Message, Does.Contain("peft_type"));
    }

    [Test]
    public void ExportedAdapterOnAnotherBaseModelNamesBothHashes()
    {
        var dir = Export(trained);
        var other = TinyBert.WriteDirectory(seed: 8);
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(dir, ImportOptions(other)))!;
            var recorded = Config(dir)["microsoft_ml_peft"]!["base_model"]!["sha256"]!.GetValue<string>();
            var given = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(other, "model.safetensors")))).ToLowerInvariant();
            Assert.That(e.Message, Does.Contain(recorded).And.Contain(given).And.Contain(Path.GetFileName(other)));
        }
        finally
        {
            Directory.Delete(other, recursive: true);
        }
    }

    [Test]
    public void TrainingStartsFromAnImportedAdapter()
    {
        var dir = Export(trained);
        var options = TinyTraining.Options(tiny);
        options.InitialAdapterPath = dir;
        options.Method = new LoraOptions { Rank = 2, TargetModules = new[] { "key" } }; // replaced by the adapter's
        options.MaxEpoch = 1;
        options.LearningRate = 1e-30f; // the step leaves the values as they start
        options.HeadDropout = 0;
        using var continued = Train(options);
        Assert.That(continued.AdaptedModules, Is.EqualTo(trained.AdaptedModules), "the adapter's options replace Method");
        var again = Path.Combine(work, "continued");
        ml.Model.ExportPeftAdapter(continued, again);
        var start = Tensors(dir);
        var after = Tensors(again);
        Assert.That(after.Keys, Is.EquivalentTo(start.Keys));
        foreach (var key in start.Keys) Assert.That(after[key], Is.EqualTo(start[key]).Within(1e-6f), key);
    }

    [Test]
    public void TrainingFromAnAdapterWithAnotherClassCountIsRefused()
    {
        var dir = Export(trained);
        var options = TinyTraining.Options(tiny);
        options.InitialAdapterPath = dir;
        options.MaxEpoch = 1;
        var e = Assert.Throws<ArgumentException>(() => Train(options, classes: 3))!;
        Assert.That(e.ParamName, Is.EqualTo("InitialAdapterPath"));
        Assert.That(e.Message, Does.Contain("2 classes").And.Contain("3"));
    }
}
