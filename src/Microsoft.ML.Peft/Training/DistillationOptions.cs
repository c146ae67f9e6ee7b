namespace Microsoft.ML.Peft.Training;

/// <summary>
/// Knowledge distillation (Hinton, Vinyals and Dean, 2015) for the classification trainers: the student (the PEFT model
/// being trained) learns from a teacher's class probabilities as well as from the hard labels. Each row's loss is
/// <c>Weight * Temperature² * KL(p_teacher^T || p_student^T) + (1 - Weight) * CrossEntropy(label)</c>, where
/// <c>p^T = softmax(log p / T)</c> for the teacher's probabilities <c>p</c> (or <c>softmax(z / T)</c> for logits <c>z</c>)
/// and <c>p_student^T = softmax(z_student / T)</c>; the batch loss is the mean over its rows. The Temperature² factor keeps
/// the soft term's gradients on the scale of the hard term's whatever the temperature.
/// </summary>
/// <remarks>
/// <para>The teacher is either <see cref="Teacher"/>, a fitted transformer of the same task run once over the training rows
/// before training, or <see cref="TeacherScoreColumnName"/>, a column of the training data holding scores computed
/// beforehand. Exactly one must be given.</para>
/// <para>Rows whose label is missing (a missing key) are skipped without distillation; with distillation and
/// <see cref="Weight"/> above 0 they train on the soft term alone (their loss is <c>Weight * T² * KL</c>: the hard term is
/// left out, not reweighted), so unlabelled rows that the teacher scored add to the training data. Rows without teacher
/// scores (an empty vector, or every value missing) train on the hard term alone (<c>(1 - Weight) * CrossEntropy</c>) when
/// <see cref="Weight"/> is below 1. Rows with neither are skipped. The counts are reported on the training channel.</para>
/// <para>The teacher's scores are read once, in the order of the training rows. For image classification the teacher
/// scores each image as its own scoring does (no augmentation) while the student sees the augmented crops.</para>
/// </remarks>
public sealed class DistillationOptions
{
    /// <summary>
    /// A fitted transformer of the same task (a saved or fitted pipeline, or a PEFT classifier itself) whose output has a
    /// vector of class probabilities: the visible column annotated as a multiclass score (as ML.NET's multiclass trainers
    /// and the PEFT classifiers mark their <c>Score</c>), else the column named <c>Score</c>. It is run over the trainer's
    /// input once before training. The input's label is a key; a teacher that cannot read it so (a pipeline that starts with
    /// its own <c>MapValueToKey</c> of the label) is given the label's values instead (<c>MapKeyToValue</c>). The score must
    /// have as many slots as the label has classes; when both the score's slot names and the label's key values are known
    /// they must name the same classes (a different order is mapped). Null when <see cref="TeacherScoreColumnName"/> is used.
    /// </summary>
    public ITransformer? Teacher;

    /// <summary>
    /// A column of the training data (a vector of Single, one value per class in the label's key order, or in the order of
    /// its slot names when it has them) holding the teacher's class probabilities, or its logits with
    /// <see cref="TeacherScoresAreLogits"/>. Null when <see cref="Teacher"/> is used.
    /// </summary>
    public string? TeacherScoreColumnName;

    /// <summary>
    /// The teacher's scores are logits (any real numbers, turned into probabilities by a softmax) rather than probabilities
    /// (each in [0, 1], summing to 1 per row; a row that does not is an error). Default false.
    /// </summary>
    public bool TeacherScoresAreLogits;

    /// <summary>The softmax temperature T of both teacher and student in the soft term (positive; 1 leaves the
    /// probabilities as they are, larger values soften them). Default 2.</summary>
    public float Temperature = 2;

    /// <summary>The soft term's share of the loss, alpha, in [0, 1]: 0 trains on the hard labels only (plain training),
    /// 1 on the teacher only. Default 0.5.</summary>
    public float Weight = 0.5f;

    /// <summary>
    /// Text classification: perturbed copies of each training row added as a transfer set (Tang et al. 2019): in each copy
    /// every word is dropped with <see cref="WordDropProbability"/>, then with <see cref="NGramProbability"/> only an n-gram
    /// of 1 to <see cref="MaxNGram"/> words of the rest is kept; the copies have no label, so the teacher's probabilities
    /// alone teach them. A teacher that fitted its training rows gives them back nearly as hard labels; on perturbed text it
    /// is less sure, and that is what the student can learn from. Needs <see cref="Teacher"/> (it scores the copies). Each
    /// epoch then has (1 + copies) times the rows. Default 0: none.
    /// </summary>
    public int PerturbedCopies;

