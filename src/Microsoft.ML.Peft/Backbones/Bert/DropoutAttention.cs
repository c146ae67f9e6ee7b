using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>
/// Scaled dot-product attention with dropout on its probabilities, <c>(softmax(QK^T/sqrt(d) + mask) * keep / (1 - p)) V</c>,
/// that keeps for the backward pass only its inputs (Q, K, V, the additive mask) and the dropout's keep mask (one byte an
/// element), not the scores, probabilities and dropped probabilities autograd would keep (three float matrices of
/// [batch, heads, queries, keys] a layer). The backward pass computes the probabilities again and applies the softmax's
/// derivative by hand: dV = P'^T dO; dP' = dO V^T; dP = dP' * keep / (1 - p); dS = P * (dP - rowsum(dO * O)), O the output;
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
            return matmul(probabilities.mul_(keep).div_(1 - probability), v).MoveToOuterDisposeScope();
        }
    }

    /// <summary><c>softmax(QK^T/sqrt(d) + mask)</c>, the scores freed at once.</summary>
    private static Tensor Probabilities(Tensor q, Tensor k, Tensor additiveMask)
    {
        using var scores = matmul(q, k.transpose(-2, -1)).div_(Math.Sqrt(q.shape[^1])).add_(additiveMask);
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
            // Matrices of [batch, heads, queries, keys] are freed as soon as they are used: at most two live at once.
            using var p = Probabilities(q, k, additiveMask);
            Tensor gradV, rowDot;
            using (var dropped = p.mul(keep).div_(1 - probability))
            {
                gradV = matmul(dropped.transpose(-2, -1), gradOutput);
                // rowsum(dP * P) equals rowsum(dO * O) with O = dropped V, the forward's output: a [queries, head size]
                // product instead of a [queries, keys] one.
                using var output = matmul(dropped, v);
                rowDot = gradOutput.mul(output).sum(-1, keepdim: true);
            }
            using var gradScores = matmul(gradOutput, v.transpose(-2, -1)).mul_(keep).div_(1 - probability)
                .sub_(rowDot).mul_(p).div_(Math.Sqrt(q.shape[^1]));
            return new List<Tensor>
            {
                matmul(gradScores, k).MoveToOuterDisposeScope(), matmul(gradScores.transpose(-2, -1), q).MoveToOuterDisposeScope(),
                gradV.MoveToOuterDisposeScope(), null!, null!, null!,
            };
        }
    }
}
