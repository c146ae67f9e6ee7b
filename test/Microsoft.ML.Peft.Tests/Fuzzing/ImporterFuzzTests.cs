using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods.Lora;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// Importer fuzzing: a Hugging Face PEFT adapter directory (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c>),
/// base models as Hugging Face directories (<c>config.json</c>, <c>model.safetensors</c>), torchvision safetensors and ONNX
/// graphs (BERT and ResNet), each mutated for a bounded time with a fixed seed. An import either succeeds (and the model
/// then runs without crashing) or is refused with a documented exception (<see cref="FuzzRun.IsDocumented"/>).
/// </summary>
[TestFixture]
[NonParallelizable]
public class ImporterFuzzTests
{
    private string work = null!;
    private string tinyBert = null!;

    public sealed class ScoreOnly
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    [OneTimeSetUp]
    public void Prepare()
    {
        work = Directory.CreateTempSubdirectory("peft-import-fuzz-").FullName;
        tinyBert = TinyBert.WriteDirectory(seed: 7);
    }

    [OneTimeTearDown]
    public void CleanUp()
    {
        Directory.Delete(work, recursive: true);
        Directory.Delete(tinyBert, recursive: true);
    }

    /// <summary>Writes <paramref name="files"/> into a fresh directory (a null value: the file is absent; a name ending in '/' a directory).</summary>
    private static string WriteCase(string parent, IReadOnlyDictionary<string, byte[]?> files)
    {
        var directory = Path.Combine(parent, "case");
        if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        Directory.CreateDirectory(directory);
        foreach (var (name, bytes) in files)
        {
            if (name.EndsWith('/')) Directory.CreateDirectory(Path.Combine(directory, name));
            else if (bytes is not null) File.WriteAllBytes(Path.Combine(directory, name), bytes);
        }
        return directory;
    }

