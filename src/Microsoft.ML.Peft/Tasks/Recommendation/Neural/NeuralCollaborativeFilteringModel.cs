using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// A trained neural collaborative-filtering model (<see cref="RecommenderModel{TModel, TSettings, TNetwork}"/>): the base
/// network (<see cref="NeuralCollaborativeFilteringNetwork"/>: embeddings, MLP, <c>predict</c>, biases, global mean)
/// and, for an adapted model, a <see cref="NeuralCollaborativeFilteringAdapter"/> beside the frozen, possibly shared base.
/// </summary>
internal sealed class NeuralCollaborativeFilteringModel : RecommenderModel<NeuralCollaborativeFilteringModel, NeuralCollaborativeFilteringSettings, NeuralCollaborativeFilteringNetwork>,
    IRecommenderKind<NeuralCollaborativeFilteringModel, NeuralCollaborativeFilteringSettings, NeuralCollaborativeFilteringNetwork>
{
    private NeuralCollaborativeFilteringModel(NeuralCollaborativeFilteringSettings settings, IdVocabulary users, IdVocabulary items, Device device, NeuralCollaborativeFilteringNetwork network, RecommenderAdapter? adapter, string? baseSha256)
        : base(settings, users, items, device, network, adapter, baseSha256) { }

    public static NeuralCollaborativeFilteringModel Create(NeuralCollaborativeFilteringSettings settings, IdVocabulary users, IdVocabulary items, Device device, NeuralCollaborativeFilteringNetwork network, RecommenderAdapter? adapter, string? baseSha256) =>
        new(settings, users, items, device, network, adapter, baseSha256);

    public static string Source => "The PEFT neural collaborative filtering model";

    public static NeuralCollaborativeFilteringNetwork NewNetwork(NeuralCollaborativeFilteringSettings settings) =>
        new(settings.UserCount, settings.ItemCount, settings.Rank, settings.HiddenLayerSizes);

    public static RecommenderAdapter NewAdapter(NeuralCollaborativeFilteringSettings settings, NeuralCollaborativeFilteringNetwork network) =>
        new NeuralCollaborativeFilteringAdapter(settings.Adaptation!.Method, network, settings.UserCount, settings.ItemCount, settings.Adaptation.LoraRank);

    /// <summary>The embeddings, the MLP, <c>predict</c>, the biases and the global mean.</summary>
    public static long BaseValues(NeuralCollaborativeFilteringSettings settings) => NeuralCollaborativeFilteringNetwork.Values(settings);

    public static long AdapterValues(NeuralCollaborativeFilteringSettings settings) => NeuralCollaborativeFilteringAdapter.SavedValues(settings);
}
