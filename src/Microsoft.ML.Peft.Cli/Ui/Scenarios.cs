using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>A scenario of the guided flow: the data it reads, the roles of its columns, and the CLI command that trains it.</summary>
/// <param name="Id">The scenario's id (for <c>auto</c>'s scenarios, the task name of <c>auto --task</c>).</param>
/// <param name="Name">The name shown on the page.</param>
/// <param name="Description">What it does, with an example.</param>
/// <param name="Data"><c>delimited</c> (a text file with columns), <c>conll</c>, <c>images</c> (a folder of class folders) or <c>detection</c> (images and their boxes' labels).</param>
/// <param name="Roles">The columns to map: <c>label</c>, <c>text</c>, <c>text2</c>, <c>user</c>, <c>item</c>.</param>
/// <param name="LabelKind"><c>category</c>, <c>number</c>, or null.</param>
/// <param name="Methods">The methods a training may choose.</param>
/// <param name="DefaultMethod">The method chosen first.</param>
/// <param name="Command">The CLI command that trains it in a child process: <c>auto</c>, <c>recommendation</c> or <c>object-detection</c>.</param>
/// <param name="Budget">Whether a training may search every method within a time budget (else it trains the chosen method).</param>
/// <param name="Validation">Whether the page sets a validation split (else the command holds out its own test data).</param>
/// <param name="Report">Whether a training writes an HTML report.</param>
/// <param name="Passes">When the page lets the user choose the number of passes over the data: each method's default; else null.</param>
/// <param name="Code">Whether a training generates a C# project that uses the model (else the consume step offers the model alone).</param>
/// <param name="Arguments">The command line of a training of run (in its folder), after the program's name.</param>
internal sealed record Scenario(string Id, string Name, string Description, string Data, IReadOnlyList<string> Roles, string? LabelKind,
    IReadOnlyList<string> Methods, string DefaultMethod, string Command, bool Budget, bool Validation, bool Report, IReadOnlyDictionary<string, int>? Passes,
    bool Code, [property: JsonIgnore] Func<UiRun, string, List<string>> Arguments);

/// <summary>The scenarios: the tasks that <c>auto</c> searches, recommendation (<c>mlnet-peft recommendation</c>) and object detection (<c>mlnet-peft object-detection</c>).</summary>
internal static class Scenarios
{
    private static readonly string[] TextMethods = { "lora", "rslora", "dora", "loraplus", "ia3", "bitfit", "bottleneck", "full" };
    private static readonly string[] ImageMethods = { "lora", "rslora", "loraplus", "ia3", "bitfit", "full" };
    private static readonly string[] DetectionMethods = { "lora", "probe", "bitfit", "full" };

    /// <summary>The trainers' own defaults, which <c>recommendation</c> uses when <c>--iterations</c> is not given.</summary>
    private static readonly IReadOnlyDictionary<string, int> RecommendationPasses = new Dictionary<string, int>
    {
        ["mf"] = new Microsoft.ML.Peft.Tasks.Recommendation.PeftMatrixFactorizationTrainer.Options().NumberOfIterations,
        ["ncf"] = new Microsoft.ML.Peft.Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTrainer.Options().NumberOfIterations,
    };

    private static Scenario Auto(string id, string name, string description, string data, string[] roles, string? labelKind, string[] methods) =>
        new(id, name, description, data, roles, labelKind, methods, "lora", "auto", Budget: true, Validation: true, Report: true, Passes: null, Code: true, TrainingQueue.AutoArguments);

    public static IReadOnlyList<Scenario> All { get; } = new Scenario[]
    {
        Auto("text-classification", "Text classification", "Sort texts into classes: sentiment, topic, intent. A file with a text column and a label column.",
            "delimited", new[] { "label", "text" }, "category", TextMethods),
        Auto("pair-classification", "Sentence pairs", "Classify a pair of texts: paraphrase or not, entailment. A file with two text columns and a label column.",
            "delimited", new[] { "label", "text", "text2" }, "category", TextMethods),
        Auto("sentence-similarity", "Sentence similarity", "Score how alike two texts are (for example 0 to 5). A file with two text columns and a numeric score.",
            "delimited", new[] { "label", "text", "text2" }, "number", TextMethods),
        Auto("ner", "Named entities", "Tag people, places and organisations in text. A CoNLL file: one word and its BIO tag a line, sentences separated by blank lines.",
            "conll", Array.Empty<string>(), null, TextMethods.Where(m => m != "bottleneck").ToArray()),
        Auto("image-classification", "Image classification", "Sort images into classes. A folder with one sub-folder of images per class.",
            "images", Array.Empty<string>(), "category", ImageMethods),
        new("recommendation", "Recommendation", "Predict the rating a user would give an item (films, products). A file of ratings: a user id, an item id and a rating a row.",
            "delimited", new[] { "user", "item", "label" }, "number", new[] { "mf", "ncf" }, "mf", "recommendation",
            Budget: false, Validation: false, Report: false, RecommendationPasses, Code: true, TrainingQueue.RecommendationArguments),
        new("object-detection", "Object detection", "Find and box objects in photos (raccoons, products, defects). A folder of images with their boxes: a labels CSV, one row per box, or Pascal VOC XML files.",
            "detection", Array.Empty<string>(), "category", DetectionMethods, "lora", "object-detection",
            Budget: false, Validation: false, Report: false, DetectionMethods.ToDictionary(m => m, _ => TrainingQueue.DetectionEpochs), Code: false, TrainingQueue.DetectionArguments),
    };

    /// <summary>The scenario <paramref name="id"/>, or null.</summary>
    public static Scenario? Get(string? id) => All.FirstOrDefault(s => s.Id == id);

    public static bool Exists(string? id) => Get(id) is not null;
}
