using Google.Protobuf;
using Onnx;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// Small ONNX graphs of the shapes the importers read (built with the ONNX protobuf classes the library uses), and
/// structural mutations of ONNX models: initializers (dims, data type, data), nodes (op type, inputs, attributes) and the graph.
/// </summary>
internal static class TinyOnnx
{
    private static TensorProto Initializer(string name, long[] dims, float[] data)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(dims);
        var bytes = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
        tensor.RawData = ByteString.CopyFrom(bytes);
        return tensor;
    }

    private static NodeProto Node(string op, string output, params string[] inputs)
    {
        var node = new NodeProto { OpType = op, Name = output + "_node" };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    private static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    private static ModelProto Model(GraphProto graph, string producer = "pytorch")
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = producer, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        return model;
    }

    /// <summary>
    /// A BERT graph of the tiny Hugging Face model in <paramref name="directory"/> as exporters write it: named
    /// embeddings, biases and layer norms; anonymous MatMul weights stored [in, out], each followed by the Add of its named
    /// bias; a Reshape to [batch, length, heads, head size]; a fused LayerNormalization carrying epsilon.
    /// </summary>
    public static byte[] Bert(string directory)
    {
        var graph = new GraphProto { Name = "tiny-bert" };
        graph.Input.Add(new ValueInfoProto { Name = "input_ids" });
        using var scope = NewDisposeScope();
        var state = Safetensors.LoadStateDict(Path.Combine(directory, "model.safetensors"));
        int anonymous = 0;
        foreach (var (name, tensor) in state.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            bool matmul = tensor.shape.Length == 2 && name.EndsWith(".weight", StringComparison.Ordinal) && !name.StartsWith("embeddings.", StringComparison.Ordinal);
            if (!matmul)
            {
                graph.Initializer.Add(Initializer(name, tensor.shape, tensor.contiguous().data<float>().ToArray()));
                continue;
            }
            var weight = $"onnx::MatMul_{anonymous++}";
            var transposed = tensor.t().contiguous();
            graph.Initializer.Add(Initializer(weight, transposed.shape, transposed.data<float>().ToArray()));
            graph.Node.Add(Node("MatMul", weight + "_out", "hidden", weight));
            graph.Node.Add(Node("Add", weight + "_biased", weight + "_out", name[..^".weight".Length] + ".bias"));
        }
        var shape = new TensorProto { Name = "attention_shape", DataType = (int)TensorProto.Types.DataType.Int64 };
        shape.Dims.Add(4);
        shape.Int64Data.AddRange(new long[] { 0, 0, TinyBert.Config.NumAttentionHeads, TinyBert.Config.HiddenSize / TinyBert.Config.NumAttentionHeads });
        graph.Initializer.Add(shape);
        graph.Node.Add(Node("Reshape", "heads", "hidden", "attention_shape"));
        var norm = Node("LayerNormalization", "normed", "hidden", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias");
        norm.Attribute.Add(new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float, F = 1e-12f });
        graph.Node.Add(norm);
        graph.Output.Add(new ValueInfoProto { Name = "normed" });
        return Model(graph).ToByteArray();
    }

    /// <summary>A ResNet graph (one basic block per stage, width 8, torchvision padding) of the tests' tiny ResNet weights.</summary>
    public static byte[] ResNet()
    {
        var graph = new GraphProto { Name = "tiny-resnet" };
        graph.Input.Add(new ValueInfoProto { Name = "image" });
        var backbone = ConvAdapterTests.TinyResNet();
        using (var scope = NewDisposeScope())
        {
            foreach (var (name, tensor) in backbone.Model.state_dict().OrderBy(p => p.Key, StringComparer.Ordinal))
                graph.Initializer.Add(Initializer(name, tensor.shape, tensor.contiguous().data<float>().ToArray()));
        }
        backbone.Model.Dispose();

        string Conv(string input, string weight, int kernel, int stride)
        {
            var node = Node("Conv", weight + "_out", input, weight);
            int pad = kernel / 2;
            node.Attribute.Add(Ints("kernel_shape", kernel, kernel));
            node.Attribute.Add(Ints("strides", stride, stride));
            node.Attribute.Add(Ints("pads", pad, pad, pad, pad));
            graph.Node.Add(node);
            return node.Output[0];
        }
        string Norm(string input, string prefix)
        {
            var node = Node("BatchNormalization", prefix + "_out", input, prefix + ".weight", prefix + ".bias", prefix + ".running_mean", prefix + ".running_var");
            node.Attribute.Add(new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float, F = 1e-5f });
            graph.Node.Add(node);
            return node.Output[0];
        }
        string Relu(string input)
        {
            graph.Node.Add(Node("Relu", input + "_relu", input));
            return input + "_relu";
        }

        var x = Relu(Norm(Conv("image", "conv1.weight", 7, 2), "bn1"));
        var pool = Node("MaxPool", "pooled", x);
        pool.Attribute.Add(Ints("kernel_shape", 3, 3));
        pool.Attribute.Add(Ints("strides", 2, 2));
        pool.Attribute.Add(Ints("pads", 1, 1, 1, 1));
        graph.Node.Add(pool);
        x = "pooled";
        for (int stage = 1; stage <= 4; stage++)
        {
            var prefix = $"layer{stage}.0";
            int stride = stage == 1 ? 1 : 2;
            var main = Norm(Conv(Relu(Norm(Conv(x, $"{prefix}.conv1.weight", 3, stride), $"{prefix}.bn1")), $"{prefix}.conv2.weight", 3, 1), $"{prefix}.bn2");
            var shortcut = stage == 1 ? x : Norm(Conv(x, $"{prefix}.downsample.0.weight", 1, stride), $"{prefix}.downsample.1");
            graph.Node.Add(Node("Add", prefix + "_sum", main, shortcut));
            x = Relu(prefix + "_sum");
        }
        graph.Node.Add(Node("GlobalAveragePool", "features", x));
        graph.Output.Add(new ValueInfoProto { Name = "features" });
        return Model(graph).ToByteArray();
    }

    /// <summary>A byte mutation of the protobuf (30%) or a structural one of the parsed model.</summary>
    public static (string Name, byte[] Bytes) Mutate(Random random, byte[] onnx)
    {
        if (random.Next(10) < 3)
        {
            var (name, bytes) = Mutations.AnyBytes(random, onnx);
            return ($"protobuf {name}", bytes);
        }
        var model = ModelProto.Parser.ParseFrom(onnx);
        var graph = model.Graph;
        int count = random.Next(4) == 0 ? random.Next(2, 4) : 1;
        var names = new List<string>();
        for (int i = 0; i < count; i++) names.Add(random.Next(2) == 0 ? MutateInitializer(random, graph) : MutateNode(random, graph));
        return (string.Join(" + ", names), model.ToByteArray());
    }

    private static readonly long[] AbsurdDims = { 0, -1, 1, 2, 3, int.MaxValue, 1L << 40, long.MaxValue, 100_000 };

    private static string MutateInitializer(Random random, GraphProto graph)
    {
        if (graph.Initializer.Count == 0) return "no initializer";
        var tensor = graph.Initializer[random.Next(graph.Initializer.Count)];
        switch (random.Next(8))
        {
            case 0:
                if (tensor.Dims.Count > 0) tensor.Dims[random.Next(tensor.Dims.Count)] = AbsurdDims[random.Next(AbsurdDims.Length)];
                else tensor.Dims.Add(AbsurdDims[random.Next(AbsurdDims.Length)]);
                return "initializer dim";
            case 1:
                if (random.Next(2) == 0) tensor.Dims.Add(AbsurdDims[random.Next(AbsurdDims.Length)]);
                else tensor.Dims.Clear();
                return "initializer rank";
            case 2:
                tensor.DataType = random.Next(-1, 18);
                return "initializer data type";
            case 3:
                tensor.RawData = ByteString.CopyFrom(Mutations.AnyBytes(random, tensor.RawData.ToByteArray()).Bytes);
                return "initializer data";
            case 4:
                var values = Enumerable.Range(0, random.Next(0, 5)).Select(_ => random.Next(3) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => 1f }).ToArray();
                tensor.FloatData.Add(values);
                if (random.Next(2) == 0) tensor.RawData = ByteString.Empty;
                return "initializer float_data";
            case 5:
                tensor.Name = random.Next(2) == 0 ? graph.Initializer[random.Next(graph.Initializer.Count)].Name : tensor.Name + ".weight";
                return "initializer renamed";
            case 6:
                graph.Initializer.Remove(tensor);
                return "initializer removed";
            default:
                if (tensor.RawData.Length >= 4)
                {
                    var bytes = tensor.RawData.ToByteArray();
                    BitConverter.GetBytes(random.Next(2) == 0 ? float.NaN : 3e38f).CopyTo(bytes, random.Next(bytes.Length / 4) * 4);
                    tensor.RawData = ByteString.CopyFrom(bytes);
                }
                return "initializer value NaN or huge";
        }
    }

    private static readonly string[] OpTypes = { "Conv", "Add", "MatMul", "Relu", "BatchNormalization", "MaxPool", "GlobalAveragePool", "AveragePool", "Reshape", "Concat", "Div", "Sqrt", "Constant", "Identity", "LayerNormalization", "Tanh", "Erf", "" };

    private static string MutateNode(Random random, GraphProto graph)
    {
        if (graph.Node.Count == 0) return "no node";
        var node = graph.Node[random.Next(graph.Node.Count)];
        var anyOutput = graph.Node[random.Next(graph.Node.Count)].Output.FirstOrDefault() ?? "x";
        switch (random.Next(9))
        {
            case 0:
                node.OpType = OpTypes[random.Next(OpTypes.Length)];
                return "node op type";
            case 1:
                graph.Node.Remove(node);
                return "node removed";
            case 2:
                if (node.Input.Count > 0) node.Input.RemoveAt(random.Next(node.Input.Count));
                return "node input removed";
            case 3:
                // Any other tensor, possibly a later node's output: cycles and crossed paths.
                if (node.Input.Count > 0) node.Input[random.Next(node.Input.Count)] = anyOutput;
                else node.Input.Add(anyOutput);
                return "node input rewired";
            case 4:
                node.Input.Add(node.Input.Count > 0 ? node.Input[0] : "missing");
                return "node input duplicated";
            case 5:
                node.Output.Clear();
                if (random.Next(2) == 0) node.Output.Add(anyOutput);
                return "node output changed";
            case 6:
            {
                string[] names = { "kernel_shape", "strides", "pads", "dilations", "group" };
                var name = names[random.Next(names.Length)];
                var existing = node.Attribute.FirstOrDefault(a => a.Name == name);
                if (existing is not null) node.Attribute.Remove(existing);
                var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, I = AbsurdDims[random.Next(AbsurdDims.Length)] };
                attribute.Ints.AddRange(Enumerable.Range(0, random.Next(0, 6)).Select(_ => AbsurdDims[random.Next(AbsurdDims.Length)]));
                node.Attribute.Add(attribute);
                return $"node attribute {name}";
            }
            case 7:
            {
                var epsilon = node.Attribute.FirstOrDefault(a => a.Name == "epsilon") ?? new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float };
                if (!node.Attribute.Contains(epsilon)) node.Attribute.Add(epsilon);
                float[] values = { float.NaN, -1f, 0f, 1e30f, float.PositiveInfinity, 2f };
                epsilon.F = values[random.Next(values.Length)];
                return "node epsilon";
            }
            default:
                if (random.Next(2) == 0) graph.Input.Add(new ValueInfoProto { Name = "second_input" });
                else graph.Input.Clear();
                return "graph inputs";
        }
    }
}
