using System.Text.Json;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><c>mlnet-peft ner</c> and <c>predict</c> with a named-entity recognizer, on slices of CoNLL-2003.</summary>
[TestFixture]
[NonParallelizable]
public class NerCliTests
{
    private string workDir = "";

    [SetUp]
    public void CreateWorkDir()
    {
        workDir = Path.Combine(Path.GetTempPath(), "mlnet-peft-ner-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(workDir);
    }

    [TearDown]
    public void DeleteWorkDir()
    {
        if (Directory.Exists(workDir)) Directory.Delete(workDir, recursive: true);
    }

    private static string Conll(string name) => Path.Combine(TestData.SharedData, "conll2003", name);

    /// <summary>Writes the first <paramref name="count"/> sentences of a CoNLL file in the <c>token tag 0</c> layout.</summary>
    private string Slice(string source, int skip, int count, string name)
    {
        var sentences = ConllFile.Read(Conll(source)).Sentences.Skip(skip).Take(count);
        var path = Path.Combine(workDir, name);
        File.WriteAllLines(path, sentences.SelectMany(s => s.Words.Select((w, i) => $"{w} {s.Tags[i]} 0").Append("")));
        return path;
    }

    [Test]
    public void TrainsEvaluatesSavesAndTagsCoNLLAndPlainText()
    {
        var train = Slice("train.txt", 0, 150, "train.txt");
        var test = Slice("valid.txt", 0, 40, "test.txt");
        var model = Path.Combine(workDir, "ner.zip");
        var metrics = Path.Combine(workDir, "ner.json");
        var run = CliProcess.Run(workDir, "ner", "--dataset", train, "--test-dataset", test, "--output", model, "--metrics-json", metrics,
            "--epochs", "1", "--max-length", "64", "--seed", "3");
        TestContext.Out.WriteLine(run.StdOut);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
        Assert.That(run.StdOut, Does.Contain("Epoch 1/1"));
        using (var json = JsonDocument.Parse(File.ReadAllText(metrics)))
        {
            var m = json.RootElement;
            foreach (var key in new[] { "f1", "precision", "recall", "perType", "trainSeconds", "trainableParameters", "modelBytes" })
                Assert.That(m.TryGetProperty(key, out _), Is.True, $"metrics JSON key {key}: {m}");
            Assert.That(m.GetProperty("f1").GetDouble(), Is.InRange(0.0, 1.0));
            Assert.That(m.GetProperty("modelBytes").GetInt64(), Is.EqualTo(new FileInfo(model).Length));
            Assert.That(m.GetProperty("perType").EnumerateObject().Select(p => p.Name), Is.SubsetOf(new[] { "LOC", "MISC", "ORG", "PER" }));
            Assert.That(m.GetProperty("trainableParameters").GetInt64(), Is.LessThan(m.GetProperty("totalParameters").GetInt64() / 10));
        }

        // On a CoNLL file: word, gold tag, predicted tag (conlleval's input), a blank line between sentences.
        var tagged = Path.Combine(workDir, "tagged.txt");
        var predict = CliProcess.Run(workDir, "predict", "--model", model, "--dataset", test, "--output", tagged);
        Assert.That(predict.ExitCode, Is.EqualTo(0), predict.ToString());
        var gold = ConllFile.Read(test).Sentences;
        var lines = File.ReadAllLines(tagged);
        Assert.That(lines.Count(l => l.Length == 0), Is.EqualTo(gold.Count));
        var first = lines.TakeWhile(l => l.Length > 0).Select(l => l.Split(' ')).ToList();
        Assert.That(first.Select(f => f[0]), Is.EqualTo(gold[0].Words));
        Assert.That(first.Select(f => f[1]), Is.EqualTo(gold[0].Tags));
        Assert.That(first.Select(f => f[2]), Is.All.Matches<string>(BioTags.IsBio));

        // On plain text, one sentence a line: word and predicted tag.
        var text = Path.Combine(workDir, "text.txt");
        File.WriteAllLines(text, new[] { "Peter Blackburn flew to Brussels on Monday .", "", "The European Commission said so ." });
        var plain = CliProcess.Run(workDir, "predict", "--model", model, "--dataset", text, "--output", tagged);
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        var words = File.ReadAllLines(tagged).Where(l => l.Length > 0).Select(l => l.Split(' ')).ToList();
        Assert.That(words.Select(w => w[0]), Is.EqualTo("Peter Blackburn flew to Brussels on Monday . The European Commission said so .".Split(' ')));
        Assert.That(words.Select(w => w.Length), Is.All.EqualTo(2));
    }

    [Test]
    public void MalformedLineIsAnErrorWithItsLineNumber()
    {
        var train = Path.Combine(workDir, "bad.txt");
        File.WriteAllLines(train, new[] { "EU B-ORG 0", "rejects O 0", "", "Peter B-PER 0", "Blackburn I-PER", "" });
        var run = CliProcess.Run(workDir, "ner", "--dataset", train, "--test-dataset", train, "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("line 5").And.Contain("bad.txt"));
    }

    [Test]
    public void UnknownTestTagIsAnErrorNamingTagAndLine()
    {
        var train = Path.Combine(workDir, "train.txt");
        File.WriteAllLines(train, new[] { "EU B-ORG 0", "rejects O 0", "", "Peter B-PER 0", "Blackburn I-PER 0", "" });
        var test = Path.Combine(workDir, "test.txt");
        File.WriteAllLines(test, new[] { "Paris B-LOC 0", "is O 0", "" });
        var run = CliProcess.Run(workDir, "ner", "--dataset", train, "--test-dataset", test, "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.StdErr, Does.Contain("'B-LOC'").And.Contain("line 1").And.Contain("--test-dataset"));
        Assert.That(File.Exists(Path.Combine(workDir, "m.zip")), Is.False);
    }

    [Test]
    public void TagColumnIsDetectedInTheFourColumnLayoutOrGiven()
    {
        var train = Path.Combine(workDir, "pos.txt");
        File.WriteAllLines(train, new[] { "-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "", "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", "" });
        var data = ConllFile.Read(train);
        Assert.That(data.TagColumn, Is.EqualTo(3), "the NER tags, not the chunk tags");
        Assert.That(ConllFile.Read(train, tagColumn: 2).Sentences[0].Tags, Is.EqualTo(new[] { "B-NP", "B-VP" }));
        var run = CliProcess.Run(workDir, "ner", "--dataset", train, "--test-dataset", train, "--tag-col", "0", "--output", Path.Combine(workDir, "m.zip"));
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.StdErr, Does.Contain("--tag-col"));
    }
}
