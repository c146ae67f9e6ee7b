using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// What a method adds to one Linear layer (a LoRA branch, an IA3 vector...): it changes the layer's output, and, when
/// mergeable, folds its update into the layer's weight and bias.
/// </summary>
internal abstract class LinearAdapter : nn.Module
{
    protected LinearAdapter(string name) : base(name) { }

    /// <summary>The adapted output, given the layer's input and the base layer's output <c>x W^T + b</c>.</summary>
    public abstract Tensor Adapt(Tensor input, Tensor baseOutput);

    /// <summary>
    /// The adapted layer's output given its input and base <paramref name="weight"/> (out x in) and
    /// <paramref name="bias"/>. By default the base output <c>x W^T + b</c> passed to <see cref="Adapt"/>; adapters that
    /// change the layer's input (IA3 on feed-forward layers) or need the weight itself (DoRA) override it.
    /// </summary>
    public virtual Tensor Forward(Tensor input, Tensor weight, Tensor? bias)
    {
        using var output = nn.functional.linear(input, weight, bias);
        return Adapt(input, output);
    }

    /// <summary>
    /// The adapted output of <paramref name="layer"/>, whose base product (<see cref="TunerLinear.BaseForward"/>) may run
    /// in reduced precision. By default the base output passed to <see cref="Adapt"/>.
    /// </summary>
    public virtual Tensor Forward(Tensor input, TunerLinear layer)
    {
        using var output = layer.BaseForward(input);
        return Adapt(input, output);
    }

    /// <summary>Adds the update into <paramref name="weight"/> (out x in) and <paramref name="bias"/> in place.</summary>
    public abstract void MergeInto(Tensor weight, Tensor? bias);
}
