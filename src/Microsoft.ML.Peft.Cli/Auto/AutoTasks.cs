using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.AutoML;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Cli.Reports;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Peft.Tasks.SentenceSimilarity;
using Microsoft.ML.Peft.Tasks.TextClassification;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Processing;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli.Auto;

/// <summary>The data options of <c>auto</c>: each task reads the ones its own command has.</summary>
internal sealed record AutoDataSettings(string Task, string Dataset, string? LabelColumn, string? TextColumn, string? Text2Column,
    TextFileFormat Format, string? ValidationDataset, string? TestDataset, string? Model, string? Vocab, long? MaxRows, int? TagColumn, int Seed);

/// <summary>What a task's test data gave: metrics (named as in the task's own command's metrics JSON) and the report's sections.</summary>
internal sealed record AutoEvaluation(IReadOnlyList<(string Key, string Label, double Value)> Metrics, ReportClassification? Classification,
    IReadOnlyList<ReportExample> HardestExamples);

/// <summary>A task ready to search: its data, the search task, and how its test rows are evaluated.</summary>
internal sealed record AutoSetup(IDataView Train, IDataView? Validation, IDataView Test, PeftSearchTask Task, string DataSummary,
    Func<MLContext, ITransformer, IDataView, AutoEvaluation> Evaluate);

/// <summary>The tasks of <c>auto</c>: each reads its data as its own command does and evaluates as it does.</summary>
internal static class AutoTasks
{
    public static readonly IReadOnlyList<string> Names = new[] { "text-classification", "pair-classification", "sentence-similarity", "ner", "image-classification" };

    private const int HardestCount = 12;

    /// <summary>Reads and checks the data of <paramref name="s"/>'s task; nothing is trained yet.</summary>
    public static AutoSetup Prepare(MLContext mlContext, IAnsiConsole console, AutoDataSettings s) => s.Task switch
    {
        "text-classification" or "pair-classification" => TextClassification(mlContext, console, s),
        "sentence-similarity" => SentenceSimilarity(mlContext, console, s),
        "ner" => Ner(mlContext, console, s),
        "image-classification" => Images(mlContext, console, s),
        _ => throw new UsageException($"--task '{s.Task}' is not a task of auto; choose one of {string.Join(", ", Names)}."),
    };

    private static string Require(string? value, string option, string task) =>
        value ?? throw new UsageException($"--task {task} needs {option}.");

    private static void NotFor(object? value, string option, string task)
    {
        if (value is not null) throw new UsageException($"{option} does not apply to --task {task}.");
    }

    private static AutoSetup TextClassification(MLContext mlContext, IAnsiConsole console, AutoDataSettings s)
    {
        bool pairs = s.Task == "pair-classification";
        if (pairs) Require(s.Text2Column, "--text2-col", s.Task);
        else NotFor(s.Text2Column, "--text2-col (use --task pair-classification)", s.Task);
        NotFor(s.TagColumn, "--tag-col", s.Task);
        var columns = TextColumns(s, DataKind.String);
        var (train, validation, test) = LoadDelimited(mlContext, console, s, columns);
        var baseModel = TextClassificationCommand.ResolveBaseModel(s.Model, s.Vocab);
        var task = PeftSearchTasks.TextClassification(TextClassificationCommand.LabelColumn, TextClassificationCommand.Sentence1Column,
            pairs ? TextClassificationCommand.Sentence2Column : null, o => o.BaseModel = baseModel);
        return new AutoSetup(train, validation, test, task, $"{s.Dataset} ({(pairs ? "sentence pairs" : "text")})",
            (ml, model, data) => EvaluateClassifier(ml, model, data, row => pairs
                ? $"{row.Get<ReadOnlyMemory<char>>(TextClassificationCommand.Sentence1Column)} / {row.Get<ReadOnlyMemory<char>>(TextClassificationCommand.Sentence2Column)}"
                : row.Get<ReadOnlyMemory<char>>(TextClassificationCommand.Sentence1Column).ToString(), null));
    }

