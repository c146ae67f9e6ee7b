using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Peft.Inputs;

/// <summary>One row's token ids; ids from <see cref="SecondStart"/> on belong to the second text.</summary>
internal sealed record EncodedRow(int[] Ids, int SecondStart, bool Truncated);

/// <summary>Token ids of a batch, padded to its longest row.</summary>
internal sealed class EncodedBatch
{
    public required long[] InputIds { get; init; }
    public required long[] AttentionMask { get; init; }
    public required long[] TokenTypeIds { get; init; }
    public required int Rows { get; init; }
    public required int Length { get; init; }
}

/// <summary>
/// BERT's reference tokenization into <c>[CLS] a [SEP] (b [SEP])</c>, truncated to a maximum length (longest sequence
/// first for pairs) and padded to the longest row of a batch. Empty or missing text becomes <c>[CLS] [SEP]</c>.
/// </summary>
/// <remarks>
/// Words come from <see cref="BertBasicTokenizer"/>; each goes through the WordPiece of Microsoft.ML.Tokenizers'
/// <see cref="BertTokenizer"/> (greedy longest match first, <c>##</c> continuations, <c>[UNK]</c> for a word with no
/// match), with its own normalization and pre-tokenization off: they differ from the reference (they drop symbols such
/// as the backtick and leave accents under invariant globalization). A word longer than 100 characters (codepoints) is
/// <c>[UNK]</c>, as in the reference.
/// </remarks>
internal sealed class TextEncoder
{
    /// <summary>The reference's <c>max_input_chars_per_word</c>.</summary>
    internal const int MaxCharsPerWord = 100;

    private readonly BertTokenizer tokenizer;
    private readonly bool lowerCase;

    public TextEncoder(byte[] vocab, bool lowerCase, int maxLength)
    {
        if (maxLength < 3) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "The maximum sequence length must be at least 3 ([CLS], one token, [SEP]).");
        MaxLength = maxLength;
        this.lowerCase = lowerCase;
        using var stream = new MemoryStream(vocab, writable: false);
        try
        {
            // WordPiece only: words come normalized and split. Its own length limit counts UTF-16 units, so it is set
            // above any word of 100 codepoints and the limit is applied here.
            tokenizer = BertTokenizer.Create(stream, new BertOptions
            {
                LowerCaseBeforeTokenization = false,
                ApplyBasicTokenization = false,
                SplitOnSpecialTokens = false,
                IndividuallyTokenizeCjk = false,
                RemoveNonSpacingMarks = false,
                MaxInputCharsPerWord = 2 * MaxCharsPerWord,
            });
        }
        // A vocabulary without one of the special tokens ([UNK], [CLS], [SEP], [PAD], [MASK]) is a KeyNotFoundException.
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException or IOException or KeyNotFoundException)
        {
            throw new InvalidDataException($"The WordPiece vocabulary is not valid: {e.Message}", e);
        }
    }

    public int MaxLength { get; }

    /// <summary>The id of <c>[CLS]</c>.</summary>
    public int ClassificationTokenId => tokenizer.ClassificationTokenId;

    /// <summary>The id of <c>[SEP]</c>.</summary>
    public int SeparatorTokenId => tokenizer.SeparatorTokenId;

    /// <summary>The id of <c>[UNK]</c>.</summary>
    public int UnknownTokenId => tokenizer.UnknownTokenId;

    /// <summary>Tokenizes and pads a batch in one go.</summary>
    public EncodedBatch Encode(IReadOnlyList<string> first, IReadOnlyList<string>? second = null) => Pad(Tokenize(first, second));

    /// <summary>Token ids of each row, <c>[CLS] a [SEP] (b [SEP])</c>, truncated to <see cref="MaxLength"/>.</summary>
    public EncodedRow[] Tokenize(IReadOnlyList<string> first, IReadOnlyList<string>? second = null)
    {
        var rows = new EncodedRow[first.Count];
        for (int i = 0; i < rows.Length; i++)
        {
            var a = Tokens(first[i]);
            var b = second is null ? null : Tokens(second[i]);
            int budget = MaxLength - (b is null ? 2 : 3);
            bool truncated = a.Count + (b?.Count ?? 0) > budget;
            if (truncated)
            {
                if (b is null)
                {
                    a.RemoveRange(budget, a.Count - budget);
                }
                else
                {
                    while (a.Count + b.Count > budget)
                    {
                        var longer = a.Count >= b.Count ? a : b;
                        longer.RemoveAt(longer.Count - 1);
                    }
                }
            }
            var ids = new int[a.Count + (b is null ? 2 : b.Count + 3)];
            ids[0] = tokenizer.ClassificationTokenId;
            a.CopyTo(ids, 1);
            ids[a.Count + 1] = tokenizer.SeparatorTokenId;
            int secondStart = a.Count + 2;
            if (b is not null)
            {
                b.CopyTo(ids, secondStart);
                ids[^1] = tokenizer.SeparatorTokenId;
            }
            rows[i] = new EncodedRow(ids, secondStart, truncated);
        }
        return rows;
    }

    /// <summary>Pads rows to the longest of them, with attention mask and token types.</summary>
    public EncodedBatch Pad(IReadOnlyList<EncodedRow> encoded)
    {
        int rows = encoded.Count;
        int longest = encoded.Count == 0 ? 1 : encoded.Max(r => r.Ids.Length);
        var inputIds = new long[rows * longest];
        var mask = new long[rows * longest];
        var types = new long[rows * longest];
        if (tokenizer.PaddingTokenId != 0) Array.Fill(inputIds, tokenizer.PaddingTokenId);
        for (int r = 0; r < rows; r++)
        {
            var row = encoded[r];
            int offset = r * longest;
            for (int t = 0; t < row.Ids.Length; t++)
            {
                inputIds[offset + t] = row.Ids[t];
                mask[offset + t] = 1;
                types[offset + t] = t >= row.SecondStart ? 1 : 0;
            }
        }
        return new EncodedBatch
        {
            InputIds = inputIds, AttentionMask = mask, TokenTypeIds = types, Rows = rows, Length = longest,
        };
    }

    /// <summary>The token ids of one text, without special tokens.</summary>
    internal List<int> Tokens(string? text)
    {
        var ids = new List<int>();
        foreach (var word in BertBasicTokenizer.Split(text, lowerCase))
        {
            if (CountCodepoints(word) > MaxCharsPerWord)
            {
                ids.Add(tokenizer.UnknownTokenId);
            }
            else
            {
                ids.AddRange(tokenizer.EncodeToIds(word, addSpecialTokens: false, considerPreTokenization: false, considerNormalization: false));
            }
        }
        return ids;
    }

    private static int CountCodepoints(string word)
    {
        int count = word.Length;
        for (int i = 0; i + 1 < word.Length; i++)
        {
            if (char.IsSurrogatePair(word[i], word[i + 1])) count--;
        }
        return count;
    }
}
