using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>BIO tag sets: validation, constrained Viterbi decoding (checked by hand and by brute force) and repair.</summary>
[TestFixture]
public class BioDecodingTests
{
    private static readonly string[] PerTags = { "O", "B-PER", "I-PER" };

    [Test]
    public void ValidateAcceptsBioSets()
    {
        Assert.DoesNotThrow(() => BioTags.Validate(new[] { "O" }, "the labels"));
        Assert.DoesNotThrow(() => BioTags.Validate(new[] { "B-LOC", "O", "I-LOC", "B-MISC-X" }, "the labels"));
    }

    [TestCase(new[] { "B-PER", "I-PER" }, "no O tag")]
    [TestCase(new[] { "O", "PER" }, "'PER'")]
    [TestCase(new[] { "O", "B-" }, "'B-'")]
    [TestCase(new[] { "O", "E-PER" }, "'E-PER'")]
    [TestCase(new[] { "O", "b-PER" }, "'b-PER'")]
    [TestCase(new[] { "O", "B-PER", "O" }, "'O' appears twice")]
    public void ValidateNamesTheCulprit(string[] tags, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => BioTags.Validate(tags, "the label column 'Tags'"))!;
        Assert.That(e.Message, Does.Contain(expected).And.Contain("the label column 'Tags'"));
    }

    [Test]
    public void NoWordsNoTags()
    {
        Assert.That(BioTags.Decode(ReadOnlySpan<float>.Empty, 0, PerTags), Is.Empty);
    }

    [Test]
    public void ValidArgmaxIsKept()
    {
        // Per-word maxima B-PER, I-PER, O, B-PER: already valid, so Viterbi returns them.
        float[] lp =
        {
            -2.0f, -0.1f, -3.0f,
            -1.5f, -2.0f, -0.3f,
            -0.2f, -1.9f, -2.5f,
            -1.0f, -0.6f, -4.0f,
        };
        Assert.That(BioTags.Decode(lp, 4, PerTags), Is.EqualTo(new[] { 1, 2, 0, 1 }));
    }

    [Test]
    public void OutsideThenInsideIsFixed()
    {
        // Per-word maxima: O (-0.1), I-PER (-0.4): "O I-PER" is invalid. The valid paths:
        //   O O     -0.1 + -1.5 = -1.6
        //   O B     -0.1 + -1.2 = -1.3   <- best
        //   B O     -2.5 + -1.5 = -4.0
        //   B B     -2.5 + -1.2 = -3.7
        //   B I     -2.5 + -0.4 = -2.9
        // (I-PER first, and O I-PER, are not allowed.)
        float[] lp =
        {
            -0.1f, -2.5f, -3.0f,
            -1.5f, -1.2f, -0.4f,
        };
        Assert.That(BioTags.Decode(lp, 2, PerTags), Is.EqualTo(new[] { 0, 1 }));
    }

    [Test]
    public void ViterbiBeatsGreedyRepair()
    {
        // Per-word maxima: O (-0.7), I-PER (-0.1). Repairing that gives "O B-PER", -0.7 + -3.0 = -3.7. The best valid path
        // is "B-PER I-PER", -0.8 + -0.1 = -0.9 (O O: -3.7, O B: -3.7, B O: -3.8, B B: -3.8).
        float[] lp =
        {
            -0.7f, -0.8f, -5.0f,
            -3.0f, -3.0f, -0.1f,
        };
        var greedy = BioTags.Repair(new[] { "O", "I-PER" });
        Assert.That(greedy, Is.EqualTo(new[] { "O", "B-PER" }));
        Assert.That(BioTags.Decode(lp, 2, PerTags), Is.EqualTo(new[] { 1, 2 }));
    }

    [Test]
    public void InsideMustContinueItsOwnType()
    {
        string[] tags = { "O", "B-PER", "I-PER", "B-LOC", "I-LOC" };
        // Maxima B-LOC, I-PER: invalid (another type). Valid candidates: B-LOC I-LOC -0.1 + -1.0 = -1.1 (best),
        // B-PER I-PER -1.5 + -0.1 = -1.6, B-LOC B-PER -0.1 + -2.5 = -2.6.
        float[] lp =
        {
            -2.0f, -1.5f, -9.0f, -0.1f, -9.0f,
            -3.0f, -2.5f, -0.1f, -3.0f, -1.0f,
        };
        Assert.That(BioTags.Decode(lp, 2, tags), Is.EqualTo(new[] { 3, 4 }));
    }

    [Test]
    public void InsideWithoutBeginMayStart()
    {
        // IOB1-style: I-PER has no B-PER, so it may come first and after O; I-LOC has B-LOC and may not.
        string[] tags = { "O", "I-PER", "B-LOC", "I-LOC" };
        float[] lp =
        {
            -3.0f, -0.1f, -3.0f, -3.0f,
            -0.2f, -3.0f, -3.0f, -3.0f,
            -2.0f, -0.1f, -3.0f, -3.0f,
        };
        Assert.That(BioTags.Decode(lp, 3, tags), Is.EqualTo(new[] { 1, 0, 1 }));
        // I-LOC first is not allowed: the maximum -0.1 of I-LOC loses to O -2.0 (B-LOC -2.5).
        Assert.That(BioTags.Decode(new[] { -2.0f, -3.0f, -2.5f, -0.1f }, 1, tags), Is.EqualTo(new[] { 0 }));
    }

    [Test]
    public void MatchesBruteForceOverValidPaths()
    {
        string[] tags = { "O", "B-PER", "I-PER", "B-LOC", "I-LOC" };
        var random = new Random(11);
        for (int trial = 0; trial < 300; trial++)
        {
            int words = random.Next(1, 5);
            var lp = Enumerable.Range(0, words * tags.Length).Select(_ => (float)Math.Log(random.NextDouble() + 1e-6)).ToArray();
            // Every path, kept when valid by the rule itself (I-X only right after B-X or I-X).
            int[]? best = null;
            double bestScore = double.NegativeInfinity;
            int total = (int)Math.Pow(tags.Length, words);
            for (int code = 0; code < total; code++)
            {
                var path = new int[words];
                for (int w = 0, c = code; w < words; w++, c /= tags.Length) path[w] = c % tags.Length;
                bool valid = true;
                for (int w = 0; w < words && valid; w++)
                {
                    var tag = tags[path[w]];
                    if (!tag.StartsWith("I-")) continue;
                    valid = w > 0 && tags[path[w - 1]] != "O" && tags[path[w - 1]][2..] == tag[2..];
                }
                if (!valid) continue;
                double score = Enumerable.Range(0, words).Sum(w => (double)lp[w * tags.Length + path[w]]);
                if (score > bestScore)
                {
                    bestScore = score;
                    best = path;
                }
            }
            Assert.That(BioTags.Decode(lp, words, tags), Is.EqualTo(best), $"trial {trial}");
        }
    }

    [Test]
    public void NegativeInfinityStillGivesAValidPath()
    {
        // Every score -infinity: any valid path will do, but it must be valid (I-PER never first nor after O).
        var lp = Enumerable.Repeat(float.NegativeInfinity, 3 * PerTags.Length).ToArray();
        var path = BioTags.Decode(lp, 3, PerTags);
        Assert.That(BioTags.Repair(path.Select(t => PerTags[t]).ToArray()), Is.EqualTo(path.Select(t => PerTags[t]).ToArray()));
    }

    [Test]
    public void DecodeChecksItsInput()
    {
        var size = Assert.Throws<ArgumentException>(() => BioTags.Decode(new float[5], 2, PerTags))!;
        Assert.That(size.Message, Does.Contain("5 log probabilities").And.Contain("2 words").And.Contain("expected 6"));
        var nan = Assert.Throws<ArgumentException>(() => BioTags.Decode(new[] { 0f, 0f, 0f, 0f, float.NaN, 0f }, 2, PerTags))!;
        Assert.That(nan.Message, Does.Contain("'B-PER'").And.Contain("word 2").And.Contain("NaN"));
        Assert.Throws<ArgumentException>(() => BioTags.Decode(new float[2], 1, new[] { "B-PER", "I-PER" }));
    }

    [Test]
    public void RepairMakesStrayInsidesBegin()
    {
        var tags = new[] { "I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-ORG", "B-PER", "I-PER" };
        var repaired = BioTags.Repair(tags);
        Assert.That(repaired, Is.EqualTo(new[] { "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER" }));
        // Conlleval reads the repaired sequence as the original: the same chunks.
        Assert.That(EntityScoring.Chunks(repaired), Is.EqualTo(EntityScoring.Chunks(tags)));
        Assert.That(BioTags.Repair(Array.Empty<string>()), Is.Empty);
    }
}
