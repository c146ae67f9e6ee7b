using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>
/// The trained part of an adapted recommender, beside its frozen base: a shift of the base's global mean, the adapted
/// user and item rows (<see cref="AdaptedRows"/>: bias offsets, table offsets by method, new rows for ids the base never
/// saw, the unknown row) and what a model kind adds (<see cref="ExtraTrained"/>: adapters of the neural model's layers).
/// The score is <c>global_mean + shift + user_bias' + item_bias' + interaction(user rows', item rows')</c>, the
/// interaction being the model kind's (<see cref="Interaction"/>). It refers to the base's tensors and never changes them.
/// </summary>
internal abstract class RecommenderAdapter : nn.Module
{
    public const string GlobalMeanDeltaName = "global_mean_delta";
    public const string UserBiasDeltaName = "user_bias_delta";
    public const string ItemBiasDeltaName = "item_bias_delta";
    public const string UserMeanName = "user_mean";
    public const string ItemMeanName = "item_mean";
    public const string UnknownUserName = "unknown_user";
    public const string UnknownItemName = "unknown_item";

    private readonly Frozen frozen;
    private readonly Parameter globalMeanDelta;

    /// <summary>The base's tensors the adapter reads, out of reach of TorchSharp's registration of module fields (the adapter must never dispose or move them).</summary>
    private sealed record Frozen(Parameter GlobalMean);

    protected RecommenderAdapter(string name, MatrixFactorizationAdaptation method, int loraRank, Parameter baseGlobalMean, AdaptedRows users, AdaptedRows items) : base(name)
    {
        Method = method;
        LoraRank = method == MatrixFactorizationAdaptation.Lora ? loraRank : 0;
        frozen = new Frozen(baseGlobalMean);
        globalMeanDelta = new Parameter(zeros(1, device: baseGlobalMean.device));
        register_parameter(GlobalMeanDeltaName, globalMeanDelta);
        Users = users;
        Items = items;
        foreach (var p in users.TrainedParameters.Concat(users.Constants).Concat(items.TrainedParameters).Concat(items.Constants)) register_parameter(p.Key, p.Parameter);
    }

    public MatrixFactorizationAdaptation Method { get; }
    public int LoraRank { get; }
    public AdaptedRows Users { get; }
    public AdaptedRows Items { get; }
    public int BaseUserCount => Users.BaseCount;
    public int BaseItemCount => Items.BaseCount;
    public int UserCount => Users.Count;
    public int ItemCount => Items.Count;

    /// <summary>What the model kind trains besides the rows (named as saved).</summary>
    protected virtual IEnumerable<NamedParameter> ExtraTrained => Array.Empty<NamedParameter>();

    /// <summary>The parameters the adaptation trains.</summary>
    public IReadOnlyList<NamedParameter> TrainedParameters =>
        new[] { new NamedParameter(GlobalMeanDeltaName, globalMeanDelta) { TopLevel = true } }
            .Concat(Users.TrainedParameters).Concat(Items.TrainedParameters).Concat(ExtraTrained).ToList();

    /// <summary>Everything saved: the trained parameters and the fixed rows.</summary>
    public IReadOnlyList<NamedParameter> SavedParameters => TrainedParameters.Concat(Users.Constants).Concat(Items.Constants).ToList();

    public long TrainedParameterCount => TrainedParameters.Sum(p => p.Parameter.numel());

    /// <summary>
    /// Starts the adaptation: the base's mean user and item rows, the rows' LoRA B matrices from N(0, std²), then the
    /// model kind's own (<see cref="InitialiseExtra"/>); the adapted model starts as the base.
    /// </summary>
    public void Initialise(double std, Generator generator)
    {
        Users.Initialise(std, generator);
        Items.Initialise(std, generator);
        InitialiseExtra(generator);
    }

    protected virtual void InitialiseExtra(Generator generator) { }

    /// <summary>
    /// Fixes who unknown ids are (cold start at scoring time): the mean adapted row of the new users, and of the new items,
    /// that the adaptation trained, since the ids that come next resemble the newcomers of the adaptation's period more
    /// than the base's average. Without new users (items) the unknown user (item) stays the base's.
    /// </summary>
    public void FixUnknownRows()
    {
        Users.FixUnknownRow();
        Items.FixUnknownRow();
    }

    /// <summary>The interaction term of the adapted rows of the pairs (<paramref name="users"/>, <paramref name="items"/>: int64 [n] rows).</summary>
    protected abstract Tensor Interaction(Tensor users, Tensor items, Tensor[] userTables, Tensor[] itemTables);

    /// <summary>The adapted model's scores of table rows (0 for unknown ids).</summary>
    public Tensor Forward(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var (userTables, userBias) = Users.Rows(users);
        var (itemTables, itemBias) = Items.Rows(items);
        return Interaction(users, items, userTables, itemTables).add(userBias).add(itemBias)
            .add(frozen.GlobalMean.detach()).add(globalMeanDelta).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The regularisation of a batch: the mean over its ratings of the squared norms of what the adaptation changes for
    /// the rated user and item (row offsets and bias offsets), so an adaptation stays near the base unless the new
    /// ratings pull it away, plus what the model kind adds (<see cref="SharedRegularisation"/>). The global mean's shift
    /// is not regularised.
    /// </summary>
    public Tensor Regularisation(Tensor users, Tensor items)
    {
        using var scope = NewDisposeScope();
        var rows = Users.Regularisation(users).add(Items.Regularisation(items)).mean();
        var shared = SharedRegularisation();
        return (shared is null ? rows : rows.add(shared)).MoveToOuterDisposeScope();
    }

    /// <summary>The regularisation of what every rating shares (a model kind's layer adapters), added to each batch's; null when none.</summary>
    protected virtual Tensor? SharedRegularisation() => null;

    /// <summary>The number of values an adapter saves: the global mean's shift and both sides' (plus the model kind's, which the caller adds).</summary>
    public static long SavedValues(RecommenderSettings settings, IReadOnlyList<int> widths)
    {
        var adaptation = settings.Adaptation!;
        return 1 + AdaptedRows.SavedValues(settings.UserCount, widths, adaptation.Method, adaptation.LoraRank)
            + AdaptedRows.SavedValues(settings.ItemCount, widths, adaptation.Method, adaptation.LoraRank);
    }
}
