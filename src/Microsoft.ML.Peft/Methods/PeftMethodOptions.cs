using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// The options of one PEFT method (<see cref="Lora.LoraOptions"/>, <see cref="BitFit.BitFitOptions"/>,
/// <see cref="Full.FullFineTuningOptions"/>, ...). Set a trainer's <c>Method</c> option to one of them. Each method's
/// options serialise with Hugging Face PEFT's field names and are saved with the model.
/// </summary>
public abstract class PeftMethodOptions
{
    /// <summary>The method's identifier in saved models (Hugging Face PEFT's <c>peft_type</c>): <c>LORA</c>, <c>BITFIT</c>, <c>FULL</c>...</summary>
    [JsonIgnore]
    public abstract string PeftType { get; }

    /// <summary>Throws <see cref="ArgumentException"/> (or <see cref="ArgumentOutOfRangeException"/>) naming the option at fault.</summary>
    public abstract void Validate();

    /// <summary>Creates the method for one adapter.</summary>
    internal abstract PeftMethod Create(string adapterName);

    /// <summary>The <c>peft_type</c> of every method this library offers (<c>LORA</c>, <c>IA3</c>, <c>PROMPT_TUNING</c>...).</summary>
    public static IReadOnlyCollection<string> PeftTypes => MethodRegistry.PeftTypes;

    /// <summary>The options as JSON with Hugging Face PEFT's field names and <c>peft_type</c>.</summary>
    public string ToJson() => MethodRegistry.ToJson(this).ToJsonString();

    /// <summary>
    /// Reads method options from JSON with Hugging Face PEFT's field names and a <c>peft_type</c> (fields left out keep
    /// their defaults). Throws <see cref="InvalidDataException"/> naming the field at fault, or the known methods for an
    /// unknown <c>peft_type</c>.
    /// </summary>
    public static PeftMethodOptions FromJson(string json)
    {
        if (json is null) throw new ArgumentNullException(nameof(json));
        System.Text.Json.Nodes.JsonNode? node;
        try
        {
            node = System.Text.Json.Nodes.JsonNode.Parse(json);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"The method options are not valid JSON: {e.Message}", e);
        }
        if (node is not System.Text.Json.Nodes.JsonObject obj) throw new InvalidDataException("The method options must be a JSON object.");
        return MethodRegistry.FromJson(obj, "The method options");
    }
}

/// <summary>
/// One PEFT method applied to one backbone under one adapter name. It decides which modules it adds, which parameters
/// train (and are saved), the optimizer's parameter groups and how its update is merged for inference. The base model's
/// own parameters stay frozen unless the method names them.
/// </summary>
internal abstract class PeftMethod
{
    protected PeftMethod(string adapterName)
    {
        if (string.IsNullOrEmpty(adapterName) || !adapterName.All(c => char.IsAsciiLetterOrDigit(c) || c == '_') || adapterName is "weight" or "bias")
            throw new ArgumentException($"Adapter name '{adapterName}' must be letters, digits and underscores (and not 'weight' or 'bias').", nameof(adapterName));
        AdapterName = adapterName;
    }

    public string AdapterName { get; }

    public abstract PeftMethodOptions Options { get; }

    /// <summary>Adds the method's modules to the backbone (new parameters drawn from <paramref name="generator"/>); returns the names of the modules it adapts.</summary>
    public abstract IReadOnlyList<string> Attach(IBackbone backbone, TorchSharp.torch.Generator? generator);

    /// <summary>
    /// The parameters the method trains and saves, keyed by their name relative to the backbone in Hugging Face PEFT's
    /// form (<c>encoder.layer.0.attention.self.query.lora_A.weight</c>; the adapter name is left out, as PEFT saves it).
    /// </summary>
    public abstract IReadOnlyList<NamedParameter> Parameters(IBackbone backbone);

    /// <summary>The optimizer's parameter groups: by default one group at the trainer's learning rate.</summary>
    public virtual IReadOnlyList<ParameterGroup> ParameterGroups(IReadOnlyList<NamedParameter> parameters) =>
        new[] { new ParameterGroup(parameters.Select(p => p.Parameter).ToList(), 1.0) };

    /// <summary>
    /// The options a saved model is rebuilt with. Usually <see cref="Options"/>; a method whose trained form differs from
    /// the form it is saved in (PiSSA, saved as the equivalent LoRA on the original weights; prefix tuning's
    /// reparameterisation, saved as the prefixes it computes) returns the options of the saved form.
    /// </summary>
    public virtual PeftMethodOptions SavedOptions => Options;

    /// <summary>
    /// Tensors the method saves and restores on load but does not train (VeRA's shared random projections), keyed as
    /// <see cref="Parameters"/>. They stay frozen (<c>requires_grad</c> false). Default: none.
    /// </summary>
    public virtual IReadOnlyList<NamedParameter> FrozenState(IBackbone backbone) => Array.Empty<NamedParameter>();

    /// <summary>
    /// The tensors saved for this adapter (new tensors the caller disposes), keyed as <see cref="Parameters"/> and
    /// <see cref="FrozenState"/> key the tensors of a method built from <see cref="SavedOptions"/>. Default: the values
    /// of the trained parameters and of the frozen state.
    /// </summary>
    public virtual IReadOnlyList<NamedTensor> SavedState(IBackbone backbone) =>
        Parameters(backbone).Concat(FrozenState(backbone)).Select(p => new NamedTensor(p.Key, p.Parameter.detach()) { TopLevel = p.TopLevel }).ToList();

    /// <summary>
    /// Whether adapters of this method can live beside others on one frozen base (each Linear layer keeping them by
    /// name): true for the methods that add a branch to Linear layers; false for those that change the base's own
    /// parameters or the model's inputs.
    /// </summary>
    public virtual bool SupportsSeveralAdapters => false;

    /// <summary>
    /// Folds the update into the base weights for inference (no-op for methods that train weights in place); without
    /// <paramref name="keepBase"/> no copy of the base weights is kept and <see cref="Unmerge"/> is refused.
    /// </summary>
    public virtual void Merge(IBackbone backbone, bool keepBase = true) { }

    /// <summary>Restores the exact base weights after <see cref="Merge"/>.</summary>
    public virtual void Unmerge(IBackbone backbone) { }
}

/// <summary>A parameter and its key in the saved adapter state.</summary>
internal sealed record NamedParameter(string Key, TorchSharp.Modules.Parameter Parameter)
{
    /// <summary>
    /// The key is a whole key of the saved state, not a name under the backbone: the tensors Hugging Face PEFT keeps
    /// outside the model tree (<c>prompt_embeddings</c>, VeRA's shared <c>base_model.vera_A</c>).
    /// </summary>
    public bool TopLevel { get; init; }
}

/// <summary>A tensor to save under a key (see <see cref="NamedParameter.TopLevel"/>).</summary>
internal sealed record NamedTensor(string Key, TorchSharp.torch.Tensor Value)
{
    /// <inheritdoc cref="NamedParameter.TopLevel"/>
    public bool TopLevel { get; init; }
}

/// <summary>Parameters that share a learning rate: the trainer's rate times <paramref name="LearningRateScale"/>.</summary>
internal sealed record ParameterGroup(IReadOnlyList<TorchSharp.Modules.Parameter> Parameters, double LearningRateScale);
