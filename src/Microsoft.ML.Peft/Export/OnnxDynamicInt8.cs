using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Export;

/// <summary>
/// Writes float matrix products as ONNX Runtime's dynamic int8 quantisation pattern (what its <c>quantize_dynamic</c>
/// tool writes, and what its graph optimizer fuses into <c>DynamicQuantizeMatMul</c>):
/// <code>
/// x_q, x_scale, x_zp = DynamicQuantizeLinear(x)                 // uint8, per tensor, at run time
/// y = Cast(MatMulInteger(x_q, W_q, x_zp, 0), float) * (x_scale * w_scale)
/// </code>
/// with <c>W_q</c> the weight quantised offline to int8 (symmetric, range [-127, 127], one scale per output column, zero
/// point 0). An input feeding several products (the query, key and value projections) is quantised once.
/// </summary>
internal sealed class OnnxDynamicInt8
{
    /// <summary>The largest magnitude of a quantised weight (symmetric range, -128 unused).</summary>
    public const int WeightLevels = 127;

    private readonly OnnxGraphBuilder g;
    private readonly Dictionary<string, string[]> quantizedInputs = new(StringComparer.Ordinal);
    private string? weightZeroPoint;

    /// <summary>Writes into <paramref name="graph"/>.</summary>
    public OnnxDynamicInt8(OnnxGraphBuilder graph)
    {
        g = graph;
    }

    /// <summary>
    /// <paramref name="input"/> [..., in] times the transposed Linear weight <paramref name="weight"/> [out, in], as int8
    /// operators; the float result [..., out] (no bias). Initializers are named after <paramref name="name"/>.
    /// </summary>
    public string MatMul(string input, Tensor weight, string name)
    {
        if (weight.dim() != 2) throw new ArgumentException($"Only a Linear layer's matrix can be quantised; '{name}' has {weight.dim()} dimensions.", nameof(weight));
        int rows = (int)weight.shape[1], columns = (int)weight.shape[0];
        float[] matrix;
        using (NewDisposeScope())
            matrix = weight.detach().t().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();   // [in, out]
        var (values, scales) = QuantizeColumns(matrix, rows, columns);

        if (!quantizedInputs.TryGetValue(input, out var quantized))
            quantizedInputs[input] = quantized = g.Nodes("DynamicQuantizeLinear", new[] { input }, 3);
        weightZeroPoint ??= g.Int8Initializer("int8_weight_zero_point", new sbyte[] { 0 });
        var product = g.Node("MatMulInteger", new[] { quantized[0], g.Int8Initializer(name + ".weight_int8", values, rows, columns), quantized[2], weightZeroPoint });
        var asFloat = g.Node("Cast", new[] { product }, Attr("to", (long)TensorProto.Types.DataType.Float));
        var scale = g.Node("Mul", new[] { quantized[1], g.Initializer(name + ".weight_scale", scales, columns) });
        return g.Node("Mul", new[] { asFloat, scale });
    }

    /// <summary>
    /// Quantises <paramref name="matrix"/> ([rows, columns], row-major) column by column: scale = largest magnitude in
    /// the column / 127 (1 for a column of zeros), value = round(x / scale) (to even, as ONNX's QuantizeLinear) clamped
    /// to [-127, 127]. <c>value * scale</c> is within <c>scale / 2</c> of each entry.
    /// </summary>
    public static (sbyte[] Values, float[] Scales) QuantizeColumns(ReadOnlySpan<float> matrix, int rows, int columns)
    {
        if (matrix.Length != (long)rows * columns) throw new ArgumentException($"A {rows} x {columns} matrix has {(long)rows * columns} values, not {matrix.Length}.", nameof(matrix));
        var scales = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            var row = matrix.Slice(r * columns, columns);
            for (int c = 0; c < columns; c++)
            {
                float magnitude = MathF.Abs(row[c]);
                if (!float.IsFinite(magnitude)) throw new InvalidOperationException($"The weight has a value that is not finite ({row[c]}) at [{c}, {r}]; it cannot be quantised.");
                if (magnitude > scales[c]) scales[c] = magnitude;
            }
        }
        for (int c = 0; c < columns; c++) scales[c] = scales[c] > 0 ? scales[c] / WeightLevels : 1f;
        var values = new sbyte[matrix.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                float q = MathF.Round(matrix[r * columns + c] / scales[c], MidpointRounding.ToEven);
                values[r * columns + c] = (sbyte)Math.Clamp(q, -WeightLevels, WeightLevels);
            }
        return (values, scales);
    }
}
