using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using NUnit.Framework;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Loading trusts nothing it reads: damaged entries whose hashes were recomputed, lying lengths, future versions, absurd sizes, hostile base paths.</summary>
[TestFixture]
public class SafeLoadingTests
{
    private string tinyBert = null!;
    private string savedModel = null!;
    private readonly MLContext ml = new(1);

    [OneTimeSetUp]
    public void TrainAndSave()
    {
        tinyBert = TinyBert.WriteDirectory();
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        savedModel = Path.Combine(Path.GetTempPath(), $"peft-safe-{Guid.NewGuid():N}.zip");
        ml.Model.Save(model, data.Schema, savedModel);
    }

    [OneTimeTearDown]
    public void CleanUp()
    {
        File.Delete(savedModel);
        Directory.Delete(tinyBert, recursive: true);
    }

    private static Exception LoadError(string path, PeftLoadOptions? options = null)
    {
        var e = Assert.Catch(() => new MLContext(2).Model.LoadPeft(path, options ?? new PeftLoadOptions(), out _))!;
        TestContext.Out.WriteLine($"{e.GetType().Name}: {e.Message}");
        return e;
    }

    /// <summary>A copy of the saved model whose entry was changed and whose hash in the header was recomputed to match.</summary>
    private string Rewrite(string entrySuffix, Func<byte[], byte[]> change, bool recomputeHash = true, Func<byte[], byte[]>? rawChange = null) =>
        RewriteEntry(savedModel, entrySuffix, change, recomputeHash, rawChange);

    /// <summary>A copy of <paramref name="source"/> whose entry was changed and whose hash in the header was recomputed to match.</summary>
    internal static string RewriteEntry(string source, string entrySuffix, Func<byte[], byte[]> change, bool recomputeHash = true, Func<byte[], byte[]>? rawChange = null)
    {
        var copy = TestTemp.Track(Path.Combine(Path.GetTempPath(), $"peft-rewritten-{Guid.NewGuid():N}.zip"));
        File.Copy(source, copy);
        using var zip = ZipFile.Open(copy, ZipArchiveMode.Update);
        var entry = zip.Entries.Single(e => e.FullName.EndsWith(entrySuffix, StringComparison.Ordinal));
        var raw = Read(entry);
        var old = raw[8..];
        var changed = change(old);
        var bytes = BitConverter.GetBytes((long)changed.Length).Concat(changed).ToArray();
        if (rawChange is not null) bytes = rawChange(bytes);
        var name = entry.FullName;
        entry.Delete();
        using (var w = zip.CreateEntry(name).Open()) w.Write(bytes);
        if (recomputeHash)
        {
            var oldHash = Encoding.ASCII.GetBytes(Convert.ToHexString(SHA256.HashData(old)));
            var newHash = Encoding.ASCII.GetBytes(Convert.ToHexString(SHA256.HashData(changed)));
            var holder = zip.Entries.Single(e => IndexOf(Read(e), oldHash) >= 0);
            var content = Read(holder);
            newHash.CopyTo(content, IndexOf(content, oldHash));
            var holderName = holder.FullName;
            holder.Delete();
            using var w = zip.CreateEntry(holderName).Open();
            w.Write(content);
        }
        return copy;
    }

    private static byte[] Read(ZipArchiveEntry entry)
    {
        using var s = entry.Open();
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }

    private static int IndexOf(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle);

    internal static byte[] EditMetadata(byte[] bytes, Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(bytes)!.AsObject();
        edit(json);
        return Encoding.UTF8.GetBytes(json.ToJsonString());
    }

    internal static byte[] EditAdapter(byte[] bytes, Action<Dictionary<string, Tensor>> edit)
    {
        using var scope = NewDisposeScope();
        var state = Safetensors.LoadStateDict(new MemoryStream(bytes), leaveOpen: false, keysToKeep: null);
        edit(state);
        using var output = new MemoryStream();
        Safetensors.SaveStateDict(output, state, leaveOpen: true);
        return output.ToArray();
    }

