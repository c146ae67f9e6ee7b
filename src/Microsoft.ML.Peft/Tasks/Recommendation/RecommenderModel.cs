using TorchSharp;
using System.Security.Cryptography;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>The network of a recommender model kind: its named tensors (the saved base), its score, and its table sizes.</summary>
internal interface IRecommenderNetwork
{
    /// <summary>The parameters under their saved names, in a fixed order.</summary>
    IReadOnlyList<NamedParameter> NamedParameters();

    long ParameterCount { get; }

    TorchSharp.Modules.Parameter GlobalMean { get; }

    /// <summary>Scores of row indices (already mapped: 0 for unknown), int64 [n].</summary>
    Tensor forward(Tensor users, Tensor items);

    /// <summary>Whether this network has the tensors that a model of <paramref name="settings"/> (a base's) has.</summary>
    bool Fits(RecommenderSettings settings);
}

/// <summary>What the recommender transformers, the adaptation trainer and the loaders use of a model, whatever its kind.</summary>
internal interface IRecommenderModel : IDisposable
{
    RecommenderSettings Settings { get; }
    IdVocabulary Users { get; }
    IdVocabulary Items { get; }
    Device Device { get; }
    IRecommenderNetwork Network { get; }
    RecommenderAdapter? Adapter { get; }
    string BaseSha256 { get; }
    float[] Predict(IReadOnlyList<(int User, int Item)> pairs);
    ModelEntries ToEntries();
}

/// <summary>
/// What each recommender model kind provides to the shared model, adaptation and loading code: its name in messages,
/// its network and adapter, its constructors, and the sizes its entries must hold.
/// </summary>
internal interface IRecommenderKind<TModel, TSettings, TNetwork>
    where TModel : RecommenderModel<TModel, TSettings, TNetwork>, IRecommenderKind<TModel, TSettings, TNetwork>
    where TSettings : RecommenderSettings
    where TNetwork : nn.Module, IRecommenderNetwork
{
    /// <summary>The model's name in messages ("The PEFT ... model").</summary>
    static abstract string Source { get; }

    /// <summary>A network of these settings' sizes, with zero tensors on the CPU.</summary>
    static abstract TNetwork NewNetwork(TSettings settings);

    /// <summary>A zero adapter of these (adapted) settings over the frozen <paramref name="network"/>, on its device.</summary>
    static abstract RecommenderAdapter NewAdapter(TSettings settings, TNetwork network);

    /// <summary>Calls the model's constructor (see <see cref="RecommenderModel{TModel, TSettings, TNetwork}.NewBase"/> and <see cref="RecommenderModel{TModel, TSettings, TNetwork}.NewAdapted"/>).</summary>
    static abstract TModel Create(TSettings settings, IdVocabulary users, IdVocabulary items, Device device, TNetwork network, RecommenderAdapter? adapter, string? baseSha256);

    /// <summary>The float32 values a base of these settings saves.</summary>
    static abstract long BaseValues(TSettings settings);

    /// <summary>The float32 values an adapter of these (adapted) settings saves.</summary>
    static abstract long AdapterValues(TSettings settings);
}

