using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Methods;
using TorchSharp.Modules;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>
/// Writes a <see cref="ResNetModel"/> as ONNX operators: each convolution with the active adapter merged into its kernel
/// and its (frozen-statistics) batch normalisation folded in, ReLU, the stem's max pool, the residual additions and the
/// global average pool, giving the pooled features [batch, <see cref="ResNetConfig.FeatureSize"/>] of normalised images
/// [batch, 3, height, width], as <see cref="ResNetModel.forward"/> does. The in-memory model is only read: merged kernels
/// are computed into new tensors (a model sharing its base weights with others keeps them untouched).
/// </summary>
internal static class ResNetOnnxWriter
{
    /// <summary>
    /// Adds the network to <paramref name="graph"/> reading the images <paramref name="images"/> (a value of the graph);
    /// returns the name of the pooled features.
    /// </summary>
    /// <exception cref="NotSupportedException">The model holds a module that the export does not know how to write (named).</exception>
    public static string Write(OnnxGraphBuilder graph, ResNetModel model, string images)
    {
        CheckModules(model);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (stemConv, stemNorm) = model.Stem;
        var x = graph.Node("Relu", new[] { ConvNorm(graph, "conv1", stemConv, stemNorm, images) });
        var pool = model.MaxPool;
        // ONNX's MaxPool ignores its padding, as the model's -infinity padding does.
        x = graph.Node("MaxPool", new[] { x },
            Attr("kernel_shape", pool.Kernel, pool.Kernel), Attr("strides", pool.Stride, pool.Stride),
            Attr("pads", pool.PadTop, pool.PadLeft, pool.PadBottom, pool.PadRight));
        foreach (var (name, block) in model.Blocks())
        {
            var main = x;
            for (int i = 0; i < block.MainPath.Count; i++)
            {
                main = ConvNorm(graph, $"{name}.conv{i + 1}", block.MainPath[i].Conv, block.MainPath[i].Norm, main);
                if (i < block.MainPath.Count - 1) main = graph.Node("Relu", new[] { main });
            }
            var shortcut = block.Shortcut is { } projection
                ? ConvNorm(graph, $"{name}.downsample.0", projection.Parts.Conv, projection.Parts.Norm, x)
                : x;
            x = graph.Node("Relu", new[] { graph.Node("Add", new[] { main, shortcut }) });
        }
        var pooled = graph.Node("GlobalAveragePool", new[] { x });
        return graph.Node("Flatten", new[] { pooled }, Attr("axis", 1L));
    }

    /// <summary>
    /// The kernel [out, in, k, k] and bias [out] of a convolution followed by its batch normalisation, with the active
    /// adapter merged: <c>W' = merged(W) * s</c>, <c>b' = beta + (b - mean) * s</c> with <c>s = gamma / sqrt(var + eps)</c>,
    /// computed in double precision into new tensors.
    /// </summary>
    public static (Tensor Weight, Tensor Bias) FoldedKernel(TunerConv2d conv, FrozenBatchNorm2d norm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (weight, bias) = MergedKernel(conv);
        var w = weight.to(ScalarType.Float64);
        var b = bias is null ? zeros(conv.OutFeatures, dtype: ScalarType.Float64, device: w.device) : bias.to(ScalarType.Float64);
        var scale = norm.Weight.detach().to(ScalarType.Float64).div(norm.RunningVar.to(ScalarType.Float64).add(norm.Eps).sqrt());
        var folded = w.mul(scale.view(-1, 1, 1, 1));
        var shift = norm.Bias.detach().to(ScalarType.Float64).add(b.sub(norm.RunningMean.to(ScalarType.Float64)).mul(scale));
        return (folded.MoveToOuterDisposeScope(), shift.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The kernel and bias the convolution computes with: its weights when the adapter is already merged into them (or
    /// none is active), else a copy with the active adapter merged in. Never the layer's own tensors.
    /// </summary>
    public static (Tensor Weight, Tensor? Bias) MergedKernel(TunerConv2d conv)
    {
        using var noGrad = no_grad();
        var weight = conv.Weight.detach().clone();
        var bias = conv.Bias?.detach().clone();
        if (!conv.Merged && conv.ActiveAdapter is { } name)
            conv.Adapter(name)!.MergeInto(weight, bias);
        return (weight, bias);
    }

    private static string ConvNorm(OnnxGraphBuilder graph, string name, TunerConv2d conv, FrozenBatchNorm2d norm, string input)
    {
        var (weight, bias) = FoldedKernel(conv, norm);
        using (weight)
        using (bias)
        {
            var g = conv.Geometry;
            return graph.Node("Conv", new[] { input, graph.Initializer(name + ".weight", weight), graph.Initializer(name + ".bias", bias) },
                Attr("kernel_shape", g.Kernel, g.Kernel), Attr("strides", g.Stride, g.Stride),
                Attr("pads", g.PadTop, g.PadLeft, g.PadBottom, g.PadRight), Attr("dilations", 1L, 1L), Attr("group", 1L));
        }
    }

    /// <summary>
    /// Refuses a model holding a module the writer would silently leave out: only the ResNet's own modules and
    /// convolution adapters (which all merge) are known.
    /// </summary>
    private static void CheckModules(ResNetModel model)
    {
        var adapters = new List<string>();
        foreach (var (name, module) in model.named_modules())
        {
            if (adapters.Any(a => name.StartsWith(a + ".", StringComparison.Ordinal))) continue;
            switch (module)
            {
                case ConvAdapter:
                    adapters.Add(name);
                    break;
                case ResNetModel or TunerConv2d or FrozenBatchNorm2d or ResidualBlock or Downsample or ModuleList<ResidualBlock>:
                    break;
                default:
                    throw new NotSupportedException(
                        $"The ResNet's module '{name}' is a {module.GetType().Name}, which the ONNX export cannot write: only convolution adapters that merge " +
                        "(LoRA and its variants, IA3) and methods that train the ResNet's own parameters (BitFit, full fine-tuning, a linear probe) are exported.");
            }
        }
    }
}