    private static AutoSetup SentenceSimilarity(MLContext mlContext, IAnsiConsole console, AutoDataSettings s)
    {
        Require(s.Text2Column, "--text2-col", s.Task);
        NotFor(s.TagColumn, "--tag-col", s.Task);
        var (train, validation, test) = LoadDelimited(mlContext, console, s, TextColumns(s, DataKind.Single));
        var baseModel = TextClassificationCommand.ResolveBaseModel(s.Model, s.Vocab);
        var task = PeftSearchTasks.SentenceSimilarity(SentenceSimilarityCommand.LabelColumn, TextClassificationCommand.Sentence1Column,
            TextClassificationCommand.Sentence2Column, o => o.BaseModel = baseModel);
        return new AutoSetup(train, validation, test, task, $"{s.Dataset} (scored sentence pairs)", (ml, model, data) =>
        {
            var scored = model.Transform(data);
            var metrics = ml.Regression.EvaluateSentenceSimilarity(scored, SentenceSimilarityCommand.LabelColumn, SentenceSimilarityCommand.ScoreColumn);
            var rows = new List<ReportExample>();
            using (var cursor = scored.GetRowCursor(scored.Schema))
            {
                var label = cursor.GetGetter<float>(scored.Schema[SentenceSimilarityCommand.LabelColumn]);
                var score = cursor.GetGetter<float>(scored.Schema[SentenceSimilarityCommand.ScoreColumn]);
                var s1 = cursor.GetGetter<ReadOnlyMemory<char>>(scored.Schema[TextClassificationCommand.Sentence1Column]);
                var s2 = cursor.GetGetter<ReadOnlyMemory<char>>(scored.Schema[TextClassificationCommand.Sentence2Column]);
                float l = 0, p = 0;
                ReadOnlyMemory<char> a = default, b = default;
                while (cursor.MoveNext())
                {
                    label(ref l);
                    score(ref p);
                    if (float.IsNaN(l) || float.IsNaN(p)) continue;
                    s1(ref a);
                    s2(ref b);
                    rows.Add(new ReportExample($"{a} / {b}", null, l.ToString("0.##", CultureInfo.InvariantCulture), p.ToString("0.##", CultureInfo.InvariantCulture), Math.Abs(p - l)));
                }
            }
            return new AutoEvaluation(new[] { ("spearman", "Spearman", metrics.Spearman), ("pearson", "Pearson", metrics.Pearson) }, null,
                rows.OrderByDescending(r => r.Loss).Take(HardestCount).ToList());
        });
    }

