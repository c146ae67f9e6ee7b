using TorchSharp;
using System.Security.Cryptography;
using Microsoft.ML.Peft.Format;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// A trained matrix-factorisation model: its settings, the ids of its table rows, the network of base tables and, for
/// an adapted model, the adapter beside the frozen (possibly shared) base. Predicts ratings of table rows and converts
/// to and from the model file's entries: settings as metadata, ids as the vocabulary, the adapter's tensors as the
/// adapter entry (empty for a base model) and the base tables as the base-model entry (absent when an adapted model
/// refers to its base file instead).
/// </summary>
internal sealed class MatrixFactorizationModel : IDisposable
{
    public const string Source = "The PEFT matrix factorization model";

    private readonly bool ownsNetwork;
    private string? baseSha256;

    /// <summary>A base model with zero tables, owning its network.</summary>
    public MatrixFactorizationModel(MatrixFactorizationSettings settings, IdVocabulary users, IdVocabulary items, Device device)
    {
        Settings = settings;
        Users = users;
        Items = items;
        Device = device;
        Network = new MatrixFactorizationNetwork(settings.UserCount, settings.ItemCount, settings.Rank);
        Network.to(device);
        ownsNetwork = true;
    }

    /// <summary>An adapted model over the frozen <paramref name="network"/> (which it does not own), with a zero adapter.</summary>
    public MatrixFactorizationModel(MatrixFactorizationSettings settings, IdVocabulary users, IdVocabulary items, MatrixFactorizationNetwork network, string networkSha256, Device device)
    {
        var adaptation = settings.Adaptation ?? throw new ArgumentException("An adapted model needs adaptation settings.", nameof(settings));
        Settings = settings;
        Users = users;
        Items = items;
        Device = device;
        Network = network;
        baseSha256 = networkSha256;
        Adapter = new MatrixFactorizationAdapter(adaptation.Method, adaptation.BaseUserCount, adaptation.BaseItemCount, settings.UserCount, settings.ItemCount, settings.Rank, adaptation.LoraRank);
        Adapter.to(device);
    }

    public MatrixFactorizationSettings Settings { get; }
    public IdVocabulary Users { get; }
    public IdVocabulary Items { get; }
    public Device Device { get; }

    /// <summary>The base tables (frozen in an adapted model, where other models may share them).</summary>
    public MatrixFactorizationNetwork Network { get; }

    /// <summary>The adapter of an adapted model; null for a base model.</summary>
    public MatrixFactorizationAdapter? Adapter { get; }

    /// <summary>SHA-256 of the base tables' serialisation: what an adaptation records to find and check its base.</summary>
    public string BaseSha256 => baseSha256 ??= HashTables(Network);

    public static string HashTables(MatrixFactorizationNetwork network) => Convert.ToHexString(SHA256.HashData(SaveTables(network)));

