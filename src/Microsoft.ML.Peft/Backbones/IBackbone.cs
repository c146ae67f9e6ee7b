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

    /// <summary>Number of layers (blocks) with an insertion point after them.</summary>
    int LayerCount { get; }

    /// <summary>Parameter name to (tensor name in the imported file, whether stored transposed); needed again to export.</summary>
    IReadOnlyDictionary<string, (string Name, bool Transposed)> SourceNames { get; }

    /// <summary>Recompute activations in the backward pass instead of keeping them.</summary>
    bool GradientCheckpointing { get; set; }

    /// <summary>Every Linear layer a method may adapt, with its full name.</summary>
    IEnumerable<(string Name, TunerLinear Module)> Linears();

    /// <summary>Adds a module applied to the output of layer <paramref name="layer"/>.</summary>
    void InsertAfterLayer(int layer, string name, nn.Module<Tensor, Tensor> module);

    /// <summary>Sets the module whose output vectors are prepended to the embedded inputs.</summary>
    void SetPrompt(string name, nn.Module<Tensor, Tensor> module);

    /// <summary>Called once the weights are final, before scoring (fuses projections).</summary>
    void PrepareInference();

    /// <summary>Undoes <see cref="PrepareInference"/> before the weights change.</summary>
    void EndInference();
}

/// <summary>A backbone over token ids (BERT family): features are the last hidden states.</summary>
internal interface ITextBackbone : IBackbone
{
    /// <summary><c>last_hidden_state</c> [batch, length, hidden] of input ids, attention mask and token types [batch, length].</summary>
    Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds);
}
