namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// The bi-encoder's embeddings of recently scored sentences, so a sentence that recurs (a query against many
/// candidates, a corpus scored in pairs) is encoded once. Bounded: beyond <see cref="Capacity"/> sentences the least
/// recently used is dropped. Thread-safe. Only a fitted (fixed) model may use it.
/// </summary>
internal sealed class EmbeddingCache
{
    private readonly object gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Sentence, float[] Vector, bool Truncated)>> entries = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Sentence, float[] Vector, bool Truncated)> recency = new();
    private long hits;
    private long misses;

    public EmbeddingCache(int capacity)
    {
        if (capacity < 0) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The capacity must be zero (off) or positive.");
        Capacity = capacity;
    }

    /// <summary>The most sentences kept.</summary>
    public int Capacity { get; }

    /// <summary>Sentences kept now.</summary>
    public int Count
    {
        get
        {
            lock (gate) return entries.Count;
        }
    }

    /// <summary>Look-ups that found their sentence.</summary>
    public long Hits => Interlocked.Read(ref hits);

    /// <summary>Look-ups that did not.</summary>
    public long Misses => Interlocked.Read(ref misses);

    public bool TryGet(string sentence, out float[] vector, out bool truncated)
    {
        lock (gate)
        {
            if (entries.TryGetValue(sentence, out var node))
            {
                recency.Remove(node);
                recency.AddFirst(node);
                (vector, truncated) = (node.Value.Vector, node.Value.Truncated);
                hits++;
                return true;
            }
            misses++;
            (vector, truncated) = (Array.Empty<float>(), false);
            return false;
        }
    }

    /// <summary>Keeps <paramref name="vector"/> (not copied: callers never change it) as the most recently used.</summary>
    public void Add(string sentence, float[] vector, bool truncated)
    {
        if (Capacity == 0) return;
        lock (gate)
        {
            if (entries.TryGetValue(sentence, out var existing)) recency.Remove(existing);
            var node = recency.AddFirst((sentence, vector, truncated));
            entries[sentence] = node;
            while (entries.Count > Capacity)
            {
                var last = recency.Last!;
                recency.RemoveLast();
                entries.Remove(last.Value.Sentence);
            }
        }
    }
}
