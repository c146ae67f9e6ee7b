using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Training;

/// <summary>The maths of <see cref="DistillationOptions"/>, in one place for every classification task.</summary>
internal static class DistillationLoss
{
    /// <summary>The label of a row without one: <c>cross_entropy</c> leaves it out.</summary>
    public const long NoLabel = -100;

    /// <summary>Floor of a teacher probability before its logarithm (a zero would give -inf).</summary>
    private const double MinProbability = 1e-12;

    /// <summary>
    /// The mean over the batch of <c>weight * T² * KL(p_teacher^T || softmax(logits / T)) * hasTeacher + (1 - weight) *
    /// CrossEntropy(logits, label)</c> (rows whose label is <see cref="NoLabel"/> have no hard term).
    /// </summary>
    /// <param name="logits">The student's logits, [rows, classes].</param>
    /// <param name="labels">Class indices (Int64), <see cref="NoLabel"/> for rows without one, [rows].</param>
    /// <param name="teacherLogProbabilities">log p_teacher^T, the teacher's log-probabilities at the temperature, [rows, classes].</param>
    /// <param name="hasTeacher">1 for rows with teacher scores, 0 without, [rows].</param>
    /// <param name="temperature">T, dividing the student's logits (the teacher's are tempered already).</param>
    /// <param name="weight">alpha, the soft term's share.</param>
    public static Tensor Compute(Tensor logits, Tensor labels, Tensor teacherLogProbabilities, Tensor hasTeacher, float temperature, float weight)
    {
        using var scope = NewDisposeScope();
        long rows = logits.shape[0];
        var hard = nn.functional.cross_entropy(logits, labels, ignore_index: NoLabel, reduction: nn.Reduction.None);
        var studentLogProbabilities = nn.functional.log_softmax(logits / temperature, 1);
        var kl = (teacherLogProbabilities.exp() * (teacherLogProbabilities - studentLogProbabilities)).sum(1) * hasTeacher;
        var loss = (kl.sum() * (weight * temperature * temperature) + hard.sum() * (1 - weight)) / rows;
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// log p^T = log softmax(s / T) for one row's teacher scores: <c>s = log p</c> for probabilities (floored at 1e-12),
    /// <c>s</c> the scores themselves for logits. Computed in double.
    /// </summary>
    public static float[] TemperedLogProbabilities(ReadOnlySpan<float> scores, bool logits, float temperature)
    {
        var s = new double[scores.Length];
        for (int c = 0; c < s.Length; c++) s[c] = (logits ? scores[c] : Math.Log(Math.Max(scores[c], MinProbability))) / temperature;
        double max = s.Max(), sum = 0;
        foreach (var v in s) sum += Math.Exp(v - max);
        double logSum = max + Math.Log(sum);
        return s.Select(v => (float)(v - logSum)).ToArray();
    }
}

/// <summary>
/// The teacher's soft targets for the training rows of one run, and which rows train: built once before training, then
/// each batch's loss. The task reads its rows with their labels (-1 where the label is missing, those rows kept), in the
/// order of its input; row i of the task is row i of the input.
/// </summary>
internal sealed class DistillationTargets
{
    private readonly float[]?[] teacher;
    private readonly float temperature, weight;
    private readonly int classes;

    private DistillationTargets(float[]?[] teacher, int[] rows, float temperature, float weight, int classes)
    {
        this.teacher = teacher;
        Rows = rows;
        this.temperature = temperature;
        this.weight = weight;
        this.classes = classes;
    }

    /// <summary>The task's rows that train, in order: those with a label (when the weight is below 1) or teacher scores (when it is above 0).</summary>
    public int[] Rows { get; }