    /// <summary>The probability that a word of a perturbed copy is dropped. Default 0.1.</summary>
    public float WordDropProbability = 0.1f;

    /// <summary>The probability that a perturbed copy keeps only an n-gram of its words. Default 0.25.</summary>
    public float NGramProbability = 0.25f;

    /// <summary>The longest n-gram a perturbed copy keeps. Default 5.</summary>
    public int MaxNGram = 5;

    /// <summary>Throws <see cref="ArgumentException"/> naming the option at fault (<c>Distillation.Temperature</c>...).</summary>
    internal void Validate()
    {
        const string prefix = "Distillation.";
        if (Teacher is null && TeacherScoreColumnName is null)
            throw new ArgumentException($"Distillation needs a teacher: set {prefix}{nameof(Teacher)} (a fitted transformer) or {prefix}{nameof(TeacherScoreColumnName)} (a column of teacher scores).",
                prefix + nameof(Teacher));
        if (Teacher is not null && TeacherScoreColumnName is not null)
            throw new ArgumentException($"Set only one of {prefix}{nameof(Teacher)} and {prefix}{nameof(TeacherScoreColumnName)}.", prefix + nameof(TeacherScoreColumnName));
        if (TeacherScoreColumnName is not null && string.IsNullOrWhiteSpace(TeacherScoreColumnName))
            throw new ArgumentException($"{prefix}{nameof(TeacherScoreColumnName)} is empty.", prefix + nameof(TeacherScoreColumnName));
        if (!(Temperature > 0) || float.IsInfinity(Temperature))
            throw new ArgumentOutOfRangeException(prefix + nameof(Temperature), Temperature, $"{prefix}{nameof(Temperature)} must be a positive finite number.");
        if (!(Weight >= 0 && Weight <= 1))
            throw new ArgumentOutOfRangeException(prefix + nameof(Weight), Weight, $"{prefix}{nameof(Weight)} must be in [0, 1].");
        if (PerturbedCopies < 0 || PerturbedCopies > 100)
            throw new ArgumentOutOfRangeException(prefix + nameof(PerturbedCopies), PerturbedCopies, $"{prefix}{nameof(PerturbedCopies)} must be from 0 to 100.");
        if (PerturbedCopies > 0 && Teacher is null)
            throw new ArgumentException($"{prefix}{nameof(PerturbedCopies)} needs {prefix}{nameof(Teacher)}: the teacher scores the copies (a column of scores has none for them).", prefix + nameof(PerturbedCopies));
        if (PerturbedCopies > 0 && Weight == 0)
            throw new ArgumentException($"{prefix}{nameof(PerturbedCopies)} needs {prefix}{nameof(Weight)} above 0: the copies have no label, only the teacher teaches them.", prefix + nameof(PerturbedCopies));
        if (!(WordDropProbability >= 0 && WordDropProbability < 1))
            throw new ArgumentOutOfRangeException(prefix + nameof(WordDropProbability), WordDropProbability, $"{prefix}{nameof(WordDropProbability)} must be in [0, 1).");
        if (!(NGramProbability >= 0 && NGramProbability <= 1))
            throw new ArgumentOutOfRangeException(prefix + nameof(NGramProbability), NGramProbability, $"{prefix}{nameof(NGramProbability)} must be in [0, 1].");
        if (MaxNGram < 1) throw new ArgumentOutOfRangeException(prefix + nameof(MaxNGram), MaxNGram, $"{prefix}{nameof(MaxNGram)} must be at least 1.");
    }

    /// <summary>The estimator's schema check: a <see cref="TeacherScoreColumnName"/> must be in the input as a vector of Single.</summary>
    internal void CheckInputShape(SchemaShape inputSchema)
    {
        if (TeacherScoreColumnName is null) return;
        const string option = "Distillation." + nameof(TeacherScoreColumnName);
        if (!inputSchema.TryFindColumn(TeacherScoreColumnName, out var column))
            throw new ArgumentOutOfRangeException(option, $"The input has no column '{TeacherScoreColumnName}' ({option}).");
        if (column.Kind == SchemaShape.Column.VectorKind.Scalar || column.ItemType != Data.NumberDataViewType.Single)
            throw new ArgumentException($"The column '{TeacherScoreColumnName}' ({option}) must be a vector of Single (the teacher's score per class), found {column.ItemType}{(column.Kind == SchemaShape.Column.VectorKind.Scalar ? " scalar" : " vector")}.", option);
    }
}
