namespace Microsoft.ML.Peft.Export;

/// <summary>How the weights of an exported ONNX model are stored and multiplied.</summary>
public enum PeftOnnxQuantization
{
    /// <summary>Every weight in float32, as the model scores: the export gives the transformer's own results.</summary>
    None = 0,

    /// <summary>
    /// Dynamic int8 quantisation of the encoder's Linear layers, as ONNX Runtime's <c>quantize_dynamic</c> writes it:
    /// each weight quantised offline to int8 (symmetric, one scale per output column, zero point 0); at run time each
    /// layer's input is quantised to uint8 by <c>DynamicQuantizeLinear</c> (scale and zero point from that input's range),
    /// multiplied by <c>MatMulInteger</c> (int32 sums, VNNI on processors that have it), cast back to float and scaled by
    /// the input's scale times the column's scale, then the float bias is added. The embeddings, LayerNorms, attention
    /// score products, adapters written as operators (bottleneck, prefix, prompt) and the task's head stay in float32.
    /// The weights take about a quarter of the space; the scores move slightly (measure them on your data). Text tasks
    /// (BERT-family encoders) only.
    /// </summary>
    DynamicInt8 = 1,
}

/// <summary>Options of <see cref="PeftOnnxExport.ExportPeftToOnnx(ModelOperationsCatalog, ITransformer, string, PeftOnnxExportOptions)"/>.</summary>
public sealed class PeftOnnxExportOptions
{
    /// <summary>
    /// The quantisation of the exported weights: <see cref="PeftOnnxQuantization.None"/> (default, float32 throughout)
    /// or <see cref="PeftOnnxQuantization.DynamicInt8"/> (the text encoder's Linear layers as int8 matrix products; a
    /// smaller file and faster scoring in ONNX Runtime for slightly different scores). Image classifiers export in
    /// float32 only: <see cref="PeftOnnxQuantization.DynamicInt8"/> throws <see cref="NotSupportedException"/> for them.
    /// The model's <c>quantization</c> metadata property records the choice (<c>none</c> or <c>dynamic-int8</c>).
    /// </summary>
    public PeftOnnxQuantization Quantization = PeftOnnxQuantization.None;

    /// <summary>The value of the exported model's <c>quantization</c> metadata property for <paramref name="quantization"/>.</summary>
    internal static string MetadataValue(PeftOnnxQuantization quantization) => quantization switch
    {
        PeftOnnxQuantization.None => "none",
        PeftOnnxQuantization.DynamicInt8 => "dynamic-int8",
        _ => throw new ArgumentOutOfRangeException(nameof(quantization), quantization, $"Unknown {nameof(PeftOnnxExportOptions)}.{nameof(Quantization)} value."),
    };
}
