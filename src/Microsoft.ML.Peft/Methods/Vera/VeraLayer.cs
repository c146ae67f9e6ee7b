using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods.Vera;

/// <summary>
/// The shared frozen random matrices of one VeRA adapter: <c>vera_A</c> (r x largest in) and <c>vera_B</c> (largest out
/// x r), drawn Kaiming-uniform (bound <c>sqrt(6 / fan_in)</c>, PEFT's <c>_kaiming_init</c>) from a generator seeded with
/// the projection key, <c>A</c> first. Registered once in the backbone's module tree so that moving the network moves
/// them once; every <see cref="VeraLayer"/> reads them through <see cref="VeraProjectionSource"/>.
/// </summary>
internal sealed class VeraProjections : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly Parameter vera_A;
    private readonly Parameter vera_B;
#pragma warning restore IDE1006

    public VeraProjections(int rank, long maxIn, long maxOut, long seed) : base("vera_projections")
    {
        using var generator = new Generator((ulong)seed, CPU);
        vera_A = new Parameter(KaimingUniform(new long[] { rank, maxIn }, generator), requires_grad: false);
        vera_B = new Parameter(KaimingUniform(new long[] { maxOut, rank }, generator), requires_grad: false);
        RegisterComponents();
    }

    public Parameter A => vera_A;

    public Parameter B => vera_B;

    private static Tensor KaimingUniform(long[] shape, Generator generator)
    {
        var bound = Math.Sqrt(3.0) * Math.Sqrt(2.0) / Math.Sqrt(shape[1]);
        using (no_grad()) return empty(shape).uniform_(-bound, bound, generator);
    }
}

/// <summary>A reference to the shared projections that is not a module field (so a layer does not register them as its own).</summary>
internal sealed class VeraProjectionSource
{
    public VeraProjectionSource(VeraProjections projections) => Projections = projections;

    public VeraProjections Projections { get; }
}

/// <summary>
/// VeRA on one Linear layer: <c>y = base(x) + lambda_b * (B_s (lambda_d * (A_s dropout(x))))</c>, with <c>A_s</c> the
/// first <c>in</c> columns of the shared <c>vera_A</c> and <c>B_s</c> the first <c>out</c> rows of <c>vera_B</c>.
/// <c>lambda_d</c> (r) starts at <c>d_initial</c> and <c>lambda_b</c> (out) at zero, so the layer starts equal to the
/// base layer. Parameter names follow Hugging Face PEFT: <c>vera_lambda_b</c>, <c>vera_lambda_d</c>.
/// </summary>
internal sealed class VeraLayer : LinearAdapter
{
#pragma warning disable IDE1006 // Hugging Face names
    private readonly Parameter vera_lambda_b;
    private readonly Parameter vera_lambda_d;
    private readonly RunDropout vera_dropout;
#pragma warning restore IDE1006
    private readonly VeraProjectionSource source;

    public VeraLayer(long inFeatures, long outFeatures, int rank, float dropout, float dInitial, VeraProjectionSource source) : base("vera")
    {
        if (source.Projections.A.shape[1] < inFeatures || source.Projections.B.shape[0] < outFeatures || source.Projections.A.shape[0] != rank)
            throw new ArgumentException("The shared VeRA projections are smaller than the layer.", nameof(source));
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        this.source = source;
        vera_lambda_b = new Parameter(zeros(outFeatures));
        vera_lambda_d = new Parameter(full(rank, dInitial));
        vera_dropout = new RunDropout(dropout);
        RegisterComponents();
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public Parameter LambdaB => vera_lambda_b;

    public Parameter LambdaD => vera_lambda_d;

    /// <summary>The slice of <c>vera_A</c> this layer uses (r x in).</summary>
    public Tensor SlicedA() => source.Projections.A.narrow(1, 0, InFeatures);

    /// <summary>The slice of <c>vera_B</c> this layer uses (out x r).</summary>
    public Tensor SlicedB() => source.Projections.B.narrow(0, 0, OutFeatures);

    public override Tensor Adapt(Tensor input, Tensor baseOutput)
    {
        using var scope = NewDisposeScope();
        var down = nn.functional.linear(vera_dropout.forward(input), SlicedA()).mul(vera_lambda_d);
        var up = nn.functional.linear(down, SlicedB()).mul(vera_lambda_b);
        return baseOutput.add(up).MoveToOuterDisposeScope();
    }

    /// <summary>The update to the base weight: <c>diag(lambda_b) B_s diag(lambda_d) A_s</c> (out x in).</summary>
    public Tensor DeltaWeight()
    {
        using var scope = NewDisposeScope();
        var left = SlicedB().mul(vera_lambda_b.unsqueeze(1));
        var right = SlicedA().mul(vera_lambda_d.unsqueeze(1));
        return matmul(left, right).MoveToOuterDisposeScope();
    }

    public override void MergeInto(Tensor weight, Tensor? bias)
    {
        using var delta = DeltaWeight();
        weight.add_(delta);
    }
}
