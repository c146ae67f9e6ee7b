namespace Microsoft.ML.Peft.Methods.Full;

/// <summary>
/// Full fine-tuning: every parameter of the encoder trains. Not parameter-efficient: the honest reference that every
/// PEFT method is compared with. The saved model holds all of the encoder's weights (as large as the base model).
/// </summary>
public sealed class FullFineTuningOptions : PeftMethodOptions
{
    /// <inheritdoc/>
    public override string PeftType => "FULL";

    /// <inheritdoc/>
    public override void Validate() { }

    internal override PeftMethod Create(string adapterName) => new FullFineTuningMethod(this, adapterName);
}

/// <summary>Trains and saves every parameter of the backbone.</summary>
internal sealed class FullFineTuningMethod : PeftMethod
{
    private readonly FullFineTuningOptions options;

    public FullFineTuningMethod(FullFineTuningOptions options, string adapterName) : base(adapterName) => this.options = options;

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(Backbones.IBackbone backbone, TorchSharp.torch.Generator? generator) =>
        backbone.TunerLayers().Select(l => l.Name).ToList();

    public override IReadOnlyList<NamedParameter> Parameters(Backbones.IBackbone backbone) =>
        backbone.Module.named_parameters().Select(p => new NamedParameter(p.name, p.parameter)).ToList();
}
