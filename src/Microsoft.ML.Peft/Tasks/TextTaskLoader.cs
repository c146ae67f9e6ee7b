using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks;

/// <summary>Builds a task's model, untrained, for a saved model's settings and method on its base model.</summary>
internal delegate TModel TextTaskFactory<in TSettings, out TModel>(TSettings settings, LoadedBaseModel baseModel, PeftMethodOptions method,
    bool embedBaseModel, Device device, Generator generator);

/// <summary>
/// What loading a saved text task model does for every task: check the task and read its settings, read the method,
/// find the base model again, build the model on the load device, check it adapts the saved modules, and fill it with the
/// saved tensors. Each task's loader supplies its name, settings type, validation and model constructor.
/// </summary>
internal static class TextTaskLoader
{
    /// <param name="source">How errors name the saved model, e.g. <c>The PEFT text classification model</c>.</param>
    /// <param name="taskName">The task name the metadata must carry.</param>
    /// <param name="metadata">The saved model's metadata (parsed, or converted from an older format).</param>
    /// <param name="entries">The saved model's verified entries.</param>
    /// <param name="options">Where to find the base model, the device, and whether to share base weights.</param>
    /// <param name="ch">Reports the device choice.</param>
    /// <param name="validate">Checks the saved settings against the saved backbone configuration (errors name <paramref name="source"/>).</param>
    /// <param name="create">The task model's constructor.</param>
    public static TModel Load<TSettings, TModel>(string source, string taskName, ModelMetadata metadata, ModelEntries entries,
        PeftLoadOptions? options, IChannel ch, Action<TSettings, BertConfig> validate, TextTaskFactory<TSettings, TModel> create)
        where TSettings : class
        where TModel : TextTaskModel
    {
        if (metadata.Task != taskName)
            throw new InvalidDataException($"{source} holds a '{metadata.Task}' model, not {taskName}.");
        var settings = metadata.Settings<TSettings>(source);
        if (metadata.Config is null) throw new InvalidDataException($"{source}: the metadata has no backbone configuration.");
        validate(settings, metadata.Config);
        var method = MethodRegistry.FromJson(metadata.Method, source);
        if (metadata.BaseModelEmbedded && entries.BaseModelBytes is null)
            throw new InvalidDataException($"{source} says it embeds its base model, but has no '{ModelEntries.BaseModel}' entry.");

        var baseModel = BaseModelLocator.Resolve(metadata, entries.VocabBytes, metadata.BaseModelEmbedded ? entries.BaseModelBytes : null,
            options?.BaseModelPath, source);
        var device = TorchBackend.LoadDevice(options?.Device, ch);
        // New parameters are overwritten by the saved ones; a local generator keeps libtorch's global one untouched.
        using var generator = new Generator(0);
        TModel model;
        try
        {
            model = create(settings, baseModel, method, metadata.BaseModelEmbedded, device, generator);
        }
        catch (ArgumentException e)
        {
            // Saved settings that do not fit this base model (virtual tokens beyond its positions, targets it lacks).
            throw new InvalidDataException($"{source}: the saved method and settings do not fit the base model: {e.Message}", e);
        }
        try
        {
            if (metadata.AdaptedModules.Count > 0 && !model.Adapted.AdaptedModules.SequenceEqual(metadata.AdaptedModules))
                throw new InvalidDataException($"{source}: the adapter was trained on modules [{string.Join(", ", metadata.AdaptedModules.Take(8))}] " +
                    $"but its options select [{string.Join(", ", model.Adapted.AdaptedModules.Take(8))}] on this base model.");
            AdapterState.Load(entries.AdapterBytes, model.LoadedParameters(), source);
            if (options?.ShareBaseModel ?? true) model.ShareBaseWeights(baseModel.Sha256);
            // Scores in the precision it was trained in (its reduced-precision copies are made from the shared fp32 weights, never in place).
            model.ConfigureCompute(Training.PeftPrecisionNames.Parse(metadata.Precision, source), metadata.AttentionDropout);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
