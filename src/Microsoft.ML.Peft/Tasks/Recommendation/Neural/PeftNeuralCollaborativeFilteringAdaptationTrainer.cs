using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// Adapts a trained neural collaborative-filtering model (<see cref="PeftNeuralCollaborativeFilteringTransformer"/>, explicit
/// ratings) to new ratings with the base frozen: it trains a small adapter on the new ratings only. With
/// <see cref="MatrixFactorizationAdaptation.Lora"/> (default) that is low-rank offsets of the four embedding tables
/// (<c>ΔE = A B</c>, A one row per id starting at zero, B shared), LoRA on the MLP's Linear layers and on <c>predict</c>
/// (the method seam's <see cref="Methods.Lora.LoraLayer"/>, rank <c>min(AdaptationRank, in, out)</c>), and re-fitted
/// user and item biases and global mean; <see cref="MatrixFactorizationAdaptation.Bias"/> re-fits the biases and the
/// global mean alone; <see cref="MatrixFactorizationAdaptation.Full"/> trains dense offsets of every table row and every
/// layer (as many numbers as the base: the reference). Create it with
/// <c>mlContext.Regression.Trainers.PeftNeuralCollaborativeFilteringAdaptation(baseModel, options)</c>; <c>Fit</c>
/// returns a <see cref="PeftNeuralCollaborativeFilteringTransformer"/> that scores like any other and saves only its
/// adapter (with the base model file's location and hash) when <see cref="RecommendationAdaptationOptions.BaseModelPath"/> is set.
/// </summary>
/// <remarks>
/// <para>The new data has the base's columns; ids are matched by value. Ratings must lie in the range the base was
/// trained on.</para>
/// <para><b>Cold start</b>, as for matrix factorisation: a user (or item) the base never saw but the new ratings name gets
/// rows of its own, starting as the base's mean user (the mean of its embedding rows, both branches, and biases), and the
/// adaptation learns its offset from that mean. A user known to neither (an id first seen when scoring) takes the mean
/// bias of the new users the adaptation trained (with <see cref="RecommendationAdaptationOptions.UnknownIdsAsNewcomers"/>)
/// and, as in the base, no interaction term (through the MLP, the mean newcomer's interaction scored worse than none on
/// MovieLens); without new users in the adaptation data, an unknown user scores as in the base (the item's adapted bias
/// plus the shifted global mean). Items likewise.</para>
/// <para><b>Regularisation.</b> <see cref="RecommendationAdaptationOptions.Lambda"/> weighs the rated rows' offsets, as for
/// matrix factorisation, and the squared Frobenius norm of every layer's weight change, which every batch adds.</para>
/// <para><b>On MovieLens-100K</b> (temporal protocol, base with the default recipe on the earliest 80%, adaptation with the
/// default options on the next 10%, the last 10% evaluated), the NCF base scored RMSE 1.0311, the bias adaptation 1.0291,
/// the LoRA adaptation 1.0323 (1.0298 at LearningRate 0.0003), retraining on 90% 1.0251: 71% of the test ratings are by
/// users the adaptation never saw, whom only biases reach.</para>
/// <para>The adapted model uses the base transformer's network in memory (it is not copied): keep the base alive while
/// the adapted model is in use. Adapted models loaded from files share one copy of their base's network.</para>
/// </remarks>
public sealed class PeftNeuralCollaborativeFilteringAdaptationTrainer : PeftRecommenderAdaptationTrainer<PeftNeuralCollaborativeFilteringTransformer>
{
    /// <summary>Options of <see cref="PeftNeuralCollaborativeFilteringAdaptationTrainer"/> (see <see cref="RecommendationAdaptationOptions"/>).</summary>
    public sealed class Options : RecommendationAdaptationOptions
    {
    }

    internal PeftNeuralCollaborativeFilteringAdaptationTrainer(IHostEnvironment env, PeftNeuralCollaborativeFilteringTransformer baseModel, Options options)
        : base(new RecommenderAdaptation<NeuralCollaborativeFilteringModel, NeuralCollaborativeFilteringSettings, NeuralCollaborativeFilteringNetwork, PeftNeuralCollaborativeFilteringTransformer>(
            env, nameof(PeftNeuralCollaborativeFilteringAdaptationTrainer), baseModel?.Model, options))
    {
    }
}