    [Test]
    public void SavedModelRoundTrips()
    {
        var model = new MLContext(2).Model.Load(savedModel, out _);
        Assert.That(model, Is.Not.Null);
    }

    [Test]
    public void AdapterWithNaNAndARecomputedHashIsRefusedByTheValueCheck()
    {
        var path = Rewrite("Adapter.safetensors", b => EditAdapter(b, s => s[s.Keys.First(k => k.Contains("lora_B"))].fill_(double.NaN)));
        var e = LoadError(path);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("NaN").And.Contain("lora_B"));
    }

    [Test]
    public void AdapterWithAnotherShapeOrNameAndARecomputedHashIsRefusedByTheHeaderCheck()
    {
        var key = "";
        var wrongShape = Rewrite("Adapter.safetensors", b => EditAdapter(b, s =>
        {
            key = s.Keys.First(k => k.Contains("lora_A"));
            s[key] = zeros(3, TinyBert.Config.HiddenSize);
        }));
        var e = LoadError(wrongShape);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("shape").And.Contain(key));

        var renamed = Rewrite("Adapter.safetensors", b => EditAdapter(b, s =>
        {
            var first = s.Keys.First();
            s["base_model.model.bert.evil.weight"] = s[first];
            s.Remove(first);
        }));
        Assert.That(LoadError(renamed).Message, Does.Contain("unexpected adapter tensor 'base_model.model.bert.evil.weight'"));
    }

    [Test]
    public void EntryWhoseLengthClaimsMoreBytesThanItHoldsIsRefused()
    {
        var path = Rewrite("Vocab", b => b, recomputeHash: false, rawChange: raw =>
        {
            BitConverter.GetBytes((long)(raw.Length - 8) + 1_000_000).CopyTo(raw, 0);
            return raw;
        });
        var e = LoadError(path);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("'Vocab' entry claims").And.Contain("holds"));

        var absurd = Rewrite("Vocab", b => b, recomputeHash: false, rawChange: raw =>
        {
            BitConverter.GetBytes(long.MaxValue).CopyTo(raw, 0);
            return raw;
        });
        Assert.That(LoadError(absurd).Message, Does.Contain("at most"));
    }

    [Test]
    public void FormatVersionFromTheFutureAsksForAnUpgrade()
    {
        var copy = TestTemp.Track(Path.Combine(Path.GetTempPath(), $"peft-future-{Guid.NewGuid():N}.zip"));
        File.Copy(savedModel, copy);
        using (var zip = ZipFile.Open(copy, ZipArchiveMode.Update))
        {
            // The transformer's stream: format version, entry count, then the first entry's name.
            var marker = new byte[] { 13 }.Concat(Encoding.ASCII.GetBytes(ModelEntries.Metadata)).ToArray();
            var holder = zip.Entries.Single(e => IndexOf(Read(e), marker) >= 0);
            var content = Read(holder);
            int at = IndexOf(content, marker) - 8;
            Assert.That(BitConverter.ToInt32(content, at), Is.EqualTo(ModelFile.Version));
            BitConverter.GetBytes(ModelFile.Version + 7).CopyTo(content, at);
            var name = holder.FullName;
            holder.Delete();
            using var w = zip.CreateEntry(name).Open();
            w.Write(content);
        }
        var e = LoadError(copy);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain($"format version {ModelFile.Version + 7}").And.Contain("Upgrade"));
    }

    [TestCase("num_hidden_layers", 1_000_000, "num_hidden_layers")]
    [TestCase("vocab_size", -5, "vocab_size")]
    [TestCase("num_labels", 50_000_000, "classes")]
    [TestCase("r", 100_000_000, "Rank")]
    [TestCase("max_sequence_length", 100_000, "MaxSequenceLength")]
    [TestCase("batch_size", 0, "BatchSize")]
    public void MetadataSizesOutOfBoundsAreRefusedBeforeAllocation(string field, long value, string named)
    {
        var path = Rewrite("Metadata.json", b => EditMetadata(b, json =>
        {
            var holder = field switch
            {
                "num_hidden_layers" or "vocab_size" => json["backbone_config"]!.AsObject(),
                "r" => json["method"]!.AsObject(),
                _ => json["task_settings"]!.AsObject(),
            };
            Assert.That(holder.ContainsKey(field), field);
            holder[field] = value;
        }));
        var e = LoadError(path);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain(named));
    }

    [TestCase("device")]
    [TestCase("fifo")]
    [TestCase("directory")]
    [TestCase("missing")]
    public void StoredBasePathThatIsNotTheRecordedRegularFileIsNotRead(string kind)
    {
        string target = kind switch
        {
            "device" => "/dev/zero",
            "directory" => Directory.CreateTempSubdirectory("peft-empty-").FullName,
            "missing" => "/nonexistent/peft/base-model.onnx",
            _ => Path.Combine(Path.GetTempPath(), $"peft-fifo-{Guid.NewGuid():N}"),
        };
        if (kind == "fifo")
        {
            if (OperatingSystem.IsWindows()) Assert.Ignore("no FIFOs on Windows");
            using var mkfifo = System.Diagnostics.Process.Start("mkfifo", target);
            mkfifo.WaitForExit();
            Assert.That(mkfifo.ExitCode, Is.EqualTo(0));
        }
        var path = Rewrite("Metadata.json", b => EditMetadata(b, json =>
        {
            var reference = json["base_model"]!.AsObject();
            reference["Path"] = target;
            if (kind is "device" or "fifo") reference["Kind"] = 1; // an ONNX file
        }));
        // Opening a FIFO for reading would block: a load that returns at all did not open it.
        var load = Task.Run(() => LoadError(path));
        Assert.That(load.Wait(TimeSpan.FromSeconds(60)), Is.True, "loading blocked on the stored path");
        var e = load.Result;
        Assert.That(e, Is.InstanceOf<InvalidDataException>().Or.InstanceOf<FileNotFoundException>());
        Assert.That(e.Message, Does.Contain(kind == "missing" ? "not at its stored location" : target));
        if (kind != "missing") Assert.That(e.Message, Does.Not.Contain(Convert.ToHexString(SHA256.HashData(Array.Empty<byte>())).ToLowerInvariant()));
        if (kind == "directory") Directory.Delete(target);
        if (kind == "fifo") File.Delete(target);
    }

    [Test]
    public void HuggingFaceConfigOfTheDirectoryFoundIsComparedWithTheSavedOne()
    {
        var moved = Directory.CreateTempSubdirectory("peft-moved-").FullName;
        foreach (var file in Directory.GetFiles(tinyBert)) File.Copy(file, Path.Combine(moved, Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(moved, "config.json")))!.AsObject();
        config["hidden_act"] = "relu";
        File.WriteAllText(Path.Combine(moved, "config.json"), config.ToJsonString());
        var e = LoadError(savedModel, new PeftLoadOptions { BaseModelPath = moved });
        Directory.Delete(moved, recursive: true);
        Assert.That(e, Is.InstanceOf<InvalidDataException>());
        Assert.That(e.Message, Does.Contain("configuration").And.Contain("relu"));
    }

    [Test]
    public void AskingForCudaWhereThereIsNoneLoadsOnTheCpuAndSaysSo()
    {
        if (TorchSharp.torch.cuda.is_available()) Assert.Ignore("CUDA is available here");
        var context = new MLContext(3);
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var model = context.Model.LoadPeft(savedModel, new PeftLoadOptions { Device = "cuda" }, out _);
        var scored = model.Transform(context.Data.LoadFromEnumerable(TinyTraining.Rows(4, 9))).GetColumn<float[]>("Score").ToList();
        Assert.That(scored, Has.Count.EqualTo(4));
        lock (messages) Assert.That(messages, Has.Some.Contains("CUDA is not available").And.Some.Contains("CPU"));
    }
}
