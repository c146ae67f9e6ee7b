using System.Globalization;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Export;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>
/// ONNX export of a sentence-similarity model. A cross-encoder takes the pair as one sequence (<c>input_ids</c>,
/// <c>attention_mask</c>, <c>token_type_ids</c>) and gives <c>score</c> [batch] in the label's units (with
/// <c>both_orders</c> the model's score is the mean over the two orders, each one run of the graph). A bi-encoder takes
/// one sentence (<c>input_ids</c>, <c>attention_mask</c>) and gives the unit-norm <c>embedding</c> [batch, hidden]; the
/// score of two sentences is <c>label_min + (a · b) (label_max - label_min)</c> (metadata properties).
/// </summary>
public sealed partial class PeftSentenceSimilarityTransformer : IOnnxExportable
{
    /// <summary>The cross-encoder's output: the pair's score in the training label's units.</summary>
    public const string OnnxScoreOutput = "score";

    /// <summary>The bi-encoder's output: the sentence's unit-norm embedding.</summary>
    public const string OnnxEmbeddingOutput = "embedding";

    ModelProto IOnnxExportable.ToOnnx(PeftOnnxExportOptions options)
    {
        var bert = TextTaskOnnx.Encoder(model);
        var settings = model.Settings;
        var g = new OnnxGraphBuilder("peft_sentence_similarity");
        var encoder = BertOnnxWriter.Write(g, bert, tokenTypeInput: !model.IsBiEncoder, options.Quantization);
        var pooled = TextTaskOnnx.MeanPool(g, encoder);
        string outputs;
        if (model.IsBiEncoder)
        {
            // F.normalize: x / max(||x||, 1e-12).
            var norm = g.Node("ReduceL2", new[] { pooled }, Attr("axes", new[] { 1L }), Attr("keepdims", 1L));  // opset 17: axes is an attribute
            var embedding = g.Node("Div", new[] { pooled, g.Node("Max", new[] { norm, g.Scalar("norm_min", 1e-12f) }) });
            g.Output(embedding, OnnxEmbeddingOutput, DataType.Float, BertOnnxWriter.BatchAxis, model.Adapted.Backbone.FeatureSize);
            outputs = $"{OnnxEmbeddingOutput}: float [batch, hidden], unit norm; score = label_min + dot(a, b) * (label_max - label_min)";
        }
        else
        {
            var output = TextTaskOnnx.Linear(g, model.Network.Head!, pooled, "classifier");                       // [batch, 1]
            var score = g.Node("Add", new[] { g.Node("Mul", new[] { output, g.Scalar("label_std", (float)settings.LabelStd) }), g.Scalar("label_mean", (float)settings.LabelMean) });
            score = g.Node("Squeeze", new[] { score, g.Int64Vector("score_axes", 1L) });
            g.Output(score, OnnxScoreOutput, DataType.Float, BertOnnxWriter.BatchAxis);
            outputs = $"{OnnxScoreOutput}: float [batch], in the label's units" +
                (settings.BothOrders ? "; the model scores a pair as the mean over both orders (a, b) and (b, a)" : "");
        }
        var metadata = TextTaskOnnx.Metadata(model, SentenceSimilaritySettings.TaskName, settings.MaxSequenceLength, encoder, outputs);
        metadata.Add(new("architecture", model.IsBiEncoder ? "bi-encoder" : "cross-encoder"));
        metadata.Add(new("both_orders", settings.BothOrders ? "true" : "false"));
        metadata.Add(new("label_min", settings.LabelMin.ToString("R", CultureInfo.InvariantCulture)));
        metadata.Add(new("label_max", settings.LabelMax.ToString("R", CultureInfo.InvariantCulture)));
        return g.Build(metadata);
    }
}