    private static AutoSetup Ner(MLContext mlContext, IAnsiConsole console, AutoDataSettings s)
    {
        foreach (var (value, option) in new[] { (s.LabelColumn, "--label-col"), (s.TextColumn, "--text-col"), (s.Text2Column, "--text2-col") })
            NotFor(value, $"{option} (CoNLL files have their words in the first column; --tag-col picks the tags)", s.Task);
        var trainData = NerCommand.Read(s.Dataset, "--dataset", s.TagColumn, s.MaxRows);
        var tags = trainData.Sentences.SelectMany(x => x.Tags).ToHashSet(StringComparer.Ordinal);
        if (!tags.Contains("O")) throw new InvalidDataException($"The tags of '{s.Dataset}' (--dataset) have no 'O' (outside any entity): [{string.Join(", ", tags.Order(StringComparer.Ordinal))}].");
        IDataView Read(string? path, string option)
        {
            var data = NerCommand.Read(path!, option, s.TagColumn, s.MaxRows);
            NerCommand.CheckKnownTags(data, tags, path!, option);
            return NerCommand.ToDataView(mlContext, data);
        }
        var train = NerCommand.ToDataView(mlContext, trainData);
        var validation = s.ValidationDataset is null ? null : Read(s.ValidationDataset, "--validation-dataset");
        IDataView test;
        if (s.TestDataset is not null) test = Read(s.TestDataset, "--test-dataset");
        else (train, test) = TextClassificationCommand.HoldOut(mlContext, console, train, null, s.Seed);
        var baseModel = TextClassificationCommand.ResolveBaseModel(s.Model, s.Vocab);
        var task = PeftSearchTasks.NamedEntityRecognition(NerCommand.LabelColumn, NerCommand.SentenceColumn, o => o.BaseModel = baseModel);
        return new AutoSetup(train, validation, test, task, $"{s.Dataset} (CoNLL, {trainData.Sentences.Count:N0} sentences)", (ml, model, data) =>
        {
            var scored = model.Transform(data);
            var metrics = ml.MulticlassClassification.EvaluateEntities(scored, NerCommand.LabelColumn, NerCommand.PredictedLabelColumn);
            var types = metrics.PerType.OrderBy(t => t.Key, StringComparer.Ordinal).ToList();
            var classification = new ReportClassification(types.Select(t => t.Key).ToList(), null, types.Select(t => t.Value.Precision).ToList(),
                types.Select(t => t.Value.Recall).ToList(), types.Select(t => t.Value.F1).ToList(), types.Select(t => (long)t.Value.GoldCount).ToList());
            var hardest = new List<ReportExample>();
            var gold = KeyNames(scored.Schema[NerCommand.LabelColumn]);
            var predictedNames = KeyNames(scored.Schema[NerCommand.PredictedLabelColumn]);
            using (var cursor = scored.GetRowCursor(scored.Schema))
            {
                var words = cursor.GetGetter<VBuffer<ReadOnlyMemory<char>>>(scored.Schema[NerCommand.SentenceColumn]);
                var label = cursor.GetGetter<VBuffer<uint>>(scored.Schema[NerCommand.LabelColumn]);
                var predicted = cursor.GetGetter<VBuffer<uint>>(scored.Schema[NerCommand.PredictedLabelColumn]);
                VBuffer<ReadOnlyMemory<char>> w = default;
                VBuffer<uint> l = default, p = default;
                while (cursor.MoveNext())
                {
                    words(ref w);
                    label(ref l);
                    predicted(ref p);
                    var ws = w.DenseValues().Select(x => x.ToString()).ToArray();
                    var ls = l.DenseValues().Select(k => k == 0 ? "?" : gold[(int)k - 1]).ToArray();
                    var ps = p.DenseValues().Select(k => k == 0 ? "?" : predictedNames[(int)k - 1]).ToArray();
                    int wrong = ls.Zip(ps).Count(x => x.First != x.Second);
                    if (wrong > 0)
                        hardest.Add(new ReportExample(string.Join(' ', ws), null, string.Join(' ', ls), string.Join(' ', ps), wrong));
                }
            }
            return new AutoEvaluation(new[] { ("f1", "Entity F1", metrics.F1), ("precision", "Entity precision", metrics.Precision), ("recall", "Entity recall", metrics.Recall) },
                classification, hardest.OrderByDescending(h => h.Loss).Take(HardestCount).ToList());
        });
    }

    private static AutoSetup Images(MLContext mlContext, IAnsiConsole console, AutoDataSettings s)
    {
        foreach (var (value, option) in new[] { (s.LabelColumn, "--label-col"), (s.TextColumn, "--text-col"), (s.Text2Column, "--text2-col"), (s.Vocab, "--vocab") })
            NotFor(value, $"{option} (an image dataset is a folder of class folders or a TSV of path and label)", s.Task);
        NotFor(s.TagColumn, "--tag-col", s.Task);
        var trainSet = ImageDataset.Read(s.Dataset, "--dataset");
        var validationSet = s.ValidationDataset is null ? null : ImageDataset.Read(s.ValidationDataset, "--validation-dataset");
        var testSet = s.TestDataset is null ? null : ImageDataset.Read(s.TestDataset, "--test-dataset");
        ImageBaseModelSource? baseModel = null;
        if (s.Model is not null)
        {
            if (!File.Exists(s.Model)) throw new FileNotFoundException($"The base model '{s.Model}' (--model) does not exist: give an ONNX ResNet or a torchvision .safetensors file.", s.Model);
            baseModel = ImageBaseModelSource.FromPath(s.Model);
        }
        IDataView train = ImageClassificationCommand.Load(mlContext, trainSet, s.MaxRows);
        var validation = validationSet is null ? null : ImageClassificationCommand.Load(mlContext, validationSet, s.MaxRows);
        IDataView test;
        if (testSet is not null) test = ImageClassificationCommand.Load(mlContext, testSet, s.MaxRows);
        else (train, test) = TextClassificationCommand.HoldOut(mlContext, console, train, null, s.Seed);
        var task = PeftSearchTasks.ImageClassification(ImageClassificationCommand.LabelColumn, ImageClassificationCommand.ImageColumn, o => o.BaseModel = baseModel);
        return new AutoSetup(train, validation, test, task, $"{s.Dataset} ({trainSet.Rows.Count:N0} images, {trainSet.Classes.Count} classes)",
            (ml, model, data) => EvaluateClassifier(ml, model, data, null, row => Thumbnail(row.Get<ReadOnlyMemory<char>>(ImageClassificationCommand.ImageColumn).ToString())));
    }