/// <summary>
/// A trained recommender: its settings, the ids of its table rows, the network and, for an adapted model, the adapter
/// beside the frozen (possibly shared) base. Predicts scores of table rows and converts to and from the model file's
/// entries: settings as metadata, ids as the vocabulary, the adapter's tensors as the adapter entry (empty for a base
/// model) and the base's tensors as the base-model entry (absent when an adapted model refers to its base file instead).
/// </summary>
internal abstract class RecommenderModel<TModel, TSettings, TNetwork> : IRecommenderModel
    where TModel : RecommenderModel<TModel, TSettings, TNetwork>, IRecommenderKind<TModel, TSettings, TNetwork>
    where TSettings : RecommenderSettings
    where TNetwork : nn.Module, IRecommenderNetwork
{
    private readonly bool ownsNetwork;
    private string? baseSha256;

    /// <summary>A base model with zero tensors on <paramref name="device"/>, owning its network.</summary>
    public static TModel NewBase(TSettings settings, IdVocabulary users, IdVocabulary items, Device device)
    {
        var network = TModel.NewNetwork(settings);
        network.to(device);
        return TModel.Create(settings, users, items, device, network, null, null);
    }

    /// <summary>An adapted model over the frozen <paramref name="network"/> (which it does not own), with a zero adapter on its device.</summary>
    public static TModel NewAdapted(TSettings settings, IdVocabulary users, IdVocabulary items, TNetwork network, string baseSha256, Device device)
    {
        if (settings.Adaptation is null) throw new ArgumentException("An adapted model needs adaptation settings.", nameof(settings));
        return TModel.Create(settings, users, items, device, network, TModel.NewAdapter(settings, network), baseSha256);
    }

    /// <summary>A base model (<paramref name="adapter"/> null: it owns <paramref name="network"/>) or an adapted one (it shares it).</summary>
    protected RecommenderModel(TSettings settings, IdVocabulary users, IdVocabulary items, Device device, TNetwork network, RecommenderAdapter? adapter, string? baseSha256)
    {
        if ((adapter is null) != (settings.Adaptation is null)) throw new ArgumentException("An adapted model needs an adapter and adaptation settings; a base model neither.", nameof(adapter));
        Settings = settings;
        Users = users;
        Items = items;
        Device = device;
        Network = network;
        Adapter = adapter;
        ownsNetwork = adapter is null;
        this.baseSha256 = baseSha256;
    }

    public TSettings Settings { get; }
    public IdVocabulary Users { get; }
    public IdVocabulary Items { get; }
    public Device Device { get; }

    /// <summary>The base's tensors (frozen in an adapted model, where other models may share them).</summary>
    public TNetwork Network { get; }

    /// <summary>The adapter of an adapted model; null for a base model.</summary>
    public RecommenderAdapter? Adapter { get; }

    RecommenderSettings IRecommenderModel.Settings => Settings;
    IRecommenderNetwork IRecommenderModel.Network => Network;

    /// <summary>SHA-256 of the base's tensors' serialisation: what an adaptation records to find and check its base.</summary>
    public string BaseSha256 => baseSha256 ??= Convert.ToHexString(SHA256.HashData(SaveNetwork(Network)));

    private static byte[] SaveNetwork(TNetwork network) =>
        AdapterState.Save(network.NamedParameters().Select(p => new NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList());

    /// <summary>Scores of table rows (row 0: unknown).</summary>
    public Tensor Forward(Tensor users, Tensor items) => Adapter is null ? Network.forward(users, items) : Adapter.Forward(users, items);

    /// <summary>Scores of (user row, item row) pairs, rows as <see cref="IdVocabulary.RowOf"/> gives them (0 for unknown), in batches, clamped when the settings say so.</summary>
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
            var scores = Forward(users, items);
            if (Settings.ClampScores) scores = scores.clamp(Settings.RatingMin, Settings.RatingMax);
            scores.cpu().data<float>().CopyTo(result, start);
        }
        return result;
    }

    /// <summary>
    /// The file's entries. An adapted model embeds its base's tensors when <see cref="AdaptationSettings.BasePath"/> is
    /// null and otherwise leaves them in the base model file it names.
    /// </summary>
    public ModelEntries ToEntries() => new()
    {
        MetadataBytes = Settings.ToUtf8(),
        VocabBytes = IdLists.ToUtf8(Users, Items),
        AdapterBytes = AdapterState.Save((Adapter?.SavedParameters ?? Array.Empty<NamedParameter>())
            .Select(p => new NamedTensor(p.Key, p.Parameter) { TopLevel = true }).ToList()),
        BaseModelBytes = Adapter is not null && Settings.Adaptation!.BasePath is not null ? null : SaveNetwork(Network),
    };

    /// <summary>
    /// Rebuilds a model of kind <typeparamref name="TModel"/> from verified entries; every tensor's name, shape and values
    /// are checked, and the entries must hold the values the metadata claims before anything that size is allocated. An
    /// adapted model's base comes from the file itself, or else from <paramref name="findBase"/> (which loads the base
    /// model file and checks its hash), and is shared with the other models loaded with the same base.
    /// </summary>
    public static TModel Load(int version, ModelEntries entries, Device device, Func<AdaptationSettings, TModel>? findBase)
    {
        string source = TModel.Source;
        if (version < 2) throw new InvalidDataException($"{source} has format version {version}; recommendation models start at version 2.");
        var settings = RecommenderSettings.Parse<TSettings>(entries.MetadataBytes, source);
        var (users, items) = IdLists.Parse(entries.VocabBytes, settings.UserCount, settings.ItemCount, source);
        var baseSettings = settings.Adaptation is null ? settings : settings.BaseSettings<TSettings>();
        CheckHolds(entries.BaseModelBytes, TModel.BaseValues(baseSettings), "base-model", source);
        if (settings.Adaptation is not { } adaptation)
        {
            if (entries.BaseModelBytes is null) throw new InvalidDataException($"{source} has no base-model entry: its tensors are missing.");
            AdapterState.Load(entries.AdapterBytes, Array.Empty<NamedParameter>(), source);
            return Loaded(NewBase(settings, users, items, device), model => AdapterState.Load(entries.BaseModelBytes, model.Network.NamedParameters(), source));
        }
        CheckHolds(entries.AdapterBytes, TModel.AdapterValues(settings), "adapter", source);

        TNetwork network;
        if (entries.BaseModelBytes is not null)
        {
            var embedded = Loaded(NewBase(baseSettings, Prefix(users, adaptation.BaseUserCount, source), Prefix(items, adaptation.BaseItemCount, source), device),
                model => AdapterState.Load(entries.BaseModelBytes, model.Network.NamedParameters(), source + " (embedded base)"));
            if (embedded.BaseSha256 != adaptation.BaseSha256)
            {
                embedded.Dispose();
                throw new InvalidDataException($"{source}: the embedded base tensors do not match the recorded hash.");
            }
            network = SharedBases<TNetwork>.Share(embedded.Network, adaptation.BaseSha256, device);
            // Another model loaded the same base before: this copy is not needed.
            if (!ReferenceEquals(network, embedded.Network)) embedded.Dispose();
        }
        else
        {
            if (findBase is null) throw new InvalidDataException($"{source} is an adaptation whose base model file is not given.");
            network = SharedBases<TNetwork>.Find(adaptation.BaseSha256, device)
                ?? SharedBases<TNetwork>.Share(CheckedBase(findBase(adaptation), settings, users, items, source).Network, adaptation.BaseSha256, device);
        }
        if (!network.Fits(baseSettings))
            throw new InvalidDataException($"{source}: its base's tensors do not have the sizes the adaptation recorded ({adaptation.BaseUserCount} users, {adaptation.BaseItemCount} items, rank {settings.Rank}).");
        return Loaded(NewAdapted(settings, users, items, network, adaptation.BaseSha256, device), model => AdapterState.Load(entries.AdapterBytes, model.Adapter!.SavedParameters, source));
    }

    /// <summary><paramref name="model"/> after <paramref name="load"/> filled it; disposed when that fails.</summary>
    private static TModel Loaded(TModel model, Action<TModel> load)
    {
        try
        {
            load(model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Refuses an entry too short for the float32 values the metadata claims (before anything that size is allocated).</summary>
    private static void CheckHolds(byte[]? entry, long values, string what, string source)
    {
        if (entry is not null && entry.LongLength < values * sizeof(float))
            throw new InvalidDataException($"{source}: the {what} entry has {entry.LongLength:N0} bytes, too few for the {values:N0} values its metadata claims.");
    }

    /// <summary>The base model found for an adaptation, checked: a base, the same tensors (hash), and its ids the adaptation's first ids.</summary>
    private static TModel CheckedBase(TModel found, TSettings settings, IdVocabulary users, IdVocabulary items, string source)
    {
        var adaptation = settings.Adaptation!;
        if (found.Adapter is not null) throw new InvalidDataException($"{source}: the base model file given for it is itself an adaptation; give the base it was adapted from.");
        if (found.BaseSha256 != adaptation.BaseSha256)
            throw new InvalidDataException($"{source}: the base model file given for it holds other tables (SHA-256 {found.BaseSha256[..12]}…) than the base it was adapted from ({adaptation.BaseSha256[..12]}…).");
        if (!found.Users.Ids.SequenceEqual(users.Ids.Take(adaptation.BaseUserCount)) || !found.Items.Ids.SequenceEqual(items.Ids.Take(adaptation.BaseItemCount)))
            throw new InvalidDataException($"{source}: the base model's ids differ from those the adaptation recorded.");
        return found;
    }

    private static IdVocabulary Prefix(IdVocabulary ids, int count, string source) => new(ids.Ids.Take(count).ToList(), source);

    public void Dispose()
    {
        Adapter?.Dispose();
        if (ownsNetwork) Network.Dispose();
    }
}

/// <summary>
/// Frozen base networks that adapted models loaded in this process share when they adapt the same base (same tensors
/// hash) on the same device: ten adaptations of one base hold its tensors once. Held weakly: the tensors go when the
/// last model that uses them is collected. Models that share must not change the base (adapted models never do).
/// </summary>
internal static class SharedBases<TNetwork> where TNetwork : nn.Module, IRecommenderNetwork
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, WeakReference<TNetwork>> Networks = new(StringComparer.Ordinal);

    public static TNetwork? Find(string sha256, Device device)
    {
        lock (Gate)
            return Networks.TryGetValue(sha256 + "|" + device, out var reference) && reference.TryGetTarget(out var network) ? network : null;
    }

    /// <summary>The shared network of this hash and device: the one already shared, or else <paramref name="network"/> (frozen, on <paramref name="device"/>).</summary>
    public static TNetwork Share(TNetwork network, string sha256, Device device)
    {
        lock (Gate)
        {
            foreach (var dead in Networks.Where(s => !s.Value.TryGetTarget(out _)).Select(s => s.Key).ToList()) Networks.Remove(dead);
            var key = sha256 + "|" + device;
            if (Networks.TryGetValue(key, out var reference) && reference.TryGetTarget(out var shared)) return shared;
            network.to(device);
            foreach (var p in network.NamedParameters()) p.Parameter.requires_grad = false;
            Networks[key] = new WeakReference<TNetwork>(network);
            return network;
        }
    }
}
