using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// What a neural collaborative-filtering model saves besides its tensors (the metadata entry of the model file): the
/// common recommender settings (<see cref="RecommenderSettings"/>: columns, table sizes, feedback kind, the training
/// ratings' range, the adaptation of an adapted model) and the MLP's layer sizes. Read back untrusted and checked.
/// </summary>
internal sealed class NeuralCollaborativeFilteringSettings : RecommenderSettings
{
    public const string TaskName = "recommendation-neural-collaborative-filtering";
    public const int MaxHiddenLayers = 8;
    public const int MaxLayerSize = 4096;

    protected override string ExpectedTask => TaskName;

    [JsonPropertyName("hidden_layers")] public int[] HiddenLayerSizes { get; set; } = Array.Empty<int>();

    public static NeuralCollaborativeFilteringSettings Parse(byte[] utf8, string source) => Parse<NeuralCollaborativeFilteringSettings>(utf8, source);

    protected override void ValidateModel(string source)
    {
        if (HiddenLayerSizes is null || HiddenLayerSizes.Length == 0 || HiddenLayerSizes.Length > MaxHiddenLayers || HiddenLayerSizes.Any(s => s <= 0 || s > MaxLayerSize))
            throw new InvalidDataException($"{source}: the saved hidden layer sizes are not valid (1 to {MaxHiddenLayers} layers of 1 to {MaxLayerSize}).");
    }
}
