namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>A scenario of the guided flow: one task of <c>auto</c>, with the data it reads and the roles of its columns.</summary>
/// <param name="Id">The task name of <c>auto --task</c>.</param>
/// <param name="Name">The name shown on the page.</param>
/// <param name="Description">What it does, with an example.</param>
/// <param name="Data"><c>delimited</c> (a text file with columns), <c>conll</c> or <c>images</c>.</param>
/// <param name="Roles">The columns to map: <c>label</c>, <c>text</c>, <c>text2</c>.</param>
/// <param name="LabelKind"><c>category</c>, <c>number</c>, or null.</param>
/// <param name="Methods">The methods a training may choose.</param>
/// <param name="DefaultMethod">The method chosen first.</param>
internal sealed record Scenario(string Id, string Name, string Description, string Data, IReadOnlyList<string> Roles, string? LabelKind,
    IReadOnlyList<string> Methods, string DefaultMethod);

/// <summary>The scenarios: the tasks that <c>auto</c> searches.</summary>
internal static class Scenarios
{
    private static readonly string[] TextMethods = { "lora", "rslora", "dora", "loraplus", "ia3", "bitfit", "bottleneck", "full" };
    private static readonly string[] ImageMethods = { "lora", "rslora", "loraplus", "ia3", "bitfit", "full" };

    public static IReadOnlyList<Scenario> All { get; } = new Scenario[]
    {
        new("text-classification", "Text classification", "Sort texts into classes: sentiment, topic, intent. A file with a text column and a label column.",
            "delimited", new[] { "label", "text" }, "category", TextMethods, "lora"),
        new("pair-classification", "Sentence pairs", "Classify a pair of texts: paraphrase or not, entailment. A file with two text columns and a label column.",
            "delimited", new[] { "label", "text", "text2" }, "category", TextMethods, "lora"),
        new("sentence-similarity", "Sentence similarity", "Score how alike two texts are (for example 0 to 5). A file with two text columns and a numeric score.",
            "delimited", new[] { "label", "text", "text2" }, "number", TextMethods, "lora"),
        new("ner", "Named entities", "Tag people, places and organisations in text. A CoNLL file: one word and its BIO tag a line, sentences separated by blank lines.",
            "conll", Array.Empty<string>(), null, TextMethods.Where(m => m != "bottleneck").ToArray(), "lora"),
        new("image-classification", "Image classification", "Sort images into classes. A folder with one sub-folder of images per class.",
            "images", Array.Empty<string>(), "category", ImageMethods, "lora"),
    };

    /// <summary>The scenario <paramref name="id"/>, or null.</summary>
    public static Scenario? Get(string? id) => All.FirstOrDefault(s => s.Id == id);

    public static bool Exists(string? id) => Get(id) is not null;
}
