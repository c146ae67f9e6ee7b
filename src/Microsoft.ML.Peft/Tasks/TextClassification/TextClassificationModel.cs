using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>The task's network: the text backbone (named <c>bert</c>), mean pooling over the attention mask, and a classification head (<c>classifier</c>).</summary>
internal sealed class TextClassificationNetwork : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private readonly ITextBackbone backbone;
    private readonly ClassificationHead head;

    public TextClassificationNetwork(ITextBackbone backbone, ClassificationHead head) : base("text_classification")
    {
        this.backbone = backbone;
        this.head = head;
        register_module(backbone.Name, backbone.Module);
        register_module("classifier", head);
    }

    public ClassificationHead Head => head;

    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var hidden = backbone.Forward(inputIds, attentionMask, tokenTypeIds);
        return head.forward(Pooling.Mean(hidden, attentionMask)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A fine-tuned text classifier: the base model with its method applied, the head, the tokenizer and the saved
/// settings. What the trainer fits and the transformer scores with. Scoring needs no lock: forward passes in
/// inference mode change no state, so several cursors or prediction engines may score at once.
/// </summary>
internal sealed class TextClassificationModel : TextTaskModel
{
    public TextClassificationModel(TextClassificationSettings settings, LoadedBaseModel baseModel, PeftMethodOptions method,
        bool embedBaseModel, Device device, Generator? generator, float headDropout = 0)
        : base(baseModel, method, Checked(settings, baseModel).MaxSequenceLength, embedBaseModel, device, generator)
    {
        Settings = settings;
        SetNetwork(() => new TextClassificationNetwork(Backbone, new ClassificationHead(Backbone.FeatureSize, settings.ClassCount, headDropout, generator)),
            network => network.Head);
    }

    public TextClassificationSettings Settings { get; }
    public LabelInfo Label => Settings.Label;

    private static TextClassificationSettings Checked(TextClassificationSettings settings, LoadedBaseModel baseModel)
    {
        settings.Validate(baseModel.Config, "text classification settings");
        return settings;
    }

    public new TextClassificationNetwork Network => (TextClassificationNetwork)base.Network;

    protected override string HeadName => "classifier";

    protected override (string Task, JsonObject Settings) TaskMetadata() => (TextClassificationSettings.TaskName, Settings.ToJson());

    /// <summary>Logits of a batch of encoded rows (training or evaluation, as the network's mode is).</summary>
    public Tensor Logits(IReadOnlyList<EncodedRow> rows)
    {
        var (ids, mask, types) = ToTensors(Encoder.Pad(rows));
        return Network.forward(ids, mask, types);
    }

    /// <summary>
    /// Class probabilities of each row (inference mode; the network must be in evaluation mode). Rows are sorted by
    /// length and scored <see cref="TextClassificationSettings.BatchSize"/> at a time, so short rows are not padded to long ones.
    /// </summary>
    public float[][] Predict(IReadOnlyList<string> first, IReadOnlyList<string>? second, out int truncatedRows)
    {
        var rows = Encoder.Tokenize(first, second);
        truncatedRows = rows.Count(r => r.Truncated);
        var result = new float[rows.Length][];
        int classes = Settings.ClassCount;
        foreach (var chunk in LengthOrderedBatches(rows.Length, i => rows[i].Ids.Length, Settings.BatchSize))
        {
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var flat = nn.functional.softmax(Logits(chunk.Select(i => rows[i]).ToList()), 1).cpu().data<float>().ToArray();
            for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = flat.AsSpan(r * classes, classes).ToArray();
        }
        return result;
    }
}
