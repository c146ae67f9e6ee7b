using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// Everything about a saved model except tensors, for every task: the task, the base model's identity and
/// configuration, the method's options (Hugging Face PEFT field names), the adapted modules and the task's own
/// settings (columns, labels, preprocessing). Saved as JSON; read back untrusted and checked.
/// </summary>
internal sealed class ModelMetadata
{
    [JsonPropertyName("task")] public string Task { get; set; } = "";
    [JsonPropertyName("base_model")] public BaseModelReference BaseModel { get; set; } = new();
    [JsonPropertyName("base_model_embedded")] public bool BaseModelEmbedded { get; set; }
    [JsonPropertyName("backbone_config")] public BertConfig? Config { get; set; }
    [JsonPropertyName("method")] public JsonObject Method { get; set; } = new();
    [JsonPropertyName("adapter_name")] public string AdapterName { get; set; } = "default";
    [JsonPropertyName("adapted_modules")] public List<string> AdaptedModules { get; set; } = new();
    [JsonPropertyName("task_settings")] public JsonObject TaskSettings { get; set; } = new();
    /// <summary>Precision of the frozen base products (<c>bf16</c>); absent (models before the option, or fp32): fp32.</summary>
    [JsonPropertyName("precision"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Precision { get; set; }
    /// <summary>Attention dropout the model was trained with, when not the base model's; absent: the base model's.</summary>
    [JsonPropertyName("attention_dropout"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? AttentionDropout { get; set; }

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this);

    /// <summary>Parses and checks the parts every task relies on; the task checks its own settings.</summary>
    public static ModelMetadata Parse(byte[] utf8, string source)
    {
        ModelMetadata? metadata;
        try
        {
            // The method and task settings are JsonObjects, read lazily: bytes that are not UTF-8 would fail on first use.
            _ = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetCharCount(utf8);
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new InvalidDataException($"{source}: the metadata is not UTF-8 text: {e.Message}", e);
        }
        try
        {
            metadata = JsonSerializer.Deserialize<ModelMetadata>(utf8, new JsonSerializerOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the metadata is not valid JSON: {e.Message}", e);
        }
        if (metadata is null) throw new InvalidDataException($"{source}: the metadata is empty.");
        metadata.Validate(source);
        return metadata;
    }

    public void Validate(string source)
    {
        if (string.IsNullOrEmpty(Task)) throw new InvalidDataException($"{source}: the metadata names no task.");
        // JSON null reaches properties declared non-null: a damaged file can hold it.
        if (BaseModel is null || Method is null || AdapterName is null || AdaptedModules is null || TaskSettings is null || AdaptedModules.Any(m => m is null))
            throw new InvalidDataException($"{source}: the metadata lacks one of base_model, method, adapter_name, adapted_modules, task_settings (or holds null in it).");
        BaseModel.Validate(source);
        Config?.Validate($"{source} (saved configuration)");
        if (AdaptedModules.Count > 100_000) throw new InvalidDataException($"{source}: {AdaptedModules.Count} adapted modules is not valid.");
        _ = Methods.MethodRegistry.FromJson(Method, source);
        _ = Training.PeftPrecisionNames.Parse(Precision, source);
        if (AttentionDropout is { } dropout && !(dropout >= 0 && dropout < 1))
            throw new InvalidDataException($"{source}: the saved attention dropout {dropout} is not in [0, 1).");
    }

    /// <summary>Reads the task's settings as <typeparamref name="T"/>.</summary>
    public T Settings<T>(string source) where T : class
    {
        try
        {
            return TaskSettings.Deserialize<T>() ?? throw new InvalidDataException($"{source}: the task settings are empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the task settings cannot be read: {e.Message}", e);
        }
    }
}
