using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Lora;

/// <summary>
/// The low-rank branch of one adapted Linear layer: <c>y = base(x) + scaling * B(A(dropout(x)))</c>, with <c>A</c>
/// initialised Kaiming-uniform (<c>a = sqrt(5)</c>, i.e. U(-1/sqrt(in), 1/sqrt(in))) and <c>B</c> zeros, so the adapted
/// layer starts equal to the base layer. Parameter names follow Hugging Face PEFT: <c>lora_A.weight</c> (r x in) and
/// <c>lora_B.weight</c> (out x r), and with DoRA <c>lora_magnitude_vector</c> (out).
/// </summary>
/// <remarks>
/// DoRA follows PEFT's <c>DoraLinearLayer</c>: with <c>n = ||W + scaling B A||</c> per output row (detached, as the
/// paper's section 4.3 suggests) and <c>g = m / n</c>, <c>y = base(x) + (g - 1) (x' W^T) + g scaling B(A(x'))</c> where
/// <c>x'</c> is the dropped-out input while training with dropout and the input otherwise; the bias is not rescaled.
/// PiSSA keeps the initial factors (<c>A0</c>, <c>B0</c>) to save the adapter as a LoRA on the original weights.
/// </remarks>
internal sealed class LoraLayer : LinearAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly WeightOnlyLinear lora_A;
    private readonly WeightOnlyLinear lora_B;
    private readonly RunDropout lora_dropout;
    private readonly Parameter? lora_magnitude_vector;
