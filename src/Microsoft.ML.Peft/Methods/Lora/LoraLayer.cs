using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>
/// The low-rank branch of one adapted Linear layer: <c>y = base(x) + scaling * B(A(dropout(x)))</c>, with <c>A</c>
/// initialised Kaiming-uniform (<c>a = sqrt(5)</c>, i.e. U(-1/sqrt(in), 1/sqrt(in))) and <c>B</c> zeros, so the adapted
/// layer starts equal to the base layer. Parameter names follow Hugging Face PEFT: <c>lora_A.weight</c> (r x in) and
/// <c>lora_B.weight</c> (out x r).
/// </summary>
internal sealed class LoraLayer : LinearAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly WeightOnlyLinear lora_A;
    private readonly WeightOnlyLinear lora_B;
    private readonly RunDropout lora_dropout;
#pragma warning restore IDE1006

    public LoraLayer(long inFeatures, long outFeatures, int rank, float scaling, float dropout, Generator? generator = null) : base("lora")
    {
        Rank = rank;
        Scaling = scaling;
        lora_A = new WeightOnlyLinear(inFeatures, rank);
        lora_B = new WeightOnlyLinear(rank, outFeatures);
        lora_dropout = new RunDropout(dropout);
        using (no_grad())
        {
            var bound = 1 / Math.Sqrt(inFeatures);
            lora_A.Weight.uniform_(-bound, bound, generator);
        }
        RegisterComponents();
    }

    public int Rank { get; }

    public float Scaling { get; }

    public Parameter A => lora_A.Weight;

    public Parameter B => lora_B.Weight;

    /// <summary>The low-rank branch alone: <c>scaling * B(A(dropout(x)))</c>.</summary>
    public Tensor Delta(Tensor input)
    {
        using var scope = NewDisposeScope();
        return lora_B.forward(lora_A.forward(lora_dropout.forward(input))).mul_(Scaling).MoveToOuterDisposeScope();
    }

    public override Tensor Adapt(Tensor input, Tensor baseOutput)
    {
        using var delta = Delta(input);
        return baseOutput.add(delta);
    }

    /// <summary>The update to the base weight: <c>scaling * B A</c> (out x in).</summary>
    public Tensor DeltaWeight() => matmul(B, A).mul_(Scaling);

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var delta = DeltaWeight();
        weight.add_(delta);
    }
}
