using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>
/// Reads the weights of a BERT-family encoder from an ONNX graph (such as the sentence-transformers exports).
/// Embeddings, biases and layer norms keep their PyTorch names as initializers; MatMul weights are often anonymous
/// and stored transposed ([in, out]). Their names are recovered by following each MatMul's output into the Add that
/// uses a named bias (<c>...query.bias</c> gives <c>...query.weight</c>), and they are transposed back to [out, in].
/// </summary>
internal static class OnnxBertImporter
{
    public static (BertConfig Config, Dictionary<string, NamedArray> Weights) Import(byte[] onnxBytes, string source)
    {
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(onnxBytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"'{source}' is not a readable ONNX model: {e.Message}", e);
        }
        var graph = model.Graph ?? throw new InvalidDataException($"'{source}' has no graph.");
        OnnxTensors.CheckNodes(graph, source);
        var initializers = new Dictionary<string, TensorProto>();
        foreach (var init in graph.Initializer) initializers[init.Name] = init;
        foreach (var node in graph.Node.Where(n => n.OpType == "Constant"))
        {
            var value = node.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
            if (value is not null && node.Output.Count == 1) initializers.TryAdd(node.Output[0], value);
        }

        var consumers = new Dictionary<string, List<NodeProto>>();
        foreach (var node in graph.Node)
        {
            foreach (var input in node.Input)
            {
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = new List<NodeProto>();
                if (!list.Contains(node)) list.Add(node);
            }
        }

        var weights = new Dictionary<string, NamedArray>();
        foreach (var (name, tensor) in initializers)
        {
            if (IsParameterName(name) && tensor.DataType == (int)TensorProto.Types.DataType.Float)
                weights[name] = ToArray(tensor, source) with { SourceName = name };
        }

        foreach (var matmul in graph.Node.Where(n => n.OpType == "MatMul" && n.Input.Count == 2))
        {
            var weightName = matmul.Input[1];
            if (!initializers.TryGetValue(weightName, out var weight) || weight.Dims.Count != 2) continue;
            if (!consumers.TryGetValue(matmul.Output[0], out var users)) continue;
            string? biasName = users.Where(u => u.OpType == "Add")
                .SelectMany(u => u.Input)
                .FirstOrDefault(i => i.EndsWith(".bias", StringComparison.Ordinal) && initializers.ContainsKey(i));
            if (biasName is null) continue;
            var targetName = biasName[..^".bias".Length] + ".weight";
            if (IsParameterName(weightName))
            {
                // A named MatMul weight is already the [in, out] matrix of that name; keep the transposed copy.
                weights.Remove(weightName);
            }
            weights[targetName] = ToArray(weight, source).Transposed() with { SourceName = weightName, SourceTransposed = true };
        }

