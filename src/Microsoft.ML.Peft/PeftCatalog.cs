using Microsoft.ML.Data;
using Microsoft.ML.Peft.TextClassification;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft;

/// <summary>Entry points of Microsoft.ML.Peft as extension methods on ML.NET's catalogs.</summary>
public static class PeftCatalog
{
    /// <summary>Fine-tunes a pretrained encoder with LoRA to classify text.</summary>
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

/// <summary>Loading models whose base model is not where it was when they were saved.</summary>
public static class PeftModelOperations
{
    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c>, taking the PEFT base model from <paramref name="baseModelPath"/>
    /// (an ONNX file or a Hugging Face directory) instead of its stored location. Its SHA-256 must match the saved one.
    /// </summary>
    public static ITransformer LoadWithBaseModel(this ModelOperationsCatalog catalog, string modelPath, string baseModelPath, out DataViewSchema inputSchema)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (string.IsNullOrWhiteSpace(baseModelPath)) throw new ArgumentException("The base model path is empty.", nameof(baseModelPath));
        var previous = BaseModelLocator.Override.Value;
        BaseModelLocator.Override.Value = Path.GetFullPath(baseModelPath);
        try
        {
            return catalog.Load(modelPath, out inputSchema);
        }
        catch (System.Reflection.TargetInvocationException e) when (e.InnerException is not null)
        {
            // ML.NET creates loaders through reflection; surface the loader's own exception.
            var inner = e.InnerException;
            while (inner is System.Reflection.TargetInvocationException { InnerException: not null } wrapped) inner = wrapped.InnerException;
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner!).Throw();
            throw;
        }
        finally
        {
            BaseModelLocator.Override.Value = previous;
        }
    }
}
