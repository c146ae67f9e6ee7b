using System.Globalization;
using System.Text;

namespace Microsoft.ML.Peft.Inputs;

/// <summary>
/// BERT's basic tokenization (the reference <c>BasicTokenizer</c>): cleans the text (drops U+0000, U+FFFD and control
/// characters, turns whitespace into spaces), surrounds CJK ideographs with spaces, splits on whitespace, lowercases and
/// strips accents when uncased (NFD, then no Mn marks), and splits every punctuation character (ASCII punctuation and
/// Unicode P*) into its own word. Its words go to WordPiece.
/// </summary>
/// <remarks>
/// Lowercasing follows Python's <c>str.lower()</c> (U+0130 becomes <c>i</c> + U+0307, a final capital sigma becomes ς),
/// and NFD comes from <see cref="BertUnicodeData"/>, not from <see cref="string.Normalize()"/>, which does nothing under
/// invariant globalization. Character categories are .NET's.
/// </remarks>
internal static class BertBasicTokenizer
{
    /// <summary>The words of <paramref name="text"/>, none empty.</summary>
    public static List<string> Split(string? text, bool lowerCase)
    {
        var words = new List<string>();
        if (string.IsNullOrEmpty(text)) return words;
        var word = new List<int>();
        for (int i = 0; i < text.Length; i++)
        {
            int cp = text[i];
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                cp = char.ConvertToUtf32(text[i], text[i + 1]);
                i++;
            }
            if (cp == 0 || cp == 0xFFFD || IsControl(cp)) continue;
            // Python's str.split() also splits on U+2028 and U+2029, which cleaning keeps.
            if (IsWhitespace(cp) || cp == 0x2028 || cp == 0x2029)
            {
                AddWord(words, word, lowerCase);
            }
            else if (IsCjk(cp))
            {
                AddWord(words, word, lowerCase);
                word.Add(cp);
                AddWord(words, word, lowerCase);
            }
            else
            {
                word.Add(cp);
            }
        }
        AddWord(words, word, lowerCase);
        return words;
    }

    private static void AddWord(List<string> words, List<int> word, bool lowerCase)
    {
        if (word.Count == 0) return;
        var codepoints = lowerCase ? StripAccents(Lower(word)) : word;
        var piece = new StringBuilder();
        foreach (int cp in codepoints)
        {
            if (IsPunctuation(cp))
            {
                if (piece.Length > 0) words.Add(piece.ToString());
                piece.Clear();
                words.Add(char.ConvertFromUtf32(cp));
            }
            else
            {
                piece.Append(char.ConvertFromUtf32(cp));
            }
        }
        if (piece.Length > 0) words.Add(piece.ToString());
        word.Clear();
    }

    /// <summary>Python's <c>str.lower()</c>: simple lowercase mapping, U+0130 to i + U+0307, final sigma.</summary>
    internal static List<int> Lower(List<int> word)
    {
        var lower = new List<int>(word.Count);
        for (int i = 0; i < word.Count; i++)
        {
            int cp = word[i];
            if (cp == 0x130)
            {
                lower.Add('i');
                lower.Add(0x307);
            }
            else if (cp == 0x3A3)
            {
                lower.Add(IsFinalSigma(word, i) ? 0x3C2 : 0x3C3);
            }
            else
            {
                lower.Add(Rune.ToLowerInvariant(new Rune(cp)).Value);
            }
        }
        return lower;
    }

    // Final_Sigma: a cased letter (case-ignorable ones skipped) before, and none after.
    private static bool IsFinalSigma(List<int> word, int at)
    {
        int j = at - 1;
        while (j >= 0 && BertUnicodeData.IsCaseIgnorable(word[j])) j--;
        if (j < 0 || !BertUnicodeData.IsCased(word[j])) return false;
        j = at + 1;
        while (j < word.Count && BertUnicodeData.IsCaseIgnorable(word[j])) j++;
        return j == word.Count || !BertUnicodeData.IsCased(word[j]);
    }

    /// <summary>NFD, then without the nonspacing marks (Mn).</summary>
    internal static List<int> StripAccents(List<int> word)
    {
        var nfd = BertUnicodeData.Decompose(word);
        nfd.RemoveAll(cp => CharUnicodeInfo.GetUnicodeCategory(cp) == UnicodeCategory.NonSpacingMark);
        return nfd;
    }

    internal static bool IsWhitespace(int cp) =>
        cp is ' ' or '\t' or '\n' or '\r' || CharUnicodeInfo.GetUnicodeCategory(cp) == UnicodeCategory.SpaceSeparator;

    internal static bool IsControl(int cp)
    {
        if (cp is '\t' or '\n' or '\r') return false;
        var category = CharUnicodeInfo.GetUnicodeCategory(cp);
        return category is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    internal static bool IsPunctuation(int cp)
    {
        if (cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.ConnectorPunctuation
            or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation
            or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation
            or UnicodeCategory.OtherPunctuation;
    }

    /// <summary>The CJK Unified Ideographs blocks of BERT's <c>_is_chinese_char</c>.</summary>
    internal static bool IsCjk(int cp) =>
        cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
            or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF
            or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}

/// <summary>Lookups over the generated tables of <c>BertUnicodeData.cs</c>.</summary>
internal static partial class BertUnicodeData
{
    private static readonly Lazy<Dictionary<int, int[]>> DecompositionTable = new(() =>
        Decompositions.Split(' ').Select(e => e.Split(':')).ToDictionary(
            p => Hex(p[0]), p => p[1].Split(',').Select(Hex).ToArray()));

    private static readonly Lazy<(int First, int Last, int Value)[]> ClassTable = new(() =>
        Ranges(CombiningClasses).ToArray());

    private static readonly Lazy<(int First, int Last, int Value)[]> CasedTable = new(() => Ranges(CasedExtra).ToArray());

    private static readonly Lazy<(int First, int Last, int Value)[]> IgnorableTable = new(() =>
        Ranges(CaseIgnorableExtra).ToArray());

    /// <summary>Canonical decomposition (NFD): full decomposition, then canonical ordering of combining marks.</summary>
    public static List<int> Decompose(List<int> codepoints)
    {
        var table = DecompositionTable.Value;
        var output = new List<int>(codepoints.Count + 4);
        foreach (int cp in codepoints)
        {
            if (cp is >= 0xAC00 and <= 0xD7A3)
            {
                // Hangul syllable: leading consonant, vowel and an optional trailing consonant.
                int s = cp - 0xAC00;
                output.Add(0x1100 + s / (21 * 28));
                output.Add(0x1161 + s % (21 * 28) / 28);
                if (s % 28 != 0) output.Add(0x11A7 + s % 28);
            }
            else if (table.TryGetValue(cp, out var parts))
            {
                output.AddRange(parts);
            }
            else
            {
                output.Add(cp);
            }
        }
        // Canonical ordering: stable sort of each run of marks with a nonzero combining class, by class.
        for (int i = 1; i < output.Count; i++)
        {
            int cp = output[i];
            int ccc = CombiningClass(cp);
            if (ccc == 0) continue;
            int j = i - 1;
            while (j >= 0 && CombiningClass(output[j]) > ccc)
            {
                output[j + 1] = output[j];
                j--;
            }
            output[j + 1] = cp;
        }
        return output;
    }

    public static int CombiningClass(int cp) => Find(ClassTable.Value, cp);

    public static bool IsCased(int cp) =>
        CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
            or UnicodeCategory.TitlecaseLetter
        || Find(CasedTable.Value, cp) != 0;

    public static bool IsCaseIgnorable(int cp) =>
        CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
        || Find(IgnorableTable.Value, cp) != 0;

    // The value of the range holding cp, 0 if none.
    private static int Find((int First, int Last, int Value)[] ranges, int cp)
    {
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (cp < ranges[mid].First) hi = mid - 1;
            else if (cp > ranges[mid].Last) lo = mid + 1;
            else return ranges[mid].Value;
        }
        return 0;
    }

    private static IEnumerable<(int, int, int)> Ranges(string text) =>
        text.Split(' ').Select(e =>
        {
            var valueSplit = e.Split(':');
            var bounds = valueSplit[0].Split('-');
            return (Hex(bounds[0]), Hex(bounds[1]), valueSplit.Length > 1 ? int.Parse(valueSplit[1], CultureInfo.InvariantCulture) : 1);
        });

    private static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}
