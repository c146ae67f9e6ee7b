using Onnx;

namespace Microsoft.ML.Peft.Export;

/// <summary>
/// A fitted PEFT transformer that can write itself as one self-contained ONNX model: the base network with the adapter
/// merged into its weights (or the method's extra operators), followed by the task's head and output. Each task
/// implements this in its own folder; <see cref="PeftOnnxExport"/> finds the one transformer in a chain that does.
/// </summary>
internal interface IOnnxExportable
{
    /// <summary>
    /// Builds the ONNX model. Must leave the transformer scoring exactly as before (merge on a copy, or unmerge after),
    /// and throw <see cref="NotSupportedException"/> naming the method when the adapter can neither be merged nor
    /// written as operators, or when <paramref name="options"/> ask for a quantisation the task cannot write.
    /// </summary>
    ModelProto ToOnnx(PeftOnnxExportOptions options);
}
