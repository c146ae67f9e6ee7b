using System.Text.RegularExpressions;
using Microsoft.ML.Peft.Models;

namespace Microsoft.ML.Peft.Adapters.Lora;

/// <summary>Walks an encoder's Linear layers, matches them against <see cref="LoraOptions.TargetModules"/> and attaches LoRA layers.</summary>
internal static class LoraInjector
{
    /// <summary>Attaches a LoRA layer to each matching Linear; returns the adapted module names.</summary>
    public static IReadOnlyList<string> Inject(BertModel model, LoraOptions options)
    {
        options.Validate();
        var linears = model.Linears().ToList();
        var matchers = options.TargetModules.Select(Matcher).ToList();
        var adapted = new List<string>();
        foreach (var (name, layer) in linears)
        {
            if (!matchers.Any(m => m(name))) continue;
            layer.AttachLora(new LoraLayer(layer.InFeatures, layer.OutFeatures, options.Rank, options.Scaling, options.Dropout));
            adapted.Add(name);
        }
        if (adapted.Count == 0)
        {
            var leaves = linears.Select(l => l.Name.Split('.').Last()).Distinct();
            throw new ArgumentException(
                $"LoRA TargetModules [{string.Join(", ", options.TargetModules)}] match no Linear layer of the encoder. " +
                $"Linear layer names end in: {string.Join(", ", leaves)}; full names look like '{linears.FirstOrDefault().Name}'. " +
                $"Use one of those, a regular expression over the full names, or '{LoraOptions.AllLinear}'.", nameof(LoraOptions.TargetModules));
        }
        return adapted;
    }

    private static Func<string, bool> Matcher(string pattern)
    {
        if (pattern == LoraOptions.AllLinear) return _ => true;
        Regex? regex = null;
        try
        {
            regex = new Regex("^(?:" + pattern + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException)
        {
            // Not a regular expression: matched as a plain name only.
        }
        return name => name == pattern || name.EndsWith("." + pattern, StringComparison.Ordinal) || (regex?.IsMatch(name) ?? false);
    }
}
