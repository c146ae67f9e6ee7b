using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// Maps a saved <c>peft_type</c> to its options class. Every non-abstract <see cref="PeftMethodOptions"/> of this
/// assembly registers itself: adding a method means adding its folder, nothing here.
/// </summary>
internal static class MethodRegistry
{
    private static readonly Lazy<Dictionary<string, Type>> Types = new(() =>
        typeof(PeftMethodOptions).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(PeftMethodOptions).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
            .ToDictionary(t => ((PeftMethodOptions)Activator.CreateInstance(t)!).PeftType, t => t, StringComparer.Ordinal));

    public static IReadOnlyCollection<string> PeftTypes => Types.Value.Keys;

    /// <summary>The options class of <paramref name="peftType"/> with its defaults, or null when the type is not known.</summary>
    public static PeftMethodOptions? CreateDefault(string peftType) =>
        Types.Value.TryGetValue(peftType, out var type) ? (PeftMethodOptions)Activator.CreateInstance(type)! : null;

    /// <summary>The options as JSON with their <c>peft_type</c>.</summary>
    public static JsonObject ToJson(PeftMethodOptions options)
    {
        var json = JsonSerializer.SerializeToNode(options, options.GetType())!.AsObject();
        // [JsonIgnore] on the abstract property does not reach the overrides: drop their serialised copy.
        json.Remove(nameof(PeftMethodOptions.PeftType));
        json["peft_type"] = options.PeftType;
        return json;
    }

    /// <summary>Reads saved method options; unknown types and invalid values are <see cref="InvalidDataException"/>s.</summary>
    public static PeftMethodOptions FromJson(JsonObject json, string source)
    {
        if (json["peft_type"] is not JsonValue value || !value.TryGetValue<string>(out var type))
            throw new InvalidDataException($"{source}: the method has no peft_type string.");
        if (!Types.Value.TryGetValue(type, out var optionsType))
            throw new InvalidDataException($"{source}: method '{type}' is not known to this library (known: {string.Join(", ", PeftTypes)}). Upgrade Microsoft.ML.Peft.");
        var copy = json.DeepClone().AsObject();
        copy.Remove("peft_type");
        PeftMethodOptions options;
        try
        {
            options = (PeftMethodOptions?)copy.Deserialize(optionsType) ?? throw new InvalidDataException($"{source}: the method's options are empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the {type} options cannot be read: {e.Message}", e);
        }
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: saved {type} options are not valid: {e.Message}", e);
        }
        return options;
    }
}
