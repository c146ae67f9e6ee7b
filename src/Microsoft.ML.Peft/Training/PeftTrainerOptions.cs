using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;

namespace Microsoft.ML.Peft.Training;

/// <summary>
/// Options every PEFT trainer shares: the base model, the method, and how training runs. Each task's <c>Options</c>
/// adds its columns and what shapes its head. Names follow Microsoft.ML.TorchSharp's trainers.
/// </summary>
public abstract class PeftTrainerOptions
{
    /// <summary>The label column. Default <c>Label</c>.</summary>
    public string LabelColumnName = "Label";

    /// <summary>Rows per training step and per forward pass when scoring. Default 32.</summary>
    public int BatchSize = 32;

    /// <summary>Passes over the training data. Default 10.</summary>
    public int MaxEpoch = 10;

    /// <summary>Optional validation data (same columns): its metric is reported each epoch and drives early stopping.</summary>
    public IDataView? ValidationSet;

    /// <summary>
    /// The PEFT method and its settings: <see cref="LoraOptions"/> (default: rank 8, alpha 16, dropout 0.1 on every
    /// Linear layer of the encoder), <see cref="Methods.BitFit.BitFitOptions"/>, <see cref="Methods.Full.FullFineTuningOptions"/>.
    /// </summary>
    public PeftMethodOptions Method = new LoraOptions();

    /// <summary>Peak learning rate of AdamW. Default 2e-3 (the best of 1e-3, 2e-3 and 3e-3 for LoRA on SST-2; full
    /// fine-tuning wants a smaller one, such as 5e-5).</summary>
    public float LearningRate = 2e-3f;

    /// <summary>AdamW's decoupled weight decay. Default 0.01.</summary>
    public float WeightDecay = 0.01f;

    /// <summary>Share of the training steps over which the learning rate rises linearly from 0; it then decays linearly to 0. Default 0.06.</summary>
    public float WarmupRatio = 0.06f;

    /// <summary>Gradients are clipped to this global L2 norm; 0 turns clipping off. Default 1.</summary>
    public float MaxGradientNorm = 1f;

    /// <summary>With a <see cref="ValidationSet"/>: stop after this many epochs without a better validation metric and
    /// restore the best epoch's weights. 0 (default) trains every epoch and keeps the last.</summary>
    public int EarlyStoppingPatience;

    /// <summary>Seed for initialisation, dropout and shuffling: the same seed on the same data gives the same model.
    /// The run uses its own generators; libtorch's global generator is not touched.</summary>
    public int Seed = 1;

    /// <summary>Torch device to train on: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c> (needs a libtorch-cuda package).
    /// Not saved: a loaded model runs where the load options say.</summary>
    public string Device = "cpu";

    /// <summary>Activation (gradient) checkpointing: keep only each layer's input during the forward pass and recompute
    /// the layer in the backward pass. Less memory for activations, about one more forward pass of time. Default false.</summary>
    public bool GradientCheckpointing;

    /// <summary>Store the base model's weights inside the saved model, making it self-contained (and as large as the base model).
    /// Default false: only a reference (name, size, SHA-256, path) is stored.</summary>
    public bool EmbedBaseModel;

    /// <summary>
    /// Start from a Hugging Face PEFT adapter directory (<c>adapter_config.json</c> and <c>adapter_model.safetensors</c>, as
    /// <c>mlContext.Model.ExportPeftAdapter</c> or Python PEFT write them) instead of a fresh adapter: its method options
    /// replace <see cref="Method"/>, and its tensors initialise the adapter and the classification head. Its base model
    /// must be the trainer's base model, and its head must have as many classes as the training label (and the same class
    /// names, in the same order, when both record names). Default null: a new adapter.
    /// </summary>
    public string? InitialAdapterPath;

    /// <summary>Throws <see cref="ArgumentException"/> naming the option at fault.</summary>
    internal virtual void Validate()
    {
        if (InitialAdapterPath is not null && string.IsNullOrWhiteSpace(InitialAdapterPath))
            throw new ArgumentException($"{nameof(InitialAdapterPath)} is empty; leave it null for a new adapter.", nameof(InitialAdapterPath));
        if (BatchSize <= 0 || BatchSize > 65_536) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be from 1 to 65536.");
        if (MaxEpoch <= 0) throw new ArgumentOutOfRangeException(nameof(MaxEpoch), MaxEpoch, "MaxEpoch must be positive.");
        if (!(LearningRate > 0) || float.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be a positive finite number.");
        if (!(WeightDecay >= 0) || float.IsInfinity(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be zero or positive.");
        if (!(WarmupRatio >= 0 && WarmupRatio < 1)) throw new ArgumentOutOfRangeException(nameof(WarmupRatio), WarmupRatio, "WarmupRatio must be in [0, 1).");
        if (!(MaxGradientNorm >= 0) || float.IsInfinity(MaxGradientNorm)) throw new ArgumentOutOfRangeException(nameof(MaxGradientNorm), MaxGradientNorm, "MaxGradientNorm must be zero (off) or positive.");
        if (EarlyStoppingPatience < 0) throw new ArgumentOutOfRangeException(nameof(EarlyStoppingPatience), EarlyStoppingPatience, "EarlyStoppingPatience must be zero (off) or positive.");
        if (Method is null) throw new ArgumentNullException(nameof(Method), "Method must be set (for example new LoraOptions()).");
        Method.Validate();
        if (string.IsNullOrWhiteSpace(LabelColumnName)) throw new ArgumentException($"{nameof(LabelColumnName)} is empty.", nameof(LabelColumnName));
    }
}

/// <summary>What one epoch of training gave: reported through the trainer's <c>EpochCompleted</c> event and kept in the model's history.</summary>
/// <param name="Epoch">The epoch, from 1.</param>
/// <param name="MaxEpoch">The epochs planned.</param>
/// <param name="TrainingLoss">Mean training loss over the epoch's rows.</param>
/// <param name="RowsPerSecond">Training throughput of the epoch.</param>
/// <param name="MetricName">The validation metric's name (<c>accuracy</c>...), or null without a validation set.</param>
/// <param name="ValidationMetric">The validation metric after the epoch (higher is better), or null.</param>
/// <param name="IsBest">Whether this epoch has the best validation metric so far.</param>
public sealed record EpochMetrics(int Epoch, int MaxEpoch, double TrainingLoss, double RowsPerSecond, string? MetricName, double? ValidationMetric, bool IsBest);
