using System.Diagnostics;
using System.Threading.Channels;

namespace PeftServing;

/// <summary>Predictions for the rows of one request, and the model (file hash, class names) that made them.</summary>
/// <param name="ModelSha256">SHA-256 of the model file that scored the rows.</param>
/// <param name="Labels">That model's class names, in score order.</param>
/// <param name="Predictions">One prediction per row, in the request's order.</param>
public sealed record ScoredRows(string ModelSha256, IReadOnlyList<string> Labels, IReadOnlyList<Prediction> Predictions);

/// <summary>
/// Gathers the requests that arrive for one adapter within a small time window (or until a batch holds
/// <c>MaxBatchRows</c> texts) and scores them in one call, then hands each caller its own rows back. One batch is scored
/// at a time per adapter; requests arriving meanwhile form the next batch, so the batches grow with the load. Stopping
/// scores what is queued before the loop ends.
/// </summary>
public sealed class PredictionBatcher : IAsyncDisposable
{
    private readonly Channel<Pending> queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Func<IReadOnlyList<TextRow>, ScoredRows> score;
    private readonly TimeSpan window;
    private readonly int maxRows;
    private readonly Task loop;
    private long batches;
    private long rows;

    /// <summary>Starts the batching loop.</summary>
    /// <param name="score">Scores a batch (all requests' rows, in order) and says which model did.</param>
    /// <param name="window">How long a batch waits for more requests after its first one.</param>
    /// <param name="maxRows">The most rows a batch gathers.</param>
    public PredictionBatcher(Func<IReadOnlyList<TextRow>, ScoredRows> score, TimeSpan window, int maxRows)
    {
        this.score = score;
        this.window = window;
        this.maxRows = maxRows;
        loop = Task.Run(RunAsync);
    }

    /// <summary>Batches scored so far.</summary>
    public long Batches => Interlocked.Read(ref batches);

    /// <summary>Rows scored so far in those batches.</summary>
    public long Rows => Interlocked.Read(ref rows);

    /// <summary>Queues the rows of one request; completes with their predictions once their batch is scored.</summary>
    public Task<ScoredRows> PredictAsync(IReadOnlyList<TextRow> requestRows)
    {
        var pending = new Pending(requestRows, new TaskCompletionSource<ScoredRows>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!queue.Writer.TryWrite(pending)) pending.Done.SetException(new ObjectDisposedException(nameof(PredictionBatcher), "The service is stopping."));
        return pending.Done.Task;
    }

    private async Task RunAsync()
    {
        var reader = queue.Reader;
        var batch = new List<Pending>();
        Pending? carried = null; // a request that did not fit into the previous batch
        while (carried is not null || await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            batch.Clear();
            if (carried is not null) batch.Add(carried);
            else if (reader.TryRead(out var first)) batch.Add(first);
            else continue;
            carried = null;
            int count = batch[0].Rows.Count;
            long deadline = Stopwatch.GetTimestamp() + (long)(window.TotalSeconds * Stopwatch.Frequency);
            while (count < maxRows)
            {
                if (reader.TryRead(out var next))
                {
                    if (count + next.Rows.Count > maxRows)
                    {
                        carried = next;
                        break;
                    }
                    batch.Add(next);
                    count += next.Rows.Count;
                    continue;
                }
                var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
                if (left <= TimeSpan.Zero) break;
                using var timeout = new CancellationTokenSource(left);
                try
                {
                    if (!await reader.WaitToReadAsync(timeout.Token).ConfigureAwait(false)) break;
                }
                catch (OperationCanceledException)
                {
                    break; // the window is over
                }
            }
            Score(batch, count);
        }
    }

    private void Score(List<Pending> batch, int count)
    {
        try
        {
            var all = batch.Count == 1 ? batch[0].Rows : batch.SelectMany(p => p.Rows).ToList();
            var scored = score(all);
            Interlocked.Increment(ref batches);
            Interlocked.Add(ref rows, count);
            int at = 0;
            foreach (var pending in batch)
            {
                var own = scored.Predictions.Skip(at).Take(pending.Rows.Count).ToList();
                at += pending.Rows.Count;
                pending.Done.TrySetResult(scored with { Predictions = own });
            }
        }
        catch (Exception e)
        {
            foreach (var pending in batch) pending.Done.TrySetException(e);
        }
    }

    /// <summary>Stops taking requests, scores those already queued, and waits for the loop to end.</summary>
    public async ValueTask DisposeAsync()
    {
        queue.Writer.TryComplete();
        await loop.ConfigureAwait(false);
    }

    private sealed record Pending(IReadOnlyList<TextRow> Rows, TaskCompletionSource<ScoredRows> Done);
}
