using Microsoft.ML.Peft.Backbones;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Vera;

/// <summary>
/// VeRA on the Linear layers selected by <see cref="VeraOptions.TargetModules"/>: trains <c>vera_lambda_b</c> and
/// <c>vera_lambda_d</c> of each; the shared projections are frozen and saved (when <see cref="VeraOptions.SaveProjection"/>)
/// under PEFT's top-level keys <c>base_model.vera_A</c> and <c>base_model.vera_B</c>.
/// </summary>
internal sealed class VeraMethod : LinearLayerMethod
{
    /// <summary>PEFT's keys of the shared projections (outside the model tree; the adapter name left out).</summary>
    public const string KeyA = "base_model.vera_A", KeyB = "base_model.vera_B";

    private readonly VeraOptions options;

    public VeraMethod(VeraOptions options, string adapterName) : base(adapterName)
    {
        options.Validate();
        this.options = options;
    }

    public override PeftMethodOptions Options => options;

    /// <summary>The name of the projections' module under the backbone's root.</summary>
    private string ProjectionsName => "vera_projections_" + AdapterName;

    public override IReadOnlyList<string> Attach(IBackbone backbone, Generator? generator)
    {
        var selected = ModuleMatcher.Select(backbone.Linears(), options.TargetModules, "VeRA", nameof(VeraOptions.TargetModules));
        // As PEFT's _find_dim: the projections cover the largest input and output sizes among the targeted layers.
        long maxIn = selected.Max(s => s.Module.InFeatures), maxOut = selected.Max(s => s.Module.OutFeatures);
        // Drawn from their own generator seeded with the key, so a reload without saved projections draws them again.
        var projections = new VeraProjections(options.Rank, maxIn, maxOut, options.ProjectionPrngKey);
        backbone.Module.register_module(ProjectionsName, projections);
        var source = new VeraProjectionSource(projections);
        foreach (var (_, layer) in selected)
            layer.AddAdapter(AdapterName, new VeraLayer(layer.InFeatures, layer.OutFeatures, options.Rank, options.Dropout, options.DInitial, source));
        return selected.Select(s => s.Name).ToList();
    }

    public override IReadOnlyList<NamedParameter> Parameters(IBackbone backbone)
    {
        var result = new List<NamedParameter>();
        foreach (var (name, layer) in backbone.Linears())
        {
            if (layer.Adapter(AdapterName) is not VeraLayer vera) continue;
            result.Add(new NamedParameter($"{name}.vera_lambda_b", vera.LambdaB));
            result.Add(new NamedParameter($"{name}.vera_lambda_d", vera.LambdaD));
        }
        return result;
    }

    public override IReadOnlyList<NamedParameter> FrozenState(IBackbone backbone)
    {
        if (!options.SaveProjection) return Array.Empty<NamedParameter>();
        var projections = backbone.Module.named_children().Where(c => c.name == ProjectionsName).Select(c => c.module).OfType<VeraProjections>().Single();
        return new[]
        {
            new NamedParameter(KeyA, projections.A) { TopLevel = true },
            new NamedParameter(KeyB, projections.B) { TopLevel = true },
        };
    }
}
