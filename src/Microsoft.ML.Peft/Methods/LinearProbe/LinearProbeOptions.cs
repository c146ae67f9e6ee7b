namespace Microsoft.ML.Peft.Methods.LinearProbe;

/// <summary>
/// Linear probing: the backbone stays frozen and only the task's head trains, on the pretrained features. The
/// cheapest baseline every adaptation method should beat; the saved model holds the head alone.
/// </summary>
public sealed class LinearProbeOptions : PeftMethodOptions
{
    /// <inheritdoc/>
    public override string PeftType => "LINEAR_PROBE";

    /// <inheritdoc/>
    public override void Validate() { }

    internal override PeftMethod Create(string adapterName) => new LinearProbeMethod(this, adapterName);
}

/// <summary>Adds nothing to the backbone and trains none of it.</summary>
internal sealed class LinearProbeMethod : PeftMethod
{
    private readonly LinearProbeOptions options;

    public LinearProbeMethod(LinearProbeOptions options, string adapterName) : base(adapterName) => this.options = options;

    public override PeftMethodOptions Options => options;

    public override IReadOnlyList<string> Attach(Backbones.IBackbone backbone, TorchSharp.torch.Generator? generator) => Array.Empty<string>();

    public override IReadOnlyList<NamedParameter> Parameters(Backbones.IBackbone backbone) => Array.Empty<NamedParameter>();
}
