using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A Linear layer (<c>y = x W^T + b</c>, parameters <c>weight</c> and <c>bias</c> as in PyTorch) that keeps any number
/// of adapters by name, as Hugging Face PEFT's tuner layers do; one of them is active. The active adapter can be merged
/// into the weight for inference and unmerged exactly (the base weight and bias are kept while merged).
/// </summary>
internal sealed class TunerLinear : TunerLayer<LinearAdapter>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public TunerLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("linear", inFeatures, outFeatures)
    {
        // Zeros: the base weights are loaded from the pretrained model (no random draw at construction).
        weight = new Parameter(zeros(outFeatures, inFeatures));
        bias = hasBias ? new Parameter(zeros(outFeatures)) : null;
        RegisterComponents();
    }

    public override Parameter Weight => weight;

    public override Parameter? Bias => bias;

    public override Tensor forward(Tensor input) =>
        Applied is { } adapter ? adapter.Forward(input, weight, bias) : nn.functional.linear(input, weight, bias);

    protected override void MergeInto(LinearAdapter adapter, Tensor weight, Tensor? bias) => adapter.MergeInto(weight, bias);
}
