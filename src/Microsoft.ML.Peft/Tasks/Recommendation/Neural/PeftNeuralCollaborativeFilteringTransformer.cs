using Microsoft.ML;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Microsoft.ML.Peft.Tasks.Recommendation.Neural;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(PeftNeuralCollaborativeFilteringTransformer), null, typeof(SignatureLoadModel),
    "PEFT neural collaborative filtering", PeftNeuralCollaborativeFilteringTransformer.LoaderSignature)]

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// A trained neural collaborative-filtering recommender (NeuMF), or an adaptation of one
/// (<see cref="PeftNeuralCollaborativeFilteringAdaptationTrainer"/>). <see cref="PeftRecommenderTransformer.Transform"/>
/// adds <c>Score</c> (Single, with ML.NET's regression annotations) lazily, one batch of rows at a time: for explicit
/// feedback the predicted rating (clamped to the training ratings' range unless <c>ClampScores</c> was false), for
/// implicit feedback a relevance for ranking a user's items (never clamped). It works with <c>PredictionEngine</c> and
/// saves with <c>mlContext.Model.Save</c> (every tensor of the network is in the file, or an adaptation's adapter with its
/// base's location). A user or item the base model was not trained on is scored from what is known: global mean + item
/// bias for an unknown user, global mean + user bias for an unknown item, the global mean when both are unknown.
/// </summary>
public sealed class PeftNeuralCollaborativeFilteringTransformer : PeftRecommenderTransformer, IRecommenderTransformer<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel>
{
    internal const string LoaderSignature = "PeftNeuralCF";

    internal PeftNeuralCollaborativeFilteringTransformer(IHostEnvironment env, NeuralCollaborativeFilteringModel model, TimeSpan trainingTime)
        : base(env, model, trainingTime, nameof(PeftNeuralCollaborativeFilteringTransformer))
    {
        Model = model;
    }

    /// <summary>Output sizes of the MLP's hidden layers, in order.</summary>
    public IReadOnlyList<int> HiddenLayerSizes => Model.Settings.HiddenLayerSizes;

    internal NeuralCollaborativeFilteringModel Model { get; }

    private static VersionInfo GetVersionInfo() => ModelFile.VersionInfo("PEFTNCFM", LoaderSignature, typeof(PeftNeuralCollaborativeFilteringTransformer));

    private protected override VersionInfo SavedVersion => GetVersionInfo();

    /// <summary>Called by ML.NET's model loader.</summary>
    internal static PeftNeuralCollaborativeFilteringTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ModelFile.CheckAtModel(ctx, GetVersionInfo());
        return RecommenderFiles.Load<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel, NeuralCollaborativeFilteringSettings, NeuralCollaborativeFilteringNetwork>(env, ctx);
    }

    static string IRecommenderTransformer<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel>.Kind => "PEFT neural collaborative filtering";

    static string IRecommenderTransformer<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel>.Trainer => "PeftNeuralCollaborativeFiltering";

    static PeftNeuralCollaborativeFilteringTransformer IRecommenderTransformer<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel>.Wrap(IHostEnvironment env, NeuralCollaborativeFilteringModel model, TimeSpan trainingTime) => new(env, model, trainingTime);

    /// <summary>
    /// Loads an ML.NET model file and returns the PEFT neural collaborative filtering transformer in it (alone or in a chain), or a clear error
    /// naming the file when it is not an ML.NET model or holds another kind of model.
    /// </summary>
    internal static PeftNeuralCollaborativeFilteringTransformer LoadFile(IHostEnvironment env, string path, string what, bool asBase) =>
        RecommenderFiles.LoadFile<PeftNeuralCollaborativeFilteringTransformer, NeuralCollaborativeFilteringModel>(env, path, what, asBase);
}
