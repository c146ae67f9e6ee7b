using System.Globalization;

namespace Peft.Bench;

/// <summary>Command-line arguments: <c>sst2 [--train-rows N] [--eval-rows N] [--max-length N] [--epochs N] [--learning-rate X] [--data DIR]</c>.</summary>
internal sealed class BenchArguments
{
    public const string DefaultDataPath = "../shared/data";

    public string Task { get; private set; } = "sst2";
    public int TrainRows { get; private set; } = 8000;
    /// <summary>Rows of dev.tsv to evaluate on; null means all of them.</summary>
    public int? EvalRows { get; private set; }
    public int MaxLength { get; private set; } = 64;
    public int Epochs { get; private set; } = 1;
    /// <summary>Peak learning rate of the LoRA run; null keeps the library's default.</summary>
    public float? LearningRate { get; private set; }
    /// <summary>The data folder as given (or the default), relative paths kept relative.</summary>
    public string DataArgument { get; private set; } = DefaultDataPath;
    /// <summary>Whether --data was given; without it the data folder is ../shared/data beside the repository root.</summary>
    public bool DataGiven { get; private set; }

    public const string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- sst2 [--train-rows 8000] [--eval-rows N] [--max-length 64] [--epochs 1] [--learning-rate X] [--data ../shared/data]\n" +
        "  --train-rows     first N rows of sst2/train.tsv to train on (default 8000)\n" +
        "  --eval-rows      first N rows of sst2/dev.tsv to evaluate on (default: all of them)\n" +
        "  --max-length     longest token sequence, [CLS] and [SEP] included (default 64)\n" +
        "  --epochs         LoRA passes over the training rows (default 1)\n" +
        "  --learning-rate  LoRA peak learning rate (default: the library's, 5e-4)\n" +
        "  --data           data folder; a relative path is taken from the current directory (default: ../shared/data beside the repository root)";

    /// <summary>Parses the arguments; throws <see cref="ArgumentException"/> with a readable message on a bad one.</summary>
    public static BenchArguments Parse(IReadOnlyList<string> args)
    {
        var result = new BenchArguments();
        bool taskSeen = false;
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                if (taskSeen) throw new ArgumentException($"Unexpected argument '{arg}'.");
                if (!string.Equals(arg, "sst2", StringComparison.OrdinalIgnoreCase))
                    throw new ArgumentException($"Unknown benchmark '{arg}'; the only one is 'sst2'.");
                result.Task = "sst2";
                taskSeen = true;
                continue;
            }
            string Value()
            {
                if (i + 1 >= args.Count) throw new ArgumentException($"{arg} needs a value.");
                return args[++i];
            }
            switch (arg)
            {
                case "--train-rows": result.TrainRows = PositiveInt(arg, Value()); break;
                case "--eval-rows": result.EvalRows = PositiveInt(arg, Value()); break;
                case "--max-length":
                    result.MaxLength = PositiveInt(arg, Value());
                    if (result.MaxLength < 3 || result.MaxLength > 512) throw new ArgumentException("--max-length must be between 3 and 512.");
                    break;
                case "--epochs": result.Epochs = PositiveInt(arg, Value()); break;
                case "--learning-rate":
                    var text = Value();
                    if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var rate) || !(rate > 0) || float.IsInfinity(rate))
                        throw new ArgumentException($"--learning-rate must be a positive number, got '{text}'.");
                    result.LearningRate = rate;
                    break;
                case "--data":
                    result.DataArgument = Value();
                    result.DataGiven = true;
                    break;
                default: throw new ArgumentException($"Unknown option '{arg}'.");
            }
        }
        if (!taskSeen) throw new ArgumentException("Name the benchmark to run: sst2.");
        return result;
    }

    private static int PositiveInt(string option, string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > 0
            ? value
            : throw new ArgumentException($"{option} must be a positive integer, got '{text}'.");
}
