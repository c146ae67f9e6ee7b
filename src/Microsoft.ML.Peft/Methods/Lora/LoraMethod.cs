using Microsoft.ML.Peft.Backbones;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>
/// LoRA on the Linear layers selected by <see cref="LoraOptions.TargetModules"/>; trains only <c>lora_A</c> and
/// <c>lora_B</c> (and DoRA's <c>lora_magnitude_vector</c>). With PiSSA the frozen weights become residuals and the
/// adapter is saved as the equivalent plain LoRA on the original weights.
/// </summary>
internal sealed class LoraMethod : LinearLayerMethod
{
    private readonly LoraOptions options;

    public LoraMethod(LoraOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(IBackbone backbone, Generator? generator)
    {
        var all = ModuleMatcher.Select(backbone.TunerLayers(), options.TargetModules, "LoRA", nameof(LoraOptions.TargetModules));
        var convolutions = all.Where(l => l.Module is TunerConv2d).Select(l => (l.Name, Module: (TunerConv2d)l.Module)).ToList();
        if (convolutions.Count > 0 && (options.UseDora || options.InitLoraWeights == LoraInitialization.Pissa))
            throw new ArgumentException($"LoRA {(options.UseDora ? "UseDora" : "PiSSA initialisation")} applies to Linear layers only, and TargetModules select convolutions " +
                $"({string.Join(", ", convolutions.Take(3).Select(c => c.Name))}{(convolutions.Count > 3 ? ", ..." : "")}).", nameof(LoraOptions.TargetModules));
        foreach (var (_, conv) in convolutions)
            conv.AddAdapter(AdapterName, new LoraConv2d(conv.InFeatures, conv.OutFeatures, conv.Geometry.Kernel, options.Rank, options.Scaling, options.Dropout, generator, options.InitLoraWeights));
        var selected = all.Where(l => l.Module is TunerLinear).Select(l => (l.Name, Module: (TunerLinear)l.Module)).ToList();
        foreach (var (_, layer) in selected)
        {
            if (options.Rank > Math.Min(layer.InFeatures, layer.OutFeatures))
                throw new ArgumentOutOfRangeException(nameof(LoraOptions.Rank), options.Rank, $"LoRA Rank exceeds the layer's size ({layer.InFeatures} x {layer.OutFeatures}).");
            if (options.InitLoraWeights == LoraInitialization.Pissa && 2 * options.Rank > Math.Min(layer.InFeatures, layer.OutFeatures))
                throw new ArgumentOutOfRangeException(nameof(LoraOptions.Rank), options.Rank,
                    $"LoRA Rank with PiSSA must be at most half the layer's size ({layer.InFeatures} x {layer.OutFeatures}): the adapter is saved as a LoRA of twice the rank.");
        }
        foreach (var (_, layer) in selected)
        {
            bool needsWeight = options.UseDora || options.InitLoraWeights == LoraInitialization.Pissa;
            var lora = new LoraLayer(layer.InFeatures, layer.OutFeatures, options.Rank, options.Scaling, options.Dropout, generator,
                options.InitLoraWeights, options.UseDora, needsWeight ? layer.Weight : null);
            if (options.InitLoraWeights == LoraInitialization.Pissa)
            {
                // The frozen weight becomes the residual W - scaling B A: the adapted layer starts equal to W.
                using (no_grad())
                {
                    using var delta = lora.DeltaWeight();
                    layer.Weight.sub_(delta);
                }
            }
            layer.AddAdapter(AdapterName, lora);
        }
        return all.Select(s => s.Name).ToList();
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone)
    {
        var result = new List<NamedParameter>();
        foreach (var (name, layer) in backbone.Convolutions())
        {
            if (layer.Adapter(AdapterName) is not LoraConv2d conv) continue;
            result.Add(new NamedParameter($"{name}.lora_A.weight", conv.A));
            result.Add(new NamedParameter($"{name}.lora_B.weight", conv.B));
        }
        foreach (var (name, lora) in Layers(backbone))
        {
            result.Add(new NamedParameter($"{name}.lora_A.weight", lora.A));
            result.Add(new NamedParameter($"{name}.lora_B.weight", lora.B));
            // PEFT saves the magnitude as 'lora_magnitude_vector' (its '.weight' suffix and the adapter name dropped).
            if (lora.Magnitude is not null) result.Add(new NamedParameter($"{name}.lora_magnitude_vector", lora.Magnitude));
        }
        return result;
    }

    /// <summary>
    /// One group at the learning rate; with LoRA+ a second group at <see cref="LoraOptions.LoraPlusLearningRateRatio"/>
    /// times it holding <c>lora_B</c> and the one-dimensional parameters (as PEFT's <c>create_loraplus_optimizer</c>).
    /// </summary>
    public override IReadOnlyList<ParameterGroup> ParameterGroups(IReadOnlyList<NamedParameter> parameters)
    {
        if (options.LoraPlusLearningRateRatio is not float ratio) return base.ParameterGroups(parameters);
        bool IsB(NamedParameter p) => p.Key.EndsWith(".lora_B.weight", StringComparison.Ordinal) || p.Parameter.dim() == 1;
        return new[]
        {
            new ParameterGroup(parameters.Where(p => !IsB(p)).Select(p => p.Parameter).ToList(), 1.0),
            new ParameterGroup(parameters.Where(IsB).Select(p => p.Parameter).ToList(), ratio),
        };
    }

    /// <summary>With PiSSA, the options of the equivalent LoRA on the original weights: twice the rank, alpha doubled (times sqrt(2) with rsLoRA), default initialisation.</summary>
    public override PeftMethodOptions SavedOptions => options.InitLoraWeights != LoraInitialization.Pissa ? options : new LoraOptions
    {
        Rank = 2 * options.Rank,
        Alpha = options.UseRslora ? (float)(options.Alpha * Math.Sqrt(2)) : 2 * options.Alpha,
        Dropout = options.Dropout,
        TargetModules = options.TargetModules.ToArray(),
        UseRslora = options.UseRslora,
        UseDora = options.UseDora,
        LoraPlusLearningRateRatio = options.LoraPlusLearningRateRatio,
        InitLoraWeights = LoraInitialization.KaimingUniform,
    };

    /// <summary>
    /// With PiSSA, PEFT's conversion to a LoRA on the original weights <c>W = W_res + scaling B0 A0</c>:
    /// <c>A' = [A; A0]</c> (rows), <c>B' = [B, -B0]</c> (columns), so <c>scaling' B' A' = scaling (B A - B0 A0)</c> and
    /// <c>W + scaling' B' A' = W_res + scaling B A</c>.
    /// </summary>
    public override IReadOnlyList<NamedTensor> SavedState(IBackbone backbone)
    {
        if (options.InitLoraWeights != LoraInitialization.Pissa) return base.SavedState(backbone);
        var result = new List<NamedTensor>();
        using var scope = NewDisposeScope();
        foreach (var (name, lora) in Layers(backbone))
        {
            var (a0, b0) = lora.Initial ?? throw new InvalidOperationException($"The PiSSA layer '{name}' lost its initial factors.");
            var a = cat(new[] { lora.A.detach().cpu(), a0.cpu() }, 0).MoveToOuterDisposeScope();
            var b = cat(new[] { lora.B.detach().cpu(), b0.cpu().neg() }, 1).MoveToOuterDisposeScope();
            result.Add(new NamedTensor($"{name}.lora_A.weight", a));
            result.Add(new NamedTensor($"{name}.lora_B.weight", b));
        }
        return result;
    }

    private IEnumerable<(string Name, LoraLayer Layer)> Layers(IBackbone backbone)
    {
        foreach (var (name, layer) in backbone.Linears())
            if (layer.Adapter(AdapterName) is LoraLayer lora) yield return (name, lora);
    }
}
