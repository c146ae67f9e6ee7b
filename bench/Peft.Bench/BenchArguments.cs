using System.Globalization;

namespace Peft.Bench;

/// <summary>Command-line arguments of <c>sst2</c>; every recipe option defaults to the benchmark's recipe (see <see cref="Usage"/>).</summary>
internal sealed class BenchArguments
{
    public const string DefaultDataPath = "../shared/data";

    // The benchmark's LoRA recipe (what `-- sst2` runs without options).
    public const int DefaultTrainRows = 8000;
    public const int DefaultMaxLength = 128;
    public const int DefaultEpochs = 1;
    public const float DefaultLearningRate = 2e-3f;
    public const int DefaultRank = 8;
    public const float DefaultAlpha = 16;
    public const string DefaultTargets = "all-linear";
    public const float DefaultLoraDropout = 0.1f;
    public const int DefaultBatchSize = 32;
    public const float DefaultWarmup = 0.06f;
    public const float DefaultWeightDecay = 0.01f;
    public const float DefaultHeadDropout = 0.1f;
    public const int DefaultSeed = 1;

    public string Task { get; private set; } = "sst2";
    /// <summary>First N rows of train.tsv; null means all of them (<c>--train-rows all</c>).</summary>
    public int? TrainRows { get; private set; } = DefaultTrainRows;
    /// <summary>Rows of test-sentences.tsv to evaluate on; null means all of them.</summary>
    public int? EvalRows { get; private set; }
    /// <summary>Rows of dev.tsv used as the LoRA validation set (early stopping); null means no validation set.</summary>
    public int? ValidationRows { get; private set; }
    /// <summary>Early-stopping patience in epochs (0 = off); needs a validation set.</summary>
    public int Patience { get; private set; }
    public int MaxLength { get; private set; } = DefaultMaxLength;
    public int Epochs { get; private set; } = DefaultEpochs;
    public float LearningRate { get; private set; } = DefaultLearningRate;
    public int Rank { get; private set; } = DefaultRank;
    public float Alpha { get; private set; } = DefaultAlpha;
    public IReadOnlyList<string> Targets { get; private set; } = SplitTargets(DefaultTargets);
    public float LoraDropout { get; private set; } = DefaultLoraDropout;
    public int BatchSize { get; private set; } = DefaultBatchSize;
    public float Warmup { get; private set; } = DefaultWarmup;
    public float WeightDecay { get; private set; } = DefaultWeightDecay;
    public float HeadDropout { get; private set; } = DefaultHeadDropout;
    /// <summary>Seed of the MLContext and the LoRA trainer (initialisation, dropout, shuffling).</summary>
    public int Seed { get; private set; } = DefaultSeed;
    /// <summary>Skip the two baselines (for exploring recipes); the targets then only check the LoRA accuracy.</summary>
    public bool LoraOnly { get; private set; }
    /// <summary>Also run BitFit and full fine-tuning on the same rows (the method seam's other methods, full fine-tuning as the reference).</summary>
    public bool ReferenceMethods { get; private set; }
    /// <summary>Peak learning rate of the full fine-tuning row.</summary>
    public float FullLearningRate { get; private set; } = 5e-5f;
    /// <summary>The results file as given; null: bench/results/sst2.json, sst2-full.json (all training rows) or sst2-lora-only.json.</summary>
    public string? Output { get; private set; }
    /// <summary>The data folder as given (or the default), relative paths kept relative.</summary>
    public string DataArgument { get; private set; } = DefaultDataPath;
    /// <summary>Whether --data was given; without it the data folder is ../shared/data beside the repository root.</summary>
    public bool DataGiven { get; private set; }

