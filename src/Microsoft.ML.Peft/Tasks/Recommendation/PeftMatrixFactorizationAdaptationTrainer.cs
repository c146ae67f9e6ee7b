using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// Adapts a trained matrix-factorisation model (<see cref="PeftMatrixFactorizationTransformer"/>) to new ratings with
/// the base frozen: it trains a small adapter (<see cref="RecommendationAdaptationOptions.Method"/>: low-rank factor offsets with re-fitted
/// biases, biases alone, or dense offsets) on the new ratings only. Create it with
/// <c>mlContext.Regression.Trainers.PeftMatrixFactorizationAdaptation(baseModel, options)</c>; <c>Fit</c>
/// returns a <see cref="PeftMatrixFactorizationTransformer"/> that scores like any other and saves only its adapter
/// (with the base model file's location and hash) when <see cref="RecommendationAdaptationOptions.BaseModelPath"/> is set.
/// </summary>
/// <remarks>
/// <para>The new data has the base's columns. Ids are matched by value, so the data may be keyed by another key mapping
/// than the base's, or carry text ids.</para>
/// <para><b>Cold start.</b> A user (or item) the base never saw but the new ratings name gets a row of its own in the
/// adapter. It starts as the base's mean user: the mean of the base's factor rows and biases. The adaptation then learns
/// its offset from that mean, under the same regularisation as everyone's offsets. A user known to neither (an id
/// first seen when scoring) is taken to be the mean of the new users the adaptation trained: the newcomers of the
/// adaptation's period are the best guess of who comes next. Without new users in the adaptation data, an unknown user
/// scores as in the base (the item's adapted bias plus the shifted global mean). Items likewise.</para>
/// <para>The adapted model uses the base transformer's tables in memory (they are not copied): keep the base alive while
/// the adapted model is in use. Adapted models loaded from files share one copy of their base's tables.</para>
/// </remarks>
public sealed class PeftMatrixFactorizationAdaptationTrainer : PeftRecommenderAdaptationTrainer<PeftMatrixFactorizationTransformer>
{
    /// <summary>Options of <see cref="PeftMatrixFactorizationAdaptationTrainer"/> (see <see cref="RecommendationAdaptationOptions"/>).</summary>
    public sealed class Options : RecommendationAdaptationOptions
    {
    }

    internal PeftMatrixFactorizationAdaptationTrainer(IHostEnvironment env, PeftMatrixFactorizationTransformer baseModel, Options options)
        : base(new RecommenderAdaptation<MatrixFactorizationModel, MatrixFactorizationSettings, MatrixFactorizationNetwork, PeftMatrixFactorizationTransformer>(
            env, nameof(PeftMatrixFactorizationAdaptationTrainer), baseModel?.Model, options))
    {
    }
}
