using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Bottleneck;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>The names of the encoder's graph inputs and of its last hidden state inside a graph being built.</summary>
/// <param name="InputIds">The <c>input_ids</c> input, int64 [batch, sequence].</param>
/// <param name="AttentionMask">The <c>attention_mask</c> input, int64 [batch, sequence] (1 for tokens, 0 for padding).</param>
/// <param name="TokenTypeIds">The <c>token_type_ids</c> input, int64 [batch, sequence], or null when the graph has none (every token is segment 0).</param>
/// <param name="LastHiddenState">The encoder's output, float [batch, sequence, hidden], real tokens only (no virtual tokens).</param>
internal sealed record BertOnnxEncoder(string InputIds, string AttentionMask, string? TokenTypeIds, string LastHiddenState);

/// <summary>
/// Writes a <see cref="BertModel"/> as ONNX operators: embeddings (word, position and token-type, summed and
/// normalised), then every layer's self-attention with the additive mask built from <c>attention_mask</c>, feed-forward
/// block (GELU written with <c>Erf</c>, as PyTorch's exact GELU) and <c>LayerNormalization</c>s, in inference mode
/// (no dropout). Each Linear layer is written with its <b>effective</b> weight: the active adapter of the Linear-layer
/// methods (LoRA and its variants, VeRA, IA3) merged into a copy of the base weight, never into the model's own tensors
/// (which other loaded models may share, see <see cref="SharedBaseWeights"/>); BitFit and full fine-tuning are their
/// trained weights. Methods that cannot be merged are written as the operators they add: bottleneck adapters (two small
/// projections with their activation and residual), prompt tuning (the virtual-token vectors before the word
/// embeddings, the mask extended, the output cut to the real tokens) and prefix tuning (per-layer key and value prefixes
/// before the projected keys and values). The model is only read. With <see cref="PeftOnnxQuantization.DynamicInt8"/>
/// the six Linear layers of every encoder layer (query, key, value, attention output, intermediate, output) are written
/// as int8 products (see <see cref="OnnxDynamicInt8"/>); everything else stays float32.
/// </summary>
internal static class BertOnnxWriter
{
    /// <summary>The token-id input's name (as sentence-transformers' ONNX exports name it).</summary>
    public const string InputIdsName = "input_ids";

    /// <summary>The attention-mask input's name.</summary>
    public const string AttentionMaskName = "attention_mask";

    /// <summary>The segment-id input's name (sentence pairs only).</summary>
    public const string TokenTypeIdsName = "token_type_ids";

    /// <summary>The symbolic batch dimension.</summary>
    public const string BatchAxis = "batch";

    /// <summary>The symbolic sequence dimension.</summary>
    public const string SequenceAxis = "sequence";

    /// <summary>
    /// Declares the inputs and writes the encoder into <paramref name="graph"/>. With <paramref name="tokenTypeInput"/>
    /// the graph takes <c>token_type_ids</c> (sentence pairs: 0 for <c>[CLS] a [SEP]</c>, 1 for <c>b [SEP]</c>);
    /// without it every token is segment 0, as single sentences are encoded. <paramref name="quantization"/>: how the
    /// encoder's Linear layers are written (float32 products, or dynamic int8 ones).
    /// </summary>
    public static BertOnnxEncoder Write(OnnxGraphBuilder graph, BertModel model, bool tokenTypeInput, PeftOnnxQuantization quantization = PeftOnnxQuantization.None)
    {
        var writer = new Writer(graph, model, quantization);
        return writer.Write(tokenTypeInput);
    }

    /// <summary>How the adapter appears in the graph, for the model's metadata: merged weights, or the operators it adds.</summary>
    public static string AdapterForm(BertModel model)
    {
        if (model.PromptModule is not null) return "operators: virtual-token vectors prepended to the word embeddings";
        if (model.PrefixModule is not null) return "operators: key and value prefixes in every self-attention";
        if (model.modules().Any(m => m is BottleneckAdapter)) return "operators: bottleneck adapters in the layers";
        return "merged into the weights";
    }

    private sealed class Writer
    {
        private readonly OnnxGraphBuilder g;
        private readonly BertModel model;
        private readonly BertConfig config;
        private readonly Dictionary<string, TorchSharp.Modules.Parameter> parameters;
        private readonly Dictionary<string, TunerLinear> linears;
        private readonly Dictionary<string, BottleneckAdapter> bottlenecks;
        private readonly int heads, headSize;
        private readonly Dictionary<string, string> constants = new(StringComparer.Ordinal);
        private readonly OnnxDynamicInt8? int8;