    /// <summary>
    /// Reads the teacher's scores for every input row, checks them against the label and picks the rows that train
    /// (reported on <paramref name="ch"/>). <paramref name="labels"/> are the task's rows' class indices, -1 where missing.
    /// </summary>
    public static DistillationTargets Prepare(DistillationOptions options, IDataView input, LabelInfo label, string labelColumnName,
        IReadOnlyList<int> labels, IHost host, IChannel ch)
    {
        var scores = TeacherScores.Read(options, input, label, labelColumnName, host, ch);
        if (scores.Length != labels.Count)
            throw new InvalidOperationException($"The teacher's scores cover {scores.Length} rows, the training data has {labels.Count}: the teacher must keep every row.");
        var tempered = scores.Select(s => s is null ? null : DistillationLoss.TemperedLogProbabilities(s, options.TeacherScoresAreLogits, options.Temperature)).ToArray();
        bool useHard = options.Weight < 1, useSoft = options.Weight > 0;
        int both = 0, softOnly = 0, hardOnly = 0, skipped = 0;
        var rows = new List<int>();
        for (int i = 0; i < labels.Count; i++)
        {
            bool hard = useHard && labels[i] >= 0, soft = useSoft && tempered[i] is not null;
            if (hard && soft) both++;
            else if (soft) softOnly++;
            else if (hard) hardOnly++;
            else
            {
                skipped++;
                continue;
            }
            rows.Add(i);
        }
        int missingLabels = labels.Count(l => l < 0), missingScores = tempered.Count(t => t is null);
        if (rows.Count == 0)
            throw new ArgumentException($"No training row can train: {labels.Count} rows, {missingLabels} without a label, {missingScores} without teacher scores " +
                $"(Distillation.Weight {options.Weight.ToString(CultureInfo.InvariantCulture)}).", "input");
        ch.Info(string.Create(CultureInfo.InvariantCulture,
            $"Distillation (temperature {options.Temperature:G}, weight {options.Weight:G}): {both} rows train on both terms, {softOnly} on the teacher alone (no label), " +
            $"{hardOnly} on the label alone{(useSoft ? " (no teacher scores)" : "")}, {skipped} skipped."));
        if (missingScores > 0) ch.Warning($"{missingScores} training rows have no teacher scores.");
        if (skipped > 0) ch.Warning($"{skipped} training rows have neither a label nor teacher scores the loss uses, and were skipped.");
        return new DistillationTargets(tempered, rows.ToArray(), options.Temperature, options.Weight, label.ClassCount);
    }

    /// <summary>The loss of a batch: <paramref name="logits"/> of the task's rows <paramref name="rows"/> (indices into the task's rows, not <see cref="Rows"/>).</summary>
    public Tensor Loss(Tensor logits, int[] rows, IReadOnlyList<int> labels)
    {
        using var scope = NewDisposeScope();
        var device = logits.device;
        var flat = new float[rows.Length * classes];
        var has = new float[rows.Length];
        float uniform = -MathF.Log(classes);
        for (int r = 0; r < rows.Length; r++)
        {
            var target = teacher[rows[r]];
            if (target is null) Array.Fill(flat, uniform, r * classes, classes);
            else
            {
                target.CopyTo(flat, r * classes);
                has[r] = 1;
            }
        }
        var labelTensor = tensor(rows.Select(i => labels[i] >= 0 ? (long)labels[i] : DistillationLoss.NoLabel).ToArray()).to(device);
        var teacherTensor = tensor(flat, new long[] { rows.Length, classes }).to(device);
        var hasTensor = tensor(has).to(device);
        return DistillationLoss.Compute(logits, labelTensor, teacherTensor, hasTensor, temperature, weight).MoveToOuterDisposeScope();
    }
}

/// <summary>Reads a teacher's class scores for every row of the training data, in the label's class order.</summary>
internal static class TeacherScores
{
    private const string TeacherOption = "Distillation." + nameof(DistillationOptions.Teacher);
    private const string ColumnOption = "Distillation." + nameof(DistillationOptions.TeacherScoreColumnName);

