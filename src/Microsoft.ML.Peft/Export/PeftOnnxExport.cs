using Google.Protobuf;
using Onnx;

namespace Microsoft.ML.Peft.Export;

/// <summary>Export of fitted PEFT models to ONNX, for ONNX Runtime or ML.NET's <c>ApplyOnnxModel</c>.</summary>
public static class PeftOnnxExport
{
    /// <summary>The metadata property that records <see cref="PeftOnnxExportOptions.Quantization"/> (<c>none</c> or <c>dynamic-int8</c>).</summary>
    public const string QuantizationMetadataKey = "quantization";

    /// <summary>
    /// Writes the PEFT transformer in <paramref name="model"/> (itself, or the one PEFT transformer of a chain) as an ONNX
    /// model with the adapter merged into the base weights and the task's head appended. The graph takes what the
    /// network takes (token ids and attention mask for text, a normalised image tensor for images) with dynamic batch
    /// (and sequence) axes, and gives the task's outputs; its metadata properties describe the inputs and the labels.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A fitted PEFT transformer, or a chain holding exactly one.</param>
    /// <param name="stream">Where the ONNX bytes go.</param>
    /// <exception cref="ArgumentException">The model holds no PEFT transformer, or more than one.</exception>
    /// <exception cref="NotSupportedException">The task or the method cannot be exported (the message says which).</exception>
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, Stream stream) =>
        ExportPeftToOnnx(catalog, model, stream, new PeftOnnxExportOptions());

    /// <summary>
    /// Writes the PEFT transformer in <paramref name="model"/> as an ONNX model to <paramref name="stream"/>, stored as
    /// <paramref name="options"/> say (e.g. with the text encoder's Linear layers quantised to int8).
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A fitted PEFT transformer, or a chain holding exactly one.</param>
    /// <param name="stream">Where the ONNX bytes go.</param>
    /// <param name="options">How to store the weights.</param>
    /// <exception cref="ArgumentException">The model holds no PEFT transformer, or more than one.</exception>
    /// <exception cref="NotSupportedException">The task, the method or the quantisation cannot be exported (the message says which).</exception>
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, Stream stream, PeftOnnxExportOptions options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (model is null) throw new ArgumentNullException(nameof(model));
        if (stream is null) throw new ArgumentNullException(nameof(stream));
        Build(model, options).WriteTo(stream);
    }

    /// <summary>Writes the PEFT transformer in <paramref name="model"/> as an ONNX file at <paramref name="path"/>.</summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A fitted PEFT transformer, or a chain holding exactly one.</param>
    /// <param name="path">The ONNX file to write (replaced when it exists).</param>
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, string path) =>
        ExportPeftToOnnx(catalog, model, path, new PeftOnnxExportOptions());

    /// <summary>
    /// Writes the PEFT transformer in <paramref name="model"/> as an ONNX file at <paramref name="path"/>, stored as
    /// <paramref name="options"/> say.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A fitted PEFT transformer, or a chain holding exactly one.</param>
    /// <param name="path">The ONNX file to write (replaced when it exists; not created when the export fails).</param>
    /// <param name="options">How to store the weights.</param>
    /// <exception cref="ArgumentException">The model holds no PEFT transformer, or more than one.</exception>
    /// <exception cref="NotSupportedException">The task, the method or the quantisation cannot be exported (the message says which).</exception>
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, string path, PeftOnnxExportOptions options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("The ONNX output path is empty.", nameof(path));
        var onnx = Build(model ?? throw new ArgumentNullException(nameof(model)), options);
        using var file = File.Create(path);
        onnx.WriteTo(file);
    }

    private static ModelProto Build(ITransformer model, PeftOnnxExportOptions options)
    {
        if (options is null) throw new ArgumentNullException(nameof(options));
        var quantization = PeftOnnxExportOptions.MetadataValue(options.Quantization);   // rejects undefined values first
        var onnx = Find(model).ToOnnx(options);
        onnx.MetadataProps.Add(new StringStringEntryProto { Key = QuantizationMetadataKey, Value = quantization });
        if (options.Quantization == PeftOnnxQuantization.DynamicInt8)
            onnx.MetadataProps.Add(new StringStringEntryProto
            {
                Key = QuantizationMetadataKey + "_scheme",
                Value = "the encoder's Linear layers (query, key, value, attention output, intermediate, output): weights int8, symmetric, one scale per output column, zero point 0; " +
                    "inputs quantised to uint8 at run time by DynamicQuantizeLinear; MatMulInteger, then Cast to float times input scale times column scale, plus the float bias. " +
                    "Embeddings, LayerNorms, attention scores, adapter operators and the head are float32.",
            });
        return onnx;
    }

    private static IOnnxExportable Find(ITransformer model)
    {
        var peft = PeftAdapterInterop.Flatten(model).Where(t => t.GetType().Namespace?.StartsWith("Microsoft.ML.Peft", StringComparison.Ordinal) == true).ToList();
        if (peft.Count == 0) throw new ArgumentException("The model holds no PEFT transformer to export.", nameof(model));
        if (peft.Count > 1) throw new ArgumentException($"The model holds {peft.Count} PEFT transformers; pass the one to export.", nameof(model));
        return peft[0] as IOnnxExportable
            ?? throw new NotSupportedException($"ONNX export is not available for {peft[0].GetType().Name} yet.");
    }
}