        public Writer(OnnxGraphBuilder graph, BertModel model, PeftOnnxQuantization quantization)
        {
            g = graph;
            int8 = quantization switch
            {
                PeftOnnxQuantization.None => null,
                PeftOnnxQuantization.DynamicInt8 => new OnnxDynamicInt8(graph),
                _ => throw new ArgumentOutOfRangeException(nameof(quantization), quantization, "Unknown ONNX export quantization."),
            };
            this.model = model;
            config = model.Config;
            parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
            linears = model.Linears().ToDictionary(l => l.Name, l => l.Layer, StringComparer.Ordinal);
            bottlenecks = model.named_modules().Where(m => m.module is BottleneckAdapter)
                .ToDictionary(m => m.name, m => (BottleneckAdapter)m.module, StringComparer.Ordinal);
            heads = config.NumAttentionHeads;
            headSize = config.HiddenSize / heads;
        }

        private string One => Constant("one", () => g.Scalar("one", 1f));
        private string Half => Constant("half", () => g.Scalar("half", 0.5f));
        private string SqrtTwo => Constant("sqrt_two", () => g.Scalar("sqrt_two", MathF.Sqrt(2f)));

        /// <summary>A constant written once and reused by every layer.</summary>
        private string Constant(string key, Func<string> create)
        {
            if (!constants.TryGetValue(key, out var name)) constants[key] = name = create();
            return name;
        }

        public BertOnnxEncoder Write(bool tokenTypeInput)
        {
            var ids = g.Input(InputIdsName, DataType.Int64, BatchAxis, SequenceAxis);
            var mask = g.Input(AttentionMaskName, DataType.Int64, BatchAxis, SequenceAxis);
            var types = tokenTypeInput ? g.Input(TokenTypeIdsName, DataType.Int64, BatchAxis, SequenceAxis) : null;
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();

            long hidden = config.HiddenSize, n = model.VirtualTokens;
            var batch = g.Node("Shape", new[] { ids }, Attr("start", 0L), Attr("end", 1L));     // [1]
            var length = g.Node("Shape", new[] { ids }, Attr("start", 1L), Attr("end", 2L));    // [1]

            // Word vectors [batch, sequence, hidden], with prompt tuning's virtual tokens in front.
            var words = g.Node("Gather", new[] { g.Initializer("bert.embeddings.word_embeddings.weight", Parameter("embeddings.word_embeddings.weight")), ids }, Attr("axis", 0L));
            if (model.PromptModule is { } prompt)
            {
                using var vectors = prompt.forward(empty(0, 0, hidden));
                var virtualTokens = g.Initializer("bert.prompt_embeddings", vectors.unsqueeze(0));                 // [1, n, hidden]
                var shape = g.Node("Concat", new[] { batch, g.Int64Vector("prompt_shape", n, hidden) }, Attr("axis", 0L));
                words = g.Node("Concat", new[] { g.Node("Expand", new[] { virtualTokens, shape }), words }, Attr("axis", 1L));
            }

            // Positions: virtual tokens take the first n (prompt and prefix alike), real tokens the next ones.
            var positionTable = g.Initializer("bert.embeddings.position_embeddings.weight", Parameter("embeddings.position_embeddings.weight"));
            long first = model.PromptModule is not null ? 0 : n;
            long extra = model.PromptModule is not null ? n : 0;
            var end = g.Node("Add", new[] { length, g.Int64Vector("position_end_offset", first + extra) });
            var positions = g.Node("Slice", new[] { positionTable, g.Int64Vector("position_start", first), end, g.Int64Vector("position_axes", 0L) });
            var summed = g.Node("Add", new[] { words, positions });

            var typeTable = Parameter("embeddings.token_type_embeddings.weight");
            string typeVectors;
            if (types is null)
            {
                typeVectors = g.Initializer("bert.embeddings.token_type_embeddings.row0", typeTable[0]);
            }
            else
            {
                var typeIds = types;
                if (model.PromptModule is not null)
                    typeIds = g.Node("Pad", new[] { types, g.Int64Vector("prompt_type_pads", 0L, n, 0L, 0L), g.Int64Initializer("zero_type", new[] { 0L }) });
                typeVectors = g.Node("Gather", new[] { g.Initializer("bert.embeddings.token_type_embeddings.weight", typeTable), typeIds }, Attr("axis", 0L));
            }
            summed = g.Node("Add", new[] { summed, typeVectors });
            var state = LayerNorm(summed, "embeddings.LayerNorm");

            // Additive mask [batch, 1, 1, keys]: 0 where attended, -1e9 at padding; virtual tokens are always attended.
            var keysMask = n > 0
                ? g.Node("Pad", new[] { mask, g.Int64Vector("virtual_mask_pads", 0L, n, 0L, 0L), g.Int64Initializer("one_mask", new[] { 1L }) })
                : mask;
            var maskFloat = g.Node("Cast", new[] { keysMask }, Attr("to", (long)DataType.Float));
            var additive = g.Node("Mul", new[] { g.Node("Sub", new[] { One, maskFloat }), g.Scalar("mask_value", -1e9f) });
            additive = g.Node("Unsqueeze", new[] { additive, g.Int64Vector("mask_axes", 1L, 2L) });

            // Prefix tuning: the table [n, layers·2·hidden] as [layers·2, heads, n, head size]; layer i's keys 2i, values 2i+1.
            Tensor? prefixTable = null;
            string? prefixShape = null;
            if (model.PrefixModule is { } prefix)
            {
                var table = prefix.forward(empty(0, 0, hidden));
                prefixTable = table.view(n, config.NumHiddenLayers * 2, heads, headSize).permute(1, 2, 0, 3);
                prefixShape = g.Node("Concat", new[] { batch, g.Int64Vector("prefix_shape", heads, n, headSize) }, Attr("axis", 0L));
            }

            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                (string Keys, string Values)? layerPrefix = null;
                if (prefixTable is not null)
                {
                    string Expanded(int row, string what) =>
                        g.Node("Expand", new[] { g.Initializer($"bert.encoder.layer.{i}.prefix_{what}", prefixTable[row].unsqueeze(0)), prefixShape! });
                    layerPrefix = (Expanded(2 * i, "keys"), Expanded(2 * i + 1, "values"));
                }
                state = Layer(state, additive, $"encoder.layer.{i}", layerPrefix);
            }
            if (model.PromptModule is not null)
                state = g.Node("Slice", new[] { state, g.Int64Vector("real_token_start", n), g.Int64Vector("real_token_end", long.MaxValue), g.Int64Vector("real_token_axes", 1L) });
            return new BertOnnxEncoder(ids, mask, types, state);
        }

