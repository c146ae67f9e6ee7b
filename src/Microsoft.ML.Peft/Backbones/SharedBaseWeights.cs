using Microsoft.ML.Peft.Methods;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>
/// The frozen base-model tensors that models loaded in this process share when they were trained on the same base
/// model file (same SHA-256) and run on the same device: ten adapters loaded for one base hold its weights once. A
/// cache of read-only values keyed by their content's hash: each model holds its store; the store goes when the last
/// model that uses it is collected. Parameters a method trains (BitFit's biases, full fine-tuning's weights) are never
/// shared, and a model that shares must not change its base weights in place (it scores with its adapter unmerged).
/// </summary>
internal sealed class SharedBaseWeights
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, WeakReference<SharedBaseWeights>> Stores = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> tensors = new(StringComparer.Ordinal);

    private SharedBaseWeights() { }

    /// <summary>
    /// Points every frozen parameter of <paramref name="adapted"/>'s backbone at the shared tensor of the same name, or
    /// makes this model's tensor the shared one when there is none yet. Returns the store, which the model must keep.
    /// </summary>
    public static SharedBaseWeights Share(AdaptedBackbone adapted, string sha256, Device device)
    {
        var trained = new HashSet<IntPtr>(adapted.Method.Parameters(adapted.Backbone).Select(p => p.Parameter.Handle));
        var key = sha256 + "|" + device;
        lock (Gate)
        {
            foreach (var dead in Stores.Where(s => !s.Value.TryGetTarget(out _)).Select(s => s.Key).ToList()) Stores.Remove(dead);
            if (!Stores.TryGetValue(key, out var reference) || !reference.TryGetTarget(out var store))
            {
                store = new SharedBaseWeights();
                Stores[key] = new WeakReference<SharedBaseWeights>(store);
            }
            using (no_grad())
            {
                foreach (var (name, parameter) in adapted.Backbone.Module.named_parameters())
                {
                    // Only the base model's own tensors (those read from its file): never a method's, frozen or not.
                    if (!adapted.Backbone.SourceNames.ContainsKey(name) || trained.Contains(parameter.Handle) || parameter.requires_grad) continue;
                    if (store.tensors.TryGetValue(name, out var shared) && shared.shape.SequenceEqual(parameter.shape) && shared.dtype == parameter.dtype)
                        parameter.set_(shared);
                    else
                        store.tensors[name] = parameter.detach().DetachFromDisposeScope();
                }
            }
            return store;
        }
    }

    /// <summary>Number of shared tensors (for tests).</summary>
    public int Count
    {
        get
        {
            lock (Gate) return tensors.Count;
        }
    }

    ~SharedBaseWeights()
    {
        foreach (var t in tensors.Values) t.Dispose();
    }
}
