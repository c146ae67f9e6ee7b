namespace Microsoft.ML.Peft.Tests;

/// <summary>A labelled sentence as the tests feed it to ML.NET.</summary>
public sealed class SentenceRow
{
    public string Sentence { get; set; } = "";
    public string Label { get; set; } = "";
}

/// <summary>What a PredictionEngine returns after MapKeyToValue.</summary>
public sealed class SentencePrediction
{
    public string PredictedLabel { get; set; } = "";
    public float[] Score { get; set; } = Array.Empty<float>();
}

internal static class Rows
{
    public static List<SentenceRow> Sst2(string path, int skip, int take) =>
        TestData.ReadSst2(path, skip, take).Select(r => new SentenceRow { Sentence = r.Sentence, Label = r.Label == 1 ? "positive" : "negative" }).ToList();
}
