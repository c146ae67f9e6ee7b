using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft;

/// <summary>Entry points of Microsoft.ML.Peft as extension methods on ML.NET's catalogs.</summary>
public static class PeftCatalog
{
    /// <summary>Fine-tunes a pretrained encoder with a PEFT method (LoRA by default) to classify text or text pairs.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="options">Columns, base model, adapter and training settings.</param>
    public static PeftTextClassificationTrainer PeftTextClassification(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        PeftTextClassificationTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new PeftTextClassificationTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>Fine-tunes the default encoder (all-MiniLM-L6-v2) with LoRA to classify text; same arguments as Microsoft.ML.TorchSharp's <c>TextClassification</c>.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="labelColumnName">The key-typed label column.</param>
    /// <param name="sentence1ColumnName">The text column.</param>
    /// <param name="sentence2ColumnName">An optional second text column.</param>
    /// <param name="scoreColumnName">The output column of class probabilities.</param>
    /// <param name="predictedLabelColumnName">The output column of the predicted key.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Optional validation data.</param>
    public static PeftTextClassificationTrainer PeftTextClassification(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label",
        string sentence1ColumnName = "Sentence1",
        string? sentence2ColumnName = null,
        string scoreColumnName = "Score",
        string predictedLabelColumnName = "PredictedLabel",
        int batchSize = 32,
        int maxEpochs = 10,
        IDataView? validationSet = null) =>
        catalog.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            LabelColumnName = labelColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            Sentence2ColumnName = sentence2ColumnName,
            ScoreColumnName = scoreColumnName,
            PredictedLabelColumnName = predictedLabelColumnName,
            BatchSize = batchSize,
            MaxEpoch = maxEpochs,
            ValidationSet = validationSet,
        });
}

/// <summary>Loading PEFT models: from another base-model location, or onto another device.</summary>
public static class PeftModelOperations
{
    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c>, taking the PEFT base model from <paramref name="baseModelPath"/>
    /// (an ONNX file or a Hugging Face directory) instead of its stored location. Its size and SHA-256 must match the saved ones.
    /// </summary>
    public static ITransformer LoadWithBaseModel(this ModelOperationsCatalog catalog, string modelPath, string baseModelPath, out DataViewSchema inputSchema)
    {
        if (string.IsNullOrWhiteSpace(baseModelPath)) throw new ArgumentException("The base model path is empty.", nameof(baseModelPath));
        return catalog.LoadPeft(modelPath, new PeftLoadOptions { BaseModelPath = baseModelPath }, out inputSchema);
    }

    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c> with PEFT load options (base-model location, device). ML.NET
    /// creates loaders through reflection and wraps their exceptions; this method rethrows the loader's own exception.
    /// </summary>
    public static ITransformer LoadPeft(this ModelOperationsCatalog catalog, string modelPath, PeftLoadOptions options, out DataViewSchema inputSchema)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (options is null) throw new ArgumentNullException(nameof(options));
        var resolved = new PeftLoadOptions
        {
            BaseModelPath = options.BaseModelPath is null ? null : Path.GetFullPath(options.BaseModelPath),
            Device = options.Device,
            ShareBaseModel = options.ShareBaseModel,
        };
        var previous = PeftLoadOptions.Current.Value;
        PeftLoadOptions.Current.Value = resolved;
        try
        {
            return catalog.Load(modelPath, out inputSchema);
        }
        catch (System.Reflection.TargetInvocationException e) when (e.InnerException is not null)
        {
            var inner = e.InnerException;
            while (inner is System.Reflection.TargetInvocationException { InnerException: not null } wrapped) inner = wrapped.InnerException;
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner!).Throw();
            throw;
        }
        finally
        {
            PeftLoadOptions.Current.Value = previous;
        }
    }
}

/// <summary>Cancelling work in progress.</summary>
public static class PeftCancellation
{
    /// <summary>
    /// Asks ML.NET to stop the work in progress on <paramref name="mlContext"/> (ML.NET keeps this operation internal).
    /// PEFT training checks it every step and throws <see cref="OperationCanceledException"/>; nothing is saved.
    /// </summary>
    public static void CancelExecution(this MLContext mlContext)
    {
        if (mlContext is null) throw new ArgumentNullException(nameof(mlContext));
        if (CatalogUtils.GetEnvironment(mlContext.Model) is not ICancelable cancelable)
            throw new NotSupportedException("This version of ML.NET offers no cancellation.");
        cancelable.CancelExecution();
    }
}