    /// <summary>One entry per input row: its scores (probabilities, or logits with <see cref="DistillationOptions.TeacherScoresAreLogits"/>) in the label's class order, or null when the row has none.</summary>
    public static float[]?[] Read(DistillationOptions options, IDataView input, LabelInfo label, string labelColumnName, IHost host, IChannel ch)
    {
        IDataView view;
        DataViewSchema.Column column;
        string what, option;
        if (options.Teacher is not null)
        {
            option = TeacherOption;
            view = ApplyTeacher(options.Teacher, input, labelColumnName, host, ch);
            column = ScoreColumn(view.Schema);
            what = $"the teacher's score column '{column.Name}' ({option})";
        }
        else
        {
            option = ColumnOption;
            view = input;
            column = input.Schema.GetColumnOrNull(options.TeacherScoreColumnName!) ?? throw new ArgumentOutOfRangeException(option,
                $"The training data has no column '{options.TeacherScoreColumnName}' ({option}). Its columns are: {string.Join(", ", input.Schema.Where(c => !c.IsHidden).Select(c => c.Name))}.");
            what = $"the teacher score column '{column.Name}' ({option})";
        }
        if (column.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single)
            throw new ArgumentException($"{Capitalized(what)} has type {column.Type}; a vector of Single (one score per class) is needed.", option);
        int classes = label.ClassCount;
        if (vector.Size != 0 && vector.Size != classes)
            throw new ArgumentException($"{Capitalized(what)} has {vector.Size} classes, the label '{labelColumnName}' has {classes}: the teacher must be of the same task.", option);
        var order = ClassOrder(column, vector.Size, label, what, option);

        var result = new List<float[]?>();
        using var cursor = view.GetRowCursor(new[] { column });
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> buffer = default;
        var dense = new float[classes];
        while (cursor.MoveNext())
        {
            host.CheckAlive();
            getter(ref buffer);
            long row = result.Count + 1;
            if (buffer.Length == 0)
            {
                result.Add(null);
                continue;
            }
            if (buffer.Length != classes)
                throw new InvalidDataException($"Row {row} of {what} has {buffer.Length} scores, the label has {classes} classes.");
            buffer.CopyTo(dense);
            int missing = dense.Count(float.IsNaN);
            if (missing == classes)
            {
                result.Add(null);
                continue;
            }
            if (missing > 0) throw new InvalidDataException($"Row {row} of {what} has {missing} missing (NaN) scores of {classes}; give all or none.");
            var scores = new float[classes];
            for (int c = 0; c < classes; c++) scores[c] = dense[order?[c] ?? c];
            result.Add(options.TeacherScoresAreLogits ? CheckedLogits(scores, row, what) : CheckedProbabilities(scores, row, what));
        }
        return result.ToArray();
    }

    /// <summary>The teacher's output over the input; a teacher that cannot read the key-typed label gets the label's values.</summary>
    private static IDataView ApplyTeacher(ITransformer teacher, IDataView input, string labelColumnName, IHost host, IChannel ch)
    {
        try
        {
            teacher.GetOutputSchema(input.Schema);
            return teacher.Transform(input);
        }
        catch (Exception first) when (first is ArgumentException or InvalidOperationException or FormatException)
        {
            var label = input.Schema.GetColumnOrNull(labelColumnName);
            if (label is null || !label.Value.HasKeyValues()) throw TeacherCannotScore(first);
            // A saved pipeline usually starts with its own MapValueToKey of the label: give it the values, as it was trained on.
            IDataView values;
            try
            {
                values = new KeyToValueMappingTransformer(host, labelColumnName).Transform(input);
                teacher.GetOutputSchema(values.Schema);
            }
            catch (Exception second) when (second is ArgumentException or InvalidOperationException or FormatException)
            {
                throw TeacherCannotScore(first);
            }
            ch.Info($"The teacher reads the label '{labelColumnName}' as its values (it maps them to keys itself).");
            return teacher.Transform(values);
        }
    }

