using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using Microsoft.ML.Runtime;

namespace Peft.Bench;

/// <summary>
/// <c>distill</c>: knowledge distillation on SST-2. A teacher (full fine-tuning of MiniLM by default, or an ensemble of
/// LoRA models whose averaged probabilities reach the student as a column of scores) and two LoRA
/// students with the same recipe, one on the hard labels and one distilled from the teacher, all trained on the same
/// first rows of <c>sst2/train.tsv</c> and evaluated on <c>sst2/test-sentences.tsv</c>. Target: the distilled student
/// closes at least half of the gap between the hard-label student and the teacher.
/// </summary>
internal static class DistillationBenchmark
{
    private const double GapTarget = 0.5;

    /// <summary>The results keys of the distilled students the target counts: the best of them must close <see cref="GapTarget"/>.</summary>
    private static readonly string[] TargetGapKeys = { "gapClosed", "gapClosedWithPerturbedCopies", "gapClosedWithUnlabelledRows" };

    /// <summary>The largest share of the gap a counted distilled student closes, or null when there is no gap or no such student.</summary>
    private static double? BestGapClosed(JsonObject report) => TargetGapKeys.Select(k => report[k]?.GetValue<double>()).Max();

    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- distill [options]\n" +
        "  --train-rows N            first N rows of sst2/train.tsv, for the teacher and both students (default 8000)\n" +
        "  --eval-rows N             first N rows of sst2/test-sentences.tsv (default all 1,821)\n" +
        "  --teacher full|lora|ensemble|crossfit  the teacher: full fine-tuning (default), LoRA r=8 on all-linear, an ensemble of\n" +
        "                            --teacher-members LoRA models (other seeds) whose averaged probabilities teach, or\n" +
        "                            cross-fitted full fine-tuning: --teacher-members models, each trained on the rows of the\n" +
        "                            other folds (row i is in fold i mod K); each training row is taught by the model that\n" +
        "                            did not train on it, and the teacher on the test rows is their average\n" +
        "  --teacher-members K       models in an ensemble teacher (default 4; crossfit 2)\n" +
        "  --teacher-epochs N        the teacher's passes over the rows (default 3; ensemble members 1)\n" +
        "  --teacher-learning-rate X the teacher's peak learning rate (default 5e-5 for full, 2e-3 for lora and ensemble)\n" +
        "  --teacher-model FILE      use this saved teacher (a model of --save-teacher) instead of training one\n" +
        "  --save-teacher FILE       save the trained teacher, to try students without training it again\n" +
        "  --save-teacher-scores FILE  (ensemble, crossfit) save the teacher's probabilities on the training and test rows\n" +
        "  --teacher-scores FILE     (ensemble, crossfit) use the probabilities --save-teacher-scores saved instead of training\n" +
        "  --epochs N                the students' passes over the rows (default 1)\n" +
        "  --learning-rate X         the students' peak learning rate (default 2e-3)\n" +
        "  --rank N, --alpha X       the students' LoRA rank and alpha (default 8, 16)\n" +
        "  --targets A,B             the students' LoRA target modules (default all-linear)\n" +
        "  --student-layers N        the students' base model is MiniLM cut to its first N of 6 encoder layers\n" +
        "                            (BaseModelSource.WithLayers), a smaller and faster model than the teacher's\n" +
        "  --temperature X           distillation temperature T (default 2)\n" +
        "  --weight X                distillation weight alpha in [0, 1] (default 0.5)\n" +
        "  --max-length N            longest token sequence (default 128)\n" +
        "  --unlabelled-rows N       also train a distilled student on the next N rows of sst2/train.tsv without their labels\n" +
        "                            (the teacher's probabilities only; a single teacher), reported beside the target rows\n" +
        "  --self-teacher-control    with --unlabelled-rows, also a control: the same student taught on the unlabelled rows by the\n" +
        "                            student trained on the labels (a teacher of its own size: pseudo-labels, not a larger model)\n" +
        "  --perturbed-copies K      also train a distilled student with K perturbed copies of each training row that only the\n" +
        "                            teacher teaches (DistillationOptions.PerturbedCopies: words dropped, n-grams kept; Tang et al. 2019)\n" +
        "  --hard-epochs N            also train the student on the labels for N epochs (a control with as many steps)\n" +
        "  --seed N                  seed (default 1)\n" +
        "  --table-from FILE         write the Markdown table of an earlier results file beside it again (no training)\n" +
        "  --output FILE             results file (default bench/results/distill-sst2.json; the table goes beside it as .md)\n" +
        "  --data DIR                data folder (default ../shared/data beside the repository root)";

