using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Torch;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// <see cref="DroppedLinear"/> (dropout then a projection, keeping the input and a boolean mask for the backward pass)
/// against the formula through autograd, and LoRA's branch, which uses it while training with dropout.
/// </summary>
[TestFixture]
public class DroppedLinearTests
{
    private static double MaxDiff(Tensor a, Tensor b)
    {
        using var diff = a.sub(b).abs();
        return diff.max().item<float>();
    }

    [Test]
    public void ForwardAndGradientsEqualTheFormula()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        var x0 = randn(new long[] { 4, 7, 16 }, generator: generator);
        var w0 = randn(new long[] { 5, 16 }, generator: generator);
        var keep = rand(new long[] { 4, 7, 16 }, generator: generator).gt(0.2);
        var upstream = randn(new long[] { 4, 7, 5 }, generator: generator);
        const double p = 0.2;

        var (x, w) = (x0.clone().requires_grad_(true), w0.clone().requires_grad_(true));
        var ours = DroppedLinear.Run(x, w, keep, p);
        ours.mul(upstream).sum().backward();

        var (rx, rw) = (x0.clone().requires_grad_(true), w0.clone().requires_grad_(true));
        var expected = nn.functional.linear(rx.mul(keep.to(ScalarType.Float32)).div(1 - p), rw);
        expected.mul(upstream).sum().backward();

        Assert.That(MaxDiff(ours, expected), Is.LessThan(1e-5), "forward");
        Assert.That(MaxDiff(x.grad!, rx.grad!), Is.LessThan(1e-5), "input gradient");
        Assert.That(MaxDiff(w.grad!, rw.grad!), Is.LessThan(1e-4), "weight gradient");
        Assert.That(x.grad!.eq(0).logical_and(keep).any().item<bool>(), Is.False, "kept inputs get a gradient");
        Assert.That(() => DroppedLinear.Run(x, w, keep.to(ScalarType.Float32), p), Throws.ArgumentException);
        Assert.That(() => DroppedLinear.Run(x, w, keep, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void LoraBranchWithDropoutDrawsFromTheRunsGeneratorAndMatchesTheFormula()
    {
        using var scope = NewDisposeScope();
        using var layer = new LoraLayer(16, 12, rank: 4, scaling: 2f, dropout: 0.3f, generator: new Generator(4));
        using (no_grad()) layer.B.normal_(0, 0.5, new Generator(5)); // B starts at zeros: give A a gradient
        layer.train();
        using var random = new RandomSource(9, CPU);
        RunDropout.Attach(layer, random);
        using var generator = new Generator(6);
        var x0 = randn(new long[] { 3, 5, 16 }, generator: generator);
        var x = x0.clone().requires_grad_(true);
        var ours = layer.Delta(x);
        ours.sum().backward();
        var (gradA, gradInput) = (layer.A.grad!.clone(), x.grad!.clone());

        // The formula with the mask drawn from a generator seeded alike.
        using var again = new RandomSource(9, CPU);
        var keep = rand(new long[] { 3, 5, 16 }, generator: again.Dropout).lt(0.7).to(ScalarType.Float32); // u < 1 - p
        layer.zero_grad();
        var rx = x0.clone().requires_grad_(true);
        var expected = matmul(matmul(rx.mul(keep).div(0.7), layer.A.t()), layer.B.t()).mul(2f);
        expected.sum().backward();
        Assert.That(MaxDiff(ours, expected), Is.LessThan(1e-5), "forward");
        Assert.That(MaxDiff(gradA, layer.A.grad!), Is.LessThan(1e-4), "A's gradient");
        Assert.That(MaxDiff(gradInput, rx.grad!), Is.LessThan(1e-5), "input gradient");

        // Evaluation: no dropout.
        layer.eval();
        using (no_grad()) Assert.That(MaxDiff(layer.Delta(x0), matmul(matmul(x0, layer.A.t()), layer.B.t()).mul(2f)), Is.LessThan(1e-5));
    }
}
