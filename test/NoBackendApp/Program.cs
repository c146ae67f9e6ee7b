using Microsoft.ML;
using Microsoft.ML.Peft;

// Tries to train without any libtorch package; prints the exception the library gives and exits with 3.
var ml = new MLContext(1);
var data = ml.Data.LoadFromEnumerable(new[] { new Row("good", "pos"), new Row("bad", "neg") });
try
{
    ml.Transforms.Conversion.MapValueToKey("Label")
        .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(sentence1ColumnName: "Sentence"))
        .Fit(data);
    Console.WriteLine("trained without a backend?");
    return 0;
}
catch (InvalidOperationException e)
{
    Console.WriteLine($"{e.GetType().Name}: {e.Message}");
    return 3;
}

internal sealed record Row(string Sentence, string Label);
