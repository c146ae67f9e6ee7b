using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.Recommendation;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>mlnet-peft export-onnx</c>: a saved model to an ONNX file, and its errors (base model gone, a model it cannot export).</summary>
[TestFixture]
public class OnnxExportCliTests
{
    private string work = "";
    private string tinyBert = "";

    [SetUp]
    public void CreateFolders()
    {
        work = Path.Combine(Path.GetTempPath(), "peft-onnx-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        tinyBert = TinyBert.WriteDirectory();
    }

    [TearDown]
    public void DeleteFolders()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        if (Directory.Exists(tinyBert)) Directory.Delete(tinyBert, recursive: true);
    }

    [Test]
    public void ExportsASavedModelAndNamesTheMissingBaseModel()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 1));
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        options.Method = new LoraOptions { Rank = 4, Alpha = 8 };
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        var zip = Path.Combine(work, "model.zip");
        ml.Model.Save(model, data.Schema, zip);
        foreach (var disposable in model.OfType<IDisposable>()) disposable.Dispose();

        var onnx = Path.Combine(work, "out", "model.onnx");
        var run = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", onnx);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("model.onnx"));
        using (var session = new InferenceSession(onnx))
        {
            Assert.That(session.OutputMetadata.Keys, Does.Contain("probabilities"));
            Assert.That(session.ModelMetadata.CustomMetadataMap["peft_method"], Is.EqualTo("LORA"));
            Assert.That(session.ModelMetadata.CustomMetadataMap[PeftOnnxExport.QuantizationMetadataKey], Is.EqualTo("none"));
        }

        // --quantize int8: the encoder's Linear layers as int8 products; a value it does not know is a usage error.
        var int8 = Path.Combine(work, "out", "model-int8.onnx");
        var quantized = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", int8, "--quantize", "int8");
        Assert.That(quantized.ExitCode, Is.EqualTo(0), quantized.ToString());
        Assert.That(quantized.StdOut, Does.Contain("int8"));
        using (var session = new InferenceSession(int8))
            Assert.That(session.ModelMetadata.CustomMetadataMap[PeftOnnxExport.QuantizationMetadataKey], Is.EqualTo("dynamic-int8"));
        Assert.That(Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(int8)).Graph.Node.Count(n => n.OpType == "MatMulInteger"), Is.GreaterThan(0));
        var unknown = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", Path.Combine(work, "int4.onnx"), "--quantize", "int4");
        Assert.That(unknown.ExitCode, Is.EqualTo(2), unknown.ToString());
        Assert.That(unknown.StdErr, Does.Contain("int4"), unknown.ToString());

        // The base model moved: the loader's message names the model it expects, and --base-model finds it again.
        var moved = tinyBert + "-moved";
        Directory.Move(tinyBert, moved);
        try
        {
            var missing = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", Path.Combine(work, "again.onnx"));
            Assert.That(missing.ExitCode, Is.EqualTo(1), missing.ToString());
            Assert.That(missing.StdErr, Does.Contain($"the base model {Path.GetFileName(tinyBert)}").And.Contain("is not at its stored location"), missing.ToString());
            Assert.That(File.Exists(Path.Combine(work, "again.onnx")), Is.False, "nothing is written on failure");
            var found = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", Path.Combine(work, "again.onnx"), "--base-model", moved);
            Assert.That(found.ExitCode, Is.EqualTo(0), found.ToString());
        }
        finally
        {
            Directory.Move(moved, tinyBert);
        }

        var noModel = CliProcess.Run(work, "export-onnx", "--model", Path.Combine(work, "nothing.zip"), "--output", onnx);
        Assert.That(noModel.ExitCode, Is.EqualTo(1), noModel.ToString());
        Assert.That(noModel.StdErr, Does.Contain("nothing.zip"));
    }

    [Test]
    public void ModelWithoutOnnxExportIsAClearDataError()
    {
        var ml = new MLContext(1);
        var rows = Enumerable.Range(0, 60).Select(i => new RatingRow { User = $"u{i % 7}", Item = $"i{i % 5}", Label = 1 + (i * 7 % 5) }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var keys = ml.Transforms.Conversion.MapValueToKey("User").Append(ml.Transforms.Conversion.MapValueToKey("Item")).Fit(data);
        var options = MatrixFactorizationTests.Options();
        options.NumberOfIterations = 2;
        using var model = ml.Regression.Trainers.PeftMatrixFactorization(options).Fit(keys.Transform(data));
        var e = Assert.Throws<NotSupportedException>(() => ml.Model.ExportPeftToOnnx(model, new MemoryStream()));
        Assert.That(e!.Message, Does.Contain(nameof(PeftMatrixFactorizationTransformer)));

        var zip = Path.Combine(work, "mf.zip");
        ml.Model.Save(keys.Append(model), data.Schema, zip);
        var run = CliProcess.Run(work, "export-onnx", "--model", zip, "--output", Path.Combine(work, "mf.onnx"));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("cannot be exported to ONNX").And.Contain(nameof(PeftMatrixFactorizationTransformer)), run.ToString());
        Assert.That(File.Exists(Path.Combine(work, "mf.onnx")), Is.False);
    }
}
