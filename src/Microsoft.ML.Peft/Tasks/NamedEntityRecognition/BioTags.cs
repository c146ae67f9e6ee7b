namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// BIO tag sets (<c>O</c>, <c>B-X</c>, <c>I-X</c>): validation, decoding under the BIO constraints, and the
/// conlleval-compatible repair of a sequence.
/// </summary>
internal static class BioTags
{
    /// <summary>True for <c>O</c>, and for <c>B-X</c> or <c>I-X</c> with a non-empty type X.</summary>
    public static bool IsBio(string? tag) =>
        tag == "O" || (tag is { Length: > 2 } && (tag[0] == 'B' || tag[0] == 'I') && tag[1] == '-');

    /// <summary>Throws unless the tags are distinct, include <c>O</c>, and every other one is <c>B-X</c> or <c>I-X</c> with a non-empty X.</summary>
    /// <param name="tags">The tag set.</param>
    /// <param name="what">What the tags are, for the message (for example "the label column 'Label'").</param>
    public static void Validate(IReadOnlyList<string> tags, string what)
    {
        if (tags is null) throw new ArgumentNullException(nameof(tags), $"The tag set of {what} is null.");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tags.Count; i++)
        {
            var tag = tags[i];
            if (!IsBio(tag))
                throw new ArgumentException(
                    $"The tag '{tag}' (tag {i + 1} of {tags.Count}) of {what} is not a BIO tag: tags must be O, B-X or I-X with a non-empty type X.",
                    nameof(tags));
            if (!seen.Add(tag)) throw new ArgumentException($"The tag '{tag}' appears twice in {what}.", nameof(tags));
        }
        if (!seen.Contains("O"))
            throw new ArgumentException(
                $"The tags of {what} ({string.Join(", ", tags.Take(20))}) have no O tag; a BIO tag set needs O for words outside entities.",
                nameof(tags));
    }

    /// <summary>
    /// The best tag per word under the BIO constraints, by Viterbi (the constrained maximum of the summed log
    /// probabilities, not a repair of the per-word maximum): <c>I-X</c> only right after <c>B-X</c> or <c>I-X</c>, never
    /// first. When the tag set has <c>I-X</c> but no <c>B-X</c> (IOB1 style), <c>I-X</c> is unconstrained. Ties go to the
    /// lower tag index.
    /// </summary>
    /// <param name="logProbabilities">Words × tags log probabilities (or any scores that add along a path), row-major.</param>
    /// <param name="words">The number of words.</param>
    /// <param name="tags">The tag set, checked with <see cref="Validate"/>.</param>
    /// <returns>One tag index per word.</returns>
    public static int[] Decode(ReadOnlySpan<float> logProbabilities, int words, IReadOnlyList<string> tags)
    {
        Validate(tags, "the decoder's tag set");
        if (words < 0) throw new ArgumentOutOfRangeException(nameof(words), words, "The word count is negative.");
        int n = tags.Count;
        if (logProbabilities.Length != (long)words * n)
            throw new ArgumentException(
                $"{logProbabilities.Length} log probabilities for {words} words × {n} tags; expected {(long)words * n}.",
                nameof(logProbabilities));
        if (words == 0) return Array.Empty<int>();
        for (int i = 0; i < logProbabilities.Length; i++)
            if (float.IsNaN(logProbabilities[i]))
                throw new ArgumentException($"The log probability of tag '{tags[i % n]}' at word {i / n + 1} is NaN.", nameof(logProbabilities));

        // A tag that must continue an entity of its type: I-X when B-X exists.
        var types = new string?[n];
        var continuation = new bool[n];
        var beginTypes = new HashSet<string>(tags.Where(t => t.StartsWith("B-", StringComparison.Ordinal)).Select(t => t[2..]), StringComparer.Ordinal);
        for (int t = 0; t < n; t++)
        {
            types[t] = tags[t] == "O" ? null : tags[t][2..];
            continuation[t] = tags[t][0] == 'I' && beginTypes.Contains(types[t]!);
        }
        bool Allowed(int previous, int current) => !continuation[current] || (types[previous] is not null && types[previous] == types[current]);

        // Reachability does not depend on the scores, so a path of -infinity scores still ends valid (O is always reachable).
        var score = new double[n];
        var next = new double[n];
        var reachable = new bool[n];
        var nextReachable = new bool[n];
        var back = new int[words, n];
        for (int t = 0; t < n; t++)
        {
            reachable[t] = !continuation[t];
            score[t] = logProbabilities[t];
        }
        for (int w = 1; w < words; w++)
        {
            for (int t = 0; t < n; t++)
            {
                int best = -1;
                for (int p = 0; p < n; p++)
                    if (reachable[p] && Allowed(p, t) && (best < 0 || score[p] > score[best])) best = p;
                back[w, t] = best;
                nextReachable[t] = best >= 0;
                next[t] = best >= 0 ? score[best] + logProbabilities[w * n + t] : double.NegativeInfinity;
            }
            (score, next) = (next, score);
            (reachable, nextReachable) = (nextReachable, reachable);
        }
        var path = new int[words];
        int last = -1;
        for (int t = 0; t < n; t++)
            if (reachable[t] && (last < 0 || score[t] > score[last])) last = t;
        path[words - 1] = last;
        for (int w = words - 1; w > 0; w--) path[w - 1] = back[w, path[w]];
        return path;
    }

    /// <summary>
    /// The conlleval-compatible repair of a tag sequence: an <c>I-X</c> that does not continue an X entity (first, or after
    /// <c>O</c> or another type) becomes <c>B-X</c>, which is how conlleval reads it. Other tags are kept.
    /// </summary>
    public static string[] Repair(IReadOnlyList<string> tags)
    {
        if (tags is null) throw new ArgumentNullException(nameof(tags));
        var repaired = new string[tags.Count];
        for (int i = 0; i < tags.Count; i++)
        {
            var tag = tags[i] ?? throw new ArgumentException($"Tag {i + 1} of {tags.Count} is null.", nameof(tags));
            repaired[i] = tag;
            if (!tag.StartsWith("I-", StringComparison.Ordinal) || tag.Length == 2) continue;
            var type = tag.AsSpan(2);
            var previous = i == 0 ? null : tags[i - 1];
            bool continues = previous is not null && previous.Length > 2 && (previous[0] == 'B' || previous[0] == 'I')
                && previous[1] == '-' && previous.AsSpan(2).SequenceEqual(type);
            if (!continues) repaired[i] = "B-" + tag[2..];
        }
        return repaired;
    }
}
