namespace Microsoft.ML.Peft.AutoML;

/// <summary>
/// Early termination of poor trials by asynchronous successive halving (ASHA, Li et al., 2020), as Optuna's
/// <c>SuccessiveHalvingPruner</c>: rungs at epochs 1, η, η², ...; a trial reaching a rung records its validation metric
/// there and goes on only if it ranks in the top 1/η of the metrics recorded at that rung so far (at least the best one).
/// </summary>
internal sealed class SuccessiveHalving
{
    private readonly int reduction;
    private readonly Dictionary<int, List<double>> rungs = new();

    public SuccessiveHalving(int reduction = 3)
    {
        if (reduction < 2) throw new ArgumentOutOfRangeException(nameof(reduction));
        this.reduction = reduction;
    }

    /// <summary>Whether <paramref name="epoch"/> is a rung: 1, η, η²...</summary>
    public bool IsRung(int epoch)
    {
        for (long r = 1; r <= epoch; r *= reduction)
            if (r == epoch) return true;
        return false;
    }

    /// <summary>Records a trial's metric after <paramref name="epoch"/> (higher is better) and says whether the trial should go on.</summary>
    public bool Report(int epoch, double metric)
    {
        if (!IsRung(epoch) || double.IsNaN(metric)) return true;
        if (!rungs.TryGetValue(epoch, out var values)) rungs[epoch] = values = new List<double>();
        values.Add(metric);
        int keep = Math.Max(1, (int)Math.Ceiling((double)values.Count / reduction));
        int better = values.Count(v => v > metric);
        return better < keep;
    }
}
