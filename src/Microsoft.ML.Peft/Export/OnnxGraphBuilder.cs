using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Export;

/// <summary>
/// Builds an ONNX graph node by node: float32, int64 and int8 initializers (from arrays or TorchSharp tensors), graph inputs
/// and outputs with named (dynamic) or fixed dimensions, and nodes with their attributes. Every node output gets a fresh
/// unique name, so callers only name the graph's inputs, outputs and initializers. Writes opset 17 models that ONNX
/// Runtime and ML.NET's <c>ApplyOnnxModel</c> run.
/// </summary>
internal sealed class OnnxGraphBuilder
{
    /// <summary>The default-domain opset the graph uses (LayerNormalization needs 17).</summary>
    public const int OpsetVersion = 17;

    private readonly GraphProto graph;
    private readonly HashSet<string> names = new(StringComparer.Ordinal);
    private int counter;

    /// <summary>Starts an empty graph named <paramref name="name"/>.</summary>
    public OnnxGraphBuilder(string name)
    {
        graph = new GraphProto { Name = name };
    }

    /// <summary>Adds a float32 initializer with the given values and shape; returns its name.</summary>
    public string Initializer(string name, ReadOnlySpan<float> values, params long[] shape) =>
        AddInitializer(name, values, TensorProto.Types.DataType.Float, shape);

    /// <summary>Adds an int64 initializer (shapes, axes, indices); returns its name.</summary>
    public string Int64Initializer(string name, ReadOnlySpan<long> values, params long[] shape) =>
        AddInitializer(name, values, TensorProto.Types.DataType.Int64, shape);

    /// <summary>Adds an int8 initializer (quantised weights, their zero point); returns its name.</summary>
    public string Int8Initializer(string name, ReadOnlySpan<sbyte> values, params long[] shape) =>
        AddInitializer(name, values, TensorProto.Types.DataType.Int8, shape);

    private string AddInitializer<T>(string name, ReadOnlySpan<T> values, TensorProto.Types.DataType type, long[] shape) where T : unmanaged
    {
        CheckCount(name, values.Length, shape);
        var tensor = new TensorProto { Name = Unique(name), DataType = (int)type };
        tensor.Dims.AddRange(shape);
        tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values));
        graph.Initializer.Add(tensor);
        return tensor.Name;
    }

    /// <summary>A one-dimensional int64 constant (for Reshape's shape, Unsqueeze's axes and the like).</summary>
    public string Int64Vector(string name, params long[] values) => Int64Initializer(name, values, values.Length);

    /// <summary>A scalar float32 constant.</summary>
    public string Scalar(string name, float value) => Initializer(name, new[] { value });

    /// <summary>
    /// Adds the values of <paramref name="tensor"/> (any floating dtype, any device) as a float32 initializer of the
    /// same shape, optionally transposed from [out, in] to [in, out] (a Linear weight feeding MatMul).
    /// </summary>
    public string Initializer(string name, Tensor tensor, bool transpose = false)
    {
        using var scope = NewDisposeScope();
        var source = tensor.detach();
        if (transpose)
        {
            if (source.dim() != 2) throw new ArgumentException($"Only a matrix can be transposed for export; '{name}' has {source.dim()} dimensions.", nameof(tensor));
            source = source.t();
        }
        var values = source.to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        return Initializer(name, values, source.shape);
    }

    /// <summary>
    /// Declares a graph input. A dimension given as a string is symbolic (dynamic, e.g. "batch"), as a long fixed.
    /// </summary>
    public string Input(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        var unique = Unique(name);
        graph.Input.Add(ValueInfo(unique, type, dims));
        return unique;
    }

    /// <summary>Declares <paramref name="value"/> (a node output) as a graph output called <paramref name="name"/>.</summary>
    public void Output(string value, string name, TensorProto.Types.DataType type, params object[] dims)
    {
        string output = value;
        if (value != name)
        {
            output = Unique(name);
            graph.Node.Add(NewNode("Identity", new[] { value }, new[] { output }, Array.Empty<AttributeProto>()));
        }
        graph.Output.Add(ValueInfo(output, type, dims));
    }

    /// <summary>Adds a node with one output and returns that output's name.</summary>
    public string Node(string opType, string[] inputs, params AttributeProto[] attributes) =>
        Nodes(opType, inputs, 1, attributes)[0];

    /// <summary>Adds a node with <paramref name="outputCount"/> outputs and returns their names.</summary>
    public string[] Nodes(string opType, string[] inputs, int outputCount, params AttributeProto[] attributes)
    {
        var outputs = Enumerable.Range(0, outputCount).Select(_ => Unique(opType.ToLowerInvariant() + "_" + counter++)).ToArray();
        graph.Node.Add(NewNode(opType, inputs, outputs, attributes));
        return outputs;
    }

    /// <summary>An integer attribute.</summary>
    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>A string attribute.</summary>
    public static AttributeProto Attr(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>An integer-list attribute.</summary>
    public static AttributeProto Attr(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    /// <summary>The finished model, with producer information and metadata properties (key, value).</summary>
    public ModelProto Build(IEnumerable<KeyValuePair<string, string>>? metadata = null)
    {
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "Microsoft.ML.Peft",
            ProducerVersion = typeof(OnnxGraphBuilder).Assembly.GetName().Version?.ToString() ?? "",
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = OpsetVersion });
        foreach (var (key, value) in metadata ?? Array.Empty<KeyValuePair<string, string>>())
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        return model;
    }

    private string Unique(string name)
    {
        var candidate = name;
        for (int i = 1; !names.Add(candidate); i++) candidate = name + "_" + i;
        return candidate;
    }

    private static void CheckCount(string name, int count, long[] shape)
    {
        long expected = shape.Aggregate(1L, (a, b) => a * b);
        if (expected != count) throw new ArgumentException($"Initializer '{name}' has {count} values; its shape [{string.Join(", ", shape)}] needs {expected}.");
    }

    private static NodeProto NewNode(string opType, string[] inputs, string[] outputs, AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = outputs[0] + "_node" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(dim switch
            {
                string symbol => new TensorShapeProto.Types.Dimension { DimParam = symbol },
                int value => new TensorShapeProto.Types.Dimension { DimValue = value },
                long value => new TensorShapeProto.Types.Dimension { DimValue = value },
                _ => throw new ArgumentException($"A dimension of '{name}' is neither a symbol nor a size: {dim}."),
            });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}
