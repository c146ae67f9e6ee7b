using System.Diagnostics;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// <see cref="PeftMatrixFactorizationTrainer"/> on implicit feedback: the same biased factor model
/// (<c>score(u, i) = b_u + b_i + p_u · q_i</c>, the global term starting at zero) trained with a ranking loss against
/// sampled negatives (<see cref="ImplicitLoop"/>). The score is a relevance, never clamped; the saved model records the
/// feedback kind.
/// </summary>
internal static class ImplicitMatrixFactorization
{
    public static PeftMatrixFactorizationTransformer Fit(IHost host, IChannel ch, PeftMatrixFactorizationTrainer.Options options, IDataView input, Device device,
        Action<int, double> passCompleted)
    {
        IdColumn.Announce(ch, input.Schema, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName);
        var data = InteractionData.Read(input, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, "training data");
        data.CheckUsable(ch, options.MatrixColumnIndexColumnName, options.MatrixRowIndexColumnName, "training data");
        var settings = new MatrixFactorizationSettings
        {
            UserColumnName = options.MatrixColumnIndexColumnName,
            ItemColumnName = options.MatrixRowIndexColumnName,
            LabelColumnName = options.LabelColumnName,
            ScoreColumnName = options.ScoreColumnName,
            UserCount = data.UserCount,
            ItemCount = data.ItemCount,
            Rank = options.ApproximationRank,
            BatchSize = options.BatchSize,
            RatingMin = 0,
            RatingMax = 0,
            ClampScores = false,
            Feedback = RecommendationFeedback.Implicit,
        };
        if ((long)(settings.UserCount + 1L + settings.ItemCount + 1L) * settings.Rank > 1L << 31)
            throw new ArgumentException($"{settings.UserCount:N0} users and {settings.ItemCount:N0} items at rank {settings.Rank} make tables of more than 2^31 values; lower ApproximationRank.", nameof(options.ApproximationRank));
        ch.Info($"{data.Count:N0} interactions of {settings.UserCount:N0} users and {settings.ItemCount:N0} items (implicit feedback, {options.ImplicitLoss}, " +
            $"{options.NegativesPerPositive} negatives each); rank {settings.Rank}.");

        var model = MatrixFactorizationModel.NewBase(settings, data.UserIds, data.ItemIds, device);
        try
        {
            var clock = Stopwatch.StartNew();
            using (var generator = new Generator((ulong)options.Seed, CPU))
            {
                model.Network.Initialise(0, options.InitialStandardDeviation, generator);
                ImplicitLoop.Run(host, ch, data, device, generator, model.Network.NamedParameters().Select(p => p.Parameter).ToList(),
                    new ImplicitLoop.Settings(options.ImplicitLoss, options.NegativesPerPositive, options.LearningRate, options.Lambda, options.NumberOfIterations, options.BatchSize, options.Seed, options.Optimizer),
                    model.Network.forward, model.Network.Regularisation, passCompleted);
            }
            ch.Info($"Trained {options.NumberOfIterations} passes in {clock.Elapsed.TotalSeconds:F1} s.");
            return new PeftMatrixFactorizationTransformer(host, model, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
