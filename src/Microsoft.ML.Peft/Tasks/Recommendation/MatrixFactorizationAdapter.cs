using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The trained part of an adapted matrix-factorisation model, beside a frozen base
/// (<see cref="MatrixFactorizationNetwork"/>): a shift of the global mean, and the adapted user and item rows
/// (<see cref="AdaptedRows"/>: offsets of every bias, and by <see cref="RecommenderAdapter.Method"/> offsets of the
/// factors: none (<see cref="MatrixFactorizationAdaptation.Bias"/>), low-rank (<see cref="MatrixFactorizationAdaptation.Lora"/>:
/// <c>ΔP = A_user B_user</c>, one row of A per user, B shared, A starting at zero as PEFT's LoRA on embeddings does) or a
/// dense offset table (<see cref="MatrixFactorizationAdaptation.Full"/>); new users and items start from the base's mean
/// row, unknown ids are the adaptation's mean newcomer). The interaction is the dot product of the adapted factors.
/// </summary>
internal sealed class MatrixFactorizationAdapter : RecommenderAdapter
{
    public MatrixFactorizationAdapter(MatrixFactorizationAdaptation method, MatrixFactorizationNetwork network, int userCount, int itemCount, int loraRank)
        : base("matrix_factorization_adapter", method, loraRank, network.GlobalMean,
            new AdaptedRows("user", new[] { (MatrixFactorizationNetwork.UserFactorsName, network.UserFactors) }, network.UserBias, network.UserCount, userCount, method, loraRank),
            new AdaptedRows("item", new[] { (MatrixFactorizationNetwork.ItemFactorsName, network.ItemFactors) }, network.ItemBias, network.ItemCount, itemCount, method, loraRank))
    {
        Rank = network.Rank;
    }

    public int Rank { get; }

    /// <summary>The number of values an adapter of these settings saves.</summary>
    public static long SavedValues(MatrixFactorizationSettings settings) => SavedValues(settings, new[] { settings.Rank });

    protected override Tensor Interaction(Tensor users, Tensor items, Tensor[] userTables, Tensor[] itemTables) => userTables[0].mul(itemTables[0]).sum(1);
}

/// <summary>What an adaptation of a trained matrix-factorisation model changes (the base stays frozen and shared).</summary>
public enum MatrixFactorizationAdaptation
{
    /// <summary>
    /// Low-rank offsets of the user and item factors (<c>ΔP = A B</c>: each user gets <c>AdaptationRank</c> numbers,
    /// B is shared) plus re-fitted biases and global mean. The default.
    /// </summary>
    Lora,

    /// <summary>Re-fits the biases and the global mean only; the factors stay the base's.</summary>
    Bias,

    /// <summary>Dense offsets of every factor row plus re-fitted biases: as many trained numbers as the base (full fine-tuning, the reference).</summary>
    Full,
}
