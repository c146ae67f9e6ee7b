using System.CommandLine;
using System.Numerics;

namespace Microsoft.ML.Peft.Cli;

/// <summary>Options shared by the commands, and checks of numeric options.</summary>
internal static class CommandOptions
{
    /// <summary>
    /// --threads, on every command: libtorch's intra-op threads for the process (the command line is the application,
    /// so it may set them). Unset: libtorch's default (one per core), except the recommenders, which take 1.
    /// </summary>
    public static readonly Option<int?> Threads = new("--threads")
    {
        Description = "libtorch threads for this run (default: one per core; 1 for the recommenders, whose operations are too small to gain from more). " +
            "With another process busy on the same cores, fewer threads and --omp-wait-policy passive are faster.",
        Recursive = true,
    };

    /// <summary>--omp-wait-policy, on every command: how libtorch's OpenMP threads wait (set before libtorch loads).</summary>
    public static readonly Option<string?> WaitPolicy = new Option<string?>("--omp-wait-policy")
    {
        Description = "How libtorch's idle threads wait: active (spin first; OpenMP's default) or passive (sleep at once: faster when other processes share the cores). " +
            "Same as setting OMP_WAIT_POLICY.",
        Recursive = true,
    }.AcceptOnlyFromAmong("active", "passive");

    public static Option<string> Dataset(string description) => new("--dataset") { Description = description, Required = true };

    public static Option<bool> HasHeader() => new("--has-header") { Description = "The first line of each file names its columns." };

    public static Option<string> Separator() => new("--separator")
    {
        Description = "Column separator: TAB (default), COMMA (fields may be quoted), SEMICOLON, SPACE, PIPE or one character.",
        DefaultValueFactory = _ => "TAB",
    };

    public static Option<string> TextColumn() => new("--text-col") { Description = "The text column: a header name (with --has-header) or a 0-based index.", Required = true };

    public static Option<string> Text2Column() => new("--text2-col") { Description = "An optional second text column, for sentence pairs." };

    /// <summary>--model of the text commands: the base encoder.</summary>
    public static Option<string> TextBaseModel() => new("--model") { Description = "The base model: an ONNX file (with vocab.txt beside it or --vocab) or a Hugging Face directory. Default: all-MiniLM-L6-v2 (uncased)." };

    /// <summary>--vocab of the text commands.</summary>
    public static Option<string> Vocab() => new("--vocab") { Description = "The WordPiece vocab.txt of an ONNX --model." };

    /// <summary>--method of the text commands (LoRA by default); its options come from <see cref="MethodChoices.CreateOptions"/>.</summary>
    public static Option<string> TextMethod() => new("--method")
    {
        Description = "The PEFT method: " + string.Join("; ", MethodChoices.Methods.Select(m => $"{m.Name} ({m.Description})")) + ".",
        DefaultValueFactory = _ => "lora",
    };

    /// <summary>--epochs, at least 1.</summary>
    public static Option<int> Epochs(int defaultValue, string what = "the training data") =>
        new Option<int>("--epochs") { Description = $"Passes over {what}.", DefaultValueFactory = _ => defaultValue }.AtLeast(1);

    /// <summary>--batch-size, at least 1; <paramref name="rows"/> names what a step takes (rows, pairs, windows, images).</summary>
    public static Option<int> BatchSize(int defaultValue, string rows) =>
        new Option<int>("--batch-size") { Description = $"{rows} per training step.", DefaultValueFactory = _ => defaultValue }.AtLeast(1);

    /// <summary>--learning-rate, a positive number.</summary>
    public static Option<float> LearningRate(float defaultValue) =>
        new Option<float>("--learning-rate") { Description = "Peak learning rate of AdamW.", DefaultValueFactory = _ => defaultValue }.Positive();

    /// <summary>--seed; <paramref name="uses"/> says what it seeds.</summary>
    public static Option<int> Seed(int defaultValue, string uses = "the split, initialisation, dropout and shuffling") =>
        new("--seed") { Description = $"Seed of {uses}.", DefaultValueFactory = _ => defaultValue };

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
