using System.Text.Json.Nodes;

namespace Microsoft.ML.Peft.Methods;

/// <summary>
/// One named method, as the command line's <c>--method</c> and the automated search know it: a <c>peft_type</c> with some
/// of its fields set (rsLoRA is LoRA with <c>use_rslora</c>), and the learning rates it works best near.
/// </summary>
/// <param name="Name">The short name (<c>lora</c>, <c>rslora</c>, <c>ia3</c>...).</param>
/// <param name="PeftType">Hugging Face PEFT's <c>peft_type</c> of its options.</param>
/// <param name="Fields">The options' fields that the name sets (PEFT config names), as JSON text.</param>
/// <param name="Description">One line for help texts.</param>
/// <param name="ForImages">Whether the method applies to image networks (the others insert into transformer layers).</param>
/// <param name="TextLearningRate">A good peak learning rate on a text encoder (measured on SST-2 by the methods benchmark).</param>
/// <param name="ImageLearningRate">A good peak learning rate on a ResNet (measured on Fashion-MNIST), or 0 when <paramref name="ForImages"/> is false.</param>
public sealed record PeftMethodName(string Name, string PeftType, string Fields, string Description, bool ForImages,
    float TextLearningRate, float ImageLearningRate);

/// <summary>The named PEFT methods, and their options with a task's defaults.</summary>
public static class PeftMethodNames
{
    /// <summary>Every named method, LoRA first.</summary>
    public static IReadOnlyList<PeftMethodName> All { get; } = new PeftMethodName[]
    {
        new("lora", "LORA", "{}", "LoRA (default)", true, 2e-3f, 2e-3f),
        new("rslora", "LORA", """{"use_rslora":true}""", "rank-stabilised LoRA: scaling alpha/sqrt(r)", true, 2e-3f, 2e-3f),
        new("dora", "LORA", """{"use_dora":true}""", "DoRA: learned magnitude times the normalised LoRA-updated weight", false, 2e-3f, 0),
        new("loraplus", "LORA", """{"loraplus_lr_ratio":16}""", "LoRA+: B learns 16x faster than A (--loraplus-ratio)", true, 5e-4f, 5e-4f),
        new("pissa", "LORA", """{"init_lora_weights":"pissa"}""", "PiSSA: LoRA started from the weights' top singular vectors", false, 1e-3f, 0),
        new("vera", "VERA", "{}", "VeRA: shared frozen random matrices, trained scaling vectors", false, 1e-2f, 0),
        new("ia3", "IA3", "{}", "IA3: learned vectors scaling keys, values and feed-forward activations", true, 5e-3f, 5e-3f),
        new("bitfit", "BITFIT", "{}", "BitFit: bias terms only", true, 2e-3f, 2e-3f),
        new("prompt", "PROMPT_TUNING", "{}", "prompt tuning: trained virtual-token embeddings", false, 2e-2f, 0),
        new("prefix", "PREFIX_TUNING", "{}", "prefix tuning: trained key/value prefixes in every layer", false, 2e-2f, 0),
        new("bottleneck", "BOTTLENECK", "{}", "bottleneck adapters after the sub-layers", false, 2e-3f, 0),
        new("full", "FULL", "{}", "full fine-tuning, the reference", true, 5e-5f, 5e-4f),
        new("probe", "LINEAR_PROBE", "{}", "linear probe: the head alone on frozen features", true, 2e-3f, 2e-3f),
    };

    /// <summary>The method called <paramref name="name"/>; <see cref="ArgumentException"/> listing the names otherwise.</summary>
    public static PeftMethodName Find(string name, bool forImages = false)
    {
        var found = All.FirstOrDefault(m => m.Name == name && (!forImages || m.ForImages));
        return found ?? throw new ArgumentException(
            $"'{name}' is not a PEFT method{(forImages ? " for images" : "")}; choose one of {string.Join(", ", All.Where(m => !forImages || m.ForImages).Select(m => m.Name))}.");
    }

    /// <summary>
    /// The JSON options (PEFT config names) of <paramref name="name"/>: the image defaults (every convolution as the target,
    /// no LoRA dropout) for images, then the name's own fields, then <paramref name="fields"/> (which override both).
    /// </summary>
    public static JsonObject Json(string name, bool forImages, JsonObject? fields = null)
    {
        var method = Find(name, forImages);
        var json = forImages ? ImageDefaults(method.PeftType) : new JsonObject();
        foreach (var (key, value) in JsonNode.Parse(method.Fields)!.AsObject()) json[key] = value?.DeepClone();
        if (fields is not null)
            foreach (var (key, value) in fields) json[key] = value?.DeepClone();
        json["peft_type"] = method.PeftType;
        return json;
    }

    /// <summary>The options of <paramref name="name"/> with <paramref name="fields"/> set (see <see cref="Json"/>).</summary>
    public static PeftMethodOptions Create(string name, bool forImages = false, JsonObject? fields = null) =>
        PeftMethodOptions.FromJson(Json(name, forImages, fields).ToJsonString());

    /// <summary>The image defaults of each method type: every convolution as the target (explicit options override them).</summary>
    public static JsonObject ImageDefaults(string peftType) => peftType switch
    {
        "LORA" => new JsonObject
        {
            ["r"] = 8, ["lora_alpha"] = 16, ["lora_dropout"] = 0,
            ["target_modules"] = new JsonArray(Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions),
        },
        "IA3" => new JsonObject
        {
            ["target_modules"] = new JsonArray(Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions),
            ["feedforward_modules"] = new JsonArray(),
        },
        _ => new JsonObject(),
    };
}
