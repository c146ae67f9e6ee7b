using Microsoft.ML.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The training loop of recommenders on implicit feedback (matrix factorisation and neural collaborative filtering):
/// shuffled mini-batches of interactions, each with <see cref="Settings.NegativesPerPositive"/> negatives drawn for its
/// user from the items that user has not interacted with; loss = the ranking loss (<see cref="ImplicitFeedbackLoss"/>) +
/// Lambda × the model's regularisation of the batch's scored pairs; Adam (or SGD). A pass's mean loss is reported after it, and a
/// non-finite batch loss stops training with an error naming the learning rate.
/// </summary>
internal static class ImplicitLoop
{
    public const int MaxNegativesPerPositive = 1000;

    public sealed record Settings(ImplicitFeedbackLoss Loss, int NegativesPerPositive, double LearningRate, double Lambda, int Iterations, int BatchSize, int Seed,
        MatrixFactorizationOptimizer Optimizer = MatrixFactorizationOptimizer.Adam);

    /// <summary>Checks the implicit-feedback options a trainer shares; messages name the option.</summary>
    public static void Validate(RecommendationFeedback feedback, ImplicitFeedbackLoss loss, int negativesPerPositive)
    {
        if (!Enum.IsDefined(feedback)) throw new ArgumentOutOfRangeException("Feedback", feedback, "Feedback must be Explicit or Implicit.");
        if (!Enum.IsDefined(loss)) throw new ArgumentOutOfRangeException("ImplicitLoss", loss, "ImplicitLoss must be BinaryCrossEntropy or Bpr.");
        if (negativesPerPositive < 1 || negativesPerPositive > MaxNegativesPerPositive)
            throw new ArgumentOutOfRangeException("NegativesPerPositive", negativesPerPositive, $"NegativesPerPositive must be from 1 to {MaxNegativesPerPositive}.");
    }

    public static void Run(IHost host, IChannel ch, InteractionData data, Device device, Generator generator, IReadOnlyList<Parameter> parameters, Settings settings,
        Func<Tensor, Tensor, Tensor> forward, Func<Tensor, Tensor, Tensor> regularisation, Action<int, double>? passCompleted)
    {
        var sampler = new NegativeSampler(data);
        var rows = Enumerable.Range(0, data.Count).Where(r => !sampler.Saturated(data.Users[r])).ToArray();
        if (rows.Length < data.Count)
        {
            int saturated = data.Users.Distinct().Count(sampler.Saturated);
            if (rows.Length == 0)
                throw new ArgumentException($"Every user of the training data interacted with every item ({data.ItemCount}): no negative can be sampled for implicit feedback.", "input");
            ch.Warning($"{data.Count - rows.Length} interactions of {saturated} users who interacted with every item were skipped: no negative can be sampled for them.");
        }
        int k = settings.NegativesPerPositive;
        var random = new Random(settings.Seed);
        using optim.Optimizer optimizer = settings.Optimizer == MatrixFactorizationOptimizer.Sgd
            ? optim.SGD(parameters, settings.LearningRate)
            : optim.Adam(parameters, settings.LearningRate);
        int n = rows.Length;
        for (int pass = 1; pass <= settings.Iterations; pass++)
        {
            double lossSum = 0;
            long[] order;
            using (var permutation = randperm(n, generator: generator)) order = permutation.data<long>().ToArray();
            for (int start = 0; start < n; start += settings.BatchSize)
            {
                host.CheckAlive();
                int b = Math.Min(settings.BatchSize, n - start);
                // Pairs: the b positives first, then each positive's k negatives in turn (positive-major).
                var users = new long[b * (1 + k)];
                var items = new long[b * (1 + k)];
                for (int p = 0; p < b; p++)
                {
                    int row = rows[order[start + p]];
                    int user = data.Users[row];
                    users[p] = user;
                    items[p] = data.Items[row];
                    for (int j = 0; j < k; j++)
                    {
                        users[b + p * k + j] = user;
                        items[b + p * k + j] = sampler.Sample(user, random);
                    }
                }
                using var scope = NewDisposeScope();
                var u = tensor(users).to(device);
                var i = tensor(items).to(device);
                var scores = forward(u, i);
                var positive = scores.narrow(0, 0, b);
                var negative = scores.narrow(0, b, b * k);
                var rankingLoss = settings.Loss == ImplicitFeedbackLoss.Bpr
                    // -log σ(s+ - s-) = softplus(s- - s+)
                    ? nn.functional.softplus(negative.sub(positive.repeat_interleave(k))).mean()
                    : nn.functional.binary_cross_entropy_with_logits(scores, cat(new[] { ones(b, device: device), zeros(b * k, device: device) }));
                var loss = settings.Lambda > 0 ? rankingLoss.add(regularisation(u, i).mul(settings.Lambda)) : rankingLoss;
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                float batchLoss = rankingLoss.item<float>();
                if (!float.IsFinite(batchLoss))
                    throw new InvalidOperationException($"Training diverged in pass {pass}: the loss of a batch is {batchLoss}. Lower LearningRate (now {settings.LearningRate}).");
                lossSum += batchLoss * b;
            }
            passCompleted?.Invoke(pass, lossSum / n);
        }
    }

    /// <summary>
    /// Draws, for a user, an item (table row 1..ItemCount) the user has not interacted with in the training data, uniformly:
    /// by rejection for users who interacted with at most half of the items, from the list of the others otherwise.
    /// </summary>
    internal sealed class NegativeSampler
    {
        private readonly int itemCount;
        private readonly Dictionary<int, int[]> seen = new();
        private readonly Dictionary<int, int[]> unseen = new();

        public NegativeSampler(InteractionData data)
        {
            itemCount = data.ItemCount;
            foreach (var group in Enumerable.Range(0, data.Count).GroupBy(r => data.Users[r]))
            {
                var items = group.Select(r => data.Items[r]).Distinct().Order().ToArray();
                seen[group.Key] = items;
                if (items.Length > itemCount / 2) unseen[group.Key] = Enumerable.Range(1, itemCount).Where(i => Array.BinarySearch(items, i) < 0).ToArray();
            }
        }

        /// <summary>Whether the user interacted with every item (no negative exists).</summary>
        public bool Saturated(int user) => seen.TryGetValue(user, out var items) && items.Length >= itemCount;

        public int Sample(int user, Random random)
        {
            if (unseen.TryGetValue(user, out var others)) return others[random.Next(others.Length)];
            var items = seen.GetValueOrDefault(user) ?? Array.Empty<int>();
            while (true)
            {
                int item = random.Next(1, itemCount + 1);
                if (Array.BinarySearch(items, item) < 0) return item;
            }
        }
    }
}