    private sealed class Arguments
    {
        public int TrainRows = BenchArguments.DefaultTrainRows;
        public int? EvalRows;
        public string Teacher = "full";
        public int? TeacherEpochsGiven;
        public int? TeacherMembersGiven;
        public int TeacherMembers => TeacherMembersGiven ?? (Teacher == "crossfit" ? 2 : 4);
        public float? TeacherLearningRate;
        public string? TeacherModel, SaveTeacher, TeacherScores, SaveTeacherScores;
        public int Epochs = BenchArguments.DefaultEpochs;
        public float LearningRate = BenchArguments.DefaultLearningRate;
        public int Rank = BenchArguments.DefaultRank;
        public float Alpha = BenchArguments.DefaultAlpha;
        public string[] Targets = { BenchArguments.DefaultTargets };
        public float Temperature = new DistillationOptions().Temperature;
        public float Weight = new DistillationOptions().Weight;
        public int MaxLength = BenchArguments.DefaultMaxLength;
        public int UnlabelledRows;
        public int? StudentLayers;
        public bool SelfTeacherControl;
        public string? TableFrom;
        public int Augment;
        public int? HardEpochs;
        public int Seed = BenchArguments.DefaultSeed;
        public string? Output, Data;

        public float TeacherRate => TeacherLearningRate ?? (Teacher is "full" or "crossfit" ? 5e-5f : BenchArguments.DefaultLearningRate);
        public int TeacherEpochs => TeacherEpochsGiven ?? (Teacher == "ensemble" ? 1 : 3);
        public bool ManyTeachers => Teacher is "ensemble" or "crossfit";
    }

    private static Arguments Parse(IReadOnlyList<string> args)
    {
        var a = new Arguments();
        for (int i = 1; i < args.Count; i++)
        {
            string option = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{option} needs a value.");
            int Positive() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{option} must be a positive integer.");
            float Number(float min, float max)
            {
                var text = Value();
                return float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max && float.IsFinite(v)
                    ? v
                    : throw new ArgumentException($"{option} must be a number in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}], got '{text}'.");
            }
            switch (option)
            {
                case "--train-rows": a.TrainRows = Positive(); break;
                case "--eval-rows": a.EvalRows = Positive(); break;
                case "--teacher":
                    a.Teacher = Value();
                    if (a.Teacher is not ("full" or "lora" or "ensemble" or "crossfit")) throw new ArgumentException("--teacher must be full, lora, ensemble or crossfit.");
                    break;
                case "--teacher-epochs": a.TeacherEpochsGiven = Positive(); break;
                case "--teacher-members": a.TeacherMembersGiven = Positive(); break;
                case "--teacher-learning-rate": a.TeacherLearningRate = Number(1e-8f, 1); break;
                case "--teacher-model": a.TeacherModel = Value(); break;
                case "--save-teacher": a.SaveTeacher = Value(); break;
                case "--teacher-scores": a.TeacherScores = Value(); break;
                case "--save-teacher-scores": a.SaveTeacherScores = Value(); break;
                case "--epochs": a.Epochs = Positive(); break;
                case "--learning-rate": a.LearningRate = Number(1e-8f, 1); break;
                case "--rank": a.Rank = Positive(); break;
                case "--alpha": a.Alpha = Number(1e-6f, 1e6f); break;
                case "--targets": a.Targets = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
                case "--temperature": a.Temperature = Number(1e-3f, 1000); break;
                case "--weight": a.Weight = Number(0, 1); break;
                case "--max-length": a.MaxLength = Positive(); break;
                case "--unlabelled-rows": a.UnlabelledRows = Positive(); break;
                case "--student-layers": a.StudentLayers = Positive(); break;
                case "--self-teacher-control": a.SelfTeacherControl = true; break;
                case "--table-from": a.TableFrom = Value(); break;
                case "--perturbed-copies": a.Augment = Positive(); break;
                case "--hard-epochs": a.HardEpochs = Positive(); break;
                case "--seed": a.Seed = int.Parse(Value(), NumberStyles.None, CultureInfo.InvariantCulture); break;
                case "--output": a.Output = Value(); break;
                case "--data": a.Data = Value(); break;
                default: throw new ArgumentException($"Unknown option '{option}'.");
            }
        }
        if (a.TeacherModel is not null && a.SaveTeacher is not null) throw new ArgumentException("--teacher-model and --save-teacher exclude each other.");
        if (a.Teacher == "crossfit" && a.TeacherMembers < 2) throw new ArgumentException("--teacher crossfit needs at least 2 --teacher-members (folds).");
        if (a.ManyTeachers && (a.TeacherModel is not null || a.SaveTeacher is not null))
            throw new ArgumentException("--teacher-model and --save-teacher apply to a single teacher (full or lora), not an ensemble.");
        if (a.SelfTeacherControl && a.UnlabelledRows == 0) throw new ArgumentException("--self-teacher-control needs --unlabelled-rows: it teaches the student those rows.");
        if (a.UnlabelledRows > 0 && a.ManyTeachers) throw new ArgumentException("--unlabelled-rows needs a single teacher (full or lora), not an ensemble.");
        if ((a.TeacherScores ?? a.SaveTeacherScores) is not null && !a.ManyTeachers)
            throw new ArgumentException("--teacher-scores and --save-teacher-scores apply to --teacher ensemble or crossfit.");
        if (a.TeacherScores is not null && a.SaveTeacherScores is not null) throw new ArgumentException("--teacher-scores and --save-teacher-scores exclude each other.");
        if (a.TeacherScores is not null && !File.Exists(a.TeacherScores)) throw new FileNotFoundException($"The teacher scores {a.TeacherScores} (--teacher-scores) do not exist.", a.TeacherScores);
        if (a.TeacherModel is not null && !File.Exists(a.TeacherModel)) throw new FileNotFoundException($"The teacher model {a.TeacherModel} (--teacher-model) does not exist.", a.TeacherModel);
        return a;
    }

