using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Peft.Tasks;

namespace Microsoft.ML.Peft.Backbones.ResNet;

/// <summary>
/// A trained model of an image task on the ResNet backbone (classification, detection): what saving and loading need,
/// so that each task adds only its settings and its head.
/// </summary>
internal interface IImageTaskModel : IDisposable
{
    /// <summary>The base model the backbone came from.</summary>
    LoadedImageBaseModel BaseModel { get; }

    /// <summary>The backbone with its method applied.</summary>
    AdaptedBackbone Adapted { get; }

    /// <summary>The base model's bytes when they are saved with the model, else null.</summary>
    byte[]? BaseModelFile { get; }

    /// <summary>The tensors a saved model holds: the method's, the head's and any other trained ones.</summary>
    IReadOnlyList<NamedTensor> SavedState();

    /// <summary>Every parameter a saved model's tensors are loaded into.</summary>
    IReadOnlyList<NamedParameter> LoadedParameters();

    /// <summary>Shares the frozen base weights with other loaded models of the same base.</summary>
    void ShareBaseWeights();
}

/// <summary>The model format's entries of an image task's model, and the loading steps every image task shares.</summary>
internal static class ImageTaskModels
{
    /// <summary>The entries to save: metadata (task, base model reference, method, adapted modules, the task's settings), the tensors, and the base model if embedded.</summary>
    public static ModelEntries ToEntries(IImageTaskModel model, string task, JsonObject settings)
    {
        var state = model.SavedState();
        try
        {
            var baseModel = model.BaseModel;
            return new ModelEntries
            {
                MetadataBytes = new ModelMetadata
                {
                    Task = task,
                    BaseModel = new BaseModelReference
                    {
                        Kind = baseModel.Source.Kind == ImageBaseModelKind.Torchvision ? BaseModelKind.HuggingFace : BaseModelKind.Onnx,
                        Name = baseModel.Source.Name,
                        Path = baseModel.Source.Path,
                        Sha256 = baseModel.Sha256,
                        Size = baseModel.File.LongLength,
                    },
                    BaseModelEmbedded = model.BaseModelFile is not null,
                    Method = MethodRegistry.ToJson(model.Adapted.Method.SavedOptions),
                    AdapterName = model.Adapted.Method.AdapterName,
                    AdaptedModules = model.Adapted.AdaptedModules.ToList(),
                    TaskSettings = settings,
                }.ToUtf8(),
                VocabBytes = Array.Empty<byte>(),
                AdapterBytes = AdapterState.Save(state),
                BaseModelBytes = model.BaseModelFile,
            };
        }
        finally
        {
            foreach (var t in state) t.Value.Dispose();
        }
    }

    /// <summary>
    /// Builds a saved model with <paramref name="create"/> (a method or settings that do not fit the base model are an
    /// <see cref="InvalidDataException"/>), checks its adapted modules against the saved ones, loads the saved tensors and
    /// shares the base weights unless told not to; the model is disposed if any step fails.
    /// </summary>
    public static TModel Restore<TModel>(Func<TModel> create, ModelMetadata metadata, ModelEntries entries, PeftLoadOptions? options, string source)
        where TModel : IImageTaskModel
    {
        TModel model;
        try
        {
            model = create();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: the saved method and settings do not fit the base model: {e.Message}", e);
        }
        try
        {
            if (!model.Adapted.AdaptedModules.SequenceEqual(metadata.AdaptedModules))
                throw new InvalidDataException($"{source}: the adapter was trained on modules [{string.Join(", ", metadata.AdaptedModules.Take(8))}] " +
                    $"but its options select [{string.Join(", ", model.Adapted.AdaptedModules.Take(8))}] on this base model.");
            AdapterState.Load(entries.AdapterBytes, model.LoadedParameters(), source);
            if (options?.ShareBaseModel ?? true) model.ShareBaseWeights();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
