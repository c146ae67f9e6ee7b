using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The CoNLL column reader: both layouts, the real CoNLL-2003 training file, and every error with its line.</summary>
[TestFixture]
public class ConllFileTests
{
    private static ConllData Parse(string text, int? tagColumn = null) => ConllFile.Parse(new StringReader(text), "test.conll", tagColumn);

    private static InvalidDataException Fails(string text, int? tagColumn = null) =>
        Assert.Throws<InvalidDataException>(() => Parse(text, tagColumn))!;

    [Test]
    public void TokenTagZeroLayout()
    {
        var data = Parse("-DOCSTART- O 0\n\nEU B-ORG 0\nrejects O 0\nGerman B-MISC 0\n\nPeter B-PER 0\nBlackburn I-PER 0\n");
        Assert.That((data.TagColumn, data.ColumnCount, data.DocStartLines, data.Sentences.Count), Is.EqualTo((1, 3, 1, 2)));
        Assert.That(data.Sentences[0].Words, Is.EqualTo(new[] { "EU", "rejects", "German" }));
        Assert.That(data.Sentences[0].Tags, Is.EqualTo(new[] { "B-ORG", "O", "B-MISC" }));
        Assert.That(data.Sentences[0].FirstLine, Is.EqualTo(3));
        Assert.That(data.Sentences[1].Words, Is.EqualTo(new[] { "Peter", "Blackburn" }));
        Assert.That(data.Sentences[1].Tags, Is.EqualTo(new[] { "B-PER", "I-PER" }));
        Assert.That(data.Sentences[1].FirstLine, Is.EqualTo(7));
    }

    private const string FourColumns =
        "-DOCSTART- -X- -X- O\n" +
        "\n" +
        "EU NNP B-NP B-ORG\n" +
        "rejects VBZ B-VP O\n" +
        "German JJ B-NP B-MISC\n" +
        "call NN I-NP O\n" +
        "\n" +
        "-DOCSTART- -X- -X- O\n" +
        "\n" +
        "Peter NNP B-NP B-PER\n" +
        "Blackburn NNP I-NP I-PER\n";

    [Test]
    public void TokenPosChunkTagLayoutTakesTheLastBioColumn()
    {
        // Columns 2 (chunks) and 3 (entities) both hold only BIO tags: the entities, the last one, are taken.
        var data = Parse(FourColumns);
        Assert.That((data.TagColumn, data.ColumnCount, data.DocStartLines, data.Sentences.Count), Is.EqualTo((3, 4, 2, 2)));
        Assert.That(data.Sentences[0].Tags, Is.EqualTo(new[] { "B-ORG", "O", "B-MISC", "O" }));
        Assert.That(data.Sentences[1].Words, Is.EqualTo(new[] { "Peter", "Blackburn" }));
        Assert.That(data.Sentences[1].FirstLine, Is.EqualTo(10));

        var chunks = Parse(FourColumns, tagColumn: 2);
        Assert.That(chunks.TagColumn, Is.EqualTo(2));
        Assert.That(chunks.Sentences[0].Tags, Is.EqualTo(new[] { "B-NP", "B-VP", "B-NP", "I-NP" }));
    }

    [Test]
    public void TabsRunsOfSpacesCrLfAndExtraBlankLines()
    {
        var data = Parse("\r\n\r\nEU\tB-ORG\t0\r\nrejects   O  0  \r\n \t \r\n\r\n  Peter B-PER 0\r\nBlackburn I-PER 0");
        Assert.That(data.Sentences.Count, Is.EqualTo(2));
        Assert.That(data.Sentences[0].Words, Is.EqualTo(new[] { "EU", "rejects" }));
        Assert.That(data.Sentences[0].FirstLine, Is.EqualTo(3));
        Assert.That(data.Sentences[1].Words, Is.EqualTo(new[] { "Peter", "Blackburn" }));
        Assert.That(data.Sentences[1].Tags, Is.EqualTo(new[] { "B-PER", "I-PER" }));
        Assert.That(data.Sentences[1].FirstLine, Is.EqualTo(7));
    }

    [Test]
    public void RealConll2003TrainingFile()
    {
        var path = Path.Combine(TestData.SharedData, "conll2003", "train.txt");
        if (!File.Exists(path)) Assert.Ignore($"{path} is not there.");
        var data = ConllFile.Read(path);
        Assert.That((data.Sentences.Count, data.TagColumn, data.ColumnCount, data.DocStartLines), Is.EqualTo((14041, 1, 3, 0)));
        Assert.That(data.Sentences.Sum(s => s.Words.Length), Is.EqualTo(203621));
        var first = data.Sentences[0];
        Assert.That(string.Join(" ", first.Words), Is.EqualTo("EU rejects German call to boycott British lamb ."));
        Assert.That(first.Tags, Is.EqualTo(new[] { "B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O" }));
        Assert.That(first.FirstLine, Is.EqualTo(1));
        Assert.That(data.Sentences[1].Words, Is.EqualTo(new[] { "Peter", "Blackburn" }));
        Assert.That(data.Sentences[1].FirstLine, Is.EqualTo(11));
        var last = data.Sentences[^1];
        Assert.That(last.Words, Is.EqualTo(new[] { "Swansea", "1", "Lincoln", "2" }));
        Assert.That(last.Tags, Is.EqualTo(new[] { "B-ORG", "O", "B-ORG", "O" }));
        Assert.That(last.FirstLine, Is.EqualTo(217658));
    }

