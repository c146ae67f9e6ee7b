using TorchSharp;
using Microsoft.ML.Peft.Format;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// A trained matrix-factorisation model: the network on its device and its settings; predicts ratings of key pairs and
/// converts to and from the model file's entries (the settings as metadata, the tensors as the base-model entry under
/// their parameter names; the adapter entry is empty for a base model).
/// </summary>
internal sealed class MatrixFactorizationModel : IDisposable
{
    public const string Source = "The PEFT matrix factorization model";

    public MatrixFactorizationModel(MatrixFactorizationSettings settings, Device device)
    {
        Settings = settings;
        Device = device;
        Network = new MatrixFactorizationNetwork(settings.UserCount, settings.ItemCount, settings.Rank);
        Network.to(device);
    }

    public MatrixFactorizationSettings Settings { get; }
    public Device Device { get; }
    public MatrixFactorizationNetwork Network { get; }

    /// <summary>The table row of a key: the key itself within the training keys, else 0 (the unknown row).</summary>
    public static long Row(ulong key, int count) => key == 0 || key > (ulong)count ? 0 : (long)key;

    /// <summary>Predicted ratings of (user key, item key) pairs; unknown keys fall back to biases and the global mean.</summary>
    public float[] Predict(IReadOnlyList<(ulong User, ulong Item)> pairs)
    {
        var result = new float[pairs.Count];
        if (pairs.Count == 0) return result;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var users = tensor(pairs.Select(p => Row(p.User, Settings.UserCount)).ToArray()).to(Device);
        var items = tensor(pairs.Select(p => Row(p.Item, Settings.ItemCount)).ToArray()).to(Device);
        var scores = Network.forward(users, items);
        if (Settings.ClampScores) scores = scores.clamp(Settings.RatingMin, Settings.RatingMax);
        scores.cpu().data<float>().CopyTo(result, 0);
        return result;
    }

    public ModelEntries ToEntries() => new()
    {
        MetadataBytes = Settings.ToUtf8(),
        VocabBytes = Array.Empty<byte>(),
        AdapterBytes = AdapterState.Save(Array.Empty<Methods.NamedTensor>()),
        BaseModelBytes = AdapterState.Save(Network.NamedParameters().Select(p => new Methods.NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList()),
    };

    /// <summary>Rebuilds a model from verified entries; every tensor's name, shape and values are checked.</summary>
    public static MatrixFactorizationModel Load(int version, ModelEntries entries, Device device)
    {
        if (version < 2) throw new InvalidDataException($"{Source} has format version {version}; matrix factorization models start at version 2.");
        var settings = MatrixFactorizationSettings.Parse(entries.MetadataBytes, Source);
        if (entries.BaseModelBytes is null) throw new InvalidDataException($"{Source} has no base-model entry: the factor tables are missing.");
        var model = new MatrixFactorizationModel(settings, CPU);
        try
        {
            AdapterState.Load(entries.BaseModelBytes, model.Network.NamedParameters(), Source);
            AdapterState.Load(entries.AdapterBytes, Array.Empty<Methods.NamedParameter>(), Source);
            if (device.type != TorchSharp.DeviceType.CPU)
            {
                var moved = new MatrixFactorizationModel(settings, device);
                using (no_grad())
                {
                    foreach (var (to, from) in moved.Network.NamedParameters().Zip(model.Network.NamedParameters())) to.Parameter.copy_(from.Parameter);
                }
                model.Dispose();
                return moved;
            }
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose() => Network.Dispose();
}
