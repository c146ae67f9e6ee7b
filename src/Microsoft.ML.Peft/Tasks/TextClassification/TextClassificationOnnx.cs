using System.Text.Json;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Export;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Tasks.TextClassification;

/// <summary>
/// ONNX export of a text classifier: <c>input_ids</c>, <c>attention_mask</c> (and <c>token_type_ids</c> for sentence
/// pairs) to <c>logits</c> and <c>probabilities</c> [batch, classes], class <c>i</c> being the label's key <c>i + 1</c>
/// (the <c>labels</c> metadata property lists their names in that order).
/// </summary>
public sealed partial class PeftTextClassificationTransformer : IOnnxExportable
{
    /// <summary>The output with the class probabilities (softmax of the logits).</summary>
    public const string OnnxProbabilitiesOutput = "probabilities";

    /// <summary>The output with the head's logits.</summary>
    public const string OnnxLogitsOutput = "logits";

    ModelProto IOnnxExportable.ToOnnx(PeftOnnxExportOptions options)
    {
        var bert = TextTaskOnnx.Encoder(model);
        var settings = model.Settings;
        var g = new OnnxGraphBuilder("peft_text_classification");
        var encoder = BertOnnxWriter.Write(g, bert, tokenTypeInput: settings.Sentence2ColumnName is not null, options.Quantization);
        var pooled = TextTaskOnnx.MeanPool(g, encoder);
        var logits = TextTaskOnnx.Linear(g, model.Network.Head, pooled, "classifier");
        var probabilities = g.Node("Softmax", new[] { logits }, Attr("axis", 1L));
        g.Output(logits, OnnxLogitsOutput, DataType.Float, BertOnnxWriter.BatchAxis, (long)settings.ClassCount);
        g.Output(probabilities, OnnxProbabilitiesOutput, DataType.Float, BertOnnxWriter.BatchAxis, (long)settings.ClassCount);
        var metadata = TextTaskOnnx.Metadata(model, TextClassificationSettings.TaskName, settings.MaxSequenceLength, encoder,
            $"{OnnxLogitsOutput}, {OnnxProbabilitiesOutput}: float [batch, classes], classes in the order of 'labels'");
        metadata.Add(new("labels", JsonSerializer.Serialize(model.Label.ClassNames)));
        return g.Build(metadata);
    }
}
