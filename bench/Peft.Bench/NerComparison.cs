using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using Microsoft.ML.Transforms;

namespace Peft.Bench;

/// <summary>
/// <c>conll</c>: named-entity recognition on CoNLL-2003, PEFT methods and full fine-tuning of all-MiniLM-L6-v2 side by side,
/// trained on <c>train.txt</c> and measured on <c>valid.txt</c> (entity-level micro F1, conlleval's rules). The row
/// <c>lora-nocase</c> trains LoRA without the head's case features: what the uncased vocabulary costs without them.
/// Microsoft.ML.TorchSharp's NER needs a model download, so there is no ML.NET row. A run of some methods replaces their
/// rows in the results file and keeps the others (same data, epochs and seed only).
/// </summary>
internal static class NerComparison
{
    public const int DefaultEpochs = 3;
    private const string NoCase = "lora-nocase";

    public static readonly string[] KnownMethods = MethodRecipes.AllNames.Append(NoCase).ToArray();

    public static readonly string Usage =
        "usage: dotnet run -c Release --project bench/Peft.Bench -- conll [options]\n" +
        $"  --methods a,b,...   rows to run (default: lora,full): {string.Join(", ", KnownMethods)}\n" +
        $"  --train-rows N      the first N sentences of conll2003/train.txt (default: all 14,041)\n" +
        $"  --test-rows N       the first N sentences of conll2003/valid.txt (default: all 3,250)\n" +
        $"  --epochs N          passes over the training sentences (default {DefaultEpochs})\n" +
        "  --seed N            seed of the trainers (default 1)\n" +
        "  --output FILE       results file (default bench/results/ner-conll2003.json at the default sizes, ner-conll2003-small.json\n" +
        "                      otherwise, which git ignores); the Markdown table goes beside it as .md";

    public static int Run(IReadOnlyList<string> args, string root)
    {
        var methods = new List<string> { "lora", "full" };
        int? trainRows = null, testRows = null;
        int epochs = DefaultEpochs, seed = 1;
        string? output = null;
        for (int i = 1; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Int() => int.TryParse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{args[i - 1]} needs a positive integer.");
            switch (args[i])
            {
                case "--methods":
                    methods = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
                    foreach (var m in methods.Where(m => !KnownMethods.Contains(m))) throw new ArgumentException($"Unknown method '{m}'.");
                    break;
                case "--train-rows": trainRows = Int(); break;
                case "--test-rows": testRows = Int(); break;
                case "--epochs": epochs = Int(); break;
                case "--seed": seed = Int(); break;
                case "--output": output = Value(); break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        var folder = Path.Combine(root, "..", "shared", "data", "conll2003");
        var train = ConllFile.Read(Path.Combine(folder, "train.txt"));
        var test = ConllFile.Read(Path.Combine(folder, "valid.txt"));
        var trainSentences = train.Sentences.Take(trainRows ?? int.MaxValue).ToList();
        var testSentences = test.Sentences.Take(testRows ?? int.MaxValue).ToList();
        bool defaultSizes = trainRows is null && testRows is null && epochs == DefaultEpochs;
        var resultsFile = Path.GetFullPath(output ?? Path.Combine(root, "bench", "results", defaultSizes ? "ner-conll2003.json" : "ner-conll2003-small.json"));
        var setup = new JsonObject
        {
            ["trainSentences"] = trainSentences.Count,
            ["testSentences"] = testSentences.Count,
            ["epochs"] = epochs,
            ["seed"] = seed,
        };
        var results = LoadResults(resultsFile, setup);

        var ml = new MLContext(seed);
        IDataView View(IEnumerable<ConllSentence> sentences) =>
            ml.Data.LoadFromEnumerable(sentences.Select(x => new Row { Sentence = x.Words, Label = x.Tags }).ToList());
        var trainView = View(trainSentences);
        var mapper = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(trainView);
        var mappedTrain = mapper.Transform(trainView);
        var mappedTest = mapper.Transform(View(testSentences));
        foreach (var name in methods)
        {
            var recipe = MethodRecipes.Get(name == NoCase ? "lora" : name);
            var options = new PeftNamedEntityRecognitionTrainer.Options
            {
                Method = recipe.Create(),
                LearningRate = recipe.LearningRate,
                MaxEpoch = epochs,
                Seed = seed,
                CaseFeatures = name == NoCase ? false : null,
            };
            Console.WriteLine($"== {name} ({recipe.Description}), lr {recipe.LearningRate}, {epochs} epochs on {trainSentences.Count:N0} sentences");
            var watch = Stopwatch.StartNew();
            using var tagger = ml.MulticlassClassification.Trainers.PeftNamedEntityRecognition(options).Fit(mappedTrain);
            double trainSeconds = watch.Elapsed.TotalSeconds;
            watch.Restart();
            var metrics = ml.MulticlassClassification.EvaluateEntities(tagger.Transform(mappedTest));
            double predictSeconds = watch.Elapsed.TotalSeconds;
            var path = Path.Combine(Path.GetTempPath(), $"ner-bench-{Guid.NewGuid():N}.zip");
            ml.Model.Save(tagger, mappedTrain.Schema, path);
            long bytes = new FileInfo(path).Length;
            File.Delete(path);
            var row = new JsonObject
            {
                ["method"] = name,
                ["description"] = recipe.Description + (name == NoCase ? ", no case features" : ""),
                ["f1"] = Math.Round(metrics.F1, 4),
                ["precision"] = Math.Round(metrics.Precision, 4),
                ["recall"] = Math.Round(metrics.Recall, 4),
                ["perType"] = new JsonObject(metrics.PerType.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)Math.Round(p.Value.F1, 4)))),
                ["trainableParameters"] = tagger.TrainableParameterCount,
                ["share"] = Math.Round((double)tagger.TrainableParameterCount / tagger.TotalParameterCount, 5),
                ["trainSeconds"] = Math.Round(trainSeconds, 1),
                ["predictSentencesPerSecond"] = Math.Round(testSentences.Count / predictSeconds, 1),
                ["modelBytes"] = bytes,
                ["learningRate"] = recipe.LearningRate,
                ["caseFeatures"] = tagger.CaseFeatures,
                ["loadAverageAtEnd"] = LoadAverage(),
            };
            Console.WriteLine(row.ToJsonString());
            var rows = (JsonArray)results["rows"]!;
            foreach (var old in rows.Where(r => (string?)r!["method"] == name).ToList()) rows.Remove(old);
            rows.Add(row);
            Directory.CreateDirectory(Path.GetDirectoryName(resultsFile)!);
            File.WriteAllText(resultsFile, results.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            File.WriteAllText(Path.ChangeExtension(resultsFile, ".md"), Markdown(results));
        }
        Console.WriteLine(Markdown(results));
        return 0;
    }