        private string Layer(string input, string additiveMask, string prefix, (string Keys, string Values)? kv)
        {
            var q = Heads(Dense(input, $"{prefix}.attention.self.query"));
            var k = Heads(Dense(input, $"{prefix}.attention.self.key"));
            var v = Heads(Dense(input, $"{prefix}.attention.self.value"));
            if (kv is { } p)
            {
                k = g.Node("Concat", new[] { p.Keys, k }, Attr("axis", 2L));
                v = g.Node("Concat", new[] { p.Values, v }, Attr("axis", 2L));
            }
            var kT = g.Node("Transpose", new[] { k }, Attr("perm", 0L, 1L, 3L, 2L));
            var scores = g.Node("Div", new[] { g.Node("MatMul", new[] { q, kT }), Constant("attention_scale", () => g.Scalar("attention_scale", MathF.Sqrt(headSize))) });
            scores = g.Node("Add", new[] { scores, additiveMask });
            var probabilities = g.Node("Softmax", new[] { scores }, Attr("axis", -1L));
            var context = g.Node("Transpose", new[] { g.Node("MatMul", new[] { probabilities, v }) }, Attr("perm", 0L, 2L, 1L, 3L));
            context = g.Node("Reshape", new[] { context, Constant("merge_heads_shape", () => g.Int64Vector("merge_heads_shape", 0L, 0L, config.HiddenSize)) });
            var attended = ResidualOutput(context, input, $"{prefix}.attention.output");

            var expanded = Dense(attended, $"{prefix}.intermediate.dense");
            expanded = config.HiddenAct switch
            {
                "relu" => g.Node("Relu", new[] { expanded }),
                "gelu_new" => GeluTanh(expanded),
                _ => Gelu(expanded),
            };
            return ResidualOutput(expanded, attended, $"{prefix}.output");
        }

