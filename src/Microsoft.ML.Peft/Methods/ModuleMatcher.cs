using System.Text.RegularExpressions;

namespace Microsoft.ML.Peft.Methods;

/// <summary>Selects modules by the target patterns of a method's options (as Hugging Face PEFT's <c>target_modules</c>).</summary>
internal static class ModuleMatcher
{
    /// <summary>The pattern that selects every Linear layer of the backbone.</summary>
    public const string AllLinear = "all-linear";

    /// <summary>
    /// The modules whose names match one of <paramref name="patterns"/>: the last part of a name (<c>query</c>), a full
    /// name, or a regular expression over whole names; <see cref="AllLinear"/> selects all. Matching nothing is an error
    /// that lists the names there are.
    /// </summary>
    public static List<(string Name, T Module)> Select<T>(IEnumerable<(string Name, T Module)> modules, IReadOnlyList<string> patterns, string method, string option)
    {
        var all = modules.ToList();
        var matchers = patterns.Select(Matcher).ToList();
        var selected = all.Where(m => matchers.Any(match => match(m.Name, m.Module is TunerLinear))).ToList();
        if (selected.Count == 0)
        {
            var leaves = all.Select(l => l.Name.Split('.').Last()).Distinct();
            throw new ArgumentException(
                $"{method} {option} [{string.Join(", ", patterns)}] match no adaptable layer of the base model. " +
                $"Its Linear layer and convolution names end in: {string.Join(", ", leaves)}; full names look like '{all.FirstOrDefault().Name}'. " +
                $"Use one of those, a regular expression over the full names, or '{AllLinear}'.", option);
        }
        return selected;
    }

    private static Func<string, bool, bool> Matcher(string pattern)
    {
        // all-linear means every Linear layer, never a convolution.
        if (pattern == AllLinear) return (_, isLinear) => isLinear;
        Regex? regex = null;
        try
        {
            regex = new Regex("^(?:" + pattern + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException)
        {
            // Not a regular expression: matched as a plain name only.
        }
        return (name, _) => name == pattern || name.EndsWith("." + pattern, StringComparison.Ordinal) || (regex?.IsMatch(name) ?? false);
    }
}
