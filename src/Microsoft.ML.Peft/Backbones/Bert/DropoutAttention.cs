using static TorchSharp.torch;
using Microsoft.ML.Peft.Torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>
/// Scaled dot-product attention with dropout on its probabilities, <c>(softmax(QK^T/sqrt(d) + mask) * keep / (1 - p)) V</c>,
/// that keeps for the backward pass only its inputs (Q, K, V, the additive mask) and the dropout's keep mask (one byte an
/// element), not the scores, probabilities and dropped probabilities autograd would keep (three float matrices of
/// [batch, heads, queries, keys] a layer). The backward pass computes the probabilities again and applies the softmax's
/// derivative by hand: dV = P'^T dO; dP' = dO V^T; dP = dP' * keep / (1 - p); dS = P * (dP - rowsum(dP' * P'));
/// dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d), where P' is the dropped P. The keep mask comes from the caller, drawn from
/// the run's generator, so activation checkpointing draws it again identically.
/// </summary>
internal sealed class DropoutAttention : autograd.SingleTensorFunction<DropoutAttention>
{
    public override string Name => nameof(DropoutAttention);

    /// <summary>Attention of <paramref name="q"/> over <paramref name="k"/> and <paramref name="v"/> with dropout.</summary>
    /// <param name="q">[batch, heads, queries, head size]</param>
    /// <param name="k">[batch, heads, keys, head size]</param>
    /// <param name="v">[batch, heads, keys, head size]</param>
    /// <param name="additiveMask">Broadcastable to [batch, heads, queries, keys]: 0 where attended, a large negative number elsewhere.</param>
    /// <param name="keep">[batch, heads, queries, keys], boolean: the probabilities dropout keeps.</param>
    /// <param name="probability">The dropout probability, in (0, 1).</param>
    /// <returns>[batch, heads, queries, head size]</returns>
    public static Tensor Run(Tensor q, Tensor k, Tensor v, Tensor additiveMask, Tensor keep, double probability)
    {
        if (keep.dtype != ScalarType.Bool) throw new ArgumentException("The keep mask must be boolean.", nameof(keep));
        if (!(probability > 0 && probability < 1)) throw new ArgumentOutOfRangeException(nameof(probability), probability, "Dropout must be in (0, 1).");
        return apply(q, k, v, additiveMask, keep, probability);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, additiveMask, keep) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3], (Tensor)vars[4]);
        var probability = (double)vars[5];
        ctx.save_for_backward(new List<Tensor> { q, k, v, additiveMask, keep });
        ctx.save_data("p", probability);
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            using var probabilities = Probabilities(q, k, additiveMask);
            using var scaledKeep = RunDropout.ScaledKeep(keep, probability, q.dtype);
            return matmul(probabilities.mul_(scaledKeep), v).MoveToOuterDisposeScope();
        }
    }

    /// <summary><c>softmax(QK^T/sqrt(d) + mask)</c>: the scale applied to Q (a [queries, head size] tensor, not the scores), the scores freed at once.</summary>
    private static Tensor Probabilities(Tensor q, Tensor k, Tensor additiveMask)
    {
        using var scaled = q.mul(1 / Math.Sqrt(q.shape[^1]));
        using var scores = matmul(scaled, k.transpose(-2, -1)).add_(additiveMask);
        return nn.functional.softmax(scores, -1);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (q, k, v, additiveMask, keep) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
        var probability = (double)ctx.get_data("p");
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            // Matrices of [batch, heads, queries, keys] are freed as soon as they are used: at most three live at once.
            using var p = Probabilities(q, k, additiveMask);
            using var scaledKeep = RunDropout.ScaledKeep(keep, probability, q.dtype);
            Tensor gradV, gradScores;
            using (var dropped = p.mul(scaledKeep))
            {
                gradV = matmul(dropped.transpose(-2, -1), gradOutput);
                gradScores = matmul(gradOutput, v.transpose(-2, -1)); // dP', the gradient of the dropped probabilities
                // rowsum(dP * P) with dP = dP' * keep / (1 - p) is rowsum(dP' * P'), P' the dropped probabilities.
                using var rowDot = gradScores.mul(dropped).sum(-1, keepdim: true);
                gradScores.mul_(scaledKeep).sub_(rowDot).mul_(p);
            }
            using (gradScores)
            {
                gradScores.mul_(1 / Math.Sqrt(q.shape[^1]));
                return new List<Tensor>
                {
                    matmul(gradScores, k).MoveToOuterDisposeScope(), matmul(gradScores.transpose(-2, -1), q).MoveToOuterDisposeScope(),
                    gradV.MoveToOuterDisposeScope(), null!, null!, null!,
                };
            }
        }
    }
}
