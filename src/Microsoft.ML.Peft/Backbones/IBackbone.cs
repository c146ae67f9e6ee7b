using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones;

/// <summary>
/// What a pretrained network offers every method and task: its module tree (whose parameter names are the saved
/// names), the Linear layers a method may target, the points where prompts or adapter modules can be inserted, and the
/// map from its parameters to the tensors of the file it was imported from. The task owns the forward pass with the
/// backbone's own inputs (token ids for text encoders, pixels for image networks).
/// </summary>
internal interface IBackbone
{
    /// <summary>The backbone's modules; every parameter's name is relative to it.</summary>
    nn.Module Module { get; }

    /// <summary>The name the backbone has inside a task's network (<c>bert</c>), as Hugging Face's task models name it.</summary>
    string Name { get; }

    /// <summary>Width of the features the backbone gives a head.</summary>
    long FeatureSize { get; }

    /// <summary>Parameter name to (tensor name in the imported file, whether stored transposed); needed again to export.</summary>
    IReadOnlyDictionary<string, (string Name, bool Transposed)> SourceNames { get; }

    /// <summary>Recompute activations in the backward pass instead of keeping them.</summary>
    bool GradientCheckpointing { get; set; }

    /// <summary>Every Linear layer a method may adapt, with its full name.</summary>
    IEnumerable<(string Name, TunerLinear Module)> Linears();

    /// <summary>Every 2-D convolution a method may adapt, with its full name (none in a transformer).</summary>
    IEnumerable<(string Name, TunerConv2d Module)> Convolutions() => Array.Empty<(string, TunerConv2d)>();

    /// <summary>Every layer a method may adapt: the Linear layers, then the convolutions.</summary>
    IEnumerable<(string Name, ITunerLayer Module)> TunerLayers() =>
        Linears().Select(l => (l.Name, (ITunerLayer)l.Module)).Concat(Convolutions().Select(c => (c.Name, (ITunerLayer)c.Module)));

    /// <summary>Called once the weights are final, before scoring (fuses projections).</summary>
    void PrepareInference();

    /// <summary>Undoes <see cref="PrepareInference"/> before the weights change.</summary>
    void EndInference();
}

/// <summary>The text-only insertion points, for methods that need them.</summary>
internal static class TextBackbone
{
    /// <summary>The backbone as a text encoder, or an error saying the method applies to text encoders only.</summary>
    public static ITextBackbone Require(IBackbone backbone, string method) =>
        backbone as ITextBackbone ?? throw new ArgumentException(
            $"{method} inserts tokens or adapters into a transformer's layers and applies to text encoders only; the base model '{backbone.Name}' is not one. " +
            "Use LoRA, IA3, BitFit, a linear probe or full fine-tuning.", "Method");
}

/// <summary>Where in a transformer layer a bottleneck adapter sits (Houlsby et al. 2019, figure 2).</summary>
internal enum AdapterSite
{
    /// <summary>On the attention block's projected output, before its residual addition and LayerNorm.</summary>
    AttentionOutput,

    /// <summary>On the feed-forward block's projected output, before its residual addition and LayerNorm.</summary>
    FeedForwardOutput,
}

/// <summary>
/// A backbone over token ids (BERT family): features are the last hidden states. Its layers, positions and vocabulary
/// are what the prompt-learning and bottleneck methods insert into.
/// </summary>
internal interface ITextBackbone : IBackbone
{
    /// <summary>Number of layers (blocks).</summary>
    int LayerCount { get; }

    /// <summary>Number of attention heads per layer.</summary>
    int AttentionHeadCount { get; }

    /// <summary>Length of the position table: virtual tokens and real tokens together may not exceed it.</summary>
    int MaxPositions { get; }

    /// <summary>The longest input in real tokens: <see cref="MaxPositions"/> less the virtual tokens of a prompt or prefix.</summary>
    int MaxInputLength { get; }

    /// <summary>Number of rows of the word-embedding table.</summary>
    long VocabularySize { get; }

    /// <summary>The word-embedding vectors [..., hidden] of token ids (a new tensor; for initialising prompts from the vocabulary).</summary>
    Tensor EmbedWords(Tensor ids);

    /// <summary>
    /// Sets the bottleneck adapter of one site of layer <paramref name="layer"/>: a module from the sub-layer's projected
    /// output (after its dense projection and dropout) to the same shape, applied before the residual addition and
    /// LayerNorm. The module is registered as <paramref name="name"/> under the sub-layer's output module.
    /// </summary>
    void InsertAdapter(int layer, AdapterSite site, string name, nn.Module<Tensor, Tensor> module);

    /// <summary>
    /// Sets the prompt module (prompt tuning): it maps the batch's word vectors [batch, length, hidden] (which only give
    /// device and dtype) to <paramref name="count"/> virtual-token vectors [count, hidden] in word-embedding space,
    /// prepended to the word embeddings before positions and token types are added. The features keep only the real tokens.
    /// </summary>
    void SetPrompt(string name, int count, nn.Module<Tensor, Tensor> module);

    /// <summary>
    /// Sets the prefix module (prefix tuning): it maps the batch's word vectors (which only give device and dtype) to
    /// the table [count, layers·2·hidden] of key and value prefixes, laid out as Hugging Face PEFT's
    /// <c>past_key_values</c> (viewed as [count, layers·2, heads, head size]; layer i's keys are block 2i, its values 2i+1).
    /// </summary>
    void SetPrefix(string name, int count, nn.Module<Tensor, Tensor> module);

    /// <summary>The type of the frozen base products (bfloat16), or null for fp32.</summary>
    ScalarType? ComputeType { get; }

    /// <summary>
    /// Runs the frozen base products (attention stays fp32) in <paramref name="type"/> (bfloat16), or in fp32 for null,
    /// from reduced-precision copies of the base weights; trained weights stay fp32. Set once the trainable parameters are known.
    /// </summary>
    void SetComputeType(ScalarType? type);

    /// <summary>Dropout on the attention probabilities while training (0 lets training use the fused attention kernel).</summary>
    double AttentionDropout { get; set; }

    /// <summary><c>last_hidden_state</c> [batch, length, hidden] of input ids, attention mask and token types [batch, length].</summary>
    Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds);
}
