using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Format;
using NUnit.Framework;
using Onnx;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>One test per defect the loader fuzzing found: each damaged input is now refused with a documented exception naming what is wrong.</summary>
[TestFixture]
public class FuzzRegressionTests
{
    private static readonly string Asset = Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "format-v2", "tiny-classifier.zip");
    private string work = null!;

    [OneTimeSetUp]
    public void MakeDirectory() => work = Directory.CreateTempSubdirectory("peft-fuzz-regression-").FullName;

    [OneTimeTearDown]
    public void RemoveDirectory() => Directory.Delete(work, recursive: true);

    private static ModelZip AssetZip() => ModelZip.Read(File.ReadAllBytes(Asset));

    private static string Entry(ModelZip zip, string name) => zip.PeftEntries().Single(e => e.EndsWith("/" + name, StringComparison.Ordinal));

    private string Write(ModelZip zip)
    {
        var path = Path.Combine(work, $"{Guid.NewGuid():N}.zip");
        File.WriteAllBytes(path, zip.Write());
        return path;
    }

    private static Exception LoadError(string path)
    {
        var e = Assert.Catch(() => LoaderFuzzTests.Dispose(new MLContext(1).Model.LoadPeft(path, new PeftLoadOptions(), out _)))!;
        TestContext.Out.WriteLine($"{e.GetType().Name}: {e.Message}");
        return e;
    }

    private static byte[] EditMetadata(byte[] bytes, Action<JsonObject> edit) => SafeLoadingTests.EditMetadata(bytes, edit);

    private static byte[] EditSafetensors(byte[] bytes, Action<Dictionary<string, Tensor>> edit) => SafeLoadingTests.EditAdapter(bytes, edit);

    [Test]
    public void TruncatedTransformerHeaderIsInvalidDataNotAnMlNetWrapper()
    {
        // Was: InvalidOperationException "Error during class instantiation" around a TargetInvocationException around an EndOfStreamException.
        var zip = AssetZip();
        var key = Entry(zip, ModelEntries.Metadata)[..^ModelEntries.Metadata.Length] + "Model.key";
        zip.SetRaw(key, zip.Entries[zip.IndexOf(key)].Bytes[..200]);
        Assert.That(LoadError(Write(zip)), Is.InstanceOf<InvalidDataException>());
    }

    [Test]
    public void DamagedChainHeaderIsInvalidData()
    {
        // Was: OverflowException from ML.NET's TransformerChain (a negative transformer count) and FormatException from its version checks.
        var zip = AssetZip();
        int index = zip.IndexOf("TransformerChain/Model.key");
        var bytes = zip.Entries[index].Bytes.ToArray();
        for (int i = bytes.Length - 120; i < bytes.Length; i++) bytes[i] = 0xFF;
        zip.SetRaw("TransformerChain/Model.key", bytes);
        var e = LoadError(Write(zip));
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("damaged"));
    }

    [Test]
    public void VocabularyWithoutSeparatorTokenIsInvalidData()
    {
        // Was: KeyNotFoundException "The given key '[SEP]' was not present in the dictionary" from the tokenizer.
        var zip = AssetZip();
        var vocab = Entry(zip, ModelEntries.Vocab);
        var text = Encoding.UTF8.GetString(zip.Payload(vocab)).Replace("[SEP]\n", "", StringComparison.Ordinal);
        zip.SetPayload(vocab, Encoding.UTF8.GetBytes(text));
        var e = LoadError(Write(zip));
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("vocabulary").And.Contain("[SEP]"));
    }

    [Test]
    public void EmbeddedBaseModelWithNaNIsRefusedNamingTheTensor()
    {
        // Was: loaded, then every score NaN.
        var zip = AssetZip();
        var entry = Entry(zip, ModelEntries.BaseModel);
        zip.SetPayload(entry, EditSafetensors(zip.Payload(entry), s => s["encoder.layer.1.output.dense.weight"][0, 0] = float.NaN));
        var e = LoadError(Write(zip));
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("encoder.layer.1.output.dense.weight").And.Contain("not finite"));
    }

    [Test]
    public void AdapterWhoseFiniteValuesOverflowIsRefusedWhenScoringInsteadOfGivingNaN()
    {
        var zip = AssetZip();
        var entry = Entry(zip, ModelEntries.Adapter);
        zip.SetPayload(entry, EditSafetensors(zip.Payload(entry), s => s["base_model.model.classifier.weight"].fill_(3e38f)));
        var ml = new MLContext(1);
        var model = ml.Model.LoadPeft(Write(zip), new PeftLoadOptions(), out _);
        try
        {
            var rows = ml.Data.LoadFromEnumerable(new[] { new SentenceRow { Sentence = "the movie was good", Label = "positive" } });
            var e = Assert.Catch(() => ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(rows), reuseRowObject: false).ToList())!;
            while (e is InvalidOperationException { InnerException: { } inner }) e = inner;
            Assert.That(e, Is.InstanceOf<InvalidDataException>());
            Assert.That(e.Message, Does.Contain("not a finite number"));
            using var engine = ml.Model.CreatePredictionEngine<SentenceRow, SentencePrediction>(model);
            Assert.Throws<InvalidDataException>(() => engine.Predict(new SentenceRow { Sentence = "awful" }));
        }
        finally
        {
            LoaderFuzzTests.Dispose(model);
        }
    }

    [TestCase("base_model")]
    [TestCase("method")]
    [TestCase("adapted_modules")]
    [TestCase("Name")]
    public void NullInTheMetadataIsInvalidData(string field)
    {
        // Was: NullReferenceException in the metadata's or the base-model reference's validation.
        var zip = AssetZip();
        var entry = Entry(zip, ModelEntries.Metadata);
        zip.SetPayload(entry, EditMetadata(zip.Payload(entry), json =>
        {
            if (field == "Name") json["base_model"]!["Name"] = null;
            else json[field] = null;
        }));
        Assert.That(LoadError(Write(zip)), Is.InstanceOf<InvalidDataException>());
    }

    [Test]
    public void EmptySecondTextColumnInTheMetadataIsRefusedWhenLoading()
    {
        // Was: loaded, then ArgumentException "Sentence2ColumnName is empty" at the first Transform.
        var zip = AssetZip();
        var entry = Entry(zip, ModelEntries.Metadata);
        zip.SetPayload(entry, EditMetadata(zip.Payload(entry), json => json["task_settings"]!["sentence2_column"] = ""));
        var e = LoadError(Write(zip));
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("second text column"));
    }

    [Test]
    public void AdapterWhoseRecordedSequenceLengthExceedsTheBaseModelIsInvalidData()
    {
        // Was: ArgumentOutOfRangeException naming the MaxSequenceLength option, which the caller had not set.
        var tiny = TinyBert.WriteDirectory(seed: 7);
        try
        {
            var ml = new MLContext(1);
            var options = TinyTraining.Options(tiny);
            options.MaxEpoch = 1;
            var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 1));
            var chain = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
            var directory = Path.Combine(work, "adapter-long");
            ml.Model.ExportPeftAdapter(chain, directory);
            LoaderFuzzTests.Dispose(chain);
            var configPath = Path.Combine(directory, HuggingFacePeftFormat.ConfigFileName);
            var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
            config[HuggingFacePeftFormat.ExtraKey]!["max_sequence_length"] = 4_096;
            File.WriteAllText(configPath, config.ToJsonString());
            var e = Assert.Throws<InvalidDataException>(() => ml.Model.ImportPeftAdapter(directory, new PeftAdapterImportOptions { BaseModel = BaseModelSource.FromHuggingFace(tiny) }))!;
            Assert.That(e.Message, Does.Contain("max_sequence_length 4096"));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    [Test]
    public void MetadataOfBoundedSizesThatTogetherNeedGigabytesIsRefusedBeforeAllocation()
    {
        // vocab_size and hidden_size within their own bounds, 64 GB of embeddings together, from a file of kilobytes.
        var zip = AssetZip();
        var entry = Entry(zip, ModelEntries.Metadata);
        zip.SetPayload(entry, EditMetadata(zip.Payload(entry), json =>
        {
            json["backbone_config"]!["vocab_size"] = 1_000_000;
            json["backbone_config"]!["hidden_size"] = 16_384;
        }));
        var e = LoadError(Write(zip));
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("needs at least"));
    }

    [TestCase("embeddings.word_embeddings.weight", "has 1 dimensions, not 2")]
    [TestCase("embeddings.position_embeddings.weight", "is a scalar")]
    public void OnnxInitializerOfTheWrongRankIsInvalidData(string name, string message)
    {
        // Was: IndexOutOfRangeException in the BERT importer (found by the fuzzer in CI: an initializer renamed).
        var tiny = TinyBert.WriteDirectory();
        try
        {
            var model = ModelProto.Parser.ParseFrom(TinyOnnx.Bert(tiny));
            var initializer = model.Graph.Initializer.First(i => i.Name.EndsWith(name, StringComparison.Ordinal));
            // One value: a scalar, or a vector of one for the word embeddings (whose rank is checked first).
            initializer.Dims.Clear();
            if (name == "embeddings.word_embeddings.weight") initializer.Dims.Add(1);
            initializer.FloatData.Clear();
            initializer.RawData = Google.Protobuf.ByteString.CopyFrom(new byte[4]);
            var path = Path.Combine(tiny, "model.onnx");
            File.WriteAllBytes(path, model.ToByteArray());
            var e = Assert.Throws<InvalidDataException>(() => BaseModelSource.FromOnnx(path).Load())!;
            Assert.That(e.Message, Does.Contain(message));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    [Test]
    public void OnnxNodeWithoutOutputIsInvalidData()
    {
        // Was: ArgumentOutOfRangeException ('index') in the BERT importer.
        var tiny = TinyBert.WriteDirectory();
        try
        {
            var model = ModelProto.Parser.ParseFrom(TinyOnnx.Bert(tiny));
            model.Graph.Node.First(n => n.OpType == "MatMul").Output.Clear();
            var path = Path.Combine(tiny, "model.onnx");
            File.WriteAllBytes(path, model.ToByteArray());
            var e = Assert.Throws<InvalidDataException>(() => BaseModelSource.FromOnnx(path).Load())!;
            Assert.That(e.Message, Does.Contain("has no output"));
        }
        finally
        {
            Directory.Delete(tiny, recursive: true);
        }
    }

    [Test]
    public void OnnxResNetWhoseConvolutionReadsItsInputTwiceIsInvalidData()
    {
        // Was: InvalidOperationException "Sequence contains no matching element" (a node listed twice as a reader).
        var model = ModelProto.Parser.ParseFrom(TinyOnnx.ResNet());
        var conv = model.Graph.Node.First(n => n.OpType == "Conv" && n.Input[1] == "layer2.0.conv1.weight");
        conv.Input.Add(conv.Input[0]);
        var path = Path.Combine(work, "resnet.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var e = Assert.Throws<InvalidDataException>(() => ImageBaseModelSource.FromOnnx(path).Load())!;
        Assert.That(e.Message, Does.Contain("not a ResNet this library can import"));
    }

    [Test]
    public void OnnxResNetWithMoreThanTwoConvolutionsOnOneTensorIsInvalidData()
    {
        // Was: InvalidOperationException "Sequence contains more than one matching element".
        var model = ModelProto.Parser.ParseFrom(TinyOnnx.ResNet());
        var conv = model.Graph.Node.First(n => n.OpType == "Conv" && n.Input[1] == "layer2.0.conv1.weight");
        var copy = conv.Clone();
        copy.Output[0] = "stray";
        model.Graph.Node.Add(copy);
        var other = copy.Clone();
        other.Output[0] = "stray2";
        model.Graph.Node.Add(other);
        var path = Path.Combine(work, "resnet3.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var e = Assert.Throws<InvalidDataException>(() => ImageBaseModelSource.FromOnnx(path).Load())!;
        Assert.That(e.Message, Does.Contain("convolutions read"));
    }

    [TestCase("not UTF-8")]
    [TestCase("null class names")]
    public void DamagedAdapterConfigIsInvalidData(string damage)
    {
        // Was: InvalidOperationException "Cannot transcode invalid UTF-8 JSON text" and NullReferenceException in the block's validation.
        var directory = Path.Combine(work, "adapter-" + damage.Replace(' ', '-'));
        Directory.CreateDirectory(directory);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "SEQ_CLS",
            [HuggingFacePeftFormat.ExtraKey] = new JsonObject { ["class_names"] = null },
        };
        var bytes = Encoding.UTF8.GetBytes(config.ToJsonString());
        if (damage == "not UTF-8") bytes = Encoding.UTF8.GetBytes("{\"peft_type\": \"LO\u00ffRA\"}").Select(b => b == 0xC3 ? (byte)0xFF : b).ToArray();
        File.WriteAllBytes(Path.Combine(directory, HuggingFacePeftFormat.ConfigFileName), bytes);
        File.WriteAllBytes(Path.Combine(directory, HuggingFacePeftFormat.WeightsFileName), new byte[16]);
        var e = Assert.Throws<InvalidDataException>(() => new MLContext(1).Model.ImportPeftAdapter(directory))!;
        Assert.That(e.Message, Does.Contain(damage == "not UTF-8" ? "UTF-8" : "null"));
    }
}
