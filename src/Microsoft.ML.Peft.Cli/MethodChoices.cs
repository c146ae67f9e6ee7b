using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.ML.Peft.Methods;

namespace Microsoft.ML.Peft.Cli;

/// <summary>
/// <c>--method</c> and the method options of <c>text-classification</c>. Each method name is a <c>peft_type</c> with
/// some fields set (rsLoRA is LoRA with <c>use_rslora</c>); each method option sets one field of Hugging Face PEFT's
/// config, and applies to the methods whose options have that field, so a new method gets the options it has.
/// </summary>
internal static class MethodChoices
{
    /// <summary>The names <c>--method</c> accepts, with the method options they stand for.</summary>
    public static IReadOnlyList<PeftMethodName> Methods => PeftMethodNames.All;

    /// <summary>The methods that apply to image models (the others insert into transformer layers or need Linear layers).</summary>
    public static readonly IReadOnlySet<string> ImageMethods = PeftMethodNames.All.Where(m => m.ForImages).Select(m => m.Name).ToHashSet();

    /// <summary>A method option: the command-line option and the PEFT config field it sets.</summary>
    public sealed record MethodOption(Option Option, string Field, Func<ParseResult, JsonNode?> Value);

    /// <summary>The method options, created once per command.</summary>
    public static List<MethodOption> CreateOptions()
    {
        var rank = new Option<int?>("--rank") { Description = "Rank r of LoRA-type methods (LoRA default 8, VeRA 256)." };
        rank.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is < 1 and var v) r.AddError($"--rank must be at least 1; got {v}."); });
        var alpha = new Option<float?>("--alpha") { Description = "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with rslora). Default 16." };
        alpha.Validators.Add(r => { if (r.GetValueOrDefault<float?>() is float v && !(v > 0 && float.IsFinite(v))) r.AddError($"--alpha must be a positive number; got {v}."); });
        var dropout = new Option<float?>("--lora-dropout") { Description = "Dropout on the input of the LoRA branch. Default 0.1." };
        var targets = new Option<string>("--target-modules")
        {
            Description = "Comma-separated modules to adapt: last names (query,value), full names, regular expressions, or all-linear.",
        };
        var ratio = new Option<float?>("--loraplus-ratio") { Description = "LoRA+: learning rate of B over that of A (with --method loraplus; default 16)." };
        var virtualTokens = new Option<int?>("--num-virtual-tokens") { Description = "Prompt and prefix tuning: number of virtual tokens. Default 20." };
        var reduction = new Option<int?>("--reduction-factor") { Description = "Bottleneck adapters: hidden size / bottleneck size. Default 16." };
        var feedforward = new Option<string>("--feedforward-modules") { Description = "IA3: comma-separated target modules whose input (not output) is scaled." };
        var placement = new Option<string>("--placement") { Description = "Bottleneck adapters: pfeiffer (after the feed-forward block) or houlsby (after attention and feed-forward)." };
        return new List<MethodOption>
        {
            new(rank, "r", p => p.GetValue(rank) is int v ? JsonValue.Create(v) : null),
            new(alpha, "lora_alpha", p => p.GetValue(alpha) is float v ? JsonValue.Create(v) : null),
            new(dropout, "lora_dropout", p => p.GetValue(dropout) is float v ? JsonValue.Create(v) : null),
            new(targets, "target_modules", p => List(p.GetValue(targets))),
            new(ratio, "loraplus_lr_ratio", p => p.GetValue(ratio) is float v ? JsonValue.Create(v) : null),
            new(virtualTokens, "num_virtual_tokens", p => p.GetValue(virtualTokens) is int v ? JsonValue.Create(v) : null),
            new(reduction, "reduction_factor", p => p.GetValue(reduction) is int v ? JsonValue.Create(v) : null),
            new(feedforward, "feedforward_modules", p => List(p.GetValue(feedforward))),
            new(placement, "placement", p => p.GetValue(placement) is string v ? JsonValue.Create(v) : null),
        };
    }

    private static JsonArray? List(string? text) =>
        text is null ? null : new JsonArray(text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(t => (JsonNode)JsonValue.Create(t)!).ToArray());

    /// <summary>
    /// The options of <paramref name="method"/> with the method options given on the command line. An unknown method,
    /// one this build does not offer, or an option the method does not have is a <see cref="UsageException"/> naming both.
    /// </summary>
    public static PeftMethodOptions Create(string method, ParseResult parse, IReadOnlyList<MethodOption> options, bool forImages = false)
    {
        var choice = Methods.FirstOrDefault(m => m.Name == method);
        if (choice is null || (forImages && !ImageMethods.Contains(choice.Name)))
            throw new UsageException($"--method '{method}' is not a PEFT method{(forImages ? " for images" : "")}; choose one of {string.Join(", ", Methods.Select(m => m.Name).Where(n => !forImages || ImageMethods.Contains(n)))}.");
        if (!PeftMethodOptions.PeftTypes.Contains(choice.PeftType))
            throw new UsageException($"--method {method} ({choice.PeftType}) is not available in this build of Microsoft.ML.Peft.");
        var json = PeftMethodNames.Json(choice.Name, forImages);
        var fields = FieldsOf(choice.PeftType);
        foreach (var option in options)
        {
            if (option.Value(parse) is not JsonNode value) continue;
            if (!fields.Contains(option.Field))
                throw new UsageException($"{option.Option.Name} does not apply to --method {method}; {method} takes {Describe(options.Where(o => fields.Contains(o.Field)))}.");
            json[option.Field] = value;
        }
        try
        {
            return PeftMethodOptions.FromJson(json.ToJsonString());
        }
        catch (InvalidDataException e)
        {
            // The values are the user's: a bad one (a rank out of range...) is a command-line mistake.
            var at = e.InnerException?.Message ?? e.Message;
            throw new UsageException($"--method {method}: {at}");
        }
    }

    private static string Describe(IEnumerable<MethodOption> options)
    {
        var names = options.Select(o => o.Option.Name).ToList();
        return names.Count == 0 ? "no method options" : string.Join(", ", names);
    }

    /// <summary>The PEFT config fields the options of <paramref name="peftType"/> have.</summary>
    private static HashSet<string> FieldsOf(string peftType)
    {
        var type = PeftMethodOptions.FromJson(new JsonObject { ["peft_type"] = peftType }.ToJsonString()).GetType();
        return type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name)
            .OfType<string>()
            .ToHashSet(StringComparer.Ordinal);
    }
}
