using Microsoft.ML.Peft.Backbones;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// A backbone with one method applied under one adapter name: everything of the backbone is frozen except what the
/// method trains. Tasks put a head beside it; training, saving and merging go through it.
/// </summary>
internal sealed class AdaptedBackbone
{
    public AdaptedBackbone(IBackbone backbone, PeftMethodOptions options, Generator? generator, string adapterName = DefaultAdapter)
    {
        options.Validate();
        Backbone = backbone;
        Method = options.Create(adapterName);
        AdaptedModules = Method.Attach(backbone, generator);
        foreach (var parameter in backbone.Module.parameters()) parameter.requires_grad = false;
        foreach (var p in Method.Parameters(backbone)) p.Parameter.requires_grad = true;
    }

    /// <summary>The adapter name Hugging Face PEFT uses when none is given (and leaves out of saved keys).</summary>
    public const string DefaultAdapter = "default";

    public IBackbone Backbone { get; }

    public PeftMethod Method { get; }

    /// <summary>The modules the method adapted, by full name.</summary>
    public IReadOnlyList<string> AdaptedModules { get; }

    /// <summary>The method's trainable parameters, keyed by their name in the task network (<c>bert.encoder...lora_A.weight</c>).</summary>
    public IReadOnlyList<NamedParameter> Parameters() =>
        Method.Parameters(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>The method's frozen tensors that are saved and loaded (VeRA's projections), keyed as <see cref="Parameters"/> are.</summary>
    public IReadOnlyList<NamedParameter> FrozenState() =>
        Method.FrozenState(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>The tensors to save (the caller disposes them), keyed as <see cref="Parameters"/> are.</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Method.SavedState(Backbone).Select(p => p.TopLevel ? p : p with { Key = Backbone.Name + "." + p.Key }).ToList();

    /// <summary>Folds the adapter into the weights and prepares the backbone for inference.</summary>
    public void Merge()
    {
        Method.Merge(Backbone);
        Backbone.PrepareInference();
    }

    /// <summary>Undoes <see cref="Merge"/> exactly.</summary>
    public void Unmerge()
    {
        Backbone.EndInference();
        Method.Unmerge(Backbone);
    }
}