    private static byte[] SaveTables(MatrixFactorizationNetwork network) =>
        AdapterState.Save(network.NamedParameters().Select(p => new Methods.NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList());

    /// <summary>Scores of table rows (row 0: unknown).</summary>
    public Tensor Forward(Tensor users, Tensor items) => Adapter is null ? Network.forward(users, items) : Adapter.Forward(Network, users, items);

    /// <summary>Predicted ratings of (user row, item row) pairs, rows as <see cref="IdVocabulary.RowOf"/> gives them (0 for unknown).</summary>
    public float[] Predict(IReadOnlyList<(int User, int Item)> pairs)
    {
        var result = new float[pairs.Count];
        if (pairs.Count == 0) return result;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var users = tensor(pairs.Select(p => p.User < 0 || p.User > Settings.UserCount ? 0L : p.User).ToArray()).to(Device);
        var items = tensor(pairs.Select(p => p.Item < 0 || p.Item > Settings.ItemCount ? 0L : p.Item).ToArray()).to(Device);
        var scores = Forward(users, items);
        if (Settings.ClampScores) scores = scores.clamp(Settings.RatingMin, Settings.RatingMax);
        scores.cpu().data<float>().CopyTo(result, 0);
        return result;
    }

    /// <summary>
    /// The file's entries. An adapted model embeds its base tables when <see cref="AdaptationSettings.BasePath"/> is null
    /// and otherwise leaves them in the base model file it names.
    /// </summary>
    public ModelEntries ToEntries() => new()
    {
        MetadataBytes = Settings.ToUtf8(),
        VocabBytes = IdLists.ToUtf8(Users, Items),
        AdapterBytes = AdapterState.Save((Adapter?.SavedParameters ?? Array.Empty<Methods.NamedParameter>())
            .Select(p => new Methods.NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList()),
        BaseModelBytes = Adapter is not null && Settings.Adaptation!.BasePath is not null ? null : SaveTables(Network),
    };

    /// <summary>
    /// Rebuilds a model from verified entries; every tensor's name, shape and values are checked. An adapted model's
    /// base comes from the file itself, or else from <paramref name="findBase"/> (which loads the base model file and
    /// checks its hash), and is shared with the other models loaded with the same base.
    /// </summary>
    public static MatrixFactorizationModel Load(int version, ModelEntries entries, Device device, Func<AdaptationSettings, MatrixFactorizationModel>? findBase)
    {
        if (version < 2) throw new InvalidDataException($"{Source} has format version {version}; matrix factorization models start at version 2.");
        var settings = MatrixFactorizationSettings.Parse(entries.MetadataBytes, Source);
        var (users, items) = IdLists.Parse(entries.VocabBytes, settings, Source);
        // The sizes the metadata claims decide what is allocated: the entries must hold that many float32 values first.
        var tables = settings.Adaptation is null ? settings : BaseSettings(settings);
        CheckHolds(entries.BaseModelBytes, ((tables.UserCount + 1L) + (tables.ItemCount + 1L)) * (tables.Rank + 1) + 1, "base-model");
        if (settings.Adaptation is { } claimed) CheckHolds(entries.AdapterBytes, AdapterValues(settings, claimed), "adapter");
        if (settings.Adaptation is not { } adaptation)
        {
            if (entries.BaseModelBytes is null) throw new InvalidDataException($"{Source} has no base-model entry: the factor tables are missing.");
            AdapterState.Load(entries.AdapterBytes, Array.Empty<Methods.NamedParameter>(), Source);
            var model = new MatrixFactorizationModel(settings, users, items, CPU);
            try
            {
                AdapterState.Load(entries.BaseModelBytes, model.Network.NamedParameters(), Source);
                if (device.type == TorchSharp.DeviceType.CPU) return model;
                var moved = new MatrixFactorizationModel(settings, users, items, device);
                using (no_grad())
                {
                    foreach (var (to, from) in moved.Network.NamedParameters().Zip(model.Network.NamedParameters())) to.Parameter.copy_(from.Parameter);
                }
                model.Dispose();
                return moved;
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }

        MatrixFactorizationNetwork network;
        if (entries.BaseModelBytes is not null)
        {
            var baseSettings = BaseSettings(settings);
            var embedded = new MatrixFactorizationModel(baseSettings, Prefix(users, adaptation.BaseUserCount), Prefix(items, adaptation.BaseItemCount), device);
            AdapterState.Load(entries.BaseModelBytes, embedded.Network.NamedParameters(), Source + " (embedded base)");
            if (embedded.BaseSha256 != adaptation.BaseSha256) throw new InvalidDataException($"{Source}: the embedded base tables do not match the recorded hash.");
            network = SharedBases.Share(embedded.Network, adaptation.BaseSha256, device);
        }
        else
        {
            if (findBase is null) throw new InvalidDataException($"{Source} is an adaptation whose base model file is not given.");
            network = SharedBases.Find(adaptation.BaseSha256, device) ?? SharedBases.Share(CheckedBase(findBase(adaptation), settings, users, items).Network, adaptation.BaseSha256, device);
        }
        if (network.UserCount != adaptation.BaseUserCount || network.ItemCount != adaptation.BaseItemCount || network.Rank != settings.Rank)
            throw new InvalidDataException($"{Source}: its base has {network.UserCount} users, {network.ItemCount} items at rank {network.Rank}; the adaptation was trained on {adaptation.BaseUserCount}, {adaptation.BaseItemCount} at rank {settings.Rank}.");
        var adapted = new MatrixFactorizationModel(settings, users, items, network, adaptation.BaseSha256, device);
        try
        {
            AdapterState.Load(entries.AdapterBytes, adapted.Adapter!.SavedParameters, Source);
            return adapted;
        }
        catch
        {
            adapted.Dispose();
            throw;
        }
    }

    /// <summary>Refuses an entry too short for the float32 values the metadata claims (before anything that size is allocated).</summary>
    private static void CheckHolds(byte[]? entry, long values, string what)
    {
        if (entry is not null && entry.LongLength < values * sizeof(float))
            throw new InvalidDataException($"{Source}: the {what} entry has {entry.LongLength:N0} bytes, too few for the {values:N0} values its metadata claims.");
    }

    /// <summary>The number of values an adapter of these settings saves.</summary>
    private static long AdapterValues(MatrixFactorizationSettings settings, AdaptationSettings adaptation)
    {
        long rows = settings.UserCount + 1L + settings.ItemCount + 1L;
        long values = 1 + rows + 4L * (settings.Rank + 1);
        return values + adaptation.Method switch
        {
            MatrixFactorizationAdaptation.Lora => rows * adaptation.LoraRank + 2L * adaptation.LoraRank * settings.Rank,
            MatrixFactorizationAdaptation.Full => rows * settings.Rank,
            _ => 0,
        };
    }

    /// <summary>The base model found for an adaptation, checked: same tables (hash), and its ids the adaptation's first ids.</summary>
    private static MatrixFactorizationModel CheckedBase(MatrixFactorizationModel found, MatrixFactorizationSettings settings, IdVocabulary users, IdVocabulary items)
    {
        var adaptation = settings.Adaptation!;
        if (found.Adapter is not null) throw new InvalidDataException($"{Source}: the base model file given for it is itself an adaptation; give the base it was adapted from.");
        if (found.BaseSha256 != adaptation.BaseSha256)
            throw new InvalidDataException($"{Source}: the base model file given for it holds other tables (SHA-256 {found.BaseSha256[..12]}…) than the base it was adapted from ({adaptation.BaseSha256[..12]}…).");
        if (!found.Users.Ids.SequenceEqual(users.Ids.Take(adaptation.BaseUserCount)) || !found.Items.Ids.SequenceEqual(items.Ids.Take(adaptation.BaseItemCount)))
            throw new InvalidDataException($"{Source}: the base model's ids differ from those the adaptation recorded.");
        return found;
    }

    private static IdVocabulary Prefix(IdVocabulary ids, int count) => new(ids.Ids.Take(count).ToList(), Source);

    /// <summary>The settings of the base an adapted model's settings describe.</summary>
    public static MatrixFactorizationSettings BaseSettings(MatrixFactorizationSettings adapted) => new()
    {
        UserColumnName = adapted.UserColumnName,
        ItemColumnName = adapted.ItemColumnName,
        LabelColumnName = adapted.LabelColumnName,
        ScoreColumnName = adapted.ScoreColumnName,
        UserCount = adapted.Adaptation!.BaseUserCount,
        ItemCount = adapted.Adaptation.BaseItemCount,
        Rank = adapted.Rank,
        BatchSize = adapted.BatchSize,
        RatingMin = adapted.RatingMin,
        RatingMax = adapted.RatingMax,
        ClampScores = adapted.ClampScores,
    };

    public void Dispose()
    {
        Adapter?.Dispose();
        if (ownsNetwork) Network.Dispose();
    }
}

/// <summary>
/// Frozen base tables that adapted models loaded in this process share when they adapt the same base (same tables
/// hash) on the same device: ten adaptations of one base hold its tables once. Held weakly: the tables go when the last
/// model that uses them is collected. Models that share must not change the tables (adapted models never do).
/// </summary>
internal static class SharedBases
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, WeakReference<MatrixFactorizationNetwork>> Networks = new(StringComparer.Ordinal);

    public static MatrixFactorizationNetwork? Find(string sha256, Device device)
    {
        lock (Gate)
            return Networks.TryGetValue(sha256 + "|" + device, out var reference) && reference.TryGetTarget(out var network) ? network : null;
    }

    /// <summary>The shared tables of this hash and device: those already shared, or else <paramref name="network"/> (frozen, on <paramref name="device"/>).</summary>
    public static MatrixFactorizationNetwork Share(MatrixFactorizationNetwork network, string sha256, Device device)
    {
        lock (Gate)
        {
            foreach (var dead in Networks.Where(s => !s.Value.TryGetTarget(out _)).Select(s => s.Key).ToList()) Networks.Remove(dead);
            var key = sha256 + "|" + device;
            if (Networks.TryGetValue(key, out var reference) && reference.TryGetTarget(out var shared)) return shared;
            network.to(device);
            foreach (var p in network.NamedParameters()) p.Parameter.requires_grad = false;
            Networks[key] = new WeakReference<MatrixFactorizationNetwork>(network);
            return network;
        }
    }
}
