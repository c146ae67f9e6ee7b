namespace Microsoft.ML.Peft.Methods.BitFit;

/// <summary>
/// BitFit (Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
/// Language-models"): only the bias terms of the encoder train (those of the query/key/value, output and feed-forward
/// projections and of the layer normalisations); every weight matrix stays frozen. No module is added, so nothing
/// costs extra at inference time.
/// </summary>
public sealed class BitFitOptions : PeftMethodOptions
{
    /// <inheritdoc/>
    public override string PeftType => "BITFIT";

    /// <inheritdoc/>
    public override void Validate() { }

    internal override PeftMethod Create(string adapterName) => new BitFitMethod(this, adapterName);
}

/// <summary>Trains every parameter of the backbone whose name ends in <c>bias</c>.</summary>
internal sealed class BitFitMethod : PeftMethod
{
    private readonly BitFitOptions options;

    public BitFitMethod(BitFitOptions options, string adapterName) : base(adapterName) => this.options = options;

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(Backbones.IBackbone backbone, TorchSharp.torch.Generator? generator) =>
        Parameters(backbone).Select(p => p.Key[..p.Key.LastIndexOf('.')]).ToList();

    public override IReadOnlyList<NamedParameter> Parameters(Backbones.IBackbone backbone) =>
        backbone.Module.named_parameters()
            .Where(p => p.name == "bias" || p.name.EndsWith(".bias", StringComparison.Ordinal))
            .Select(p => new NamedParameter(p.name, p.parameter))
            .ToList();
}
