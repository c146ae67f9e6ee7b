using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Torch;

/// <summary>
/// Inverted dropout whose masks come from the training run's own generator (<see cref="RandomSource.Dropout"/>), set on
/// the module tree by the run with <see cref="Attach"/>. Without a run's generator (a module used outside training) it
/// falls back to libtorch's dropout. Identity in evaluation mode.
/// </summary>
internal sealed class RunDropout : nn.Module<Tensor, Tensor>
{
    private double probability;

    public RunDropout(double probability) : base("dropout") => Probability = probability;

    /// <summary>The probability of zeroing an element while training, in [0, 1).</summary>
    public double Probability
    {
        get => probability;
        set
        {
            if (!(value >= 0 && value < 1)) throw new ArgumentOutOfRangeException(nameof(value), value, "Dropout must be in [0, 1).");
            probability = value;
        }
    }

    /// <summary>The generator of the run that owns the module now, or null.</summary>
    public RandomSource? Random { get; set; }

    public override Tensor forward(Tensor input)
    {
        if (!training || Probability == 0) return input.alias();
        if (Random is null) return nn.functional.dropout(input, Probability, training: true);
        // A boolean mask: the product keeps one byte an element for the backward pass, not four.
        using var keep = KeepMask(input.shape, input.device);
        return Apply(input, keep, Probability);
    }

    /// <summary><c>input * keep / (1 - p)</c>, a new tensor: inverted dropout with a given boolean keep mask.</summary>
    public static Tensor Apply(Tensor input, Tensor keep, double probability) => input.mul(keep).div_(1 - probability);

    /// <summary><see cref="Apply"/> in place on <paramref name="input"/> (a tensor autograd does not track), which it returns.</summary>
    public static Tensor ApplyInPlace(Tensor input, Tensor keep, double probability) => input.mul_(keep).div_(1 - probability);

    /// <summary>
    /// <c>keep / (1 - p)</c> as a tensor of <paramref name="type"/>, for a mask applied more than once: products of two
    /// float tensors run on libtorch's vectorised path, those with booleans do not.
    /// </summary>
    public static Tensor ScaledKeep(Tensor keep, double probability, ScalarType type) => keep.to(type).mul_(1 / (1 - probability));

    /// <summary>
    /// The elements dropout keeps for an input of <paramref name="shape"/> on <paramref name="device"/>, as booleans:
    /// <c>u &lt; 1 - p</c> for uniform draws <c>u</c> from the run's generator (libtorch's default one outside a run).
    /// Uniform draws and a comparison take about half the time of libtorch's <c>bernoulli_</c> on the CPU, which draws
    /// element by element: the six attention masks of a MiniLM step at batch 32 x 128 took about a fifth of its time.
    /// </summary>
    public Tensor KeepMask(long[] shape, Device device)
    {
        using var draws = rand(shape, device: device, generator: Random?.Dropout);
        return draws.lt(1 - Probability);
    }

    /// <summary>Gives every <see cref="RunDropout"/> under <paramref name="root"/> the run's generator (null detaches).</summary>
    public static void Attach(nn.Module root, RandomSource? random)
    {
        foreach (var module in root.modules().OfType<RunDropout>()) module.Random = random;
    }
}