        /// <summary>[batch, sequence, hidden] to [batch, heads, sequence, head size].</summary>
        private string Heads(string projected)
        {
            var split = g.Node("Reshape", new[] { projected, Constant("split_heads_shape", () => g.Int64Vector("split_heads_shape", 0L, 0L, heads, headSize)) });
            return g.Node("Transpose", new[] { split }, Attr("perm", 0L, 2L, 1L, 3L));
        }

        /// <summary>Dense projection, the bottleneck adapter when the site has one, residual addition and LayerNorm.</summary>
        private string ResidualOutput(string input, string residual, string prefix)
        {
            var projected = Dense(input, $"{prefix}.dense");
            if (bottlenecks.TryGetValue($"{prefix}.{BottleneckMethod.ModuleName}", out var adapter))
            {
                var name = $"bert.{prefix}.{BottleneckMethod.ModuleName}";
                var down = Affine(projected, adapter.Down.Weight, adapter.Down.Bias, name + ".down");
                var activated = adapter.Activation == "gelu" ? Gelu(down) : g.Node("Relu", new[] { down });
                projected = g.Node("Add", new[] { projected, Affine(activated, adapter.Up.Weight, adapter.Up.Bias, name + ".up") });
            }
            return LayerNorm(g.Node("Add", new[] { projected, residual }), $"{prefix}.LayerNorm");
        }

        /// <summary>A Linear layer of the encoder with its effective weight (the active adapter merged into a copy).</summary>
        private string Dense(string input, string name)
        {
            if (!linears.TryGetValue(name, out var layer)) throw new InvalidOperationException($"The encoder has no Linear layer '{name}'.");
            using var scope = NewDisposeScope();
            Tensor weight = layer.Weight;
            Tensor? bias = layer.Bias;
            if (layer.ActiveAdapter is { } active && !layer.Merged)
            {
                // Never in place: the base weight may be shared with other loaded models.
                weight = layer.Weight.detach().clone();
                bias = layer.Bias?.detach().clone();
                var adapter = layer.Adapter(active) ?? throw new InvalidOperationException($"'{name}' has no adapter '{active}'.");
                adapter.MergeInto(weight, bias);
            }
            if (int8 is not null)
            {
                var product = int8.MatMul(input, weight, "bert." + name);
                return bias is null ? product : g.Node("Add", new[] { product, g.Initializer($"bert.{name}.bias", bias) });
            }
            return Affine(input, weight, bias, "bert." + name);
        }

        private string Affine(string input, Tensor weight, Tensor? bias, string name)
        {
            var product = g.Node("MatMul", new[] { input, g.Initializer(name + ".weight", weight, transpose: true) });
            return bias is null ? product : g.Node("Add", new[] { product, g.Initializer(name + ".bias", bias) });
        }

        private string LayerNorm(string input, string name) =>
            g.Node("LayerNormalization",
                new[] { input, g.Initializer($"bert.{name}.weight", Parameter(name + ".weight")), g.Initializer($"bert.{name}.bias", Parameter(name + ".bias")) },
                Attr("axis", -1L), Attr("epsilon", (float)config.LayerNormEps));

        /// <summary>Exact GELU: <c>0.5 x (1 + erf(x / sqrt 2))</c>.</summary>
        private string Gelu(string x)
        {
            var erf = g.Node("Erf", new[] { g.Node("Div", new[] { x, SqrtTwo }) });
            return g.Node("Mul", new[] { g.Node("Mul", new[] { x, g.Node("Add", new[] { erf, One }) }), Half });
        }

        /// <summary>The tanh approximation: <c>0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))</c>.</summary>
        private string GeluTanh(string x)
        {
            var cube = g.Node("Mul", new[] { g.Node("Mul", new[] { x, x }), x });
            var inner = g.Node("Add", new[] { x, g.Node("Mul", new[] { cube, Constant("gelu_cubic", () => g.Scalar("gelu_cubic", 0.044715f)) }) });
            var tanh = g.Node("Tanh", new[] { g.Node("Mul", new[] { inner, Constant("gelu_scale", () => g.Scalar("gelu_scale", MathF.Sqrt(2f / MathF.PI))) }) });
            return g.Node("Mul", new[] { g.Node("Mul", new[] { x, g.Node("Add", new[] { tanh, One }) }), Half });
        }

        private Tensor Parameter(string name) =>
            parameters.TryGetValue(name, out var parameter) ? parameter : throw new InvalidOperationException($"The encoder has no parameter '{name}'.");
    }
}
