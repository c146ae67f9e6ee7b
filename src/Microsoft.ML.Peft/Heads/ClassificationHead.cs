using Microsoft.ML.Peft.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Heads;

/// <summary>
/// A classification head over pooled features: dropout, then one Linear layer giving a logit per class (or, with one
/// output, a regression head: the sentence-similarity cross-encoder's score). Its parameters
/// are <c>weight</c> (classes x features) and <c>bias</c>, so inside a task network named <c>classifier</c> they save as
/// <c>classifier.weight</c> and <c>classifier.bias</c>, as Hugging Face's <c>BertForSequenceClassification</c> names them.
/// </summary>
internal sealed class ClassificationHead : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly RunDropout dropout;

    public ClassificationHead(long features, int classes, double dropoutProbability, Generator? generator = null) : base("classifier")
    {
        // Classifiers check for two classes or more where the label is read; one output is a regression head.
        if (classes < 1) throw new ArgumentOutOfRangeException(nameof(classes), classes, "A head needs at least one output.");
        weight = new Parameter(empty(classes, features));
        bias = new Parameter(empty(classes));
        dropout = new RunDropout(dropoutProbability);
        using (no_grad())
        {
            // PyTorch's nn.Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
            var bound = 1 / Math.Sqrt(features);
            weight.uniform_(-bound, bound, generator);
            bias.uniform_(-bound, bound, generator);
        }
        RegisterComponents();
    }

    /// <param name="features">[batch, features]</param>
    public override Tensor forward(Tensor features)
    {
        using var dropped = dropout.forward(features);
        return nn.functional.linear(dropped, weight, bias);
    }
}

/// <summary>Pooling of a text encoder's hidden states into one vector per row.</summary>
internal static class Pooling
{
    /// <summary>The mean of the hidden states over the attention mask (as sentence-transformers models are trained).</summary>
    public static Tensor Mean(Tensor hidden, Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        var mask = attentionMask.unsqueeze(-1).to(hidden.dtype);
        return hidden.mul(mask).sum(1).div_(mask.sum(1).clamp_min(1e-9)).MoveToOuterDisposeScope();
    }
}
