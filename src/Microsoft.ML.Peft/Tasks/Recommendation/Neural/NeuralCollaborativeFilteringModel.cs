using TorchSharp;
using Microsoft.ML.Peft.Format;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation.Neural;

/// <summary>
/// A trained neural collaborative-filtering model: its settings, the ids of its table rows and the network. Predicts
/// scores of table rows and converts to and from the model file's entries: settings as metadata, ids as the vocabulary,
/// the network's tensors as the base-model entry (the adapter entry is empty: a trained model is a base that adapters
/// may later refer to).
/// </summary>
internal sealed class NeuralCollaborativeFilteringModel : IDisposable
{
    public const string Source = "The PEFT neural collaborative filtering model";

    /// <summary>A model with zero parameters on <paramref name="device"/>.</summary>
    public NeuralCollaborativeFilteringModel(NeuralCollaborativeFilteringSettings settings, IdVocabulary users, IdVocabulary items, Device device)
    {
        Settings = settings;
        Users = users;
        Items = items;
        Device = device;
        Network = new NeuralCollaborativeFilteringNetwork(settings.UserCount, settings.ItemCount, settings.Rank, settings.HiddenLayerSizes);
        Network.to(device);
    }

    public NeuralCollaborativeFilteringSettings Settings { get; }
    public IdVocabulary Users { get; }
    public IdVocabulary Items { get; }
    public Device Device { get; }
    public NeuralCollaborativeFilteringNetwork Network { get; }

    /// <summary>Scores of (user row, item row) pairs, rows as <see cref="IdVocabulary.RowOf"/> gives them (0 for unknown), in batches of the saved batch size.</summary>
    public float[] Predict(IReadOnlyList<(int User, int Item)> pairs)
    {
        var result = new float[pairs.Count];
        int batch = Math.Max(Settings.BatchSize, 1024);
        for (int start = 0; start < pairs.Count; start += batch)
        {
            int n = Math.Min(batch, pairs.Count - start);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var users = tensor(Enumerable.Range(start, n).Select(k => pairs[k].User < 0 || pairs[k].User > Settings.UserCount ? 0L : pairs[k].User).ToArray()).to(Device);
            var items = tensor(Enumerable.Range(start, n).Select(k => pairs[k].Item < 0 || pairs[k].Item > Settings.ItemCount ? 0L : pairs[k].Item).ToArray()).to(Device);
            var scores = Network.forward(users, items);
            if (Settings.ClampScores) scores = scores.clamp(Settings.RatingMin, Settings.RatingMax);
            scores.cpu().data<float>().CopyTo(result, start);
        }
        return result;
    }

    public ModelEntries ToEntries() => new()
    {
        MetadataBytes = Settings.ToUtf8(),
        VocabBytes = IdLists.ToUtf8(Users, Items),
        AdapterBytes = AdapterState.Save(Array.Empty<Methods.NamedTensor>()),
        BaseModelBytes = AdapterState.Save(Network.NamedParameters().Select(p => new Methods.NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList()),
    };

    /// <summary>Rebuilds a model from verified entries; every tensor's name, shape and values are checked.</summary>
    public static NeuralCollaborativeFilteringModel Load(int version, ModelEntries entries, Device device)
    {
        if (version < 2) throw new InvalidDataException($"{Source} has format version {version}; neural collaborative filtering models start at version 2.");
        var settings = NeuralCollaborativeFilteringSettings.Parse(entries.MetadataBytes, Source);
        var (users, items) = IdLists.Parse(entries.VocabBytes, settings.UserCount, settings.ItemCount, Source);
        if (entries.BaseModelBytes is null) throw new InvalidDataException($"{Source} has no base-model entry: the network's tensors are missing.");
        AdapterState.Load(entries.AdapterBytes, Array.Empty<Methods.NamedParameter>(), Source);
        var model = new NeuralCollaborativeFilteringModel(settings, users, items, device);
        try
        {
            AdapterState.Load(entries.BaseModelBytes, model.Network.NamedParameters(), Source);
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
