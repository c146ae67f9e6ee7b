using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods.Lora;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Tasks;

/// <summary>
/// What the ONNX exports of the text tasks share: the encoder (see <see cref="BertOnnxWriter"/>), mean pooling over the
/// attention mask, a Linear head, and the metadata properties that tell a deployer how to prepare the inputs
/// (vocabulary, lower-casing, maximum length, which inputs there are) and what the model is (task, method, base model).
/// </summary>
internal static class TextTaskOnnx
{
    /// <summary>The BERT encoder of a task model, or <see cref="NotSupportedException"/> for another backbone.</summary>
    public static BertModel Encoder(TextTaskModel model) =>
        (model.Backbone as BertBackbone)?.Model
        ?? throw new NotSupportedException($"ONNX export writes BERT-family encoders; this model's backbone is '{model.Backbone.Name}'.");

    /// <summary>The mean of the last hidden states over <c>attention_mask</c> ([batch, hidden]), as <see cref="Heads.Pooling.Mean"/>.</summary>
    public static string MeanPool(OnnxGraphBuilder g, BertOnnxEncoder encoder)
    {
        var mask = g.Node("Unsqueeze", new[] { g.Node("Cast", new[] { encoder.AttentionMask }, Attr("to", (long)DataType.Float)), g.Int64Vector("pool_mask_axes", 2L) });
        var axes = g.Int64Vector("pool_axes", 1L);
        var sum = g.Node("ReduceSum", new[] { g.Node("Mul", new[] { encoder.LastHiddenState, mask }), axes }, Attr("keepdims", 0L));
        var count = g.Node("ReduceSum", new[] { mask, axes }, Attr("keepdims", 0L));
        count = g.Node("Max", new[] { count, g.Scalar("pool_min_count", 1e-9f) });
        return g.Node("Div", new[] { sum, count });
    }

    /// <summary>A head's Linear layer (parameters <c>weight</c> [outputs, features] and <c>bias</c>) on <paramref name="features"/>.</summary>
    public static string Linear(OnnxGraphBuilder g, nn.Module head, string features, string name)
    {
        var parameters = head.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var product = g.Node("MatMul", new[] { features, g.Initializer(name + ".weight", parameters["weight"], transpose: true) });
        return g.Node("Add", new[] { product, g.Initializer(name + ".bias", parameters["bias"]) });
    }

    /// <summary>
    /// The metadata every text task's export carries: how to build the inputs and what the model is. Keys are
    /// snake_case; lists are JSON arrays.
    /// </summary>
    public static List<KeyValuePair<string, string>> Metadata(TextTaskModel model, string task, int maxSequenceLength, BertOnnxEncoder encoder, string outputs)
    {
        var bert = Encoder(model);
        var inputs = new List<string> { encoder.InputIds, encoder.AttentionMask };
        if (encoder.TokenTypeIds is not null) inputs.Add(encoder.TokenTypeIds);
        var method = model.Adapted.Method.Options;
        return new List<KeyValuePair<string, string>>
        {
            new("task", task),
            new("inputs", JsonSerializer.Serialize(inputs)),
            new("inputs_description",
                "int64 [batch, sequence]: input_ids are WordPiece ids of '[CLS] text [SEP]' (pairs: '[CLS] a [SEP] b [SEP]'), attention_mask 1 for tokens and 0 for padding" +
                (encoder.TokenTypeIds is null
                    ? "; single sentences, so every token is segment 0 and there is no token_type_ids input"
                    : "; token_type_ids 0 for '[CLS] a [SEP]' and 1 for 'b [SEP]'")),
            new("outputs", outputs),
            new("max_sequence_length", maxSequenceLength.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            new("max_input_length", bert.MaxInputLength.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            new("truncation", "texts longer than max_sequence_length tokens (with [CLS] and [SEP]) are cut, pairs longest text first"),
            new("lower_case", model.LowerCase ? "true" : "false"),
            new("tokenizer", "BERT basic tokenization (punctuation split, CJK characters split" + (model.LowerCase ? ", lower-cased, accents stripped" : "") + ") then WordPiece over the vocab below"),
            new("vocab", System.Text.Encoding.UTF8.GetString(model.Vocab)),
            new("vocab_sha256", Convert.ToHexString(SHA256.HashData(model.Vocab)).ToLowerInvariant()),
            new("base_model", model.BaseModel.Name),
            new("base_model_sha256", model.BaseModel.Sha256),
            new("peft_method", Describe(method)),
            new("peft_config", method.ToJson()),
            new("adapter", BertOnnxWriter.AdapterForm(bert)),
            new("pooling", "mean of the last hidden states over attention_mask"),
        };
    }

    /// <summary>The method as the command line names it (LoRA variants told apart).</summary>
    private static string Describe(Methods.PeftMethodOptions options) => options switch
    {
        LoraOptions { UseDora: true } => "DORA",
        LoraOptions { InitLoraWeights: LoraInitialization.Pissa } => "PISSA",
        LoraOptions { UseRslora: true } => "RSLORA",
        _ => options.PeftType,
    };
}