    public static readonly string Usage = string.Create(CultureInfo.InvariantCulture,
        $"usage: dotnet run -c Release --project bench/Peft.Bench -- sst2 [options]\n" +
        $"  --train-rows N|all   first N rows of sst2/train.tsv to train on, or all 60,614 (default {DefaultTrainRows})\n" +
        $"  --eval-rows N        first N rows of sst2/test-sentences.tsv to evaluate on (default: all 1,821)\n" +
        $"  --validation-rows N  first N rows of sst2/dev.tsv as the LoRA validation set, accuracy each epoch (default: none)\n" +
        $"  --patience N         early stopping after N epochs without a better validation accuracy; needs --validation-rows (default 0, off)\n" +
        $"  --max-length N       longest token sequence, [CLS] and [SEP] included (default {DefaultMaxLength})\n" +
        $"  --epochs N           LoRA passes over the training rows (default {DefaultEpochs})\n" +
        $"  --learning-rate X    LoRA peak learning rate (default {DefaultLearningRate:G})\n" +
        $"  --rank N             LoRA rank (default {DefaultRank})\n" +
        $"  --alpha X            LoRA alpha; the update is scaled by alpha/rank (default {DefaultAlpha:G})\n" +
        $"  --reference-methods  also train BitFit (LoRA's learning rate) and full fine-tuning on the same rows\n" +
        $"  --full-learning-rate X  peak learning rate of full fine-tuning (default 5e-5)\n" +
        $"  --targets A,B,...    LoRA target modules: names, full names, regular expressions, or all-linear (default {DefaultTargets})\n" +
        $"  --lora-dropout X     dropout on the LoRA branch's input (default {DefaultLoraDropout:G})\n" +
        $"  --batch-size N       rows per training step (default {DefaultBatchSize})\n" +
        $"  --warmup X           share of the steps spent warming the learning rate up (default {DefaultWarmup:G})\n" +
        $"  --weight-decay X     AdamW weight decay (default {DefaultWeightDecay:G})\n" +
        $"  --head-dropout X     dropout before the classification head (default {DefaultHeadDropout:G})\n" +
        $"  --seed N             seed of the MLContext and of the LoRA trainer (default {DefaultSeed})\n" +
        $"  --lora-only          skip the two baselines (for trying recipes)\n" +
        $"  --output FILE        results file (default: bench/results/sst2.json; sst2-full.json with all training rows; sst2-lora-only.json with --lora-only)\n" +
        $"  --data DIR           data folder; a relative path is taken from the current directory (default: ../shared/data beside the repository root)");

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
                    throw new ArgumentException($"Unknown benchmark '{arg}'; the benchmarks are sst2, methods, images and shared-memory.");
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
                case "--train-rows":
                    var rows = Value();
                    result.TrainRows = string.Equals(rows, "all", StringComparison.OrdinalIgnoreCase) ? null : PositiveInt(arg, rows);
                    break;
                case "--eval-rows": result.EvalRows = PositiveInt(arg, Value()); break;
                case "--validation-rows": result.ValidationRows = PositiveInt(arg, Value()); break;
                case "--patience": result.Patience = NonNegativeInt(arg, Value()); break;
                case "--max-length":
                    result.MaxLength = PositiveInt(arg, Value());
                    if (result.MaxLength < 3 || result.MaxLength > 512) throw new ArgumentException("--max-length must be between 3 and 512.");
                    break;
                case "--epochs": result.Epochs = PositiveInt(arg, Value()); break;
                case "--learning-rate": result.LearningRate = Number(arg, Value(), positive: true); break;
                case "--rank": result.Rank = PositiveInt(arg, Value()); break;
                case "--alpha": result.Alpha = Number(arg, Value(), positive: true); break;
                case "--targets":
                    var targets = SplitTargets(Value());
                    if (targets.Count == 0) throw new ArgumentException("--targets needs at least one module name.");
                    result.Targets = targets;
                    break;
                case "--lora-dropout": result.LoraDropout = Fraction(arg, Value()); break;
                case "--batch-size": result.BatchSize = PositiveInt(arg, Value()); break;
                case "--warmup": result.Warmup = Fraction(arg, Value()); break;
                case "--weight-decay": result.WeightDecay = Number(arg, Value(), positive: false); break;
                case "--head-dropout": result.HeadDropout = Fraction(arg, Value()); break;
                case "--seed": result.Seed = NonNegativeInt(arg, Value()); break;
                case "--lora-only": result.LoraOnly = true; break;
                case "--reference-methods": result.ReferenceMethods = true; break;
                case "--full-learning-rate": result.FullLearningRate = Number(arg, Value(), positive: true); break;
                case "--output": result.Output = Value(); break;
                case "--data":
                    result.DataArgument = Value();
                    result.DataGiven = true;
                    break;
                default: throw new ArgumentException($"Unknown option '{arg}'.");
            }
        }
        if (!taskSeen) throw new ArgumentException("Name the benchmark to run: sst2, methods, images or shared-memory.");
        if (result.Patience > 0 && result.ValidationRows is null)
            throw new ArgumentException("--patience needs a validation set: add --validation-rows N.");
        return result;
    }

    private static List<string> SplitTargets(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    private static int PositiveInt(string option, string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > 0
            ? value
            : throw new ArgumentException($"{option} must be a positive integer, got '{text}'.");

    private static int NonNegativeInt(string option, string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ArgumentException($"{option} must be zero or a positive integer, got '{text}'.");

    private static float Number(string option, string text, bool positive) =>
        float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && float.IsFinite(value) && (positive ? value > 0 : value >= 0)
            ? value
            : throw new ArgumentException($"{option} must be a {(positive ? "positive" : "non-negative")} number, got '{text}'.");

    /// <summary>A number in [0, 1).</summary>
    private static float Fraction(string option, string text) =>
        float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value >= 0 && value < 1
            ? value
            : throw new ArgumentException($"{option} must be a number in [0, 1), got '{text}'.");
}