    /// <summary>
    /// Mutates one of the files: JSON files with JSON mutations, safetensors with header-aware ones, anything with byte
    /// mutations; or removes a file, replaces it by a directory or an empty file.
    /// </summary>
    private static string MutateFiles(Random random, Dictionary<string, byte[]?> files)
    {
        var names = files.Keys.ToList();
        var name = names[random.Next(names.Count)];
        var bytes = files[name]!;
        int kind = random.Next(100);
        if (kind < 6)
        {
            files[name] = null;
            return $"{name} removed";
        }
        if (kind < 9)
        {
            files[name] = null;
            files[name + "/"] = null;
            return $"{name} a directory";
        }
        if (kind < 12)
        {
            files[name] = Array.Empty<byte>();
            return $"{name} empty";
        }
        if (kind < 30)
        {
            var (how, changed) = Mutations.AnyBytes(random, bytes);
            files[name] = changed;
            return $"{name} {how}";
        }
        int count = random.Next(4) == 0 ? random.Next(2, 4) : 1;
        var done = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var (how, changed) = name.EndsWith(".json", StringComparison.Ordinal) ? Mutations.Json(random, files[name]!) : Mutations.Safetensors(random, files[name]!);
            files[name] = changed;
            int quote = how.IndexOf('\'');
            done.Add(quote < 0 ? how : how[..quote].TrimEnd());
        }
        return $"{name} {string.Join(" + ", done)}";
    }

    [Test]
    public void HuggingFacePeftAdapterDirectory()
    {
        var ml = new MLContext(1);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        options.Method = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = new[] { "query", "value" } };
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 1));
        var chain = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        var exported = Path.Combine(work, "adapter");
        ml.Model.ExportPeftAdapter(chain, exported);
        LoaderFuzzTests.Dispose(chain);
        var original = new Dictionary<string, byte[]?>
        {
            [HuggingFacePeftFormat.ConfigFileName] = File.ReadAllBytes(Path.Combine(exported, HuggingFacePeftFormat.ConfigFileName)),
            [HuggingFacePeftFormat.WeightsFileName] = File.ReadAllBytes(Path.Combine(exported, HuggingFacePeftFormat.WeightsFileName)),
        };
        // PEFT's own files have no block of this library's: the importer then reads PEFT's fields alone.
        var config = JsonNode.Parse(original[HuggingFacePeftFormat.ConfigFileName])!.AsObject();
        config.Remove(HuggingFacePeftFormat.ExtraKey);
        var peftOnlyConfig = Encoding.UTF8.GetBytes(config.ToJsonString());

        var importOptions = new PeftAdapterImportOptions { BaseModel = BaseModelSource.FromHuggingFace(tinyBert), Sentence1ColumnName = "Sentence", CheckBaseModelName = false };
        string? Import(string directory) => LoaderFuzzTests.Score<SentenceRow, ScoreOnly>(new MLContext(1).Model.ImportPeftAdapter(directory, importOptions),
            new[] { "the movie was good", "", "awful plot" }.Select(s => new SentenceRow { Sentence = s }), s => s.Score);
        Assert.That(Import(WriteCase(work, original)), Is.Null, "the unmutated adapter imports and scores");

        var run = new FuzzRun("Hugging Face PEFT adapter directory", seed: 21, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        for (int index = 0; run.More; index++)
        {
            var random = run.CaseRandom(index);
            var files = new Dictionary<string, byte[]?>(original);
            bool peftOnly = random.Next(4) == 0;
            if (peftOnly) files[HuggingFacePeftFormat.ConfigFileName] = peftOnlyConfig;
            var mutation = MutateFiles(random, files) + (peftOnly ? " (PEFT's fields only)" : "");
            var directory = WriteCase(work, files);
            run.Case(index, mutation, () => Import(directory));
        }
        run.Finish();
    }

    /// <summary>Builds the backbone of a loaded base model and runs it on a small batch: null, or what is wrong.</summary>
    private static string? RunBert(LoadedBaseModel loaded)
    {
        var backbone = loaded.CreateBackbone();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var ids = randint(0, loaded.Config.VocabSize, new long[] { 2, 5 }, dtype: ScalarType.Int64);
            var output = ((ITextBackbone)backbone).Forward(ids, ones(2, 5, ScalarType.Int64), zeros(2, 5, ScalarType.Int64));
            // Finite but absurd weights can overflow; scoring refuses such outputs (FiniteOutputs), so only crashes count here.
            return output.shape[0] == 2 ? null : $"output of shape [{string.Join(", ", output.shape)}]";
        }
        finally
        {
            backbone.Module.Dispose();
        }
    }

    [Test]
    public void HuggingFaceBaseModelDirectory()
    {
        var original = new Dictionary<string, byte[]?>
        {
            ["config.json"] = File.ReadAllBytes(Path.Combine(tinyBert, "config.json")),
            ["model.safetensors"] = File.ReadAllBytes(Path.Combine(tinyBert, "model.safetensors")),
        };
        var vocab = File.ReadAllBytes(Path.Combine(tinyBert, "vocab.txt"));
        var run = new FuzzRun("Hugging Face base model directory (config.json, model.safetensors)", seed: 22, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        for (int index = 0; run.More; index++)
        {
            var random = run.CaseRandom(index);
            var files = new Dictionary<string, byte[]?>(original);
            var mutation = MutateFiles(random, files);
            files["vocab.txt"] = vocab;
            var directory = WriteCase(work, files);
            run.Case(index, mutation, () => RunBert(BaseModelSource.FromHuggingFace(directory).Load()));
        }
        run.Finish();
    }

    [Test]
    public void TorchvisionResNetSafetensors()
    {
        var original = new Dictionary<string, byte[]?> { ["resnet.safetensors"] = File.ReadAllBytes(LoaderFuzzTests.WriteTinyResNet(work)) };
        var run = new FuzzRun("torchvision ResNet safetensors", seed: 23, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        for (int index = 0; run.More; index++)
        {
            var random = run.CaseRandom(index);
            var files = new Dictionary<string, byte[]?>(original);
            var mutation = MutateFiles(random, files);
            var directory = WriteCase(work, files);
            run.Case(index, mutation, () => RunResNet(ImageBaseModelSource.FromTorchvision(Path.Combine(directory, "resnet.safetensors")).Load()));
        }
        run.Finish();
    }

    private static string? RunResNet(LoadedImageBaseModel loaded)
    {
        var backbone = loaded.CreateBackbone();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var output = backbone.Forward(randn(1, 3, 32, 32));
            return output.shape[0] == 1 ? null : $"output of shape [{string.Join(", ", output.shape)}]";
        }
        finally
        {
            backbone.Module.Dispose();
        }
    }

    [Test]
    public void OnnxBertGraph()
    {
        var onnx = TinyOnnx.Bert(tinyBert);
        var vocab = File.ReadAllBytes(Path.Combine(tinyBert, "vocab.txt"));
        Assert.That(RunBert(BaseModelSource.FromOnnx(WriteOnnx(onnx, vocab)).Load()), Is.Null, "the unmutated graph imports and runs");
        var run = new FuzzRun("ONNX BERT graph", seed: 24, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        for (int index = 0; run.More; index++)
        {
            var random = run.CaseRandom(index);
            var (mutation, bytes) = TinyOnnx.Mutate(random, onnx);
            var path = WriteOnnx(bytes, vocab);
            run.Case(index, mutation, () => RunBert(BaseModelSource.FromOnnx(path).Load()));
        }
        run.Finish();
    }

    [Test]
    public void OnnxResNetGraph()
    {
        var onnx = TinyOnnx.ResNet();
        var path = Path.Combine(work, "resnet.onnx");
        File.WriteAllBytes(path, onnx);
        Assert.That(RunResNet(ImageBaseModelSource.FromOnnx(path).Load()), Is.Null, "the unmutated graph imports and runs");
        var run = new FuzzRun("ONNX ResNet graph", seed: 25, ModelZipFuzzer.Budget, ModelZipFuzzer.MaxCases);
        for (int index = 0; run.More; index++)
        {
            var random = run.CaseRandom(index);
            var (mutation, bytes) = TinyOnnx.Mutate(random, onnx);
            File.WriteAllBytes(path, bytes);
            run.Case(index, mutation, () => RunResNet(ImageBaseModelSource.FromOnnx(path).Load()));
        }
        run.Finish();
    }

    private string WriteOnnx(byte[] onnx, byte[] vocab)
    {
        var directory = Path.Combine(work, "onnx-bert");
        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, "vocab.txt"), vocab);
        var path = Path.Combine(directory, "model.onnx");
        File.WriteAllBytes(path, onnx);
        return path;
    }
}