    [Test]
    public void ColumnCountChangeNamesTheLine()
    {
        var e = Fails("EU B-ORG 0\nrejects O 0\n\nPeter B-PER\n");
        Assert.That(e.Message, Does.Contain("test.conll").And.Contain("line 4").And.Contain("2 columns").And.Contain("(1) has 3"));
    }

    [Test]
    public void OneColumnNamesTheLine()
    {
        var e = Fails("\n-DOCSTART- O 0\n\nEU\nrejects\n");
        Assert.That(e.Message, Does.Contain("test.conll").And.Contain("line 4").And.Contain("1 column"));
        // After a first line with 2 columns, a 1-column line is a column-count change.
        Assert.That(Fails("EU B-ORG\nrejects\n").Message, Does.Contain("line 2"));
    }

    [Test]
    public void NoBioColumnSaysUseTagCol()
    {
        var e = Fails("EU NNP 0\nrejects VBZ 0\n");
        Assert.That(e.Message, Does.Contain("test.conll").And.Contain("line 1").And.Contain("--tag-col N (0-based)"));
        Assert.That(e.Message, Does.Contain("column 1 has 'NNP' at line 1").And.Contain("column 2 has '0' at line 1"));
        // A BIO-shaped column spoiled deep in the file: the mismatch's line is named.
        var late = Fails("EU B-ORG\nrejects O\n\nPeter PER\n");
        Assert.That(late.Message, Does.Contain("column 1 has 'PER' at line 4"));
    }

    [Test]
    public void TagColumnOutOfRange()
    {
        var zero = Fails("\nEU B-ORG 0\n", tagColumn: 0);
        Assert.That(zero.Message, Does.Contain("test.conll").And.Contain("line 2").And.Contain("tag column 0").And.Contain("1 to 2"));
        Assert.That(Fails("EU B-ORG 0\n", tagColumn: 3).Message, Does.Contain("tag column 3").And.Contain("3 columns"));
        Assert.That(Fails("EU B-ORG 0\n", tagColumn: -1).Message, Does.Contain("tag column -1"));
    }

    [Test]
    public void NonBioValueInTheGivenTagColumn()
    {
        var e = Fails("EU B-ORG 0\n\nrejects O 0\ncall O PER\n", tagColumn: 2);
        Assert.That(e.Message, Does.Contain("test.conll").And.Contain("line 1").And.Contain("'0'").And.Contain("not a BIO tag"));
        var deep = Fails("EU B-ORG B-X\n\nrejects O O\ncall O PER\n", tagColumn: 2);
        Assert.That(deep.Message, Does.Contain("line 4").And.Contain("'PER'"));
        Assert.That(Fails("EU B- 0\n", tagColumn: 1).Message, Does.Contain("'B-'"));
    }

    [Test]
    public void EmptyFiles()
    {
        Assert.That(Fails("").Message, Does.Contain("test.conll").And.Contain("empty"));
        Assert.That(Fails("\n\n-DOCSTART- -X- -X- O\n\n").Message, Does.Contain("no token lines in 4 lines"));
    }

    [Test]
    public void ReadNamesTheMissingFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"missing-{Guid.NewGuid():N}.conll");
        var e = Assert.Throws<FileNotFoundException>(() => ConllFile.Read(path))!;
        Assert.That(e.Message, Does.Contain(path));
    }

    [Test]
    public void ReadUsesThePathInErrors()
    {
        var path = Path.Combine(Path.GetTempPath(), $"bad-{Guid.NewGuid():N}.conll");
        File.WriteAllText(path, "EU B-ORG 0\nrejects O\n");
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ConllFile.Read(path))!;
            Assert.That(e.Message, Does.StartWith(path + ", line 2"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void PlainText()
    {
        var path = Path.Combine(Path.GetTempPath(), $"plain-{Guid.NewGuid():N}.txt");
        File.WriteAllText(path, "EU rejects  German call\n\n   \n  Peter\tBlackburn \r\n");
        try
        {
            var sentences = ConllFile.ReadPlainText(path);
            Assert.That(sentences.Count, Is.EqualTo(2));
            Assert.That(sentences[0], Is.EqualTo(new[] { "EU", "rejects", "German", "call" }));
            Assert.That(sentences[1], Is.EqualTo(new[] { "Peter", "Blackburn" }));
            File.WriteAllText(path, "\n \n");
            Assert.That(Assert.Throws<InvalidDataException>(() => ConllFile.ReadPlainText(path))!.Message, Does.Contain(path).And.Contain("no text"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