#pragma warning restore IDE1006
    private readonly Tensor? initialA, initialB;

    /// <summary>
    /// A LoRA branch initialised Kaiming-uniform (or as <paramref name="initialization"/> says), drawing from
    /// <paramref name="generator"/>. PiSSA and DoRA need <paramref name="baseWeight"/>, the layer's weight (out x in);
    /// PiSSA leaves it unchanged: the caller replaces it with the residual <c>W - DeltaWeight()</c>.
    /// </summary>
    public LoraLayer(long inFeatures, long outFeatures, int rank, float scaling, float dropout, Generator? generator = null,
        LoraInitialization initialization = LoraInitialization.KaimingUniform, bool useDora = false, Tensor? baseWeight = null) : base("lora")
    {
        Rank = rank;
        Scaling = scaling;
        lora_A = new WeightOnlyLinear(inFeatures, rank);
        lora_B = new WeightOnlyLinear(rank, outFeatures);
        lora_dropout = new RunDropout(dropout);
        if ((useDora || initialization == LoraInitialization.Pissa) && baseWeight is null)
            throw new ArgumentNullException(nameof(baseWeight), "PiSSA and DoRA need the base weight.");
        using (no_grad())
        {
            switch (initialization)
            {
                case LoraInitialization.Gaussian:
                    lora_A.Weight.normal_(0, 1.0 / rank, generator);
                    break;
                case LoraInitialization.Pissa:
                    InitialisePissa(baseWeight!);
                    initialA = lora_A.Weight.detach().clone();
                    initialB = lora_B.Weight.detach().clone();
                    break;
                default:
                    var bound = 1 / Math.Sqrt(inFeatures);
                    lora_A.Weight.uniform_(-bound, bound, generator);
                    break;
            }
            if (useDora)
            {
                // PEFT's DoraLinearLayer.update_layer: the magnitude starts at the row norms of W + scaling B A.
                using var delta = DeltaWeight();
                using var combined = baseWeight!.detach().add(delta);
                lora_magnitude_vector = new Parameter(RowNorms(combined));
            }
        }
        RegisterComponents();
    }

    public int Rank { get; }

    public float Scaling { get; }

    public Parameter A => lora_A.Weight;

    public Parameter B => lora_B.Weight;

    /// <summary>DoRA's magnitude (one per output row), or null for plain LoRA.</summary>
    public Parameter? Magnitude => lora_magnitude_vector;

    /// <summary>PiSSA's initial <c>A</c> and <c>B</c>, or null for other initialisations.</summary>
    public (Tensor A, Tensor B)? Initial => initialA is null ? null : (initialA, initialB!);

    /// <summary>The low-rank branch alone: <c>scaling * B(A(dropout(x)))</c>.</summary>
    public Tensor Delta(Tensor input)
    {
        using var scope = NewDisposeScope();
        Tensor low;
        if (training && lora_dropout.Probability > 0)
        {
            // The same draws as the dropout module, but the backward pass keeps the input (shared with the other
            // branches that read it) and a boolean mask, not a dropped-out copy of the input.
            var keep = lora_dropout.KeepMask(input.shape, input.device);
            low = DroppedLinear.Run(input, lora_A.Weight, keep, lora_dropout.Probability);
        }
        else
        {
            low = lora_A.forward(input);
        }
        return lora_B.forward(low).mul_(Scaling).MoveToOuterDisposeScope();
    }

    public override Tensor Adapt(Tensor input, Tensor baseOutput)
    {
        if (lora_magnitude_vector is not null) throw new InvalidOperationException("A DoRA layer needs the base weight: call Forward.");
        using var delta = Delta(input);
        return baseOutput.add(delta);
    }

    /// <summary>Plain LoRA adds its branch to the layer's base product (reduced precision or not); DoRA needs the fp32 weight itself.</summary>
    public override Tensor Forward(Tensor input, TunerLinear layer) =>
        lora_magnitude_vector is null ? base.Forward(input, layer) : Forward(input, layer.Weight, layer.Bias);

    public override Tensor Forward(Tensor input, Tensor weight, Tensor? bias)
    {
        if (lora_magnitude_vector is null) return base.Forward(input, weight, bias);
        using var scope = NewDisposeScope();
        var output = nn.functional.linear(input, weight, bias);
        Tensor x, baseResult;
        if (!training || lora_dropout.Probability == 0)
        {
            // PEFT reuses the base output without its bias.
            x = input;
            baseResult = bias is null ? output : output.sub(bias);
        }
        else
        {
            x = lora_dropout.forward(input);
            baseResult = nn.functional.linear(x, weight);
        }
        Tensor norm;
        using (no_grad())
        {
            using var delta = DeltaWeight();
            norm = RowNorms(weight.detach().add(delta));
        }
        var gain = lora_magnitude_vector.div(norm);
        var lora = lora_B.forward(lora_A.forward(x)).mul(Scaling);
        return output.add(baseResult.mul(gain.sub(1))).add(lora.mul(gain)).MoveToOuterDisposeScope();
    }

    /// <summary>The update to the base weight: <c>scaling * B A</c> (out x in).</summary>
    public Tensor DeltaWeight() => matmul(B, A).mul_(Scaling);

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var delta = DeltaWeight();
        if (lora_magnitude_vector is null)
        {
            weight.add_(delta);
            return;
        }
        // DoRA: W' = (m / ||W + scaling B A||) (W + scaling B A), row by row; the bias is unchanged.
        var combined = weight.add(delta);
        var gain = lora_magnitude_vector.detach().div(RowNorms(combined));
        weight.copy_(combined.mul_(gain.unsqueeze(1)));
    }

    /// <summary>The L2 norm of each row (over the input dimension).</summary>
    private static Tensor RowNorms(Tensor weight) => linalg.vector_norm(weight, 2, new long[] { 1 });

    /// <summary>PiSSA: <c>W = U S Vh</c>; <c>A = diag(sqrt(S_r / scaling)) Vh_r</c>, <c>B = U_r diag(sqrt(S_r / scaling))</c>, so <c>scaling B A = U_r S_r Vh_r</c>.</summary>
    private void InitialisePissa(Tensor baseWeight)
    {
        using var scope = NewDisposeScope();
        var (u, s, vh) = linalg.svd(baseWeight.detach().to(ScalarType.Float32), fullMatrices: false);
        var root = s.narrow(0, 0, Rank).div(Scaling).sqrt();
        lora_A.Weight.copy_(vh.narrow(0, 0, Rank).mul(root.unsqueeze(1)));
        lora_B.Weight.copy_(u.narrow(1, 0, Rank).mul(root.unsqueeze(0)));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            initialA?.Dispose();
            initialB?.Dispose();
        }
        base.Dispose(disposing);
    }
}
