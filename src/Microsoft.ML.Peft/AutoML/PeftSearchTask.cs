using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.AutoML;

/// <summary>A metric a search can rank trials by: how to compute it from scored validation data, and its direction.</summary>
/// <param name="Name">The metric's name (<c>accuracy</c>, <c>spearman</c>...).</param>
/// <param name="Evaluate">Computes it from scored data (ML.NET's or the library's evaluator).</param>
/// <param name="HigherIsBetter">Whether larger values are better (false for losses).</param>
public sealed record PeftSearchMetric(string Name, Func<MLContext, IDataView, double> Evaluate, bool HigherIsBetter = true);

/// <summary>
/// One task as <see cref="PeftExperiment"/> searches it: how to prepare the data (a label mapping fitted once), which
/// trainer a trial's options make, what follows the trainer in the saved pipeline, and the metrics. Make one with
/// <see cref="PeftSearchTasks"/>; a new task is one more factory there.
/// </summary>
public sealed class PeftSearchTask
{
    /// <summary>Creates a task. Prefer the factories of <see cref="PeftSearchTasks"/>.</summary>
    /// <param name="name">The task's name (<c>text-classification</c>...).</param>
    /// <param name="forImages">Whether the backbone is an image network (which methods and input sizes apply).</param>
    /// <param name="newOptions">New trainer options with the task's columns set; the search sets the method, learning rate, epochs, input size, seed and validation set.</param>
    /// <param name="setInputSize">Sets the sequence length or image side on the options.</param>
    /// <param name="createTrainer">The trainer for the options, with its <c>EpochCompleted</c> event wired to the given callback.</param>
    /// <param name="metrics">The metrics trials can be ranked by; the first is the default and should be the trainer's own validation metric.</param>
    /// <param name="fitPreprocessing">Fitted once on all training data before the search (a label mapping); null for none.</param>
    /// <param name="postprocessing">Appended after the trainer in the final model (mapping keys back to values); null for none.</param>
    public PeftSearchTask(string name, bool forImages, Func<PeftTrainerOptions> newOptions, Action<PeftTrainerOptions, int> setInputSize,
        Func<MLContext, PeftTrainerOptions, Action<EpochMetrics>, IEstimator<ITransformer>> createTrainer, IReadOnlyList<PeftSearchMetric> metrics,
        Func<MLContext, IDataView, ITransformer>? fitPreprocessing = null, Func<MLContext, IEstimator<ITransformer>>? postprocessing = null)
    {
        Name = string.IsNullOrWhiteSpace(name) ? throw new ArgumentException("The task needs a name.", nameof(name)) : name;
        ForImages = forImages;
        NewOptions = newOptions ?? throw new ArgumentNullException(nameof(newOptions));
        SetInputSize = setInputSize ?? throw new ArgumentNullException(nameof(setInputSize));
        CreateTrainer = createTrainer ?? throw new ArgumentNullException(nameof(createTrainer));
        Metrics = metrics is { Count: > 0 } ? metrics : throw new ArgumentException("The task needs at least one metric.", nameof(metrics));
        FitPreprocessing = fitPreprocessing;
        Postprocessing = postprocessing;
    }

    /// <summary>The task's name.</summary>
    public string Name { get; }

    /// <summary>Whether the backbone is an image network.</summary>
    public bool ForImages { get; }

    /// <summary>The name of the input size: <c>max length</c> or <c>image size</c>.</summary>
    public string InputSizeName => ForImages ? "image size" : "max length";

    /// <summary>The metrics trials can be ranked by, the default first.</summary>
    public IReadOnlyList<PeftSearchMetric> Metrics { get; }

    internal Func<PeftTrainerOptions> NewOptions { get; }
    internal Action<PeftTrainerOptions, int> SetInputSize { get; }
    internal Func<MLContext, PeftTrainerOptions, Action<EpochMetrics>, IEstimator<ITransformer>> CreateTrainer { get; }
    internal Func<MLContext, IDataView, ITransformer>? FitPreprocessing { get; }
    internal Func<MLContext, IEstimator<ITransformer>>? Postprocessing { get; }

    /// <summary>
    /// The default methods of the search on this task. DoRA, PiSSA and VeRA are left out for text: in the methods
    /// benchmark (SST-2, same rows) each was no more accurate than LoRA and DoRA trained at 0.7x its speed, so in a
    /// time budget they cost trials; prompt and prefix tuning need many more epochs than a budget gives.
    /// </summary>
    internal IReadOnlyList<string> DefaultMethods => ForImages
        ? new[] { "lora", "rslora", "loraplus", "ia3", "bitfit", "full" }
        : new[] { "lora", "rslora", "loraplus", "ia3", "bitfit", "bottleneck" };

    internal IReadOnlyList<string> DefaultTargetModules => ForImages
        ? new[] { Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions }
        : new[] { "query,value", "query,key,value,dense", "all-linear" };

    internal IReadOnlyList<int> DefaultInputSizes => ForImages ? new[] { 64, 96 } : new[] { 64, 128 };
}