    private sealed class Row
    {
        [VectorType] public string[] Sentence { get; set; } = Array.Empty<string>();
        [VectorType] public string[] Label { get; set; } = Array.Empty<string>();
    }

    private static JsonObject LoadResults(string file, JsonObject setup)
    {
        if (File.Exists(file) && JsonNode.Parse(File.ReadAllText(file)) is JsonObject old && JsonNode.DeepEquals(old["setup"], setup)) return old;
        return new JsonObject { ["setup"] = setup, ["rows"] = new JsonArray() };
    }

    private static string Markdown(JsonObject results)
    {
        var setup = results["setup"]!;
        var rows = ((JsonArray)results["rows"]!).Select(r => r!).ToList();
        var types = rows.SelectMany(r => ((JsonObject)r["perType"]!).Select(p => p.Key)).Distinct().Order(StringComparer.Ordinal).ToList();
        static string F(JsonNode? n, string format = "F4") => n is null ? "" : n.GetValue<double>().ToString(format, CultureInfo.InvariantCulture);
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"conll: all-MiniLM-L6-v2 (uncased) on the first {setup["trainSentences"]} sentences of conll2003/train.txt, {setup["epochs"]} epochs, seed {setup["seed"]}; " +
            $"entity-level micro F1 (conlleval's rules) on {setup["testSentences"]} sentences of conll2003/valid.txt.");
        md.AppendLine();
        md.AppendLine("| method | F1 | precision | recall | " + string.Join(" | ", types.Select(t => "F1 " + t)) + " | trainable parameters | share | train s | predict sentences/s | model bytes | lr |");
        md.AppendLine("|---|---:|---:|---:|" + string.Concat(types.Select(_ => "---:|")) + "---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            var perType = string.Concat(types.Select(t => F(r["perType"]![t]) + " | "));
            md.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r["method"]} ({r["description"]}) | {F(r["f1"])} | {F(r["precision"])} | {F(r["recall"])} | {perType}" +
                $"{r["trainableParameters"]!.GetValue<long>():N0} | {r["share"]!.GetValue<double>() * 100:F2}% | {F(r["trainSeconds"], "F0")} | " +
                $"{F(r["predictSentencesPerSecond"], "F0")} | {r["modelBytes"]!.GetValue<long>():N0} | {r["learningRate"]} |"));
        }
        return md.ToString();
    }

    private static double? LoadAverage()
    {
        try
        {
            return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