    /// <summary>Label, first text and (for pairs) second text columns of a delimited file, with the label read as <paramref name="labelKind"/>.</summary>
    private static List<(string Name, string Spec, string Option, DataKind Kind)> TextColumns(AutoDataSettings s, DataKind labelKind)
    {
        var columns = new List<(string, string, string, DataKind)>
        {
            (TextClassificationCommand.LabelColumn, Require(s.LabelColumn, "--label-col", s.Task), "--label-col", labelKind),
            (TextClassificationCommand.Sentence1Column, Require(s.TextColumn, "--text-col", s.Task), "--text-col", DataKind.String),
        };
        if (s.Text2Column is not null) columns.Add((TextClassificationCommand.Sentence2Column, s.Text2Column, "--text2-col", DataKind.String));
        return columns;
    }

    private static (IDataView Train, IDataView? Validation, IDataView Test) LoadDelimited(MLContext mlContext, IAnsiConsole console, AutoDataSettings s,
        List<(string Name, string Spec, string Option, DataKind Kind)> columns)
    {
        var trainFile = DelimitedFile.Open(s.Dataset, "--dataset", s.Format);
        var validationFile = s.ValidationDataset is null ? null : DelimitedFile.Open(s.ValidationDataset, "--validation-dataset", s.Format);
        var testFile = s.TestDataset is null ? null : DelimitedFile.Open(s.TestDataset, "--test-dataset", s.Format);
        IDataView Load(DelimitedFile file)
        {
            var resolved = columns.Select(c => (c.Name, Index: file.ResolveColumn(c.Spec, c.Option), c.Kind)).ToList();
            var clash = resolved.GroupBy(c => c.Index).FirstOrDefault(g => g.Count() > 1);
            if (clash is not null)
                throw new ArgumentException($"Column {clash.Key} of {file.Description} is given twice ({string.Join(", ", columns.Select(c => c.Option))} must differ).");
            return file.Load(mlContext, resolved, s.MaxRows);
        }
        var train = Load(trainFile);
        var validation = validationFile is null ? null : Load(validationFile);
        IDataView test;
        (train, test) = TextClassificationCommand.HoldOut(mlContext, console, train, testFile is null ? null : Load(testFile), s.Seed);
        return (train, validation, test);
    }