        if (!weights.TryGetValue("embeddings.word_embeddings.weight", out var words))
        {
            var prefixed = weights.Keys.FirstOrDefault(k => k.EndsWith("embeddings.word_embeddings.weight", StringComparison.Ordinal));
            if (prefixed is null)
                throw new InvalidDataException($"'{source}' does not look like a BERT encoder: no 'embeddings.word_embeddings.weight' initializer.");
            var prefix = prefixed[..^"embeddings.word_embeddings.weight".Length];
            weights = weights.ToDictionary(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal) ? kv.Key[prefix.Length..] : kv.Key, kv => kv.Value);
            words = weights["embeddings.word_embeddings.weight"];
        }

        if (words.Shape.Length != 2)
            throw new InvalidDataException($"'{source}': 'embeddings.word_embeddings.weight' has {words.Shape.Length} dimensions, not 2.");
        int hidden = (int)words.Shape[1];
        int layers = 0;
        while (weights.ContainsKey($"encoder.layer.{layers}.attention.output.LayerNorm.weight")) layers++;
        if (layers == 0) throw new InvalidDataException($"'{source}' has no encoder layers ('encoder.layer.0.*').");
        int Rows(string name) => weights.TryGetValue(name, out var a)
            ? a.Shape.Length > 0 ? (int)a.Shape[0] : throw new InvalidDataException($"'{source}': the initializer '{name}' is a scalar, not a vector or matrix.")
            : throw new InvalidDataException($"'{source}' lacks the initializer '{name}'.");
        var config = new BertConfig
        {
            VocabSize = (int)words.Shape[0],
            HiddenSize = hidden,
            NumHiddenLayers = layers,
            IntermediateSize = Rows("encoder.layer.0.intermediate.dense.bias"),
            MaxPositionEmbeddings = Rows("embeddings.position_embeddings.weight"),
            TypeVocabSize = Rows("embeddings.token_type_embeddings.weight"),
            NumAttentionHeads = FindHeads(graph, initializers, hidden),
            LayerNormEps = FindLayerNormEpsilon(graph, initializers) ?? 1e-12,
            HiddenAct = graph.Node.Any(n => n.OpType == "Tanh") && !graph.Node.Any(n => n.OpType == "Erf") ? "gelu_new" : "gelu",
        };
        config.Validate(source);
        return (config, weights);
    }

    private static bool IsParameterName(string name) =>
        name.EndsWith(".weight", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal);

    /// <summary>
    /// The head count, from the [batch, length, heads, head_size] shape that a Reshape before attention uses: either a
    /// constant shape, or a Concat of (possibly unsqueezed) constants as exporters with dynamic axes write it; failing
    /// that, from the constant that attention scores are divided by (sqrt(head_size)).
    /// </summary>
    private static int FindHeads(GraphProto graph, Dictionary<string, TensorProto> constants, int hidden)
    {
        var producers = Producers(graph);
        long? Scalar(string name, int depth = 0)
        {
            if (constants.TryGetValue(name, out var c))
            {
                var v = ReadInt64(c);
                return v.Length == 1 ? v[0] : null;
            }
            // A bounded walk: a damaged graph can make these nodes a cycle.
            if (depth < 16 && producers.TryGetValue(name, out var p) && p.OpType is "Unsqueeze" or "Cast" or "Identity" && p.Input.Count > 0) return Scalar(p.Input[0], depth + 1);
            return null;
        }
        foreach (var node in graph.Node.Where(n => n.OpType == "Reshape" && n.Input.Count == 2))
        {
            long?[] dims;
            if (constants.TryGetValue(node.Input[1], out var shape)) dims = ReadInt64(shape).Select(v => (long?)v).ToArray();
            else if (producers.TryGetValue(node.Input[1], out var concat) && concat.OpType == "Concat") dims = concat.Input.Select(Scalar).ToArray();
            else continue;
            if (dims.Length == 4 && dims[2] > 0 && dims[3] > 0 && dims[2] * dims[3] == hidden) return (int)dims[2]!.Value;
        }
        foreach (var div in graph.Node.Where(n => n.OpType == "Div" && n.Input.Count == 2))
        {
            if (!constants.TryGetValue(div.Input[1], out var c) || c.DataType != (int)TensorProto.Types.DataType.Float) continue;
            var values = ToArray(c, "scale").Data;
            if (values.Length != 1) continue;
            var headSize = (int)Math.Round(values[0] * values[0]);
            if (headSize > 0 && Math.Abs(values[0] * values[0] - headSize) < 1e-3 && hidden % headSize == 0) return hidden / headSize;
        }
        throw new InvalidDataException("The ONNX graph does not show the number of attention heads; load the model from a Hugging Face directory with config.json instead.");
    }

    private static Dictionary<string, NodeProto> Producers(GraphProto graph) =>
        graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).GroupBy(p => p.o).ToDictionary(g => g.Key, g => g.First().n);

    private static double? FindLayerNormEpsilon(GraphProto graph, Dictionary<string, TensorProto> constants)
    {
        var fused = graph.Node.FirstOrDefault(n => n.OpType == "LayerNormalization");
        if (fused is not null)
            return fused.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5;
        // Decomposed layer norm: Sqrt(Add(variance, epsilon)).
        var producers = Producers(graph);
        foreach (var sqrt in graph.Node.Where(n => n.OpType == "Sqrt" && n.Input.Count > 0))
        {
            if (!producers.TryGetValue(sqrt.Input[0], out var add) || add.OpType != "Add") continue;
            foreach (var input in add.Input)
            {
                if (constants.TryGetValue(input, out var c) && c.DataType == (int)TensorProto.Types.DataType.Float)
                {
                    var values = ToArray(c, "epsilon").Data;
                    if (values.Length == 1) return values[0];
                }
            }
        }
        return null;
    }

    private static long[] ReadInt64(TensorProto tensor)
    {
        if (tensor.DataType != (int)TensorProto.Types.DataType.Int64) return Array.Empty<long>();
        if (tensor.Int64Data.Count > 0) return tensor.Int64Data.ToArray();
        return MemoryMarshal.Cast<byte, long>(tensor.RawData.Span).ToArray();
    }

    private static NamedArray ToArray(TensorProto tensor, string source) => OnnxTensors.ToArray(tensor, source);
}

/// <summary>A dense float array with its shape, independent of any tensor library, and where it came from.</summary>
internal sealed record NamedArray(long[] Shape, float[] Data)
{
    /// <summary>The tensor's name in the imported file (an ONNX initializer, a safetensors key).</summary>
    public string? SourceName { get; init; }

    /// <summary>Whether the file stores the matrix transposed ([in, out]).</summary>
    public bool SourceTransposed { get; init; }

    public NamedArray Transposed()
    {
        if (Shape.Length != 2) throw new InvalidOperationException("Only matrices can be transposed.");
        long rows = Shape[0], cols = Shape[1];
        var result = new float[Data.LongLength];
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++)
                result[c * rows + r] = Data[r * cols + c];
        return new NamedArray(new[] { cols, rows }, result);
    }
}
