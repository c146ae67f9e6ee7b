using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Peft.Text;

/// <summary>Token ids of a batch, padded to its longest row.</summary>
internal sealed class EncodedBatch
{
    public required long[] InputIds { get; init; }
    public required long[] AttentionMask { get; init; }
    public required long[] TokenTypeIds { get; init; }
    public required int Rows { get; init; }
    public required int Length { get; init; }
    /// <summary>Rows whose text had more tokens than the maximum sequence length and were cut.</summary>
    public required int TruncatedRows { get; init; }
}

/// <summary>
/// WordPiece tokenization (Microsoft.ML.Tokenizers' <see cref="BertTokenizer"/>) into <c>[CLS] a [SEP] (b [SEP])</c>,
/// truncated to a maximum length (longest sequence first for pairs) and padded to the longest row of a batch.
/// Empty or missing text becomes <c>[CLS] [SEP]</c>.
/// </summary>
internal sealed class TextEncoder
{
    private readonly BertTokenizer tokenizer;

    public TextEncoder(byte[] vocab, bool lowerCase, int maxLength)
    {
        if (maxLength < 3) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "The maximum sequence length must be at least 3 ([CLS], one token, [SEP]).");
        MaxLength = maxLength;
        using var stream = new MemoryStream(vocab, writable: false);
        try
        {
            tokenizer = BertTokenizer.Create(stream, new BertOptions { LowerCaseBeforeTokenization = lowerCase });
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException or IOException)
        {
            throw new InvalidDataException($"The WordPiece vocabulary is not valid: {e.Message}", e);
        }
    }

    public int MaxLength { get; }

    public EncodedBatch Encode(IReadOnlyList<string> first, IReadOnlyList<string>? second = null)
    {
        int rows = first.Count;
        var encoded = new List<(List<int> Ids, int SecondStart)>(rows);
        int truncated = 0;
        int longest = 1;
        for (int i = 0; i < rows; i++)
        {
            var a = Tokens(first[i]);
            var b = second is null ? null : Tokens(second[i]);
            int budget = MaxLength - (b is null ? 2 : 3);
            if (a.Count + (b?.Count ?? 0) > budget)
            {
                truncated++;
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
            var ids = new List<int>(a.Count + (b?.Count ?? 0) + 3) { tokenizer.ClassificationTokenId };
            ids.AddRange(a);
            ids.Add(tokenizer.SeparatorTokenId);
            int secondStart = ids.Count;
            if (b is not null)
            {
                ids.AddRange(b);
                ids.Add(tokenizer.SeparatorTokenId);
            }
            encoded.Add((ids, secondStart));
            longest = Math.Max(longest, ids.Count);
        }

        var inputIds = new long[rows * longest];
        var mask = new long[rows * longest];
        var types = new long[rows * longest];
        for (int r = 0; r < rows; r++)
        {
            var (ids, secondStart) = encoded[r];
            int offset = r * longest;
            for (int t = 0; t < longest; t++)
            {
                if (t < ids.Count)
                {
                    inputIds[offset + t] = ids[t];
                    mask[offset + t] = 1;
                    types[offset + t] = t >= secondStart ? 1 : 0;
                }
                else
                {
                    inputIds[offset + t] = tokenizer.PaddingTokenId;
                }
            }
        }
        return new EncodedBatch { InputIds = inputIds, AttentionMask = mask, TokenTypeIds = types, Rows = rows, Length = longest, TruncatedRows = truncated };
    }

    private List<int> Tokens(string? text) =>
        string.IsNullOrEmpty(text) ? new List<int>() : tokenizer.EncodeToIds(text, addSpecialTokens: false).ToList();
}
