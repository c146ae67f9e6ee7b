using Microsoft.ML.Peft.Torch;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>
/// Activation (gradient) checkpointing of one transformer layer: the forward pass keeps only the layer's input; the
/// backward pass runs the layer again with gradients on, restoring the state of the run's dropout generator (or libtorch's default
/// generator outside a run) so dropout draws the same masks, and back-propagates through that recomputation. Memory for activations drops from all layers' to one
/// layer's, at the cost of a second forward pass. A layer's prefix-tuning keys and values are an input of the function,
/// so they get their gradient from the recomputation too.
/// </summary>
internal sealed class LayerCheckpoint : autograd.SingleTensorFunction<LayerCheckpoint>
{
    public override string Name => nameof(LayerCheckpoint);

    /// <summary>Runs <paramref name="layer"/> on <paramref name="hidden"/> under checkpointing.</summary>
    public static Tensor Run(BertLayer layer, Tensor hidden, Tensor additiveMask, Tensor? prefix = null) => apply(hidden, additiveMask, layer, prefix!);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var mask = (Tensor)vars[1];
        var layer = (BertLayer)vars[2];
        var prefix = vars[3] as Tensor;
        ctx.save_for_backward(new List<Tensor> { hidden, mask, prefix! });
        ctx.save_data("layer", layer);
        var random = layer.modules().OfType<RunDropout>().FirstOrDefault()?.Random;
        ctx.save_data("random", random!);
        using (var state = random is null ? get_rng_state() : random.SaveDropoutState()) ctx.save_data("rng", state.data<byte>().ToArray());
        using (no_grad())
        {
            return layer.Forward(hidden, mask, prefix);
        }
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var layer = (BertLayer)ctx.get_data("layer");
        var random = (RandomSource?)ctx.get_data("random");
        using var rng = tensor((byte[])ctx.get_data("rng"));
        using var current = random is null ? get_rng_state() : random.SaveDropoutState();
        if (random is null) set_rng_state(rng);
        else random.RestoreDropoutState(rng);
        try
        {
            using var scope = NewDisposeScope();
            using var grad = enable_grad();
            var input = saved[0].detach().requires_grad_(true);
            var prefix = saved.Count > 2 && saved[2] is { } p ? p.detach().requires_grad_(true) : null;
            var output = layer.Forward(input, saved[1], prefix);
            autograd.backward(new[] { output }, new[] { gradOutput });
            return new List<Tensor> { input.grad!.MoveToOuterDisposeScope(), null!, null!, prefix?.grad?.MoveToOuterDisposeScope()! };
        }
        finally
        {
            if (random is null) set_rng_state(current);
            else random.RestoreDropoutState(current);
        }
    }
}
