namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// Entity-level precision, recall and F1 of one entity type, as the CoNLL evaluation script (conlleval) reports them:
/// an entity counts as correct when its type and its span (first and last word) both match a gold entity.
/// </summary>
public sealed class EntityTypeMetrics
{
    internal EntityTypeMetrics(int goldCount, int predictedCount, int correctCount)
    {
        GoldCount = goldCount;
        PredictedCount = predictedCount;
        CorrectCount = correctCount;
        Precision = EntityMetrics.Ratio(correctCount, predictedCount);
        Recall = EntityMetrics.Ratio(correctCount, goldCount);
        F1 = EntityMetrics.HarmonicMean(Precision, Recall);
    }

    /// <summary>Correct entities of this type over predicted entities of this type, from 0 to 1; 0 when none was predicted.</summary>
    public double Precision { get; }

    /// <summary>Correct entities of this type over gold entities of this type, from 0 to 1; 0 when the gold labels have none.</summary>
    public double Recall { get; }

    /// <summary>The harmonic mean of <see cref="Precision"/> and <see cref="Recall"/>; 0 when both are 0.</summary>
    public double F1 { get; }

    /// <summary>Entities of this type in the gold labels.</summary>
    public int GoldCount { get; }

    /// <summary>Entities of this type in the predictions.</summary>
    public int PredictedCount { get; }

    /// <summary>Predicted entities of this type whose span and type match a gold entity.</summary>
    public int CorrectCount { get; }
}

/// <summary>
/// Entity-level metrics of a named-entity recognizer, with the conventions of the CoNLL-2000 evaluation script
/// (conlleval): entities are read from the tag sequences (<c>O</c>, <c>B-X</c>, <c>I-X</c>; also <c>E-X</c> and
/// <c>S-X</c>), an entity counts as correct when its type and its span both match, and malformed sequences are read as
/// conlleval reads them (an <c>I-X</c> that does not continue an X entity starts one, so <c>O I-PER</c> is a PER entity
/// and <c>B-PER I-LOC</c> two entities).
/// </summary>
public sealed class EntityMetrics
{
    internal EntityMetrics(int goldCount, int predictedCount, int correctCount, int correctTokens, int tokenCount,
        IReadOnlyDictionary<string, EntityTypeMetrics> perType)
    {
        GoldCount = goldCount;
        PredictedCount = predictedCount;
        CorrectCount = correctCount;
        Precision = Ratio(correctCount, predictedCount);
        Recall = Ratio(correctCount, goldCount);
        F1 = HarmonicMean(Precision, Recall);
        TokenCount = tokenCount;
        TokenAccuracy = Ratio(correctTokens, tokenCount);
        PerType = perType;
    }

    /// <summary>
    /// Correct entities over predicted entities, all types together (micro-averaged), from 0 to 1; 0 when nothing was
    /// predicted (conlleval prints 0.00).
    /// </summary>
    public double Precision { get; }

    /// <summary>Correct entities over gold entities, all types together (micro-averaged), from 0 to 1; 0 when the gold labels have none.</summary>
    public double Recall { get; }

    /// <summary>The harmonic mean of <see cref="Precision"/> and <see cref="Recall"/> (micro-averaged F1); 0 when both are 0.</summary>
    public double F1 { get; }

    /// <summary>Entities in the gold labels.</summary>
    public int GoldCount { get; }

    /// <summary>Entities in the predictions.</summary>
    public int PredictedCount { get; }

    /// <summary>Predicted entities whose span and type match a gold entity.</summary>
    public int CorrectCount { get; }

    /// <summary>Words whose predicted tag equals the gold tag (<c>O</c> included) over all words, from 0 to 1; 0 without words.</summary>
    public double TokenAccuracy { get; }

    /// <summary>Words evaluated.</summary>
    public int TokenCount { get; }

    /// <summary>
    /// Metrics per entity type (the tag without its <c>B-</c>/<c>I-</c> prefix), for every type found in the gold labels or
    /// the predictions, keys in ordinal order.
    /// </summary>
    public IReadOnlyDictionary<string, EntityTypeMetrics> PerType { get; }

    internal static double Ratio(int numerator, int denominator) => denominator == 0 ? 0 : (double)numerator / denominator;

    internal static double HarmonicMean(double precision, double recall) =>
        precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);
}
