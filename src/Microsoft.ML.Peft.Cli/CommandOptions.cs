using System.CommandLine;
using System.Numerics;

namespace Microsoft.ML.Peft.Cli;

/// <summary>Options shared by the commands, and checks of numeric options.</summary>
internal static class CommandOptions
{
    public static Option<string> Dataset(string description) => new("--dataset") { Description = description, Required = true };

    public static Option<bool> HasHeader() => new("--has-header") { Description = "The first line of each file names its columns." };

    public static Option<string> Separator() => new("--separator")
    {
        Description = "Column separator: TAB (default), COMMA (fields may be quoted), SEMICOLON, SPACE, PIPE or one character.",
        DefaultValueFactory = _ => "TAB",
    };

    public static Option<string> TextColumn() => new("--text-col") { Description = "The text column: a header name (with --has-header) or a 0-based index.", Required = true };

    public static Option<string> Text2Column() => new("--text2-col") { Description = "An optional second text column, for sentence pairs." };

    /// <summary><c>--max-rows</c>: read at most this many rows of each file (positive).</summary>
    public static Option<long?> MaxRows()
    {
        var option = new Option<long?>("--max-rows") { Description = "Read at most this many rows of each file." };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is <= 0 and var value) result.AddError($"--max-rows must be positive; got {value}.");
        });
        return option;
    }

    /// <summary>Adds a check that the option's value is at least <paramref name="minimum"/>.</summary>
    public static Option<T> AtLeast<T>(this Option<T> option, T minimum) where T : INumber<T>
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (!(value >= minimum)) result.AddError($"{option.Name} must be at least {minimum}; got {value}.");
        });
        return option;
    }

    /// <summary>Adds a check that the option's value is a positive finite number.</summary>
    public static Option<float> Positive(this Option<float> option)
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<float>();
            if (!(value > 0) || float.IsInfinity(value)) result.AddError($"{option.Name} must be a positive number; got {value}.");
        });
        return option;
    }
}
