using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Torch;

/// <summary>
/// <c>linear(x * keep / (1 - p), W)</c> (inverted dropout, then a bias-free projection) that keeps for the backward pass
/// the input, the weight and the boolean keep mask instead of the dropped-out copy of the input autograd would keep:
/// when several branches drop out the same input (LoRA on query and value), they share one saved input and each adds
/// a one-byte-an-element mask, not a four-byte copy. The backward pass: dW = g^T (x * keep / (1 - p)) over all rows,
/// dx = (g W) * keep / (1 - p).
/// </summary>
internal sealed class DroppedLinear : autograd.SingleTensorFunction<DroppedLinear>
{
    public override string Name => nameof(DroppedLinear);

    /// <param name="input">[..., in]</param>
    /// <param name="weight">[out, in]</param>
    /// <param name="keep">Boolean, of the input's shape: the elements dropout keeps.</param>
    /// <param name="probability">The dropout probability, in (0, 1).</param>
    /// <returns>[..., out]</returns>
    public static Tensor Run(Tensor input, Tensor weight, Tensor keep, double probability)
    {
        if (keep.dtype != ScalarType.Bool) throw new ArgumentException("The keep mask must be boolean.", nameof(keep));
        if (!(probability > 0 && probability < 1)) throw new ArgumentOutOfRangeException(nameof(probability), probability, "Dropout must be in (0, 1).");
        return apply(input, weight, keep, probability);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (input, weight, keep) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        var probability = (double)vars[3];
        ctx.save_for_backward(new List<Tensor> { input, weight, keep });
        ctx.save_data("p", probability);
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            using var dropped = RunDropout.Apply(input, keep, probability);
            return nn.functional.linear(dropped, weight).MoveToOuterDisposeScope();
        }
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (input, weight, keep) = (saved[0], saved[1], saved[2]);
        var probability = (double)ctx.get_data("p");
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            long inFeatures = weight.shape[1], outFeatures = weight.shape[0];
            var rows = gradOutput.reshape(-1, outFeatures);
            Tensor gradWeight;
            using (var dropped = RunDropout.Apply(input, keep, probability)) gradWeight = matmul(rows.t(), dropped.reshape(-1, inFeatures));
            var gradInput = RunDropout.ApplyInPlace(matmul(gradOutput, weight), keep, probability);
            return new List<Tensor> { gradInput.MoveToOuterDisposeScope(), gradWeight.MoveToOuterDisposeScope(), null!, null! };
        }
    }
}
