using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Adapters.Lora;

/// <summary>
/// The low-rank branch of one adapted Linear layer: <c>delta(x) = scaling * B(A(dropout(x)))</c>, with
/// <c>A</c> initialised Kaiming-uniform and <c>B</c> zeros, so the adapted layer starts equal to the base layer.
/// Parameter names follow Hugging Face PEFT: <c>lora_A.weight</c> (r x in) and <c>lora_B.weight</c> (out x r).
/// </summary>
internal sealed class LoraLayer : nn.Module<Tensor, Tensor>
{
    private readonly Linear lora_A;
    private readonly Linear lora_B;
    private readonly Dropout lora_dropout;

    public LoraLayer(long inFeatures, long outFeatures, int rank, float scaling, float dropout) : base("lora")
    {
        Rank = rank;
        Scaling = scaling;
        lora_A = nn.Linear(inFeatures, rank, hasBias: false);
        lora_B = nn.Linear(rank, outFeatures, hasBias: false);
        lora_dropout = nn.Dropout(dropout);
        using (no_grad())
        {
            nn.init.kaiming_uniform_(lora_A.weight!, a: Math.Sqrt(5));
            nn.init.zeros_(lora_B.weight!);
        }
        RegisterComponents();
    }

    public int Rank { get; }

    public float Scaling { get; }

    public Parameter A => lora_A.weight!;

    public Parameter B => lora_B.weight!;

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return lora_B.forward(lora_A.forward(lora_dropout.forward(input))).mul_(Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>The update to the base weight: <c>scaling * B A</c> (out x in).</summary>
    public Tensor DeltaWeight() => matmul(B, A).mul_(Scaling);
}
