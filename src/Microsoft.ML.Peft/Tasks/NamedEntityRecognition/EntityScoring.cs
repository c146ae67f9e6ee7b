using System.Collections.ObjectModel;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// Entity-level scoring with the semantics of the CoNLL-2000 evaluation script, conlleval.pl (version 2004-01-26).
/// A tag splits at its first hyphen into a prefix and a type (<c>B-PER</c>: <c>B</c>, <c>PER</c>; <c>O</c>: <c>O</c>, no
/// type). Chunks start and end by conlleval's <c>startOfChunk</c>/<c>endOfChunk</c> rules, so an <c>I-X</c> after
/// <c>O</c> or after another type starts an X chunk, and a change of type always ends one. For <c>E-</c> and <c>S-</c>
/// (IOBES) the rules are those of the IOBES-aware Python port of conlleval: <c>E-</c> and <c>S-</c> end a chunk, <c>S-</c>
/// always starts one and <c>B-</c> starts one after them too. conlleval's <c>[</c> and <c>]</c> tags (one-word chunks) and
/// its <c>.</c> tag are kept, so sequences without <c>E-</c> and <c>S-</c> score exactly as conlleval.pl scores them.
/// Scoring follows conlleval's state machine exactly: a predicted chunk is correct when it starts and ends where a gold
/// chunk does, with the same type throughout. Each sentence starts after, and is followed by, an <c>O</c> boundary.
/// </summary>
internal static class EntityScoring
{
    /// <summary>Scores sentences of gold and predicted tags; the two sequences of a sentence must have the same length.</summary>
    public static EntityMetrics Compute(IEnumerable<(IReadOnlyList<string> Gold, IReadOnlyList<string> Predicted)> sentences)
    {
        if (sentences is null) throw new ArgumentNullException(nameof(sentences));
        var scorer = new Scorer();
        int index = 0;
        foreach (var (gold, predicted) in sentences)
        {
            if (gold is null || predicted is null)
                throw new ArgumentException($"Sentence {index} (0-based) has no {(gold is null ? "gold" : "predicted")} tags (null).", nameof(sentences));
            if (gold.Count != predicted.Count)
                throw new ArgumentException(
                    $"Sentence {index} (0-based) has {gold.Count} gold tags but {predicted.Count} predicted tags; both must have one tag per word.",
                    nameof(sentences));
            for (int i = 0; i < gold.Count; i++)
                scorer.Step(Split(gold[i], index, i, "gold"), Split(predicted[i], index, i, "predicted"), boundary: false);
            scorer.Step(Outside, Outside, boundary: true);
            index++;
        }
        return scorer.Finish();
    }

    /// <summary>
    /// The chunks (entities) of one tag sequence as conlleval reads them: type, first word, and the word after the last
    /// (end exclusive), in order. Where conlleval would start a chunk without ending the open one (only with tags outside
    /// O/B/I/E/S, such as <c>.-PER B-LOC</c>), the open one is closed there.
    /// </summary>
    public static IReadOnlyList<(string Type, int Start, int End)> Chunks(IReadOnlyList<string> tags)
    {
        if (tags is null) throw new ArgumentNullException(nameof(tags));
        var chunks = new List<(string Type, int Start, int End)>();
        var previous = Outside;
        string? openType = null;
        int openStart = 0;
        for (int i = 0; i <= tags.Count; i++)
        {
            var current = i < tags.Count ? Split(tags[i], 0, i, "tag") : Outside;
            bool start = StartOfChunk(previous, current);
            if (openType is not null && (start || EndOfChunk(previous, current) || i == tags.Count))
            {
                chunks.Add((openType, openStart, i));
                openType = null;
            }
            if (start && i < tags.Count)
            {
                openType = current.Type;
                openStart = i;
            }
            previous = current;
        }
        return chunks;
    }

    private readonly record struct Tag(string Prefix, string Type, string Text);

    private static readonly Tag Outside = new("O", "", "O");