    /// <summary>An ensemble's or cross-fitted teacher's probabilities (--save-teacher-scores, --teacher-scores).</summary>
    private sealed record SavedTeacherScores(string Description, double? Seconds, long TrainableParameters, float[][] TrainScores, float[][] TestScores);

    /// <summary>One trained model's figures.</summary>
    private sealed record Row(string Name, string Description, double Accuracy, double MacroF1, double? TrainSeconds, long TrainableParameters, double? ScoreSeconds = null);

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var a = Parse(args);
        if (a.TableFrom is not null)
        {
            var saved = JsonNode.Parse(File.ReadAllText(a.TableFrom)) as JsonObject
                ?? throw new InvalidDataException($"{a.TableFrom} (--table-from) is not a distill results file.");
            var savedTable = Table(saved);
            File.WriteAllText(Path.ChangeExtension(a.TableFrom, ".md"), savedTable);
            Console.Write(savedTable);
            return 0;
        }
        var dataFolder = Path.GetFullPath(a.Data ?? Path.Combine(root, BenchArguments.DefaultDataPath));
        // The training rows and, after them, the unlabelled rows of --unlabelled-rows: one read of the file.
        var trainFileRows = ReadRows(Path.Combine(dataFolder, "sst2", "train.tsv"), a.TrainRows + a.UnlabelledRows);
        var trainRows = trainFileRows.Take(a.TrainRows).ToList();
        var testRows = ReadRows(Path.Combine(dataFolder, "sst2", "test-sentences.tsv"), a.EvalRows);
        var resultsFile = Path.GetFullPath(a.Output ?? Path.Combine(root, "bench", "results", "distill-sst2.json"));
        var loadAtStart = MethodComparison.LoadAverage();
        Program.Log($"distill: {trainRows.Count} training rows of sst2/train.tsv, {testRows.Count} evaluation rows of sst2/test-sentences.tsv, " +
            $"{Environment.ProcessorCount} cores.");

