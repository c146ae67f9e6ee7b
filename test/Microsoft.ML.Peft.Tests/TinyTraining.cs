using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Synthetic sentiment rows over the tiny vocabulary and trainer options for the tiny BERT.</summary>
internal static class TinyTraining
{
    private static readonly string[] Positive = { "good", "great", "fun" };
    private static readonly string[] Negative = { "bad", "awful", "boring" };
    private static readonly string[] Filler = { "the", "movie", "film", "plot", "actor", "was", "is", "very", "and", "it" };

    public static List<SentenceRow> Rows(int count, int seed)
    {
        var random = new Random(seed);
        var rows = new List<SentenceRow>();
        for (int i = 0; i < count; i++)
        {
            bool positive = i % 2 == 0;
            var words = Enumerable.Range(0, 4).Select(_ => Filler[random.Next(Filler.Length)]).ToList();
            words.Insert(random.Next(words.Count + 1), (positive ? Positive : Negative)[random.Next(3)]);
            rows.Add(new SentenceRow { Sentence = string.Join(' ', words), Label = positive ? "positive" : "negative" });
        }
        return rows;
    }

    public static PeftTextClassificationTrainer.Options Options(string tinyBertDirectory) => new()
    {
        BaseModel = BaseModelSource.FromHuggingFace(tinyBertDirectory),
        Sentence1ColumnName = nameof(SentenceRow.Sentence),
        MaxEpoch = 3,
        BatchSize = 8,
        MaxSequenceLength = 16,
        LearningRate = 5e-3f,
    };
}