    private static ArgumentException TeacherCannotScore(Exception e) => new(
        $"The teacher ({TeacherOption}) cannot score the training data: {e.Message} It must read the columns of the trainer's input " +
        "(the label as a key, or as its values).", TeacherOption, e);

    /// <summary>The teacher's multiclass score column: the last visible column annotated as one, else the one named <c>Score</c>.</summary>
    private static DataViewSchema.Column ScoreColumn(DataViewSchema schema)
    {
        DataViewSchema.Column? found = null;
        foreach (var column in schema)
        {
            if (column.IsHidden) continue;
            var kind = column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.ScoreColumnKind);
            if (kind is null || kind.Value.Type is not TextDataViewType) continue;
            ReadOnlyMemory<char> value = default;
            column.Annotations.GetValue(AnnotationUtils.Kinds.ScoreColumnKind, ref value);
            if (value.Span.SequenceEqual(AnnotationUtils.Const.ScoreColumnKind.MulticlassClassification)) found = column;
        }
        if (found is not null) return found.Value;
        if (schema.GetColumnOrNull(DefaultColumnNames.Score) is { IsHidden: false } score) return score;
        throw new ArgumentException($"The teacher ({TeacherOption}) outputs no multiclass score column (annotated as one, or named '{DefaultColumnNames.Score}'); " +
            $"its columns are: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => c.Name))}. It must be a classifier of the same task.", TeacherOption);
    }

    /// <summary>
    /// Where each of the label's classes is in the score vector: null when in the same order (or when either side has no
    /// names); a map when the slot names are the label's key values in another order; an error when they name other classes.
    /// </summary>
    private static int[]? ClassOrder(DataViewSchema.Column column, int size, LabelInfo label, string what, string option)
    {
        if (label.Values is null || size == 0 || !column.HasSlotNames(size)) return null;
        VBuffer<ReadOnlyMemory<char>> buffer = default;
        column.GetSlotNames(ref buffer);
        var names = buffer.DenseValues().Select(n => n.ToString()).ToList();
        if (names.SequenceEqual(label.Values, StringComparer.Ordinal)) return null;
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < names.Count; i++) index.TryAdd(names[i], i);
        if (index.Count == names.Count && label.Values.All(index.ContainsKey))
            return label.Values.Select(v => index[v]).ToArray();
        throw new ArgumentException($"{Capitalized(what)} scores the classes [{string.Join(", ", names.Take(10))}], but the label's classes are " +
            $"[{string.Join(", ", label.Values.Take(10))}]: the teacher must be of the same task.", option);
    }

    private static float[] CheckedProbabilities(float[] p, long row, string what)
    {
        const float tolerance = 1e-3f;
        double sum = 0;
        foreach (var v in p)
        {
            if (!(v >= -tolerance && v <= 1 + tolerance))
                throw new InvalidDataException($"Row {row} of {what} has the score {v.ToString(CultureInfo.InvariantCulture)}, which is not a probability; " +
                    "if the scores are logits, set Distillation.TeacherScoresAreLogits (--teacher-scores-are-logits).");
            sum += v;
        }
        if (Math.Abs(sum - 1) > tolerance)
            throw new InvalidDataException($"Row {row} of {what} sums to {sum.ToString("G6", CultureInfo.InvariantCulture)}, not 1: the scores are not probabilities " +
                "(a calibrated classifier gives them; if they are logits, set Distillation.TeacherScoresAreLogits).");
        for (int c = 0; c < p.Length; c++) p[c] = (float)(Math.Clamp(p[c], 0f, 1f) / sum);
        return p;
    }

    private static float[] CheckedLogits(float[] z, long row, string what)
    {
        foreach (var v in z)
            if (!float.IsFinite(v))
                throw new InvalidDataException($"Row {row} of {what} has the logit {v.ToString(CultureInfo.InvariantCulture)}; logits must be finite.");
        return z;
    }

    private static string Capitalized(string s) => char.ToUpperInvariant(s[0]) + s[1..];
}
