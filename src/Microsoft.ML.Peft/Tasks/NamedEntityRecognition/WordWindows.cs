using Microsoft.ML.Peft.Inputs;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// One encoder input cut from a sentence: <c>[CLS] pieces [SEP]</c>, and the words it scores (each word is scored in
/// exactly one window: the one where it has the most context on both sides) with the position of each such word's first piece.
/// </summary>
internal sealed record WordWindow(int Sentence, EncodedRow Row, int[] Words, int[] FirstPiecePositions);

/// <summary>A sentence's words as WordPiece ids, with each word's case shape (from the original spelling).</summary>
internal sealed record TokenizedSentence(int[][] Pieces, int[] Shapes, int CutWords);

/// <summary>
/// Word-level input for token classification: every word is split into WordPieces (its label goes on the first piece, the
/// others are ignored), and a sentence longer than the encoder's window is cut into overlapping windows at word boundaries,
/// so no word is dropped. A word with more pieces than a whole window keeps its first pieces (the ones that carry its label)
/// and is counted.
/// </summary>
internal static class WordWindows
{
    /// <summary>Number of case shapes (<see cref="CaseShape"/>).</summary>
    public const int CaseShapeCount = 5;

    /// <summary>The word pieces of each word; a word the tokenizer turns into nothing (only control characters) becomes <c>[UNK]</c>.</summary>
    public static TokenizedSentence Tokenize(TextEncoder encoder, IReadOnlyList<string> words)
    {
        int budget = encoder.MaxLength - 2, cut = 0;
        var pieces = new int[words.Count][];
        var shapes = new int[words.Count];
        for (int w = 0; w < words.Count; w++)
        {
            var ids = encoder.Tokens(words[w]);
            if (ids.Count == 0) ids.Add(encoder.UnknownTokenId);
            if (ids.Count > budget)
            {
                ids.RemoveRange(budget, ids.Count - budget);
                cut++;
            }
            pieces[w] = ids.ToArray();
            shapes[w] = CaseShape(words[w]);
        }
        return new TokenizedSentence(pieces, shapes, cut);
    }

    /// <summary>
    /// Cuts a tokenized sentence into windows of at most <see cref="TextEncoder.MaxLength"/> tokens that start at word
    /// boundaries and overlap by up to <paramref name="overlap"/> pieces. An empty sentence gives no window.
    /// </summary>
    public static List<WordWindow> Split(int sentence, TokenizedSentence tokens, TextEncoder encoder, int overlap)
    {
        var pieces = tokens.Pieces;
        int n = pieces.Length, budget = encoder.MaxLength - 2;
        var windows = new List<WordWindow>();
        if (n == 0) return windows;
        var start = new int[n + 1];
        for (int w = 0; w < n; w++) start[w + 1] = start[w] + pieces[w].Length;

        // Spans of words [first, end) whose pieces fit the budget; each next span starts at the earliest word that keeps
        // the overlap within `overlap` pieces and still moves forward.
        var spans = new List<(int First, int End)>();
        int first = 0;
        while (true)
        {
            int end = first + 1;
            while (end < n && start[end + 1] - start[first] <= budget) end++;
            spans.Add((first, end));
            if (end == n) break;
            int next = end;
            while (next - 1 > first && start[end] - start[next - 1] <= overlap) next--;
            first = next;
        }

        // Each word is scored in the span where it has the most context: the larger of its smaller margins.
        var owner = new int[n];
        var bestMargin = Enumerable.Repeat(-1, n).ToArray();
        for (int s = 0; s < spans.Count; s++)
        {
            var (f, e) = spans[s];
            for (int w = f; w < e; w++)
            {
                int margin = Math.Min(start[w] - start[f], start[e] - start[w + 1]);
                if (margin > bestMargin[w])
                {
                    bestMargin[w] = margin;
                    owner[w] = s;
                }
            }
        }
        for (int s = 0; s < spans.Count; s++)
        {
            var (f, e) = spans[s];
            var ids = new int[start[e] - start[f] + 2];
            ids[0] = encoder.ClassificationTokenId;
            for (int w = f; w < e; w++) pieces[w].CopyTo(ids, 1 + start[w] - start[f]);
            ids[^1] = encoder.SeparatorTokenId;
            var owned = Enumerable.Range(f, e - f).Where(w => owner[w] == s).ToArray();
            windows.Add(new WordWindow(sentence, new EncodedRow(ids, ids.Length, false), owned, owned.Select(w => 1 + start[w] - start[f]).ToArray()));
        }
        return windows;
    }

    /// <summary>
    /// The word's spelling class, which an uncased vocabulary loses: 0 no letters, 1 lower case, 2 capitalised
    /// (first letter upper, the rest lower), 3 all upper case, 4 mixed.
    /// </summary>
    public static int CaseShape(string word)
    {
        int letters = 0, upper = 0;
        bool firstUpper = false;
        foreach (var c in word)
        {
            if (!char.IsLetter(c)) continue;
            bool isUpper = char.IsUpper(c);
            if (letters == 0) firstUpper = isUpper;
            letters++;
            if (isUpper) upper++;
        }
        if (letters == 0) return 0;
        if (upper == 0) return 1;
        if (upper == letters) return letters == 1 ? 2 : 3;
        return firstUpper && upper == 1 ? 2 : 4;
    }
}
