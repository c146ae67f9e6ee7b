using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Inputs;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The TextEncoder's ids against BERT's reference tokenization, as stated independently by Reference/bert_tokenize.py:
/// on a fixed set of real SST-2 sentences and hand-written cases, for the uncased all-MiniLM-L6-v2 vocabulary and for
/// the same vocabulary cased (lowerCase false). The script's ids are committed (Assets/bert-tokenization/expected-ids.jsonl)
/// and always compared; the script is also run live when python3 is found.
/// </summary>
[TestFixture]
public class BertTokenizationTests
{
    /// <summary>Set to 1 to rewrite the committed ids from the script (python3 needed).</summary>
    private const string RegenerateVariable = "PEFT_REGENERATE_TOKENIZATION_ASSET";

    private static string ReferenceScript => Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Reference", "bert_tokenize.py");

    private static string ExpectedIdsAsset => Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "bert-tokenization", "expected-ids.jsonl");

    private static string TestSentences => Path.Combine(TestData.SharedData, "sst2", "test-sentences.tsv");

    private static readonly Lazy<byte[]> MiniLMVocab = new(() => BaseModelSource.MiniLM().ReadFiles().Vocab);

    /// <summary>Hand-written cases: accents, SST-2's backtick quotes, CJK, control characters, long words, empty text, ...</summary>
    private static readonly string[] HandWritten =
    {
        "amélie", "amelie", "Amélie Poulain", "``great''", "` truth '", "crème brûlée", "Crème Brûlée ÀÉÎÕÜ",
        "naïve café — “quoted” ‘single’ …", "e\u0301 cafe\u0301 a\u0301\u0316",
        "日本語のテキスト 中文", "中文English混合", "\uF900\uFA0E 한국어 ㄱ",
        "a\tb\nc\rd\u0000e\uFFFDf\u0007g\u200Bh\u00ADi", "x\u2028y\u2029z\u00A0w\u3000v\u2003u\u0085t",
        new string('x', 101), new string('x', 100), new string('é', 101) + " " + new string('é', 100),
        "", "   ", "\t\n",
        "$5 + 3 = 8 < 9 > 7 ^ | ~ @ # % & * _ \\ / { } [ ]", "[CLS] [SEP] [UNK] [PAD] hello",
        "ΟΔΟΣ. Σ ΑΣ's ΑΣΑ ὈΔΥΣΣΕΎΣ", "İstanbul Straße ǅungla", "ﬁne ﬂow ½ ² ™", "x\U0001D16D\U0001D165y",
        "😀 emoji 😀😀 🇫🇷", "It's A GREAT Film, isn't it?! -LRB- writer\\/director -RRB-",
        "Ünïcödé ÇA VA élan Élan", "unaffable antidisestablishmentarianism",
    };

    [Test]
    public void CommittedIdsMatchTheTokenizer()
    {
        var expected = ReadAsset();
        Assert.That(expected, Has.Count.GreaterThan(300));
        var uncased = new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512);
        var cased = new TextEncoder(MiniLMVocab.Value, lowerCase: false, maxLength: 512);
        AssertSameIds(expected.Select(e => e.Text).ToList(), expected.Select(e => e.Uncased).ToList(), uncased, "uncased");
        AssertSameIds(expected.Select(e => e.Text).ToList(), expected.Select(e => e.Cased).ToList(), cased, "cased");
    }

    [Test]
    public void CommittedIdsCoverTheSentenceSet()
    {
        Assert.That(ReadAsset().Select(e => e.Text).ToList(), Is.EqualTo(ReferenceTexts()),
            $"The committed ids are for another sentence set; regenerate them ({RegenerateVariable}=1).");
    }

    [Test]
    public void LivePythonReferenceMatchesTheTokenizerAndTheCommittedIds()
    {
        var python = FindPython();
        if (python is null) Assert.Ignore("python3 not found; the committed ids are still compared by CommittedIdsMatchTheTokenizer.");
        var texts = ReferenceTexts();
        var uncasedIds = RunReference(python, texts, cased: false);
        var casedIds = RunReference(python, texts, cased: true);

        if (Environment.GetEnvironmentVariable(RegenerateVariable) == "1") WriteAsset(texts, uncasedIds, casedIds);

        AssertSameIds(texts, uncasedIds, new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512), "uncased, live reference");
        AssertSameIds(texts, casedIds, new TextEncoder(MiniLMVocab.Value, lowerCase: false, maxLength: 512), "cased, live reference");
        var committed = ReadAsset();
        Assert.That(committed.Select(e => e.Uncased).ToList(), Is.EqualTo(uncasedIds), "The committed uncased ids are not the script's.");
        Assert.That(committed.Select(e => e.Cased).ToList(), Is.EqualTo(casedIds), "The committed cased ids are not the script's.");
    }

    [Test]
    public void AccentsAreStrippedWhenUncased()
    {
        var encoder = new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512);
        var accented = encoder.Tokens("amélie");
        Assert.That(accented, Is.EqualTo(encoder.Tokens("amelie")));
        Assert.That(accented, Does.Not.Contain(VocabId("[UNK]")));
        Assert.That(encoder.Tokens("Crème BRÛLÉE"), Is.EqualTo(encoder.Tokens("creme brulee")));
    }

    [Test]
    public void AccentsAndCaseAreKeptWhenCased()
    {
        var encoder = new TextEncoder(MiniLMVocab.Value, lowerCase: false, maxLength: 512);
        Assert.That(encoder.Tokens("amélie"), Is.Not.EqualTo(encoder.Tokens("amelie")));
        Assert.That(encoder.Tokens("The"), Is.Not.EqualTo(encoder.Tokens("the")));
    }

    [Test]
    public void BacktickQuotesAreTokens()
    {
        var encoder = new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512);
        int backtick = VocabId("`"), quote = VocabId("'");
        Assert.That(encoder.Tokens("``great''"), Is.EqualTo(new[] { backtick, backtick, VocabId("great"), quote, quote }));
    }

    [Test]
    public void WordsOverOneHundredCharactersAreUnknown()
    {
        var encoder = new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512);
        Assert.That(encoder.Tokens(new string('a', 101)), Is.EqualTo(new[] { VocabId("[UNK]") }));
        Assert.That(encoder.Tokens(new string('a', 100)), Has.Count.GreaterThan(1));
        // Codepoints, not UTF-16 units: 60 emoji are 120 units but not over the limit (each is [UNK] by WordPiece).
        Assert.That(encoder.Tokens(string.Concat(Enumerable.Repeat("😀", 60))), Is.EqualTo(new[] { VocabId("[UNK]") }));
    }

    [Test]
    public void ControlCharactersAndLoneSurrogatesAreDropped()
    {
        var encoder = new TextEncoder(MiniLMVocab.Value, lowerCase: true, maxLength: 512);
        Assert.That(encoder.Tokens("go\u0000od\uD800 fi\u200Blm\uFFFD"), Is.EqualTo(encoder.Tokens("good film")));
        Assert.That(encoder.Tokens(""), Is.Empty);
        Assert.That(encoder.Tokenize(new[] { "" })[0].Ids, Is.EqualTo(new[] { VocabId("[CLS]"), VocabId("[SEP]") }));
    }

    /// <summary>The fixed set: the first 300 sentences of SST-2's test-sentences.tsv, every later one with a non-ASCII
    /// character or a backtick, then the hand-written cases.</summary>
    private static List<string> ReferenceTexts()
    {
        var sentences = File.ReadLines(TestSentences).Skip(1).Where(l => l.Length > 0).Select(l => l.Split('\t')[0]).ToList();
        return sentences.Take(300)
            .Concat(sentences.Skip(300).Where(s => s.Any(c => c > 127 || c == '`')))
            .Concat(HandWritten)
            .ToList();
    }

    private static void AssertSameIds(List<string> texts, List<int[]> expected, TextEncoder encoder, string setting)
    {
        var mismatches = new List<string>();
        for (int i = 0; i < texts.Count; i++)
        {
            var ids = encoder.Tokens(texts[i]);
            if (!ids.SequenceEqual(expected[i]))
            {
                mismatches.Add($"{JsonSerializer.Serialize(texts[i])}: expected [{string.Join(" ", expected[i])}], got [{string.Join(" ", ids)}]");
            }
        }
        Assert.That(mismatches, Is.Empty, $"{mismatches.Count} of {texts.Count} texts differ ({setting}):\n{string.Join("\n", mismatches.Take(10))}");
    }

    private static int VocabId(string token)
    {
        var lines = Encoding.UTF8.GetString(MiniLMVocab.Value).Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        int id = lines.IndexOf(token);
        Assert.That(id, Is.GreaterThanOrEqualTo(0), $"'{token}' is not in the vocabulary.");
        return id;
    }

    private sealed record ExpectedEntry(string Text, int[] Uncased, int[] Cased);

    private static List<ExpectedEntry> ReadAsset() =>
        File.ReadLines(ExpectedIdsAsset)
            .Where(l => l.Length > 0 && !l.StartsWith('#'))
            .Select(l => JsonSerializer.Deserialize<ExpectedEntry>(l, JsonOptions)!)
            .ToList();

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    private static void WriteAsset(List<string> texts, List<int[]> uncased, List<int[]> cased)
    {
        var lines = new List<string>
        {
            "# BERT's reference ids (test/Microsoft.ML.Peft.Tests/Reference/bert_tokenize.py) for the sentence set of BertTokenizationTests:",
            "# the first 300 sentences of ../shared/data/sst2/test-sentences.tsv, every later one with a non-ASCII character or a",
            "# backtick, then the hand-written cases; with the all-MiniLM-L6-v2 vocabulary uncased and cased (no [CLS]/[SEP]).",
            $"# Regenerate: {RegenerateVariable}=1 dotnet test test/Microsoft.ML.Peft.Tests -c Release --filter BertTokenizationTests (python3 needed).",
        };
        lines.AddRange(texts.Select((t, i) => JsonSerializer.Serialize(new ExpectedEntry(t, uncased[i], cased[i]), JsonOptions)));
        Directory.CreateDirectory(Path.GetDirectoryName(ExpectedIdsAsset)!);
        File.WriteAllText(ExpectedIdsAsset, string.Join("\n", lines) + "\n");
    }

    private static List<int[]> RunReference(string python, List<string> texts, bool cased)
    {
        string vocabPath = Path.Combine(Path.GetTempPath(), $"peft-bert-vocab-{Environment.ProcessId}.txt");
        File.WriteAllBytes(vocabPath, MiniLMVocab.Value);
        try
        {
            var start = new ProcessStartInfo(python)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                StandardInputEncoding = new UTF8Encoding(false),
                StandardOutputEncoding = Encoding.UTF8,
                UseShellExecute = false,
            };
            start.ArgumentList.Add(ReferenceScript);
            start.ArgumentList.Add(vocabPath);
            if (cased) start.ArgumentList.Add("--cased");
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            foreach (var text in texts) process.StandardInput.Write(JsonSerializer.Serialize(text) + "\n");
            process.StandardInput.Close();
            process.WaitForExit();
            Assert.That(process.ExitCode, Is.EqualTo(0), stderr.Result);
            var ids = stdout.Result.Split('\n').SkipLast(1)
                .Select(l => l.Length == 0 ? Array.Empty<int>() : l.Split(' ').Select(int.Parse).ToArray())
                .ToList();
            Assert.That(ids, Has.Count.EqualTo(texts.Count), "The reference script printed another number of lines.");
            return ids;
        }
        finally
        {
            File.Delete(vocabPath);
        }
    }

    private static string? FindPython()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            foreach (var name in new[] { "python3", "python3.exe" })
            {
                var candidate = Path.Combine(dir, name);
                if (dir.Length > 0 && File.Exists(candidate)) return candidate;
            }
        }
        return null;
    }
}
