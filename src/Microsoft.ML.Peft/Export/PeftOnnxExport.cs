using Google.Protobuf;

namespace Microsoft.ML.Peft.Export;

/// <summary>Export of fitted PEFT models to ONNX, for ONNX Runtime or ML.NET's <c>ApplyOnnxModel</c>.</summary>
public static class PeftOnnxExport
{
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
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, Stream stream)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (model is null) throw new ArgumentNullException(nameof(model));
        if (stream is null) throw new ArgumentNullException(nameof(stream));
        Find(model).ToOnnx().WriteTo(stream);
    }

    /// <summary>Writes the PEFT transformer in <paramref name="model"/> as an ONNX file at <paramref name="path"/>.</summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A fitted PEFT transformer, or a chain holding exactly one.</param>
    /// <param name="path">The ONNX file to write (replaced when it exists).</param>
    public static void ExportPeftToOnnx(this ModelOperationsCatalog catalog, ITransformer model, string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("The ONNX output path is empty.", nameof(path));
        var onnx = Find(model ?? throw new ArgumentNullException(nameof(model))).ToOnnx();
        using var file = File.Create(path);
        onnx.WriteTo(file);
    }

    private static IOnnxExportable Find(ITransformer model)
    {
        var peft = Flatten(model).Where(t => t.GetType().Namespace?.StartsWith("Microsoft.ML.Peft", StringComparison.Ordinal) == true).ToList();
        if (peft.Count == 0) throw new ArgumentException("The model holds no PEFT transformer to export.", nameof(model));
        if (peft.Count > 1) throw new ArgumentException($"The model holds {peft.Count} PEFT transformers; pass the one to export.", nameof(model));
        return peft[0] as IOnnxExportable
            ?? throw new NotSupportedException($"ONNX export is not available for {peft[0].GetType().Name} yet.");
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };
}
