using System.CommandLine;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Training;

namespace Microsoft.ML.Peft.Cli;

/// <summary>What the distillation options of a classification command asked for.</summary>
/// <param name="TeacherModel">The saved teacher model (--teacher-model), or null.</param>
/// <param name="TeacherScoreColumns">The columns of teacher scores (--teacher-scores-col), as given, or null.</param>
/// <param name="Logits">--teacher-scores-are-logits.</param>
/// <param name="Temperature">--distill-temperature.</param>
/// <param name="Weight">--distill-weight.</param>
/// <param name="PerturbedCopies">--distill-perturbed-copies (0: none).</param>
internal sealed record DistillationSettings(string? TeacherModel, string? TeacherScoreColumns, bool Logits, float Temperature, float Weight, int PerturbedCopies = 0)
{
    /// <summary>The library's options, with the teacher (loaded by the command) or the column of scores.</summary>
    public DistillationOptions ToOptions(ITransformer? teacher, string? scoreColumn) => new()
    {
        Teacher = teacher,
        TeacherScoreColumnName = scoreColumn,
        TeacherScoresAreLogits = Logits,
        Temperature = Temperature,
        Weight = Weight,
        PerturbedCopies = PerturbedCopies,
    };

    /// <summary>The report's line: where the teacher came from, the temperature and the weight.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{(TeacherModel is not null ? $"teacher {Path.GetFileName(TeacherModel)}" : $"teacher scores {TeacherScoreColumns}")}, temperature {Temperature:G}, weight {Weight:G}{(PerturbedCopies > 0 ? $", {PerturbedCopies} perturbed copies a row" : "")}");
}

/// <summary>
/// The distillation options of the classification commands: <c>--teacher-model</c> or <c>--teacher-scores-col</c>, with
/// <c>--distill-temperature</c>, <c>--distill-weight</c> and <c>--teacher-scores-are-logits</c>.
/// </summary>
internal sealed class DistillationChoices
{
    private readonly Option<string> teacherModel;
    private readonly Option<string>? teacherScores;
    private readonly Option<bool>? logits;
    private readonly Option<float> temperature;
    private readonly Option<float> weight;
    private readonly Option<int>? copies;

