using System.Text.Json;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Export;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// ONNX export of a named-entity recognizer: the token classifier over every position. Inputs <c>input_ids</c> and
/// <c>attention_mask</c> (one window of words, <c>[CLS] pieces [SEP]</c>), and with case features <c>case_shapes</c>
/// (int64 [batch, sequence]: each word's case shape at its first piece, see the metadata); outputs <c>logits</c> and
/// <c>probabilities</c> [batch, sequence, tags]. A word's tag is read at its first piece; cutting long sentences into
/// overlapping windows and the BIO-constrained decoding stay with the caller (the metadata says how).
/// </summary>
public sealed partial class PeftNamedEntityRecognitionTransformer : IOnnxExportable
{
    /// <summary>The case-shape input of models trained with case features.</summary>
    public const string OnnxCaseShapesInput = "case_shapes";

    ModelProto IOnnxExportable.ToOnnx(PeftOnnxExportOptions options)
    {
        var bert = TextTaskOnnx.Encoder(model);
        var settings = model.Settings;
        var g = new OnnxGraphBuilder("peft_named_entity_recognition");
        var encoder = BertOnnxWriter.Write(g, bert, tokenTypeInput: false, options.Quantization);
        var features = encoder.LastHiddenState;
        string? shapes = null;
        if (settings.CaseFeatures)
        {
            shapes = g.Input(OnnxCaseShapesInput, DataType.Int64, BertOnnxWriter.BatchAxis, BertOnnxWriter.SequenceAxis);
            // One-hot rows of the identity matrix, appended to the hidden states.
            int count = WordWindows.CaseShapeCount;
            var identity = new float[count * count];
            for (int i = 0; i < count; i++) identity[i * count + i] = 1;
            var oneHot = g.Node("Gather", new[] { g.Initializer("case_shape_one_hot", identity, count, count), shapes }, Attr("axis", 0L));
            features = g.Node("Concat", new[] { features, oneHot }, Attr("axis", 2L));
        }
        var logits = TextTaskOnnx.Linear(g, model.Network.Head, features, "classifier");
        var probabilities = g.Node("Softmax", new[] { logits }, Attr("axis", -1L));
        long tags = settings.Tags.Count;
        g.Output(logits, "logits", DataType.Float, BertOnnxWriter.BatchAxis, BertOnnxWriter.SequenceAxis, tags);
        g.Output(probabilities, "probabilities", DataType.Float, BertOnnxWriter.BatchAxis, BertOnnxWriter.SequenceAxis, tags);
        var metadata = TextTaskOnnx.Metadata(model, NerSettings.TaskName, settings.MaxSequenceLength, encoder,
            "logits, probabilities: float [batch, sequence, tags] at every position, tags in the order of 'tags'; a word's tag is read at its first piece");
        metadata.Add(new("tags", JsonSerializer.Serialize(settings.Tags)));
        metadata.Add(new("windows",
            $"a sentence longer than max_sequence_length is cut into windows of whole words overlapping by up to {settings.WindowOverlap} pieces, starting at word boundaries; " +
            "each word is tagged in the window where it has the most context"));
        metadata.Add(new("decoding", "the most probable tag sequence with no I-X after anything but B-X or I-X (log probabilities summed)"));
        if (shapes is not null)
            metadata.Add(new("case_shapes",
                "per position, the case shape of the word whose first piece it is (0 elsewhere): 0 no letters, 1 lower case, 2 capitalised, 3 all upper case, 4 mixed"));
        return g.Build(metadata);
    }
}