    /// <summary>ML.NET's multiclass metrics, the per-class table and the highest-loss rows of a classifier's test data.</summary>
    private static AutoEvaluation EvaluateClassifier(MLContext ml, ITransformer model, IDataView data, Func<DataViewRow, string>? text, Func<DataViewRow, byte[]?>? image)
    {
        var scored = model.Transform(data);
        var label = TextClassificationCommand.LabelColumn;
        var metrics = ml.MulticlassClassification.Evaluate(scored, label);
        var names = KeyNames(scored.Schema[label]);
        var counts = metrics.ConfusionMatrix.Counts;
        int n = metrics.ConfusionMatrix.NumberOfClasses;
        var f1 = ClassificationReport.PerClassF1(metrics.ConfusionMatrix);
        var classification = new ReportClassification(
            Enumerable.Range(0, n).Select(c => c < names.Count ? names[c] : $"class {c + 1}").ToList(),
            counts.Select(row => (IReadOnlyList<long>)row.Select(v => (long)v).ToList()).ToList(),
            metrics.ConfusionMatrix.PerClassPrecision.ToList(), metrics.ConfusionMatrix.PerClassRecall.ToList(), f1,
            counts.Select(row => (long)row.Sum()).ToList());

        // Highest loss first: -log of the probability given to the true class.
        var losses = new List<(double Loss, long Row, string Label, string Predicted)>();
        using (var cursor = scored.GetRowCursor(scored.Schema))
        {
            var labelGetter = cursor.GetGetter<uint>(scored.Schema[label]);
            var scoreGetter = cursor.GetGetter<VBuffer<float>>(scored.Schema[TextClassificationCommand.ScoreColumn]);
            uint key = 0;
            VBuffer<float> score = default;
            long row = 0;
            while (cursor.MoveNext())
            {
                labelGetter(ref key);
                scoreGetter(ref score);
                var values = score.DenseValues().ToArray();
                if (key > 0 && key <= values.Length)
                {
                    int predicted = Array.IndexOf(values, values.Max());
                    losses.Add((-Math.Log(Math.Max(values[key - 1], 1e-12)), row, Name(names, (int)key - 1), Name(names, predicted)));
                }
                row++;
            }
        }
        var top = losses.OrderByDescending(l => l.Loss).Take(HardestCount).ToList();
        var wanted = top.Select(t => t.Row).ToHashSet();
        var content = new Dictionary<long, (string? Text, byte[]? Image)>();
        using (var cursor = scored.GetRowCursor(scored.Schema))
        {
            long row = 0;
            while (cursor.MoveNext())
            {
                if (wanted.Contains(row)) content[row] = (text?.Invoke(cursor), image?.Invoke(cursor));
                row++;
            }
        }
        var hardest = top.Select(t => new ReportExample(content[t.Row].Text, content[t.Row].Image, t.Label, t.Predicted, t.Loss)).ToList();
        return new AutoEvaluation(new[]
        {
            ("accuracy", "Accuracy", metrics.MicroAccuracy),
            ("macroF1", "Macro-F1", ClassificationReport.ComputeMacroF1(metrics.ConfusionMatrix)),
            ("logLoss", "Log-loss", metrics.LogLoss),
        }, classification, hardest);
    }

    private static string Name(IReadOnlyList<string> names, int index) => index >= 0 && index < names.Count ? names[index] : $"class {index + 1}";

    /// <summary>The key values (class or tag names) of a key column, in key order; empty when it has none.</summary>
    private static IReadOnlyList<string> KeyNames(DataViewSchema.Column column)
    {
        if (!column.HasKeyValues()) return Array.Empty<string>();
        VBuffer<ReadOnlyMemory<char>> values = default;
        column.GetKeyValues(ref values);
        return values.DenseValues().Select(v => v.ToString()).ToList();
    }

    /// <summary>A PNG thumbnail (at most 96 pixels a side) of an image file, or null when it cannot be read.</summary>
    private static byte[]? Thumbnail(string path)
    {
        try
        {
            using var image = Image.Load(path);
            image.Mutate(x => x.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(96, 96), Mode = ResizeMode.Max }));
            using var stream = new MemoryStream();
            image.SaveAsPng(stream);
            return stream.ToArray();
        }
        catch (Exception e) when (e is IOException or UnknownImageFormatException or InvalidImageContentException)
        {
            return null;
        }
    }
}

internal static class DataViewRowExtensions
{
    /// <summary>The current value of column <paramref name="name"/> of <paramref name="row"/>.</summary>
    public static T Get<T>(this DataViewRow row, string name)
    {
        T value = default!;
        row.GetGetter<T>(row.Schema[name])(ref value);
        return value;
    }
}
