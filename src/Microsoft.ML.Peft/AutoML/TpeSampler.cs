namespace Microsoft.ML.Peft.AutoML;

/// <summary>One dimension of a search: a choice among <see cref="Choices"/> values (by index), or a number in [Low, High] when Choices is 0.</summary>
internal sealed record SearchDimension(string Name, int Choices, double Low = 0, double High = 0)
{
    public bool IsCategorical => Choices > 0;
}

/// <summary>
/// A tree-structured Parzen estimator (Bergstra et al., 2011), independent per dimension as Optuna's default: after a few
/// random start-up trials, the finished trials are split into the best quarter ("good") and the rest; each dimension gets
/// a density l(x) over the good values and g(x) over the others (smoothed counts for choices, Gaussian kernels plus a flat
/// prior for numbers), and of several candidates drawn from l the one with the highest l(x)/g(x) is taken.
/// Deterministic for a given <see cref="Random"/>.
/// </summary>
internal sealed class TpeSampler
{
    private readonly IReadOnlyList<SearchDimension> dimensions;
    private readonly int startupTrials;
    private readonly int candidates;
    private readonly double gamma;

    public TpeSampler(IReadOnlyList<SearchDimension> dimensions, int startupTrials = 5, int candidates = 24, double gamma = 0.25)
    {
        this.dimensions = dimensions;
        this.startupTrials = startupTrials;
        this.candidates = candidates;
        this.gamma = gamma;
    }

    /// <summary>A point (a value per dimension: an index for choices) given the finished trials' points and scores (higher is better; failed trials as negative infinity).</summary>
    public double[] Sample(IReadOnlyList<(double[] Point, double Score)> history, Random random)
    {
        var point = new double[dimensions.Count];
        if (history.Count < startupTrials)
        {
            for (int d = 0; d < dimensions.Count; d++) point[d] = Uniform(dimensions[d], random);
            return point;
        }
        var ranked = history.OrderByDescending(h => h.Score).ToList();
        int goodCount = Math.Max(1, (int)Math.Ceiling(gamma * ranked.Count));
        var good = ranked.Take(goodCount).Select(h => h.Point).ToList();
        var bad = ranked.Skip(goodCount).Select(h => h.Point).ToList();
        for (int d = 0; d < dimensions.Count; d++)
        {
            var dim = dimensions[d];
            var goodValues = good.Select(p => p[d]).ToList();
            var badValues = bad.Select(p => p[d]).ToList();
            double best = double.NaN, bestRatio = double.NegativeInfinity;
            for (int c = 0; c < candidates; c++)
            {
                double x = dim.IsCategorical ? SampleChoice(dim, goodValues, random) : SampleNumber(dim, goodValues, random);
                double ratio = LogDensity(dim, goodValues, x) - LogDensity(dim, badValues, x);
                if (ratio > bestRatio)
                {
                    bestRatio = ratio;
                    best = x;
                }
            }
            point[d] = best;
        }
        return point;
    }

    private static double Uniform(SearchDimension dim, Random random) =>
        dim.IsCategorical ? random.Next(dim.Choices) : dim.Low + random.NextDouble() * (dim.High - dim.Low);

    /// <summary>Smoothed choice probabilities: (count + 1) / (n + choices).</summary>
    private static double[] ChoiceWeights(SearchDimension dim, IReadOnlyList<double> values)
    {
        var weights = new double[dim.Choices];
        for (int c = 0; c < dim.Choices; c++) weights[c] = 1;
        foreach (var v in values) weights[(int)v] += 1;
        double sum = weights.Sum();
        for (int c = 0; c < dim.Choices; c++) weights[c] /= sum;
        return weights;
    }

    private static double SampleChoice(SearchDimension dim, IReadOnlyList<double> good, Random random)
    {
        var weights = ChoiceWeights(dim, good);
        double u = random.NextDouble(), cumulative = 0;
        for (int c = 0; c < weights.Length; c++)
        {
            cumulative += weights[c];
            if (u < cumulative) return c;
        }
        return weights.Length - 1;
    }

    /// <summary>The kernels' width: the range over (1 + n)^(1/5), at least a hundredth of it (Scott's rule on the range).</summary>
    private static double Bandwidth(SearchDimension dim, int n) =>
        Math.Max((dim.High - dim.Low) / Math.Pow(1 + n, 0.2), (dim.High - dim.Low) / 100);

    /// <summary>Draws from the mixture of a flat prior over the range (weight 1/(n+1)) and a Gaussian at each value, truncated to the range.</summary>
    private static double SampleNumber(SearchDimension dim, IReadOnlyList<double> good, Random random)
    {
        int pick = random.Next(good.Count + 1);
        if (pick == good.Count) return Uniform(dim, random);
        double sigma = Bandwidth(dim, good.Count);
        for (int attempt = 0; attempt < 100; attempt++)
        {
            // Box-Muller.
            double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
            double x = good[pick] + sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            if (x >= dim.Low && x <= dim.High) return x;
        }
        return Math.Clamp(good[pick], dim.Low, dim.High);
    }

    /// <summary>Log of the density that <paramref name="values"/> give at <paramref name="x"/> (choices: smoothed counts; numbers: prior and kernels).</summary>
    internal static double LogDensity(SearchDimension dim, IReadOnlyList<double> values, double x)
    {
        if (dim.IsCategorical) return Math.Log(ChoiceWeights(dim, values)[(int)x]);
        double range = dim.High - dim.Low;
        if (range <= 0) return 0;
        double sigma = Bandwidth(dim, values.Count);
        double density = 1 / range;
        foreach (var v in values)
            density += Math.Exp(-0.5 * Math.Pow((x - v) / sigma, 2)) / (sigma * Math.Sqrt(2 * Math.PI));
        return Math.Log(density / (values.Count + 1));
    }
}
