using System.Runtime.InteropServices;
using Microsoft.ML.Peft.Backbones.Bert;
using Onnx;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>Reads ONNX initializers into float arrays, checking that the stored bytes fit the declared shape.</summary>
internal static class OnnxTensors
{
    /// <summary>Every node must name its output: the importers follow the graph from outputs to the nodes that read them.</summary>
    public static void CheckNodes(GraphProto graph, string source)
    {
        foreach (var node in graph.Node)
            if (node.Output.Count == 0 || string.IsNullOrEmpty(node.Output[0]))
                throw new InvalidDataException($"'{source}': the node '{node.Name}' ({node.OpType}) has no output.");
    }

    /// <summary>The float32 values of <paramref name="tensor"/> (from <c>float_data</c> or <c>raw_data</c>) with its shape.</summary>
    public static NamedArray ToArray(TensorProto tensor, string source)
    {
        var shape = tensor.Dims.ToArray();
        if (shape.Any(d => d < 0 || d > int.MaxValue)) throw new InvalidDataException($"'{source}': initializer '{tensor.Name}' has an invalid shape [{string.Join(", ", shape)}].");
        long count = shape.Aggregate(1L, (a, b) => a * b > Array.MaxLength ? Array.MaxLength + 1L : a * b);
        if (count > Array.MaxLength) throw new InvalidDataException($"'{source}': initializer '{tensor.Name}' is too large ([{string.Join(", ", shape)}]).");
        float[] data;
        if (tensor.FloatData.Count > 0)
        {
            data = tensor.FloatData.ToArray();
        }
        else
        {
            if (tensor.RawData.Length != count * sizeof(float))
                throw new InvalidDataException($"'{source}': initializer '{tensor.Name}' holds {tensor.RawData.Length} bytes, its shape needs {count * sizeof(float)}.");
            data = MemoryMarshal.Cast<byte, float>(tensor.RawData.Span).ToArray();
        }
        if (data.LongLength != count)
            throw new InvalidDataException($"'{source}': initializer '{tensor.Name}' holds {data.LongLength} values, its shape needs {count}.");
        return new NamedArray(shape, data);
    }
}
