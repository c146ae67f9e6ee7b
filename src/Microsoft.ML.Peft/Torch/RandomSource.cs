using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Torch;

/// <summary>
/// The random generators of one training run: one on the CPU for initialisation and one on the run's device for
/// dropout. Nothing process-wide is seeded, so two runs in one process do not disturb each other, and activation
/// checkpointing replays dropout by saving and restoring <see cref="Dropout"/>'s state.
/// </summary>
internal sealed class RandomSource : IDisposable
{
    public RandomSource(long seed, Device device)
    {
        Init = new Generator((ulong)seed, CPU);
        Dropout = device.type == TorchSharp.DeviceType.CPU ? Init : new Generator((ulong)seed + 1, device);
        Shuffle = new Random(unchecked((int)seed));
    }

    /// <summary>Draws initial values of new parameters (created on the CPU).</summary>
    public Generator Init { get; }

    /// <summary>Draws dropout masks on the run's device.</summary>
    public Generator Dropout { get; }

    /// <summary>Orders the rows of each epoch.</summary>
    public Random Shuffle { get; }

    /// <summary>The dropout generator's state, to replay the same masks.</summary>
    public Tensor SaveDropoutState() => Dropout.get_state();

    public void RestoreDropoutState(Tensor state) => Dropout.set_state(state);

    public void Dispose()
    {
        if (!ReferenceEquals(Dropout, Init)) Dropout.Dispose();
        Init.Dispose();
    }
}
