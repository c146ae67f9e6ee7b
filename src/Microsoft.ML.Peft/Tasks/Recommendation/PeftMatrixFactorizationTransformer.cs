using Microsoft.ML;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftMatrixFactorizationTransformer), null, typeof(SignatureLoadModel),
    "PEFT matrix factorization", PeftMatrixFactorizationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// A trained matrix-factorisation recommender, or an adaptation of one (<see cref="PeftMatrixFactorizationAdaptationTrainer"/>).
/// <see cref="PeftRecommenderTransformer.Transform"/> adds <c>Score</c> (Single, the predicted rating, with ML.NET's
/// regression annotations, clamped to the training ratings' range unless <c>ClampScores</c> was false) lazily, one batch
/// of rows at a time; it works with <c>PredictionEngine</c> and saves with <c>mlContext.Model.Save</c> (the factor tables
/// and biases are in the file, or an adaptation's adapter with its base's location). A user or item the model was not
/// trained on (key 0, a key beyond the training key count, or a key with no training rating) is scored from what is
/// known: global mean + item bias for an unknown user, global mean + user bias for an unknown item, the global mean when
/// both are unknown.
/// </summary>
public sealed class PeftMatrixFactorizationTransformer : PeftRecommenderTransformer, IRecommenderTransformer<PeftMatrixFactorizationTransformer, MatrixFactorizationModel>
{
    internal const string LoaderSignature = "PeftMatrixFactorization";

    internal PeftMatrixFactorizationTransformer(IHostEnvironment env, MatrixFactorizationModel model, TimeSpan trainingTime)
        : base(env, model, trainingTime, nameof(PeftMatrixFactorizationTransformer))
    {
        Model = model;
    }

    internal MatrixFactorizationModel Model { get; }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTMFAC", LoaderSignature, typeof(PeftMatrixFactorizationTransformer));

    private protected override VersionInfo SavedVersion => GetVersionInfo();

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftMatrixFactorizationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        return RecommenderFiles.Load<PeftMatrixFactorizationTransformer, MatrixFactorizationModel, MatrixFactorizationSettings, MatrixFactorizationNetwork>(env, ctx);
    }

    static string IRecommenderTransformer<PeftMatrixFactorizationTransformer, MatrixFactorizationModel>.Kind => "PEFT matrix factorization";

    static string IRecommenderTransformer<PeftMatrixFactorizationTransformer, MatrixFactorizationModel>.Trainer => "PeftMatrixFactorization";

    static PeftMatrixFactorizationTransformer IRecommenderTransformer<PeftMatrixFactorizationTransformer, MatrixFactorizationModel>.Wrap(IHostEnvironment env, MatrixFactorizationModel model, TimeSpan trainingTime) => new(env, model, trainingTime);

    /// <summary>
    /// Loads an ML.NET model file and returns the PEFT matrix factorization transformer in it (alone or in a chain), or a clear error
    /// naming the file when it is not an ML.NET model or holds another kind of model.
    /// </summary>
    internal static PeftMatrixFactorizationTransformer LoadFile(IHostEnvironment env, string path, string what, bool asBase) =>
        RecommenderFiles.LoadFile<PeftMatrixFactorizationTransformer, MatrixFactorizationModel>(env, path, what, asBase);
}