    /// <param name="scoreColumns">Whether the command's data can hold columns of teacher scores (<c>--teacher-scores-col</c>).</param>
    /// <param name="perturbedCopies">Whether the command's rows are text that <c>--distill-perturbed-copies</c> can perturb.</param>
    public DistillationChoices(bool scoreColumns, bool perturbedCopies = false)
    {
        var defaults = new DistillationOptions();
        teacherModel = new Option<string>("--teacher-model")
        {
            Description = "Distil from this saved model of the same task (a .zip of this command, or any ML.NET classifier whose input columns the data has): " +
                "it scores the training rows once, and the new model learns from its class probabilities as well as the labels.",
        };
        if (scoreColumns)
        {
            teacherScores = new Option<string>("--teacher-scores-col")
            {
                Description = "Distil from teacher scores in the training data: one column per class, comma-separated (header names or 0-based indices), " +
                    "in the sorted order of the label values (for example 0,1 or negative,positive); with --has-header, columns named after the classes " +
                    "(as 'predict' writes them) are matched by name. Probabilities, or logits with --teacher-scores-are-logits.",
            };
            logits = new Option<bool>("--teacher-scores-are-logits") { Description = "The --teacher-scores-col columns hold logits, not probabilities." };
        }
        temperature = new Option<float>("--distill-temperature")
        {
            Description = "Softmax temperature of the distillation term (larger: softer teacher probabilities).",
            DefaultValueFactory = _ => defaults.Temperature,
        }.Positive();
        weight = new Option<float>("--distill-weight")
        {
            Description = "Share of the distillation term in the loss, from 0 (labels only) to 1 (teacher only).",
            DefaultValueFactory = _ => defaults.Weight,
        };
        if (perturbedCopies)
        {
            copies = new Option<int>("--distill-perturbed-copies")
            {
                Description = "Also train on this many perturbed copies of each training row (words dropped, n-grams kept; Tang et al. 2019) that only the teacher's " +
                    "probabilities teach: a transfer set made from the training rows. Needs --teacher-model. Each epoch then has (1 + copies) times the rows.",
                DefaultValueFactory = _ => 0,
            };
            copies.Validators.Add(result =>
            {
                var value = result.GetValueOrDefault<int>();
                if (value is < 0 or > 100) result.AddError($"--distill-perturbed-copies must be from 0 to 100; got {value}.");
            });
        }
        weight.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<float>();
            if (!(value >= 0 && value <= 1)) result.AddError($"--distill-weight must be in [0, 1]; got {value.ToString(CultureInfo.InvariantCulture)}.");
        });
    }

    /// <summary>The options to add to the command.</summary>
    public IEnumerable<Option> Options => new Option?[] { teacherModel, teacherScores, logits, temperature, weight, copies }.OfType<Option>();

    /// <summary>The settings, or null without a teacher; the distillation options without a teacher are a usage error.</summary>
    public DistillationSettings? Parse(ParseResult parse)
    {
        var model = parse.GetValue(teacherModel);
        var scores = teacherScores is null ? null : parse.GetValue(teacherScores);
        bool areLogits = logits is not null && parse.GetValue(logits);
        if (model is not null && scores is not null) throw new UsageException("Give one teacher: --teacher-model or --teacher-scores-col, not both.");
        if (model is null && scores is null)
        {
            var given = new Option?[] { temperature, weight, logits, copies }.OfType<Option>().Where(o => parse.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();
            if (given.Count > 0)
                throw new UsageException($"{string.Join(", ", given)} need{(given.Count == 1 ? "s" : "")} a teacher: --teacher-model{(teacherScores is null ? "" : " or --teacher-scores-col")}.");
            return null;
        }
        if (areLogits && scores is null) throw new UsageException("--teacher-scores-are-logits applies to --teacher-scores-col.");
        int copyCount = copies is null ? 0 : parse.GetValue(copies);
        if (copyCount > 0 && model is null) throw new UsageException("--distill-perturbed-copies needs --teacher-model: the teacher scores the copies.");
        if (model is not null && !File.Exists(model))
            throw new FileNotFoundException($"The teacher model '{model}' (--teacher-model) does not exist.", model);
        return new DistillationSettings(model, scores, areLogits, parse.GetValue(temperature), parse.GetValue(weight), copyCount);
    }

    /// <summary>
    /// Loads the saved teacher and checks that the data has every column it reads (same name, same type); a file that is not
    /// a model, or one that needs other columns, is a clear error naming --teacher-model.
    /// </summary>
    public static ITransformer LoadTeacher(MLContext mlContext, string path, DataViewSchema data, string dataDescription)
    {
        ITransformer teacher;
        DataViewSchema input;
        try
        {
            teacher = mlContext.Model.Load(path, out input);
        }
        catch (Exception e) when (e is FormatException or InvalidDataException)
        {
            throw new InvalidDataException($"The teacher model '{path}' (--teacher-model) is not an ML.NET model: {e.Message}", e);
        }
        foreach (var column in input.Where(c => !c.IsHidden))
        {
            var ours = data.GetColumnOrNull(column.Name);
            if (ours is null)
            {
                Dispose(teacher);
                throw new InvalidDataException($"The teacher model '{path}' (--teacher-model) reads the column '{column.Name}' ({column.Type}), which {dataDescription} does not have " +
                    $"(its columns: {string.Join(", ", data.Where(c => !c.IsHidden).Select(c => c.Name))}): the teacher must be a model of the same task.");
            }
            if (!ours.Value.Type.Equals(column.Type))
            {
                Dispose(teacher);
                throw new InvalidDataException($"The teacher model '{path}' (--teacher-model) reads the column '{column.Name}' as {column.Type}, but {dataDescription} has it as {ours.Value.Type}.");
            }
        }
        return teacher;
    }

    /// <summary>Disposes the transformers of a loaded model that hold native memory.</summary>
    public static void Dispose(ITransformer? model)
    {
        if (model is null) return;
        foreach (var part in PredictCommand.Flatten(model).OfType<IDisposable>()) part.Dispose();
    }

    /// <summary>
    /// Whether teacher score columns are matched to the classes by their header names: when every class has a column of
    /// its name. Otherwise the columns are taken in the order given (the sorted order of the label values).
    /// </summary>
    public static bool MatchedByName(DelimitedFile file, int[] scoreColumns, ITransformer labelToKey, DataViewSchema data, string labelColumn)
    {
        if (file.Header is not { } header) return false;
        VBuffer<ReadOnlyMemory<char>> keyValues = default;
        labelToKey.GetOutputSchema(data)[labelColumn].GetKeyValues(ref keyValues);
        var classes = keyValues.DenseValues().Select(v => v.ToString()).ToHashSet(StringComparer.Ordinal);
        return classes.SetEquals(scoreColumns.Select(i => header[i]));
    }

    /// <summary>
    /// The data with <paramref name="column"/> copied to <paramref name="output"/> without slot names (a header's column
    /// names, which are not class names here), so the scores are read in their order.
    /// </summary>
    public static IDataView WithoutSlotNames(MLContext mlContext, IDataView data, string column, string output)
    {
        var input = SchemaDefinition.Create(typeof(ScoresIn));
        var scores = input[nameof(ScoresIn.Scores)];
        scores.ColumnName = column;
        scores.ColumnType = data.Schema[column].Type;
        var result = SchemaDefinition.Create(typeof(ScoresOut));
        result[nameof(ScoresOut.Scores)].ColumnName = output;
        return mlContext.Transforms.CustomMapping<ScoresIn, ScoresOut>((i, o) => o.Scores = i.Scores.ToArray(), contractName: null, input, result)
            .Fit(data).Transform(data);
    }

    /// <summary>The scores read by <see cref="WithoutSlotNames"/>.</summary>
    private sealed class ScoresIn
    {
        public float[] Scores { get; set; } = Array.Empty<float>();
    }

    /// <summary>The scores written by <see cref="WithoutSlotNames"/>: a vector of unknown size, without slot names.</summary>
    private sealed class ScoresOut
    {
        [VectorType]
        public float[] Scores { get; set; } = Array.Empty<float>();
    }

    /// <summary>
    /// The 0-based indices of the --teacher-scores-col columns and, when the file has a header, their names; the columns
    /// must differ from each other and from <paramref name="taken"/>.
    /// </summary>
    public static int[] ResolveScoreColumns(DelimitedFile file, string spec, IEnumerable<int> taken)
    {
        var parts = spec.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length < 2 || parts.Any(p => p.Length == 0))
            throw new UsageException($"--teacher-scores-col '{spec}' must name one column per class (at least two), separated by commas.");
        var indices = parts.Select(p => file.ResolveColumn(p, "--teacher-scores-col")).ToArray();
        var used = new HashSet<int>(taken);
        foreach (var index in indices)
            if (!used.Add(index))
                throw new ArgumentException($"Column {index} of {file.Description} is given twice (--teacher-scores-col and the other column options must differ).");
        return indices;
    }
}
