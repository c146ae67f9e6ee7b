using Microsoft.ML.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The training loop of rating models (base and adaptation): shuffled mini-batches of ratings, loss = mean squared
/// error + Lambda × the model's regularisation of the batch, Adam or SGD; a pass's mean squared error is reported after
/// it, and a non-finite batch error stops training with an error naming the learning rate.
/// </summary>
internal static class RatingLoop
{
    public sealed record Settings(MatrixFactorizationOptimizer Optimizer, double LearningRate, double Lambda, int Iterations, int BatchSize);

    public static void Run(IHost host, RatingData data, Device device, Generator generator, IReadOnlyList<Parameter> parameters, Settings settings,
        Func<Tensor, Tensor, Tensor> forward, Func<Tensor, Tensor, Tensor> regularisation, Action<int, double>? passCompleted)
    {
        using var users = tensor(data.Users.Select(u => (long)u).ToArray()).to(device);
        using var items = tensor(data.Items.Select(i => (long)i).ToArray()).to(device);
        using var ratings = tensor(data.Ratings).to(device);
        using optim.Optimizer optimizer = settings.Optimizer == MatrixFactorizationOptimizer.Sgd
            ? optim.SGD(parameters, settings.LearningRate)
            : optim.Adam(parameters, settings.LearningRate);
        int n = data.Count;
        for (int pass = 1; pass <= settings.Iterations; pass++)
        {
            double squaredError = 0;
            using (var order = randperm(n, generator: generator).to(device))
            {
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    host.CheckAlive();
                    using var scope = NewDisposeScope();
                    var rows = order.narrow(0, start, Math.Min(settings.BatchSize, n - start));
                    var u = users.index_select(0, rows);
                    var i = items.index_select(0, rows);
                    var error = forward(u, i).sub(ratings.index_select(0, rows));
                    var mse = error.square().mean();
                    var loss = settings.Lambda > 0 ? mse.add(regularisation(u, i).mul(settings.Lambda)) : mse;
                    optimizer.zero_grad();
                    loss.backward();
                    optimizer.step();
                    float batchMse = mse.item<float>();
                    if (!float.IsFinite(batchMse))
                        throw new InvalidOperationException($"Training diverged in pass {pass}: the squared error of a batch is {batchMse}. " +
                            $"Lower LearningRate (now {settings.LearningRate}){(settings.Optimizer == MatrixFactorizationOptimizer.Sgd ? " or use the Adam optimizer" : "")}.");
                    squaredError += batchMse * rows.shape[0];
                }
            }
            passCompleted?.Invoke(pass, squaredError / n);
        }
    }
}