    private static Tag Split(string tag, int sentence, int word, string what)
    {
        if (tag is null) throw new ArgumentException($"Sentence {sentence} (0-based), word {word}: the {what} tag is null.");
        int hyphen = tag.IndexOf('-', StringComparison.Ordinal);
        return hyphen < 0 ? new Tag(tag, "", tag) : new Tag(tag[..hyphen], tag[(hyphen + 1)..], tag);
    }

    /// <summary>conlleval's endOfChunk: does a chunk end between <paramref name="previous"/> and <paramref name="current"/>?</summary>
    private static bool EndOfChunk(Tag previous, Tag current)
    {
        string p = previous.Prefix, t = current.Prefix;
        if (p == "E" || p == "S") return true;
        if ((p == "B" || p == "I") && (t == "B" || t == "S" || t == "O")) return true;
        if (p != "O" && p != "." && previous.Type != current.Type) return true;
        // conlleval: "[" and "]" chunks are assumed to have length 1.
        return p == "[" || p == "]";
    }

    /// <summary>conlleval's startOfChunk: does a chunk start at <paramref name="current"/>?</summary>
    private static bool StartOfChunk(Tag previous, Tag current)
    {
        string p = previous.Prefix, t = current.Prefix;
        if (t == "B" && (p == "B" || p == "I" || p == "O" || p == "E" || p == "S")) return true;
        if (t == "S") return true;
        if ((p == "E" || p == "S" || p == "O") && (t == "E" || t == "I")) return true;
        if (t != "O" && t != "." && previous.Type != current.Type) return true;
        return t == "[" || t == "]";
    }

    /// <summary>conlleval's main loop, one word (or sentence boundary) at a time.</summary>
    private sealed class Scorer
    {
        private readonly Dictionary<string, int> goldByType = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int> predictedByType = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int> correctByType = new(StringComparer.Ordinal);
        private Tag lastGold = Outside, lastPredicted = Outside;
        private bool inCorrect;
        private int gold, predicted, correct, correctTokens, tokens;

        public void Step(Tag goldTag, Tag predictedTag, bool boundary)
        {
            if (inCorrect)
            {
                bool goldEnds = EndOfChunk(lastGold, goldTag), predictedEnds = EndOfChunk(lastPredicted, predictedTag);
                if (goldEnds && predictedEnds && lastPredicted.Type == lastGold.Type)
                {
                    inCorrect = false;
                    CountCorrect();
                }
                else if (goldEnds != predictedEnds || predictedTag.Type != goldTag.Type)
                {
                    inCorrect = false;
                }
            }
            bool goldStarts = StartOfChunk(lastGold, goldTag), predictedStarts = StartOfChunk(lastPredicted, predictedTag);
            if (goldStarts && predictedStarts && predictedTag.Type == goldTag.Type) inCorrect = true;
            if (goldStarts)
            {
                gold++;
                Increment(goldByType, goldTag.Type);
            }
            if (predictedStarts)
            {
                predicted++;
                Increment(predictedByType, predictedTag.Type);
            }
            if (!boundary)
            {
                if (goldTag.Text == predictedTag.Text) correctTokens++;
                tokens++;
            }
            lastGold = goldTag;
            lastPredicted = predictedTag;
        }

        public EntityMetrics Finish()
        {
            if (inCorrect)
            {
                inCorrect = false;
                CountCorrect();
            }
            var perType = new SortedDictionary<string, EntityTypeMetrics>(StringComparer.Ordinal);
            foreach (var type in goldByType.Keys.Concat(predictedByType.Keys).Distinct(StringComparer.Ordinal))
                perType[type] = new EntityTypeMetrics(Get(goldByType, type), Get(predictedByType, type), Get(correctByType, type));
            return new EntityMetrics(gold, predicted, correct, correctTokens, tokens,
                new ReadOnlyDictionary<string, EntityTypeMetrics>(perType));
        }

        private void CountCorrect()
        {
            correct++;
            Increment(correctByType, lastGold.Type);
        }

        private static void Increment(Dictionary<string, int> counts, string type) => counts[type] = Get(counts, type) + 1;

        private static int Get(Dictionary<string, int> counts, string type) => counts.TryGetValue(type, out int n) ? n : 0;
    }
}
