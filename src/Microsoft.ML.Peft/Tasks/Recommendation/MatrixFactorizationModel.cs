using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// A trained matrix-factorisation model (<see cref="RecommenderModel{TModel, TSettings, TNetwork}"/>): the base's factor
/// tables and biases (<see cref="MatrixFactorizationNetwork"/>) and, for an adapted model, a <see cref="MatrixFactorizationAdapter"/>.
/// </summary>
internal sealed class MatrixFactorizationModel : RecommenderModel<MatrixFactorizationModel, MatrixFactorizationSettings, MatrixFactorizationNetwork>,
    IRecommenderKind<MatrixFactorizationModel, MatrixFactorizationSettings, MatrixFactorizationNetwork>
{
    private MatrixFactorizationModel(MatrixFactorizationSettings settings, IdVocabulary users, IdVocabulary items, Device device, MatrixFactorizationNetwork network, RecommenderAdapter? adapter, string? baseSha256)
        : base(settings, users, items, device, network, adapter, baseSha256) { }

    public static MatrixFactorizationModel Create(MatrixFactorizationSettings settings, IdVocabulary users, IdVocabulary items, Device device, MatrixFactorizationNetwork network, RecommenderAdapter? adapter, string? baseSha256) =>
        new(settings, users, items, device, network, adapter, baseSha256);

    public static string Source => "The PEFT matrix factorization model";

    public static MatrixFactorizationNetwork NewNetwork(MatrixFactorizationSettings settings) => new(settings.UserCount, settings.ItemCount, settings.Rank);

    public static RecommenderAdapter NewAdapter(MatrixFactorizationSettings settings, MatrixFactorizationNetwork network) =>
        new MatrixFactorizationAdapter(settings.Adaptation!.Method, network, settings.UserCount, settings.ItemCount, settings.Adaptation.LoraRank);

    /// <summary>The factor tables, biases and global mean.</summary>
    public static long BaseValues(MatrixFactorizationSettings settings) => ((settings.UserCount + 1L) + (settings.ItemCount + 1L)) * (settings.Rank + 1) + 1;

    public static long AdapterValues(MatrixFactorizationSettings settings) => MatrixFactorizationAdapter.SavedValues(settings);
}
