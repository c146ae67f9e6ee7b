using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>A bias-free weight of a convolution adapter, named <c>weight</c> as PyTorch's <c>Conv2d</c> names it.</summary>
internal sealed class ConvWeight : nn.Module
{
    private readonly Parameter weight;

    public ConvWeight(long outChannels, long inChannels, int kernel) : base("conv")
    {
        weight = new Parameter(zeros(outChannels, inChannels, kernel, kernel));
        RegisterComponents();
    }

    public Parameter Weight => weight;
}

/// <summary>
/// The low-rank branch of one adapted convolution, as Hugging Face PEFT's LoRA <c>Conv2d</c>: <c>lora_A</c> is a
/// convolution with the base layer's kernel, stride and padding from the input channels to <c>r</c> channels
/// (r x in x k x k, Kaiming-uniform with <c>a = sqrt(5)</c>: U(-1/sqrt(in k k), 1/sqrt(in k k))), <c>lora_B</c> a 1 x 1
/// convolution back to the output channels (out x r x 1 x 1, zeros), so <c>y = base(x) + scaling * B(A(dropout(x)))</c>
/// and the adapted layer starts equal to the base layer. The merged weight adds <c>scaling * (B A)</c> with the factors
/// flattened to (out x r)(r x in k k).
/// </summary>
internal sealed class LoraConv2d : ConvAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly ConvWeight lora_A;
    private readonly ConvWeight lora_B;
    private readonly RunDropout lora_dropout;
#pragma warning restore IDE1006

    public LoraConv2d(long inChannels, long outChannels, int kernel, int rank, float scaling, float dropout, Generator? generator,
        LoraInitialization initialization = LoraInitialization.KaimingUniform) : base("lora")
    {
        if (initialization == LoraInitialization.Pissa)
            throw new ArgumentException("PiSSA initialisation applies to Linear layers only; leave InitLoraWeights at KaimingUniform or Gaussian for convolutions.", nameof(LoraOptions.InitLoraWeights));
        Rank = rank;
        Scaling = scaling;
        lora_A = new ConvWeight(rank, inChannels, kernel);
        lora_B = new ConvWeight(outChannels, rank, 1);
        lora_dropout = new RunDropout(dropout);
        using (no_grad())
        {
            if (initialization == LoraInitialization.Gaussian) lora_A.Weight.normal_(0, 1.0 / rank, generator);
            else
            {
                var bound = 1 / Math.Sqrt(inChannels * kernel * kernel);
                lora_A.Weight.uniform_(-bound, bound, generator);
            }
        }
        RegisterComponents();
    }

    public int Rank { get; }

    public float Scaling { get; }

    public Parameter A => lora_A.Weight;

    public Parameter B => lora_B.Weight;

    public override Tensor Adapt(Tensor padded, ConvGeometry geometry, Tensor baseOutput)
    {
        using var scope = NewDisposeScope();
        var low = geometry.Convolve(lora_dropout.forward(padded), lora_A.Weight, null);
        var up = nn.functional.conv2d(low, lora_B.Weight);
        return baseOutput.add(up, Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>The weight change <c>scaling * B A</c> as a kernel [out, in, k, k].</summary>
    public Tensor DeltaWeight()
    {
        using var scope = NewDisposeScope();
        var a = lora_A.Weight.flatten(1);
        var b = lora_B.Weight.flatten(1);
        return b.matmul(a).mul_(Scaling).view(lora_B.Weight.shape[0], lora_A.Weight.shape[1], lora_A.Weight.shape[2], lora_A.Weight.shape[3])
            .MoveToOuterDisposeScope();
    }

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var delta = DeltaWeight();
        weight.add_(delta);
    }
}
