using Google.Protobuf;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Onnx;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>
/// Reads a ResNet from an ONNX graph whose tensor names say nothing (such as the CNTK export that the NuGet package
/// Microsoft.ML.DnnImageFeaturizer.ResNet18 ships, with initializers like <c>Parameter91</c>): the structure is recovered
/// by following the graph from its input (Conv, BatchNormalization, Relu, MaxPool, then blocks that end in an Add of the
/// main path and the shortcut, then the average pool), and each weight is given its torchvision name. Every weight
/// remembers the initializer it came from. Anything that does not fit that structure is an error naming the node.
/// </summary>
internal static class OnnxResNetImporter
{
    /// <summary>The per-channel means of the package's <c>ResNetPreprocess.onnx</c> mean image, in BGR order (0-255 scale).</summary>
    internal static readonly float[] CntkMeanBgr = { 103.06262f, 115.902885f, 123.15163f };

    public static (ResNetConfig Config, Dictionary<string, NamedArray> Weights) Import(byte[] onnxBytes, string source)
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
        return new Reader(graph, source, model.ProducerName).Read();
    }

    private sealed class Reader
    {
        private readonly GraphProto graph;
        private readonly string source;
        private readonly string producer;
        private readonly Dictionary<string, TensorProto> initializers = new();
        private readonly Dictionary<string, List<NodeProto>> consumers = new();
        private readonly Dictionary<string, NamedArray> weights = new();
        private readonly List<(string Name, ConvGeometry Geometry)> geometries = new();
        private double? eps;

        public Reader(GraphProto graph, string source, string producer)
        {
            this.graph = graph;
            this.source = source;
            this.producer = producer;
            foreach (var init in graph.Initializer) initializers[init.Name] = init;
            foreach (var node in graph.Node)
                foreach (var input in node.Input)
                {
                    if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = new List<NodeProto>();
                    if (!list.Contains(node)) list.Add(node);
                }
        }

        public (ResNetConfig, Dictionary<string, NamedArray>) Read()
        {
            var inputs = graph.Input.Where(i => !initializers.ContainsKey(i.Name)).ToList();
            if (inputs.Count != 1) throw Error($"a ResNet has one image input; this graph has {inputs.Count}");
            var stem = Single(inputs[0].Name, "Conv", "the image input");
            var (width, stemGeometry, x) = ConvNorm(stem, "conv1", "bn1");
            if (stemGeometry.Kernel != 7 || stemGeometry.Stride != 2) throw Error($"the first convolution '{stem.Name}' is not 7 x 7 with stride 2");
            x = Single(x, "Relu", "the stem").Output[0];
            var maxPool = Single(x, "MaxPool", "the stem");
            var poolGeometry = Geometry(maxPool, 3);
            geometries.Add(("maxpool", poolGeometry));
            x = maxPool.Output[0];

            var layers = new List<int>();
            string? block = null;
            int stage = 0, index = 0;
            while (true)
            {
                var next = consumers.GetValueOrDefault(x) ?? new List<NodeProto>();
                if (next.Count == 1 && next[0].OpType is "AveragePool" or "GlobalAveragePool") break;
                var convs = next.Where(n => n.OpType == "Conv").ToList();
                if (convs.Count == 0) throw Error($"after '{x}' comes neither a residual block nor the average pool ({string.Join(", ", next.Select(n => n.OpType))})");
                // The shortcut's projection is the convolution whose normalised output goes straight into the Add.
                if (convs.Count > 2) throw Error($"{convs.Count} convolutions read '{x}'; a residual block has its main path and at most a shortcut projection");
                NodeProto? projection = convs.Count == 2 ? convs.FirstOrDefault(c => FeedsAdd(c)) : null;
                if (convs.Count == 2 && projection is null) throw Error($"two convolutions read '{x}' but neither is a shortcut projection");
                var main = convs.Single(c => c != projection);
                int stride = Geometry(main, null).Stride;
                bool downsamples = projection is not null && (stride != 1 || Geometry(projection, 1).Stride != 1);
                if (layers.Count == 0 || downsamples)
                {
                    if (layers.Count == 4) throw Error("the graph has more than four stages");
                    layers.Add(0);
                    stage = layers.Count;
                    index = 0;
                }
                // A damaged graph can loop back on itself: no stage has more blocks than a configuration allows.
                if (layers[^1] >= ResNetConfig.MaxBlocksPerStage) throw Error($"stage {stage} has more than {ResNetConfig.MaxBlocksPerStage} blocks (is the graph a cycle?)");
                string prefix = $"layer{stage}.{index}";
                var output = Block(main, projection, prefix, x, out var kind);
                if (block is not null && kind != block) throw Error($"block {prefix} is {kind}, earlier blocks are {block}");
                block = kind;
                layers[^1]++;
                index++;
                x = output;
            }
            if (layers.Count != 4) throw Error($"a ResNet has four stages; this graph has {layers.Count}");

            var padding = new[] { ResNetConfig.SymmetricPadding, ResNetConfig.SameBeginPadding }.FirstOrDefault(p =>
            {
                var candidate = new ResNetConfig { Padding = p };
                return geometries.All(g => candidate.Geometry(g.Geometry.Kernel, g.Geometry.Stride) == g.Geometry);
            }) ?? throw Error("its convolutions' padding is neither symmetric nor CNTK's 'same' padding");
            bool cntk = producer.StartsWith("CNTK", StringComparison.OrdinalIgnoreCase);
            var config = new ResNetConfig
            {
                Block = block!,
                Layers = layers.ToArray(),
                Width = (int)width,
                Padding = padding,
                BatchNormEps = eps ?? 1e-5,
                // CNTK's ImageNet ResNets take BGR pixels on the 0-255 scale less a mean image; torchvision's take RGB in [0, 1] normalised.
                InputBgr = cntk,
                InputScale = cntk ? 1f : 1f / 255,
                InputMean = cntk ? CntkMeanBgr.ToArray() : new[] { 0.485f, 0.456f, 0.406f },
                InputStd = cntk ? new[] { 1f, 1f, 1f } : new[] { 0.229f, 0.224f, 0.225f },
            };
            config.Validate(source);
            return (config, weights);
        }

        private string Block(NodeProto first, NodeProto? projection, string prefix, string input, out string kind)
        {
            var conv = first;
            int n = 1;
            string x;
            while (true)
            {
                if (n > 3) throw Error($"block {prefix} has more than three convolutions on its main path");
                (_, var geometry, x) = ConvNorm(conv, $"{prefix}.conv{n}", $"{prefix}.bn{n}");
                var next = consumers.GetValueOrDefault(x) ?? new List<NodeProto>();
                if (next.Count == 1 && next[0].OpType == "Add") break;
                var relu = Single(x, "Relu", $"block {prefix}");
                conv = Single(relu.Output[0], "Conv", $"block {prefix}");
                n++;
            }
            kind = n switch { 2 => "basic", 3 => "bottleneck", _ => throw Error($"block {prefix} has {n} convolution(s) on its main path") };
            var add = consumers[x][0];
            string shortcut = input;
            if (projection is not null)
            {
                (_, _, shortcut) = ConvNorm(projection, $"{prefix}.downsample.0", $"{prefix}.downsample.1");
            }
            if (add.Input.Count != 2 || !add.Input.Contains(x) || !add.Input.Contains(shortcut))
                throw Error($"the Add '{add.Name}' of block {prefix} does not add the main path and the shortcut '{shortcut}'");
            return Single(add.Output[0], "Relu", $"block {prefix}").Output[0];
        }

        private bool FeedsAdd(NodeProto conv)
        {
            var norm = consumers.GetValueOrDefault(conv.Output[0]);
            if (norm is not { Count: 1 } || norm[0].OpType != "BatchNormalization") return false;
            var after = consumers.GetValueOrDefault(norm[0].Output[0]);
            return after is { Count: 1 } && after[0].OpType == "Add";
        }

        private (long OutChannels, ConvGeometry Geometry, string Output) ConvNorm(NodeProto conv, string convName, string normName)
        {
            if (conv.Input.Count != 2) throw Error($"the convolution '{conv.Name}' ({convName}) has a bias or no weight; ResNet convolutions have neither");
            var weight = Weight(conv.Input[1], convName + ".weight", conv);
            if (weight.Shape.Length != 4 || weight.Shape[2] != weight.Shape[3]) throw Error($"the convolution '{conv.Name}' ({convName}) does not have a square 2-D kernel");
            if (Attribute(conv, "group")?.I is long group && group != 1) throw Error($"the convolution '{conv.Name}' ({convName}) is grouped");
            if (Attribute(conv, "dilations")?.Ints is { Count: > 0 } dilations && dilations.Any(d => d != 1)) throw Error($"the convolution '{conv.Name}' ({convName}) is dilated");
            var geometry = Geometry(conv, (int)weight.Shape[2]);
            geometries.Add((convName, geometry));
            var norm = Single(conv.Output[0], "BatchNormalization", convName);
            if (norm.Input.Count != 5) throw Error($"the batch normalisation '{norm.Name}' ({normName}) does not have five inputs");
            long channels = weight.Shape[0];
            string[] parts = { "weight", "bias", "running_mean", "running_var" };
            for (int i = 0; i < 4; i++)
            {
                var array = Weight(norm.Input[i + 1], $"{normName}.{parts[i]}", norm);
                if (array.Shape.Length != 1 || array.Shape[0] != channels)
                    throw Error($"'{norm.Input[i + 1]}' ({normName}.{parts[i]}) has shape [{string.Join(", ", array.Shape)}], not [{channels}]");
            }
            if (Attribute(norm, "epsilon") is { } epsilon)
            {
                if (eps is not null && Math.Abs(eps.Value - epsilon.F) > 1e-12) throw Error($"its batch normalisations use different epsilons ({eps} and {epsilon.F})");
                eps = epsilon.F;
            }
            return (channels, geometry, norm.Output[0]);
        }

        private ConvGeometry Geometry(NodeProto node, int? kernel)
        {
            var kernelShape = Attribute(node, "kernel_shape")?.Ints;
            int k = kernel ?? (kernelShape is { Count: 2 } ? (int)kernelShape[0] : throw Error($"'{node.Name}' has no kernel_shape"));
            if (kernelShape is { Count: 2 } && (kernelShape[0] != k || kernelShape[1] != k)) throw Error($"'{node.Name}' has kernel_shape [{string.Join(", ", kernelShape)}], not {k} x {k}");
            var strides = Attribute(node, "strides")?.Ints;
            int stride = strides is { Count: 2 } ? (int)strides[0] : 1;
            if (strides is { Count: 2 } && strides[1] != stride) throw Error($"'{node.Name}' has unequal strides");
            var autoPad = Attribute(node, "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
            if (autoPad is not ("NOTSET" or "")) throw Error($"'{node.Name}' uses auto_pad {autoPad}");
            var pads = Attribute(node, "pads")?.Ints;
            if (pads is not null && pads.Count != 4) throw Error($"'{node.Name}' has {pads.Count} pads, not 4");
            return pads is null ? new ConvGeometry(k, stride, 0, 0, 0, 0) : new ConvGeometry(k, stride, (int)pads[0], (int)pads[1], (int)pads[2], (int)pads[3]);
        }

        private NamedArray Weight(string initializer, string name, NodeProto node)
        {
            if (!initializers.TryGetValue(initializer, out var tensor)) throw Error($"the input '{initializer}' of '{node.Name}' ({name}) is not a stored weight");
            if (tensor.DataType != (int)TensorProto.Types.DataType.Float) throw Error($"the weight '{initializer}' ({name}) is not float32");
            var array = OnnxTensors.ToArray(tensor, source) with { SourceName = initializer };
            if (array.Data.Any(v => !float.IsFinite(v))) throw Error($"the weight '{initializer}' ({name}) holds values that are not finite");
            weights[name] = array;
            return array;
        }

        private NodeProto Single(string tensor, string opType, string where)
        {
            var next = consumers.GetValueOrDefault(tensor);
            if (next is not { Count: 1 } || next[0].OpType != opType)
                throw Error($"in {where}, '{tensor}' should feed one {opType} but feeds [{string.Join(", ", (next ?? new List<NodeProto>()).Select(n => n.OpType))}]");
            return next[0];
        }

        private static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

        private InvalidDataException Error(string what) => new($"'{source}' is not a ResNet this library can import: {what}.");
    }
}
