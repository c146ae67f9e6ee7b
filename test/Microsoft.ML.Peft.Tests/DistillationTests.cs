using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Classification;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Knowledge distillation of the classification trainers: the loss against hand-computed values, the options' checks, and training on the tiny BERT.</summary>
[TestFixture]
public class DistillationTests
{
    private string tinyBert = null!;

    [OneTimeSetUp]
    public void WriteTinyBert() => tinyBert = TinyBert.WriteDirectory();

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tinyBert, recursive: true);

    /// <summary>A sentence with its label and teacher scores (probabilities of negative, positive).</summary>
    public sealed class ScoredRow
    {
        public string Sentence { get; set; } = "";
        public string Label { get; set; } = "";

        [VectorType(2)]
        public float[] TeacherScore { get; set; } = new float[2];
    }

    private static readonly string[] Classes = { "negative", "positive" };

    /// <summary>The label as a key over <see cref="Classes"/> in that order (a label outside them is a missing key).</summary>
    private static IEstimator<ITransformer> MapLabel(MLContext ml) =>
        ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Data.LoadFromEnumerable(Classes.Select(c => new ClassRow { Label = c })));

    /// <summary>One class: the key data of <see cref="MapLabel"/>.</summary>
    public sealed class ClassRow
    {
        public string Label { get; set; } = "";
    }

    private static List<ScoredRow> Scored(IEnumerable<SentenceRow> rows, Func<int, float[]> scores) =>
        rows.Select((r, i) => new ScoredRow { Sentence = r.Sentence, Label = r.Label, TeacherScore = scores(i) }).ToList();

    [Test]
    public void LossIsTheHandComputedMixOfTemperedKlAndCrossEntropy()
    {
        // Three rows, two classes, T = 2, alpha = 0.25:
        //  row 1: logits (1, -1), label 0, teacher (0.8, 0.2) -> p^T = (sqrt .8, sqrt .2) normalised = (2/3, 1/3);
        //         student at T: softmax(0.5, -0.5) = (s(1), s(-1)) with s the logistic function.
        //  row 2: logits (0, 2), no label, teacher (0.5, 0.5): soft term only.
        //  row 3: logits (0.5, 0.5), label 1, no teacher scores: hard term only, CE = ln 2.
        static double S(double x) => 1 / (1 + Math.Exp(-x));
        double kl1 = 2.0 / 3 * Math.Log(2.0 / 3 / S(1)) + 1.0 / 3 * Math.Log(1.0 / 3 / S(-1));
        double ce1 = Math.Log(1 + Math.Exp(-2));
        double kl2 = 0.5 * Math.Log(0.5 / S(-1)) + 0.5 * Math.Log(0.5 / S(1));
        double ce3 = Math.Log(2);
        double expected = (0.25 * 4 * (kl1 + kl2) + 0.75 * (ce1 + ce3)) / 3; // 0.248417...

        var tempered1 = DistillationLoss.TemperedLogProbabilities(new[] { 0.8f, 0.2f }, logits: false, temperature: 2);
        Assert.That(tempered1[0], Is.EqualTo(Math.Log(2.0 / 3)).Within(1e-6));
        Assert.That(tempered1[1], Is.EqualTo(Math.Log(1.0 / 3)).Within(1e-6));
        var tempered2 = DistillationLoss.TemperedLogProbabilities(new[] { 0.5f, 0.5f }, logits: false, temperature: 2);

        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 1, -1, 0, 2, 0.5f, 0.5f }, new long[] { 3, 2 });
        var labels = tensor(new long[] { 0, DistillationLoss.NoLabel, 1 });
        var teacher = tensor(tempered1.Concat(tempered2).Concat(new float[] { 0, 0 }).ToArray(), new long[] { 3, 2 });
        var has = tensor(new float[] { 1, 1, 0 });
        var loss = DistillationLoss.Compute(logits, labels, teacher, has, temperature: 2, weight: 0.25f).item<float>();
        Assert.That(loss, Is.EqualTo(expected).Within(1e-6));
        Assert.That(expected, Is.EqualTo(0.248417).Within(1e-6), "the hand computation itself");
    }

    [Test]
    public void TeacherLogitsAreSoftenedByTheTemperatureAndAStudentEqualToItsTeacherHasNoSoftLoss()
    {
        // Logits (2, 0) at T = 2: softmax(1, 0) = (e / (1 + e), 1 / (1 + e)).
        var tempered = DistillationLoss.TemperedLogProbabilities(new[] { 2f, 0f }, logits: true, temperature: 2);
        Assert.That(Math.Exp(tempered[0]), Is.EqualTo(Math.E / (1 + Math.E)).Within(1e-6));
        Assert.That(Math.Exp(tempered[1]), Is.EqualTo(1 / (1 + Math.E)).Within(1e-6));

        // A student whose logits are the teacher's: KL 0, so with weight 1 the loss is 0; with weight 0 it is the plain cross-entropy.
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 2, 0 }, new long[] { 1, 2 });
        var teacher = tensor(tempered, new long[] { 1, 2 });
        var labels = tensor(new long[] { 1 });
        Assert.That(DistillationLoss.Compute(logits, labels, teacher, ones(1), 2, 1).item<float>(), Is.EqualTo(0).Within(1e-6));
        Assert.That(DistillationLoss.Compute(logits, labels, teacher, ones(1), 2, 0).item<float>(), Is.EqualTo(Math.Log(1 + Math.Exp(2))).Within(1e-5));
    }

    [Test]
    public void OptionsAreCheckedAndErrorsNameTheOption()
    {
        var ml = new MLContext(1);
        ArgumentException Refused(DistillationOptions distillation)
        {
            var options = TinyTraining.Options(tinyBert);
            options.Distillation = distillation;
            return Assert.Catch<ArgumentException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options))!;
        }
        var teacher = ml.Transforms.CopyColumns("A", "Sentence").Fit(ml.Data.LoadFromEnumerable(TinyTraining.Rows(2, 1)));
        Assert.That(Refused(new DistillationOptions()).ParamName, Is.EqualTo("Distillation.Teacher"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, TeacherScoreColumnName = "T" }).ParamName, Is.EqualTo("Distillation.TeacherScoreColumnName"));
        Assert.That(Refused(new DistillationOptions { TeacherScoreColumnName = " " }).ParamName, Is.EqualTo("Distillation.TeacherScoreColumnName"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, Temperature = 0 }).ParamName, Is.EqualTo("Distillation.Temperature"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, Weight = 1.5f }).ParamName, Is.EqualTo("Distillation.Weight"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, Weight = float.NaN }).Message, Does.Contain("[0, 1]"));
        Assert.That(Refused(new DistillationOptions { TeacherScoreColumnName = "T", PerturbedCopies = 2 }).ParamName, Is.EqualTo("Distillation.PerturbedCopies"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, PerturbedCopies = 2, Weight = 0 }).ParamName, Is.EqualTo("Distillation.PerturbedCopies"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, PerturbedCopies = -1 }).ParamName, Is.EqualTo("Distillation.PerturbedCopies"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, PerturbedCopies = 1, WordDropProbability = 1 }).ParamName, Is.EqualTo("Distillation.WordDropProbability"));
        Assert.That(Refused(new DistillationOptions { Teacher = teacher, PerturbedCopies = 1, MaxNGram = 0 }).ParamName, Is.EqualTo("Distillation.MaxNGram"));
    }

    [Test]
    public void PerturbedCopiesKeepTheWordsInOrderAndDropOrCutSome()
    {
        var random = new Random(3);
        const string text = "one two three four five six seven eight";
        var words = text.Split(' ');
        Assert.That(PerturbedCopies.Perturb(text, random, 0, 0, 5), Is.EqualTo(text), "nothing dropped, no n-gram");
        for (int i = 0; i < 200; i++)
        {
            var copy = PerturbedCopies.Perturb(text, random, 0.3f, 0.5f, 3).Split(' ');
            Assert.That(copy, Is.Not.Empty);
            // A subsequence of the words, in their order.
            var positions = copy.Select(w => Array.IndexOf(words, w)).ToList();
            Assert.That(positions, Is.Ordered.And.Unique.And.All.GreaterThanOrEqualTo(0));
        }
        // Always an n-gram of at most 3 consecutive words when nothing is dropped.
        for (int i = 0; i < 50; i++)
        {
            var copy = PerturbedCopies.Perturb(text, random, 0, 1, 3);
            Assert.That(copy.Split(' ').Length, Is.InRange(1, 3));
            Assert.That(text, Does.Contain(copy));
        }
        Assert.That(PerturbedCopies.Perturb("word", random, 0.99f, 1, 5), Is.EqualTo("word"), "a copy is never empty");
    }

    [Test]
    public void PerturbedCopiesFollowEachRowWithoutALabelAndAreTheSameOnEveryRead()
    {
        var ml = new MLContext(1);
        var rows = new[] { "a good film with a fine cast", "a dull plot and a bad ending", "the actors were great" }
            .Select((t, i) => new SentenceRow { Sentence = t, Label = Classes[i % 2] }).ToList();
        var data = MapLabel(ml).Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        var options = new DistillationOptions { PerturbedCopies = 2, WordDropProbability = 0.3f, NGramProbability = 0.5f };
        var host = (IHostEnvironment)ml;
        var copied = PerturbedCopies.WithCopies(host, data, new[] { "Sentence" }, "Label", options, seed: 7);
        var first = copied.GetColumn<string>("Sentence").ToList();
        var labels = copied.GetColumn<uint>("Label").ToList();
        // The three rows first, unchanged, then each row's two copies, their label a missing key (0).
        Assert.That(first, Has.Count.EqualTo(9));
        Assert.That(first.Take(3), Is.EqualTo(rows.Select(r => r.Sentence)));
        Assert.That(labels.Take(3), Is.EqualTo(new uint[] { 1, 2, 1 }));
        Assert.That(labels.Skip(3), Has.All.EqualTo(0u));
        for (int i = 0; i < 6; i++)
        {
            var source = rows[i / 2].Sentence.Split(' ');
            Assert.That(first[3 + i].Split(' '), Is.SubsetOf(source), $"copy {i} comes from row {i / 2}");
        }
        Assert.That(first.Skip(3).Distinct().Count(), Is.GreaterThan(1), "the copies differ");
        Assert.That(copied.GetColumn<string>("Sentence").ToList(), Is.EqualTo(first), "a second read gives the same copies");
        var other = PerturbedCopies.WithCopies(host, data, new[] { "Sentence" }, "Label", options, seed: 8).GetColumn<string>("Sentence").ToList();
        Assert.That(other.Skip(3), Is.Not.EqualTo(first.Skip(3)), "another seed, other copies");
    }

    [Test]
    public void PerturbedCopiesAreScoredByTheTeacherAndTrainOnItsProbabilities()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var rows = ml.Data.LoadFromEnumerable(TinyTraining.Rows(24, seed: 1));
        // A cheap teacher of the same task: ML.NET's own text featurizer and maximum-entropy classifier.
        var teacher = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.Text.FeaturizeText("Features", "Sentence"))
            .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy(maximumNumberOfIterations: 20))
            .Fit(rows);
        var options = TinyTraining.Options(tinyBert);
        options.MaxEpoch = 1;
        options.Distillation = new DistillationOptions { Teacher = teacher, PerturbedCopies = 3 };
        var student = MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(rows);
        try
        {
            Assert.That(log, Has.Some.Contains("3 perturbed copies of each training row"));
            Assert.That(log, Has.Some.Contains("24 rows train on both terms, 72 on the teacher alone"));
        }
        finally
        {
            foreach (var t in student) (t as IDisposable)?.Dispose();
        }
    }

    [Test]
    public void BadTeachersAndScoresAreClearErrors()
    {
        var ml = new MLContext(1);
        var rows = TinyTraining.Rows(8, 1);
        Exception Fit<T>(IEnumerable<T> data, DistillationOptions distillation) where T : class
        {
            var options = TinyTraining.Options(tinyBert);
            options.Distillation = distillation;
            return Assert.Catch(() => MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(ml.Data.LoadFromEnumerable(data)))!;
        }

        var missing = Fit(rows, new DistillationOptions { TeacherScoreColumnName = "Scores" });
        Assert.That(missing.Message, Does.Contain("'Scores'").And.Contain("Distillation.TeacherScoreColumnName"));

        var notProbabilities = Fit(Scored(rows, i => new[] { 0.7f, 0.7f }), new DistillationOptions { TeacherScoreColumnName = "TeacherScore" });
        Assert.That(notProbabilities, Is.InstanceOf<InvalidDataException>());
        Assert.That(notProbabilities.Message, Does.Contain("Row 1").And.Contain("sums to 1.4").And.Contain("TeacherScoresAreLogits"));

        var partlyMissing = Fit(Scored(rows, i => new[] { 0.5f, float.NaN }), new DistillationOptions { TeacherScoreColumnName = "TeacherScore" });
        Assert.That(partlyMissing.Message, Does.Contain("missing (NaN)"));

        // A teacher that adds no score column is no classifier.
        var notAClassifier = ml.Transforms.CopyColumns("Copy", "Sentence").Fit(ml.Data.LoadFromEnumerable(rows));
        var noScore = Fit(rows, new DistillationOptions { Teacher = notAClassifier });
        Assert.That(noScore.Message, Does.Contain("Distillation.Teacher").And.Contain("no multiclass score column"));

        // A teacher of another task: three classes for a two-class label.
        var wrongCount = Assert.Catch(() =>
        {
            var options = TinyTraining.Options(tinyBert);
            options.Distillation = new DistillationOptions { TeacherScoreColumnName = "TeacherScore" };
            var data = ml.Data.LoadFromEnumerable(rows.Select(r => new ThreeScoresRow { Sentence = r.Sentence, Label = r.Label }));
            MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        })!;
        Assert.That(wrongCount.Message, Does.Contain("3 classes").And.Contain("has 2"));
    }

    /// <summary>A row whose teacher scores have three classes.</summary>
    public sealed class ThreeScoresRow
    {
        public string Sentence { get; set; } = "";
        public string Label { get; set; } = "";

        [VectorType(3)]
        public float[] TeacherScore { get; set; } = { 0.2f, 0.3f, 0.5f };
    }

    [Test]
    public void ScoresNamedByClassAreReadInTheLabelsOrderAndOtherNamesAreRefused()
    {
        var ml = new MLContext(1);
        var host = ((IHostEnvironment)ml).Register("test");
        using var ch = host.Start("test");
        var label = new LabelInfo(2, "Text", Classes);
        IDataView WithSlotNames(params string[] names)
        {
            var schema = SchemaDefinition.Create(typeof(ScoredRow));
            var slotNames = new VBuffer<ReadOnlyMemory<char>>(names.Length, names.Select(n => n.AsMemory()).ToArray());
            schema[nameof(ScoredRow.TeacherScore)].AddAnnotation("SlotNames", slotNames, new VectorDataViewType(TextDataViewType.Instance, names.Length));
            return ml.Data.LoadFromEnumerable(new[] { new ScoredRow { TeacherScore = new[] { 0.9f, 0.1f } } }, schema);
        }
        var options = new DistillationOptions { TeacherScoreColumnName = nameof(ScoredRow.TeacherScore) };

        var same = TeacherScores.Read(options, WithSlotNames("negative", "positive"), label, "Label", host, ch);
        Assert.That(same[0], Is.EqualTo(new[] { 0.9f, 0.1f }).Within(1e-6f));
        var swapped = TeacherScores.Read(options, WithSlotNames("positive", "negative"), label, "Label", host, ch);
        Assert.That(swapped[0], Is.EqualTo(new[] { 0.1f, 0.9f }).Within(1e-6f), "the score of 'negative' is the second slot");
        var other = Assert.Throws<ArgumentException>(() => TeacherScores.Read(options, WithSlotNames("cat", "dog"), label, "Label", host, ch))!;
        Assert.That(other.Message, Does.Contain("[cat, dog]").And.Contain("[negative, positive]"));
        Assert.That(other.ParamName, Is.EqualTo("Distillation.TeacherScoreColumnName"));
    }

    [Test]
    public void WeightZeroTrainsExactlyAsWithoutDistillation()
    {
        var rows = TinyTraining.Rows(40, seed: 3);
        var random = new Random(5);
        var data = Scored(rows, _ =>
        {
            float p = (float)random.NextDouble();
            return new[] { p, 1 - p };
        });
        (PeftTextClassificationTransformer Model, float[][] Scores) Fit(DistillationOptions? distillation)
        {
            var ml = new MLContext(1);
            var options = TinyTraining.Options(tinyBert);
            options.MaxEpoch = 2;
            options.Distillation = distillation;
            var view = ml.Data.LoadFromEnumerable(data);
            var model = MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(view);
            var scores = ml.Data.CreateEnumerable<SentencePrediction>(model.Transform(view), reuseRowObject: false).Select(p => p.Score).ToArray();
            return (model.OfType<PeftTextClassificationTransformer>().Single(), scores);
        }
        var (plain, plainScores) = Fit(null);
        var (weightZero, zeroScores) = Fit(new DistillationOptions { TeacherScoreColumnName = nameof(ScoredRow.TeacherScore), Weight = 0 });
        var (distilled, distilledScores) = Fit(new DistillationOptions { TeacherScoreColumnName = nameof(ScoredRow.TeacherScore), Weight = 0.5f });
        try
        {
            for (int e = 0; e < plain.TrainingHistory.Count; e++)
                Assert.That(weightZero.TrainingHistory[e].TrainingLoss, Is.EqualTo(plain.TrainingHistory[e].TrainingLoss).Within(1e-6), $"epoch {e + 1}'s loss");
            for (int i = 0; i < plainScores.Length; i++)
                Assert.That(zeroScores[i], Is.EqualTo(plainScores[i]).Within(1e-5f), $"row {i}");
            Assert.That(distilled.TrainingHistory[0].TrainingLoss, Is.Not.EqualTo(plain.TrainingHistory[0].TrainingLoss).Within(1e-4), "weight 0.5 does change the loss");
            Assert.That(distilledScores[0], Is.Not.EqualTo(plainScores[0]).Within(1e-5f));
        }
        finally
        {
            plain.Dispose();
            weightZero.Dispose();
            distilled.Dispose();
        }
    }

    [Test]
    public void StudentLearnsFromAFittedTeacherPipelineAloneWhenNoRowHasALabel()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        // The teacher: a whole pipeline (its own MapValueToKey of the label first) fitted on labelled rows.
        var teacherOptions = TinyTraining.Options(tinyBert);
        teacherOptions.MaxEpoch = 6;
        var teacherRows = ml.Data.LoadFromEnumerable(TinyTraining.Rows(160, seed: 1));
        var teacher = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(teacherOptions))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(teacherRows);

        // The student's rows: other sentences, none labelled (the label is a missing key). Without a teacher that is an error.
        var unlabelled = TinyTraining.Rows(160, seed: 4).Select(r => new SentenceRow { Sentence = r.Sentence, Label = "?" }).ToList();
        var noTeacher = Assert.Throws<ArgumentException>(() => MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(TinyTraining.Options(tinyBert)))
            .Fit(ml.Data.LoadFromEnumerable(unlabelled)))!;
        Assert.That(noTeacher.Message, Does.Contain("no row with a label"));

        var studentOptions = TinyTraining.Options(tinyBert);
        studentOptions.MaxEpoch = 8;
        studentOptions.Distillation = new DistillationOptions { Teacher = teacher, Temperature = 2, Weight = 0.5f };
        var student = MapLabel(ml).Append(ml.MulticlassClassification.Trainers.PeftTextClassification(studentOptions))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(ml.Data.LoadFromEnumerable(unlabelled));
        try
        {
            Assert.That(log, Has.Some.Contains("0 rows train on both terms, 160 on the teacher alone"));
            Assert.That(log, Has.Some.Contains("reads the label 'Label' as its values"));
            var test = ml.Data.LoadFromEnumerable(TinyTraining.Rows(60, seed: 2));
            var teacherAccuracy = ml.MulticlassClassification.Evaluate(teacher.Transform(test)).MicroAccuracy;
            var studentAccuracy = ml.MulticlassClassification.Evaluate(student.Transform(test)).MicroAccuracy;
            var agreement = ml.Data.CreateEnumerable<SentencePrediction>(teacher.Transform(test), false)
                .Zip(ml.Data.CreateEnumerable<SentencePrediction>(student.Transform(test), false))
                .Average(p => p.First.PredictedLabel == p.Second.PredictedLabel ? 1.0 : 0.0);
            TestContext.Out.WriteLine($"teacher accuracy {teacherAccuracy:F3}, student (no labels) {studentAccuracy:F3}, agreement {agreement:F3}");
            Assert.That(teacherAccuracy, Is.GreaterThan(0.75), "the teacher learnt the task");
            Assert.That(studentAccuracy, Is.GreaterThan(0.75), "the student learnt it from the teacher alone");
            Assert.That(agreement, Is.GreaterThan(0.8));
        }
        finally
        {
            foreach (var t in teacher.Concat(student)) (t as IDisposable)?.Dispose();
        }
    }
}