        var ml = new MLContext(a.Seed);
        ml.Log += (_, e) =>
        {
            if (e.Kind is ChannelMessageKind.Warning or ChannelMessageKind.Error ||
                (e.Kind == ChannelMessageKind.Info && e.Source.StartsWith("PeftTextClassification", StringComparison.Ordinal)))
                Program.Log(e.Message);
        };
        var train = ml.Data.LoadFromEnumerable(trainRows);
        var test = ml.Data.LoadFromEnumerable(testRows);
        var labels = ml.Data.LoadFromEnumerable(trainRows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).Select(l => new LabelRow { Label = l }).ToList());

        IEstimator<ITransformer> Pipeline(PeftTextClassificationTrainer.Options options) =>
            ml.Transforms.Conversion.MapValueToKey(nameof(SentimentRow.Label), keyData: labels)
                .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue(nameof(MulticlassPrediction.PredictedLabel)));
        PeftTextClassificationTrainer.Options Options(PeftMethodOptions method, int epochs, float learningRate) => new()
        {
            Sentence1ColumnName = nameof(SentimentRow.Sentence),
            MaxEpoch = epochs,
            MaxSequenceLength = a.MaxLength,
            LearningRate = learningRate,
            Seed = a.Seed,
            Method = method,
        };
        var warmup = ml.Data.TakeRows(test, 64);
        Row Measure(string name, string description, ITransformer model, double? seconds)
        {
            // Scoring speed: the test rows once through Transform and the evaluator, after a few rows to warm the model up.
            ml.MulticlassClassification.Evaluate(model.Transform(warmup), labelColumnName: nameof(SentimentRow.Label));
            var scoreWatch = Stopwatch.StartNew();
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test), labelColumnName: nameof(SentimentRow.Label));
            double scoreSeconds = Seconds(scoreWatch);
            var peft = ((IEnumerable<ITransformer>)model).OfType<PeftTextClassificationTransformer>().Single();
            var row = new Row(name, description, metrics.MicroAccuracy, MethodResult.MacroF1Of(metrics.ConfusionMatrix), seconds, peft.TrainableParameterCount, scoreSeconds);
            var time = seconds is double s ? string.Create(CultureInfo.InvariantCulture, $", train {s:F1} s") : "";
            Program.Log(string.Create(CultureInfo.InvariantCulture, $"{name} ({description}): accuracy {row.Accuracy:F4}, macro-F1 {row.MacroF1:F4}{time}, scoring {scoreSeconds:F1} s"));
            return row;
        }
        static double Seconds(Stopwatch watch) => Math.Round(watch.Elapsed.TotalSeconds, 2);

        // The teacher: one model, or an ensemble whose averaged probabilities go to the student as a column of scores.
        ITransformer? teacher = null;
        float[][]? ensembleTrainScores = null;
        double? teacherSeconds = null;
        string teacherDescription;
        var rows = new List<Row>();
        if (a.ManyTeachers)
        {
            bool crossfit = a.Teacher == "crossfit";
            teacherDescription = crossfit
                ? string.Create(CultureInfo.InvariantCulture,
                    $"cross-fitted full fine-tuning: {a.TeacherMembers} models, each on the other folds' rows (lr {a.TeacherRate:G}, {a.TeacherEpochs} epoch(s)); each training row taught by the model that did not see it, test rows by their average")
                : string.Create(CultureInfo.InvariantCulture,
                    $"ensemble of {a.TeacherMembers} LoRA r=8 all-linear (seeds {a.Seed + 1}-{a.Seed + a.TeacherMembers}), lr {a.TeacherRate:G}, {a.TeacherEpochs} epoch(s) each");
            var classes = trainRows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).ToList();
            float[][] testScores;
            long parameters;
            if (a.TeacherScores is not null)
            {
                var saved = JsonSerializer.Deserialize<SavedTeacherScores>(File.ReadAllText(a.TeacherScores))
                    ?? throw new InvalidDataException($"{a.TeacherScores} (--teacher-scores) holds no teacher scores.");
                if (saved.TrainScores.Length != trainRows.Count || saved.TestScores.Length != testRows.Count || saved.TrainScores.Concat(saved.TestScores).Any(p => p.Length != classes.Count))
                    throw new InvalidDataException($"{a.TeacherScores} (--teacher-scores) scores {saved.TrainScores.Length} training and {saved.TestScores.Length} test rows; " +
                        $"this run has {trainRows.Count} and {testRows.Count} with {classes.Count} classes: use the same --train-rows and --eval-rows.");
                teacherDescription = saved.Description + $" (scores loaded from {Path.GetFileName(a.TeacherScores)})";
                (ensembleTrainScores, testScores, teacherSeconds, parameters) = (saved.TrainScores, saved.TestScores, saved.Seconds, saved.TrainableParameters);
            }
            else
            {
                Program.Log($"teacher: {teacherDescription} ...");
                var watch = Stopwatch.StartNew();
                var members = new List<ITransformer>();
                for (int k = 0; k < a.TeacherMembers; k++)
                {
                    var options = Options(crossfit ? new FullFineTuningOptions() : new LoraOptions(), a.TeacherEpochs, a.TeacherRate);
                    options.Seed = a.Seed + k + 1;
                    var memberRows = crossfit ? trainRows.Where((_, i) => i % a.TeacherMembers != k).ToList() : trainRows;
                    members.Add(Pipeline(options).Fit(ml.Data.LoadFromEnumerable(memberRows)));
                }
                if (crossfit)
                {
                    // Out of fold: row i is scored by the member that left its fold (i mod K) out.
                    ensembleTrainScores = new float[trainRows.Count][];
                    for (int k = 0; k < a.TeacherMembers; k++)
                    {
                        var fold = Enumerable.Range(0, trainRows.Count).Where(i => i % a.TeacherMembers == k).ToList();
                        var scores = AverageScores(ml, new[] { members[k] }, ml.Data.LoadFromEnumerable(fold.Select(i => trainRows[i]).ToList()));
                        for (int j = 0; j < fold.Count; j++) ensembleTrainScores[fold[j]] = scores[j];
                    }
                }
                else
                {
                    ensembleTrainScores = AverageScores(ml, members, train);
                }
                teacherSeconds = Seconds(watch);
                testScores = AverageScores(ml, members, test);
                parameters = members.Sum(m => ((IEnumerable<ITransformer>)m).OfType<PeftTextClassificationTransformer>().Single().TrainableParameterCount);
                foreach (var member in members)
                    foreach (var part in (IEnumerable<ITransformer>)member) (part as IDisposable)?.Dispose();
                if (a.SaveTeacherScores is not null)
                    File.WriteAllText(a.SaveTeacherScores, JsonSerializer.Serialize(new SavedTeacherScores(teacherDescription, teacherSeconds, parameters, ensembleTrainScores, testScores)));
            }
            var (accuracy, macroF1) = Metrics(testScores, testRows.Select(r => classes.IndexOf(r.Label)).ToList(), classes.Count);
            rows.Add(new Row("teacher", teacherDescription, accuracy, macroF1, teacherSeconds, parameters));
            Program.Log(string.Create(CultureInfo.InvariantCulture, $"teacher ({teacherDescription}): accuracy {accuracy:F4}, macro-F1 {macroF1:F4}, train {teacherSeconds:F1} s"));
        }
        else if (a.TeacherModel is not null)
        {
            teacher = ml.Model.Load(a.TeacherModel, out _);
            teacherDescription = $"loaded from {Path.GetFileName(a.TeacherModel)}";
        }
        else
        {
            PeftMethodOptions method = a.Teacher == "full" ? new FullFineTuningOptions() : new LoraOptions();
            teacherDescription = string.Create(CultureInfo.InvariantCulture,
                $"{(a.Teacher == "full" ? "full fine-tuning" : "LoRA r=8 all-linear")}, lr {a.TeacherRate:G}, {a.TeacherEpochs} epoch(s)");
            Program.Log($"teacher: {teacherDescription} ...");
            var watch = Stopwatch.StartNew();
            teacher = Pipeline(Options(method, a.TeacherEpochs, a.TeacherRate)).Fit(train);
            teacherSeconds = Seconds(watch);
            if (a.SaveTeacher is not null) ml.Model.Save(teacher, train.Schema, a.SaveTeacher);
        }
        if (teacher is not null) rows.Add(Measure("teacher", teacherDescription, teacher, teacherSeconds));

        // The two students: the same LoRA recipe, on the labels and distilled; with --student-layers, on a smaller base.
        var studentBase = a.StudentLayers is int kept ? BaseModelSource.MiniLM().WithLayers(kept) : null;
        string studentModel = a.StudentLayers is int n ? $" on MiniLM's first {n} layers" : "";
        PeftTextClassificationTrainer.Options StudentOptions(int epochs)
        {
            var options = Options(new LoraOptions { Rank = a.Rank, Alpha = a.Alpha, TargetModules = a.Targets }, epochs, a.LearningRate);
            options.BaseModel = studentBase;
            return options;
        }
        string StudentRecipe(int epochs) => string.Create(CultureInfo.InvariantCulture,
            $"LoRA r={a.Rank}, alpha {a.Alpha:G} on {string.Join(',', a.Targets)}{studentModel}, lr {a.LearningRate:G}, {epochs} epoch(s)");
        string recipe = StudentRecipe(a.Epochs);
        Program.Log($"student on the labels: {recipe} ...");
        var hardWatch = Stopwatch.StartNew();
        var hard = Pipeline(StudentOptions(a.Epochs)).Fit(train);
        rows.Add(Measure("student, labels", recipe, hard, Seconds(hardWatch)));

        var distilledOptions = StudentOptions(a.Epochs);
        distilledOptions.Distillation = new DistillationOptions
        {
            Teacher = teacher,
            TeacherScoreColumnName = ensembleTrainScores is null ? null : nameof(ScoredSentimentRow.TeacherScore),
            Temperature = a.Temperature,
            Weight = a.Weight,
        };
        string distilledRecipe = string.Create(CultureInfo.InvariantCulture, $"{recipe}; temperature {a.Temperature:G}, weight {a.Weight:G}");
        Program.Log($"student distilled: {distilledRecipe} ...");
        var distilledWatch = Stopwatch.StartNew();
        var distilled = Pipeline(distilledOptions).Fit(ensembleTrainScores is null ? train : WithScores(ml, trainRows, ensembleTrainScores));
        rows.Add(Measure("student, distilled", distilledRecipe, distilled, Seconds(distilledWatch)));

        // Beside the target: the same distilled student with unlabelled rows that only the teacher's probabilities teach
        // (the transfer set of Hinton et al.); the student on the labels cannot use them.
        ITransformer? transfer = null, selfTaught = null;
        if (a.UnlabelledRows > 0)
        {
            var extra = trainFileRows.Skip(trainRows.Count)
                .Select(r => new SentimentRow { Sentence = r.Sentence, Label = "" }).ToList();
            string transferRecipe = string.Create(CultureInfo.InvariantCulture, $"{distilledRecipe}; plus {extra.Count:N0} unlabelled rows (the next rows of train.tsv)");
            Program.Log($"student distilled with unlabelled rows: {transferRecipe} ...");
            var transferWatch = Stopwatch.StartNew();
            var withExtra = ml.Data.LoadFromEnumerable(trainRows.Concat(extra).ToList());
            transfer = Pipeline(distilledOptions).Fit(withExtra);
            rows.Add(Measure("student, distilled + unlabelled rows", transferRecipe, transfer, Seconds(transferWatch)));
            if (a.SelfTeacherControl)
            {
                // The control: the same rows and recipe, taught by the student on the labels instead of the larger teacher.
                var selfOptions = StudentOptions(a.Epochs);
                selfOptions.Distillation = new DistillationOptions { Teacher = hard, Temperature = a.Temperature, Weight = a.Weight };
                string selfRecipe = transferRecipe + "; taught by the student on the labels, not the teacher";
                Program.Log($"student taught by itself on the unlabelled rows: {selfRecipe} ...");
                var selfWatch = Stopwatch.StartNew();
                selfTaught = Pipeline(selfOptions).Fit(withExtra);
                rows.Add(Measure("student, self-taught + unlabelled rows", selfRecipe, selfTaught, Seconds(selfWatch)));
            }
        }
        ITransformer? augmented = null, hardLonger = null;
        if (a.Augment > 0)
        {
            if (teacher is null) throw new ArgumentException("--perturbed-copies needs a single teacher (full or lora, or --teacher-model): it scores the copies.");
            var copiesOptions = StudentOptions(a.Epochs);
            copiesOptions.Distillation = new DistillationOptions { Teacher = teacher, Temperature = a.Temperature, Weight = a.Weight, PerturbedCopies = a.Augment };
            string augmentedRecipe = string.Create(CultureInfo.InvariantCulture, $"{distilledRecipe}; plus {a.Augment} perturbed copies of each row (words dropped, n-grams kept) only the teacher teaches");
            Program.Log($"student distilled with perturbed copies: {augmentedRecipe} ...");
            var augmentedWatch = Stopwatch.StartNew();
            augmented = Pipeline(copiesOptions).Fit(train);
            rows.Add(Measure("student, distilled + perturbed copies", augmentedRecipe, augmented, Seconds(augmentedWatch)));
        }
        if (a.HardEpochs is int hardEpochs)
        {
            string longer = StudentRecipe(hardEpochs);
            Program.Log($"student on the labels, longer: {longer} ...");
            var longerWatch = Stopwatch.StartNew();
            hardLonger = Pipeline(StudentOptions(hardEpochs)).Fit(train);
            rows.Add(Measure("student, labels, longer", longer, hardLonger, Seconds(longerWatch)));
        }
        foreach (var model in new[] { teacher, hard, distilled, transfer, selfTaught, augmented, hardLonger }.OfType<ITransformer>())
            foreach (var part in (IEnumerable<ITransformer>)model) (part as IDisposable)?.Dispose();

        double gap = rows[0].Accuracy - rows[1].Accuracy;
        double? Closed(string name) => gap > 0 && rows.FirstOrDefault(r => r.Name == name) is { } row ? (row.Accuracy - rows[1].Accuracy) / gap : null;
        double? closed = Closed("student, distilled");
        double? closedWithCopies = Closed("student, distilled + perturbed copies");
        double? closedByLongerLabels = Closed("student, labels, longer");
        double? closedWithUnlabelled = Closed("student, distilled + unlabelled rows");
        double? closedBySelfTaught = Closed("student, self-taught + unlabelled rows");
        var report = new JsonObject
        {
            ["benchmark"] = "distill",
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["machine"] = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}",
            ["loadAverageAtStart"] = loadAtStart,
            ["loadAverageAtEnd"] = MethodComparison.LoadAverage(),
            ["commandLine"] = "distill " + string.Join(' ', args.Skip(1)),
            ["data"] = $"first {trainRows.Count:N0} rows of sst2/train.tsv (teacher and both students{(a.UnlabelledRows > 0 ? $"; the last row's student also the next {a.UnlabelledRows:N0} rows without labels" : "")}), evaluated on {testRows.Count:N0} rows of sst2/test-sentences.tsv",
            ["recipe"] = new JsonObject
            {
                ["teacher"] = teacherDescription,
                ["student"] = recipe,
                ["temperature"] = a.Temperature,
                ["weight"] = a.Weight,
                ["maxLength"] = a.MaxLength,
                ["batchSize"] = 32,
                ["seed"] = a.Seed,
            },
            ["models"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject
            {
                ["name"] = r.Name,
                ["description"] = r.Description,
                ["accuracy"] = r.Accuracy,
                ["macroF1"] = r.MacroF1,
                ["trainSeconds"] = r.TrainSeconds,
                ["scoreSeconds"] = r.ScoreSeconds,
                ["trainableParameters"] = r.TrainableParameters,
            }).ToArray()),
            ["gapClosed"] = closed,
            ["gapClosedWithPerturbedCopies"] = closedWithCopies,
            ["gapClosedByLongerHardLabels"] = closedByLongerLabels,
            ["gapClosedWithUnlabelledRows"] = closedWithUnlabelled,
            ["gapClosedBySelfTaughtStudent"] = closedBySelfTaught,
        };
        // The target: the best distilled student (on the rows alone, with perturbed copies, or with unlabelled rows).
        double? best = BestGapClosed(report);
        var failures = new List<string>();
        if (best is null)
            failures.Add(string.Create(CultureInfo.InvariantCulture, $"the teacher ({rows[0].Accuracy:F4}) is not better than the student on the labels ({rows[1].Accuracy:F4}): no gap to close"));
        else if (best < GapTarget)
            failures.Add(string.Create(CultureInfo.InvariantCulture, $"the distilled student closes {best:P1} of the gap, below {GapTarget:P0}"));
        report["target"] = new JsonObject
        {
            ["gapClosedAtLeast"] = GapTarget,
            ["passed"] = failures.Count == 0,
            ["failures"] = new JsonArray(failures.Select(f => (JsonNode)JsonValue.Create(f)!).ToArray()),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
        File.WriteAllText(resultsFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        var table = Table(report);
        File.WriteAllText(Path.ChangeExtension(resultsFile, ".md"), table);
        Console.WriteLine();
        Console.Write(table);
        Console.WriteLine($"Results written to {Path.GetRelativePath(root, resultsFile)} and {Path.GetRelativePath(root, Path.ChangeExtension(resultsFile, ".md"))}.");
        if (failures.Count == 0)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Target met: the distilled student closes {best:P1} of the gap (at least {GapTarget:P0})."));
            return 0;
        }
        foreach (var failure in failures) Console.WriteLine($"TARGET FAILED: {failure}.");
        return 1;
    }

    /// <summary>The Markdown table of a results file: the three models, then the gap closed.</summary>
    public static string Table(JsonObject report)
    {
        static string F(JsonNode? n, string format) => n is null ? "" : n.GetValue<double>().ToString(format, CultureInfo.InvariantCulture);
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"SST-2 distillation: {report["data"]}; max length {report["recipe"]!["maxLength"]}, batch 32, seed {report["recipe"]!["seed"]}.");
        s.AppendLine();
        s.AppendLine("| model | recipe | accuracy | macro-F1 | train s | score s | trainable parameters |");
        s.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var r in report["models"]!.AsArray())
            s.AppendLine(CultureInfo.InvariantCulture,
                $"| {r!["name"]} | {r["description"]} | {F(r["accuracy"], "F4")} | {F(r["macroF1"], "F4")} | {F(r["trainSeconds"], "F0")} | {F(r["scoreSeconds"], "F1")} | {r["trainableParameters"]!.GetValue<long>():N0} |");
        s.AppendLine();
        var closed = report["gapClosed"];
        s.AppendLine(closed is null
            ? "Gap closed: none to close (the teacher is not better than the student on the labels)."
            : string.Create(CultureInfo.InvariantCulture,
                $"Gap closed, (student - labels) / (teacher - labels), by the distilled student on the rows alone: {closed.GetValue<double>():P1}."));
        foreach (var (key, what) in new[]
        {
            ("gapClosedWithPerturbedCopies", "the distilled student with perturbed copies"),
            ("gapClosedWithUnlabelledRows", "the distilled student with unlabelled rows"),
            ("gapClosedByLongerHardLabels", "the student on the labels, longer (a control: no teacher)"),
            ("gapClosedBySelfTaughtStudent", "the student on unlabelled rows taught by the student on the labels (a control: no larger teacher)"),
        })
            if (report[key] is { } value)
                s.AppendLine(string.Create(CultureInfo.InvariantCulture, $"Gap closed by {what}: {value.GetValue<double>():P1}."));
        if (BestGapClosed(report) is double best)
            s.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"Target: the best distilled student (on the rows alone, with perturbed copies or with unlabelled rows) closes at least {GapTarget:P0} of the gap: {(report["target"]!["passed"]!.GetValue<bool>() ? "met" : "not met")} ({best:P1})."));
        s.AppendLine("The distilled student's train seconds include a single teacher scoring the training rows once (an ensemble's scoring is in the teacher's seconds).");
        if (report["models"]!.AsArray().Any(r => r!["scoreSeconds"] is not null))
            s.AppendLine("Score s: the evaluation rows once through the model and the evaluator (tokenization included), after 64 rows to warm it up.");
        return s.ToString();
    }

    /// <summary>Each row's class probabilities, averaged over the models (the keys' order: the sorted label values).</summary>
    private static float[][] AverageScores(MLContext ml, IReadOnlyList<ITransformer> models, IDataView data)
    {
        float[][]? sum = null;
        foreach (var model in models)
        {
            var scores = ml.Data.CreateEnumerable<ScoreRow>(model.Transform(data), reuseRowObject: false).Select(r => r.Score).ToArray();
            sum ??= scores.Select(s => new float[s.Length]).ToArray();
            for (int i = 0; i < scores.Length; i++)
                for (int c = 0; c < scores[i].Length; c++) sum[i][c] += scores[i][c] / models.Count;
        }
        return sum!;
    }

    /// <summary>Accuracy and macro-F1 of the most probable class against the class indices (-1: a class training never saw, always wrong).</summary>
    private static (double Accuracy, double MacroF1) Metrics(float[][] probabilities, IReadOnlyList<int> labels, int classes)
    {
        var truePositives = new int[classes];
        var predicted = new int[classes];
        var actual = new int[classes];
        int correct = 0;
        for (int i = 0; i < labels.Count; i++)
        {
            int guess = Array.IndexOf(probabilities[i], probabilities[i].Max());
            predicted[guess]++;
            if (labels[i] >= 0) actual[labels[i]]++;
            if (guess != labels[i]) continue;
            correct++;
            truePositives[guess]++;
        }
        double f1 = 0;
        for (int c = 0; c < classes; c++)
        {
            double p = predicted[c] == 0 ? 0 : (double)truePositives[c] / predicted[c], r = actual[c] == 0 ? 0 : (double)truePositives[c] / actual[c];
            f1 += p + r > 0 ? 2 * p * r / (p + r) : 0;
        }
        return ((double)correct / labels.Count, f1 / classes);
    }

    /// <summary>The training rows with the teacher's probabilities as a vector column.</summary>
    private static IDataView WithScores(MLContext ml, IReadOnlyList<SentimentRow> rows, float[][] scores)
    {
        var schema = SchemaDefinition.Create(typeof(ScoredSentimentRow));
        schema[nameof(ScoredSentimentRow.TeacherScore)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, scores[0].Length);
        return ml.Data.LoadFromEnumerable(rows.Select((r, i) => new ScoredSentimentRow { Sentence = r.Sentence, Label = r.Label, TeacherScore = scores[i] }), schema);
    }

    /// <summary>A row of sst2 with the teacher's class probabilities.</summary>
    private sealed class ScoredSentimentRow
    {
        public string Sentence { get; set; } = "";
        public string Label { get; set; } = "";
        public float[] TeacherScore { get; set; } = Array.Empty<float>();
    }

    /// <summary>The class probabilities of a scored row.</summary>
    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    private static List<SentimentRow> ReadRows(string path, int? take)
    {
        var rows = MethodComparison.ReadTsv(path, header: true, textFirst: true);
        if (take is int n && rows.Count > n) rows = rows.Take(n).ToList();
        if (rows.Count == 0) throw new InvalidDataException($"{path} has no rows.");
        return rows;
    }
}
