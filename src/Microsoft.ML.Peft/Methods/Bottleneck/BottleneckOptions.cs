using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Methods.Bottleneck;

/// <summary>
/// Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer et al. 2020,
/// "AdapterFusion"): a small module <c>h + up(f(down(h)))</c> in each chosen layer, applied to a sub-layer's projected
/// output (after its dense projection and dropout, before the residual addition and LayerNorm). <c>down</c> maps the
/// hidden size to <c>hidden / ReductionFactor</c>, <c>up</c> maps back and starts at zero, so the adapted model starts
/// equal to the base model. Only the adapters train; they cannot be merged into the weights (the non-linearity sits
/// between them), so they cost a little at inference. Not a Hugging Face PEFT method: the saved keys are this library's
/// (<c>encoder.layer.0.output.adapter.down.weight</c>).
/// </summary>
public sealed class BottleneckOptions : PeftMethodOptions
{
    /// <summary>Adapters after the attention block and after the feed-forward block of each layer (Houlsby et al.).</summary>
    public const string Houlsby = "houlsby";

    /// <summary>One adapter after the feed-forward block of each layer (Pfeiffer et al.).</summary>
    public const string Pfeiffer = "pfeiffer";

    /// <inheritdoc/>
    public override string PeftType => "BOTTLENECK";

    /// <summary>The hidden size divided by this is the bottleneck's width (at least 1). Default 16.</summary>
    [JsonPropertyName("reduction_factor")] public int ReductionFactor { get; set; } = 16;

    /// <summary>Where the adapters sit: <see cref="Houlsby"/> or <see cref="Pfeiffer"/> (default).</summary>
    [JsonPropertyName("placement")] public string Placement { get; set; } = Pfeiffer;

    /// <summary>The bottleneck's activation: <c>relu</c> (default) or <c>gelu</c>.</summary>
    [JsonPropertyName("non_linearity")] public string NonLinearity { get; set; } = "relu";

    /// <summary>Indices of the layers that get adapters (0 is the first); null (default) for every layer.</summary>
    [JsonPropertyName("target_layers")] public IReadOnlyList<int>? TargetLayers { get; set; }

    /// <inheritdoc/>
    public override void Validate()
    {
        if (ReductionFactor < 1 || ReductionFactor > 65_536)
            throw new ArgumentOutOfRangeException(nameof(ReductionFactor), ReductionFactor, "Bottleneck ReductionFactor must be an integer from 1 to 65536.");
        if (Placement is not (Houlsby or Pfeiffer))
            throw new ArgumentException($"Bottleneck Placement must be '{Houlsby}' or '{Pfeiffer}', not '{Placement}'.", nameof(Placement));
        if (NonLinearity is not ("relu" or "gelu"))
            throw new ArgumentException($"Bottleneck NonLinearity must be 'relu' or 'gelu', not '{NonLinearity}'.", nameof(NonLinearity));
        if (TargetLayers is not null)
        {
            if (TargetLayers.Count == 0) throw new ArgumentException("Bottleneck TargetLayers must name at least one layer, or be null for every layer.", nameof(TargetLayers));
            if (TargetLayers.Any(l => l < 0)) throw new ArgumentOutOfRangeException(nameof(TargetLayers), "Bottleneck TargetLayers must be layer indices from 0.");
            if (TargetLayers.Distinct().Count() != TargetLayers.Count) throw new ArgumentException("Bottleneck TargetLayers lists a layer twice.", nameof(TargetLayers));
        }
    }

    internal override PeftMethod Create(string adapterName) => new BottleneckMethod(this, adapterName);
}
