using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.NamedEntityRecognition;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Entity-level scoring against hand-computed answers, with conlleval's reading of malformed sequences worked out in the
/// comments (startOfChunk / endOfChunk of conlleval.pl), and the ML.NET evaluator over key-vector columns.
/// </summary>
[TestFixture]
public class EntityMetricsTests
{
    private static string[] T(string tags) => tags.Length == 0 ? Array.Empty<string>() : tags.Split(' ');

    /// <summary>Scores sentences given as ("gold tags", "predicted tags"), tags separated by spaces.</summary>
    private static EntityMetrics Score(params (string Gold, string Predicted)[] sentences) =>
        EntityScoring.Compute(sentences.Select(s => ((IReadOnlyList<string>)T(s.Gold), (IReadOnlyList<string>)T(s.Predicted))));

    private static void AssertCounts(EntityMetrics m, int gold, int predicted, int correct)
    {
        Assert.That((m.GoldCount, m.PredictedCount, m.CorrectCount), Is.EqualTo((gold, predicted, correct)));
    }

    [Test]
    public void PerfectMatch()
    {
        var m = Score(("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC"));
        AssertCounts(m, 2, 2, 2);
        Assert.That((m.Precision, m.Recall, m.F1), Is.EqualTo((1.0, 1.0, 1.0)));
        Assert.That((m.TokenAccuracy, m.TokenCount), Is.EqualTo((1.0, 4)));
    }

    [Test]
    public void WrongEndIsNotCounted()
    {
        // Gold PER spans words 0-1, the prediction only word 0: same start and type, other span.
        var m = Score(("B-PER I-PER O", "B-PER O O"));
        AssertCounts(m, 1, 1, 0);
        Assert.That((m.Precision, m.Recall, m.F1), Is.EqualTo((0.0, 0.0, 0.0)));
        Assert.That(m.TokenAccuracy, Is.EqualTo(2.0 / 3).Within(1e-12));
    }

    [Test]
    public void LongerSpanIsNotCounted()
    {
        var m = Score(("B-PER O", "B-PER I-PER"));
        AssertCounts(m, 1, 1, 0);
    }

    [Test]
    public void WrongTypeIsNotCounted()
    {
        var m = Score(("B-PER I-PER", "B-ORG I-ORG"));
        AssertCounts(m, 1, 1, 0);
        Assert.That(m.PerType.Keys, Is.EqualTo(new[] { "ORG", "PER" }));
        Assert.That((m.PerType["PER"].GoldCount, m.PerType["PER"].PredictedCount, m.PerType["PER"].CorrectCount), Is.EqualTo((1, 0, 0)));
        Assert.That((m.PerType["ORG"].GoldCount, m.PerType["ORG"].PredictedCount, m.PerType["ORG"].CorrectCount), Is.EqualTo((0, 1, 0)));
        Assert.That(m.TokenAccuracy, Is.EqualTo(0.0));
    }

    [Test]
    public void EntityAtSentenceEnd()
    {
        AssertCounts(Score(("O B-LOC", "O B-LOC")), 1, 1, 1);
        AssertCounts(Score(("O B-LOC I-LOC", "O B-LOC I-LOC")), 1, 1, 1);
        // The span must end at the sentence end in both: gold ends there, the prediction one word earlier.
        AssertCounts(Score(("O B-LOC I-LOC", "O B-LOC O")), 1, 1, 0);
    }

    [Test]
    public void SentenceBoundaryEndsEntities()
    {
        // Sentence 2 starts with I-LOC: after the boundary (an O) it starts a new LOC, it does not continue sentence 1's.
        // Gold: LOC [1,2) in sentence 1, LOC [0,1) in sentence 2. Prediction: the same -> 2 of 2.
        AssertCounts(Score(("O B-LOC", "O B-LOC"), ("I-LOC O", "I-LOC O")), 2, 2, 2);
        // Prediction misses sentence 1's LOC: 1 predicted, 1 correct, 2 gold.
        var m = Score(("O B-LOC", "O O"), ("I-LOC O", "I-LOC O"));
        AssertCounts(m, 2, 1, 1);
        Assert.That((m.Precision, m.Recall), Is.EqualTo((1.0, 0.5)));
        Assert.That(m.F1, Is.EqualTo(2 * 1.0 * 0.5 / 1.5).Within(1e-12));
    }

    [Test]
    public void AdjacentBeginningsAreTwoEntities()
    {
        // B-B: endOfChunk and startOfChunk both hold, so gold has PER [0,1) and PER [1,2).
        AssertCounts(Score(("B-PER B-PER", "B-PER B-PER")), 2, 2, 2);
        // Predicting one PER [0,2) matches neither: precision 0/1, recall 0/2.
        var m = Score(("B-PER B-PER", "B-PER I-PER"));
        AssertCounts(m, 2, 1, 0);
        Assert.That(m.TokenAccuracy, Is.EqualTo(0.5));
    }

    [Test]
    public void InsideAfterOutsideStartsAnEntity()
    {
        // Predicted "O I-PER": at word 1 startOfChunk(O, I) holds (the O-I rule), gold "O B-PER" starts there too with the
        // same type, so conlleval is in a correct chunk; at the boundary both end (endOfChunk(I, O) and (B, O)) with
        // type PER on both sides: 1 correct. Token accuracy compares whole tags: I-PER != B-PER, so 1 of 2.
        var m = Score(("O B-PER", "O I-PER"));
        AssertCounts(m, 1, 1, 1);
        Assert.That(m.TokenAccuracy, Is.EqualTo(0.5));
        // An I- first in the sentence starts an entity as well: "I-PER I-PER O" reads as PER [0,2).
        AssertCounts(Score(("B-PER I-PER O", "I-PER I-PER O")), 1, 1, 1);
    }

    [Test]
    public void TypeChangeWithoutBeginIsTwoEntities()
    {
        // "B-PER I-LOC": at word 1 the type changes, so endOfChunk (prevType != type) and startOfChunk (type != prevType)
        // hold: PER [0,1), LOC [1,2). Gold "B-PER B-LOC" has the same chunks: 2 of 2.
        AssertCounts(Score(("B-PER B-LOC", "B-PER I-LOC")), 2, 2, 2);
        // "I-PER I-LOC": word 0 starts PER (O-I), word 1 ends it and starts LOC (type change): the same 2 chunks.
        AssertCounts(Score(("B-PER B-LOC", "I-PER I-LOC")), 2, 2, 2);
        // Against gold "B-PER I-PER" (one PER [0,2)): at word 1 the gold does not end but the prediction does, so
        // conlleval leaves the correct chunk: 1 gold, 2 predicted, 0 correct.
        AssertCounts(Score(("B-PER I-PER", "B-PER I-LOC")), 1, 2, 0);
        // "I-PER B-PER": word 0 starts PER, word 1 ends it (I-B) and starts another: PER [0,1), PER [1,2); gold PER [0,2).
        AssertCounts(Score(("B-PER I-PER", "I-PER B-PER")), 1, 2, 0);
    }

    [Test]
    public void ChunksFollowConllevalRules()
    {
        Assert.That(EntityScoring.Chunks(T("O I-PER I-PER O B-LOC")), Is.EqualTo(new[] { ("PER", 1, 3), ("LOC", 4, 5) }));
        Assert.That(EntityScoring.Chunks(T("B-PER I-LOC")), Is.EqualTo(new[] { ("PER", 0, 1), ("LOC", 1, 2) }));
        Assert.That(EntityScoring.Chunks(T("I-PER I-LOC")), Is.EqualTo(new[] { ("PER", 0, 1), ("LOC", 1, 2) }));
        Assert.That(EntityScoring.Chunks(T("B-PER B-PER O")), Is.EqualTo(new[] { ("PER", 0, 1), ("PER", 1, 2) }));
        Assert.That(EntityScoring.Chunks(T("O O")), Is.Empty);
        Assert.That(EntityScoring.Chunks(T("")), Is.Empty);
        // Types may contain hyphens: the tag splits at its first one.
        Assert.That(EntityScoring.Chunks(T("B-GPE-LOC I-GPE-LOC")), Is.EqualTo(new[] { ("GPE-LOC", 0, 2) }));
    }

    [Test]
    public void IobesTags()
    {
        // S- is a one-word entity, B- ... E- a longer one; E- and S- end a chunk, B- and S- start one.
        Assert.That(EntityScoring.Chunks(T("S-PER B-LOC I-LOC E-LOC O")), Is.EqualTo(new[] { ("PER", 0, 1), ("LOC", 1, 4) }));
        Assert.That(EntityScoring.Chunks(T("B-PER E-PER B-PER E-PER")), Is.EqualTo(new[] { ("PER", 0, 2), ("PER", 2, 4) }));
        Assert.That(EntityScoring.Chunks(T("S-PER S-PER")), Is.EqualTo(new[] { ("PER", 0, 1), ("PER", 1, 2) }));
        // Gold LOC [1,3) as B E, predicted as B I: the same span and type.
        AssertCounts(Score(("S-PER B-LOC E-LOC", "S-PER B-LOC I-LOC")), 2, 2, 2);
    }

    [Test]
    public void PerTypeAndMicroAverages()
    {
        // Gold:  s1 PER [0,2) LOC [3,4) ORG [5,6);  s2 MISC [0,1) PER [2,3)   -> 5
        // Pred:  s1 PER [0,2) LOC [3,4) LOC [5,6);  s2 MISC [0,1) PER [3,4)   -> 5
        // Correct: s1 PER, s1 LOC [3,4), s2 MISC                              -> 3
        var m = Score(
            ("B-PER I-PER O B-LOC O B-ORG", "B-PER I-PER O B-LOC O B-LOC"),
            ("B-MISC O B-PER O", "B-MISC O O B-PER"));
        AssertCounts(m, 5, 5, 3);
        Assert.That(m.Precision, Is.EqualTo(0.6).Within(1e-12));
        Assert.That(m.Recall, Is.EqualTo(0.6).Within(1e-12));
        Assert.That(m.F1, Is.EqualTo(0.6).Within(1e-12));
        // Tokens: s1 6 words, the last wrong (5 right); s2 4 words, the last two wrong (2 right): 7 of 10.
        Assert.That((m.TokenAccuracy, m.TokenCount), Is.EqualTo((0.7, 10)));

        Assert.That(m.PerType.Keys, Is.EqualTo(new[] { "LOC", "MISC", "ORG", "PER" }));
        var loc = m.PerType["LOC"];
        Assert.That((loc.GoldCount, loc.PredictedCount, loc.CorrectCount), Is.EqualTo((1, 2, 1)));
        Assert.That((loc.Precision, loc.Recall), Is.EqualTo((0.5, 1.0)));
        Assert.That(loc.F1, Is.EqualTo(2.0 / 3).Within(1e-12));
        var misc = m.PerType["MISC"];
        Assert.That((misc.Precision, misc.Recall, misc.F1), Is.EqualTo((1.0, 1.0, 1.0)));
        var org = m.PerType["ORG"];
        Assert.That((org.GoldCount, org.PredictedCount, org.CorrectCount), Is.EqualTo((1, 0, 0)));
        Assert.That((org.Precision, org.Recall, org.F1), Is.EqualTo((0.0, 0.0, 0.0)));
        var per = m.PerType["PER"];
        Assert.That((per.GoldCount, per.PredictedCount, per.CorrectCount), Is.EqualTo((2, 2, 1)));
        Assert.That((per.Precision, per.Recall, per.F1), Is.EqualTo((0.5, 0.5, 0.5)));

        // Micro F1 pools the counts; the mean of the per-type F1s, (2/3 + 1 + 0 + 0.5) / 4 = 0.5417, is another number.
        Assert.That(m.PerType.Values.Average(t => t.F1), Is.EqualTo(13.0 / 24).Within(1e-12));
    }

    [Test]
    public void EmptySentences()
    {
        var m = Score(("", ""));
        AssertCounts(m, 0, 0, 0);
        Assert.That((m.Precision, m.Recall, m.F1, m.TokenAccuracy, m.TokenCount), Is.EqualTo((0.0, 0.0, 0.0, 0.0, 0)));
        Assert.That(m.PerType, Is.Empty);
        Assert.That(EntityScoring.Compute(Array.Empty<(IReadOnlyList<string>, IReadOnlyList<string>)>()).TokenCount, Is.EqualTo(0));
        // An empty sentence between two others changes nothing (and does not join them).
        var joined = Score(("O B-LOC", "O B-LOC"), ("", ""), ("I-LOC", "I-LOC"));
        AssertCounts(joined, 2, 2, 2);
    }

    [Test]
    public void AllOutside()
    {
        // No entities anywhere: 0/0 precision and recall are 0 (conlleval prints 0.00), tokens all right.
        var m = Score(("O O O", "O O O"));
        AssertCounts(m, 0, 0, 0);
        Assert.That((m.Precision, m.Recall, m.F1), Is.EqualTo((0.0, 0.0, 0.0)));
        Assert.That(m.TokenAccuracy, Is.EqualTo(1.0));
        // Predicting nothing against gold entities: precision 0/0 = 0, recall 0/2.
        var none = Score(("B-PER O B-LOC", "O O O"));
        AssertCounts(none, 2, 0, 0);
        Assert.That((none.Precision, none.Recall, none.F1), Is.EqualTo((0.0, 0.0, 0.0)));
        Assert.That(none.PerType.Keys, Is.EqualTo(new[] { "LOC", "PER" }));
    }

    [Test]
    public void LengthMismatchNamesTheSentence()
    {
        var e = Assert.Throws<ArgumentException>(() => Score(("O", "O"), ("B-PER I-PER O", "B-PER O")))!;
        Assert.That(e.Message, Does.Contain("Sentence 1").And.Contain("3 gold tags").And.Contain("2 predicted tags"));
    }

    [Test]
    public void StateMachineAgreesWithSpanMatchingOnRandomSequences()
    {
        // For O/B/I tags conlleval's state machine counts exactly the predicted chunks whose (type, start, end) is a gold chunk.
        var random = new Random(7);
        string[] tags = { "O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC" };
        var sentences = new List<(IReadOnlyList<string>, IReadOnlyList<string>)>();
        int gold = 0, predicted = 0, correct = 0;
        for (int s = 0; s < 2000; s++)
        {
            int length = random.Next(0, 8);
            var g = Enumerable.Range(0, length).Select(_ => tags[random.Next(tags.Length)]).ToArray();
            // Predictions close to the gold, so that many chunks match.
            var p = g.Select(t => random.Next(4) == 0 ? tags[random.Next(tags.Length)] : t).ToArray();
            sentences.Add((g, p));
            var goldChunks = EntityScoring.Chunks(g);
            var predictedChunks = EntityScoring.Chunks(p);
            gold += goldChunks.Count;
            predicted += predictedChunks.Count;
            correct += predictedChunks.Intersect(goldChunks).Count();
        }
        var m = EntityScoring.Compute(sentences);
        Assert.That(correct, Is.GreaterThan(1000));
        AssertCounts(m, gold, predicted, correct);
    }

    [Test]
    public void MatchesConllevalOnRandomMalformedSequences()
    {
        // Assets/conlleval/random.txt (written by make_random.py there): 400 sentences of malformed BIO and conlleval's
        // rarer tags ([, ], ., untyped B and I, unknown prefixes), empty sentences included. The expected counts are
        // conlleval.pl's on that file ("processed 1789 tokens with 1107 phrases; found: 1094 phrases; correct: 709.",
        // 1256 tags right; per type found in gold / predicted / correct).
        var path = Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", "conlleval", "random.txt");
        var sentences = new List<(IReadOnlyList<string>, IReadOnlyList<string>)>();
        var gold = new List<string>();
        var predicted = new List<string>();
        foreach (var line in File.ReadLines(path))
        {
            if (line.Length == 0)
            {
                sentences.Add((gold.ToArray(), predicted.ToArray()));
                gold.Clear();
                predicted.Clear();
                continue;
            }
            var columns = line.Split(' ');
            gold.Add(columns[1]);
            predicted.Add(columns[2]);
        }
        Assert.That(sentences.Count, Is.EqualTo(400));
        var m = EntityScoring.Compute(sentences);
        Assert.That(m.TokenCount, Is.EqualTo(1789));
        Assert.That(m.TokenAccuracy, Is.EqualTo(1256.0 / 1789).Within(1e-12));
        AssertCounts(m, 1107, 1094, 709);
        Assert.That(m.PerType.Keys, Is.EqualTo(new[] { "", "LOC", "ORG", "PER" }));
        var expected = new Dictionary<string, (int, int, int)>
        {
            [""] = (189, 196, 118),
            ["LOC"] = (286, 281, 183),
            ["ORG"] = (226, 225, 158),
            ["PER"] = (406, 392, 250),
        };
        foreach (var (type, counts) in expected)
            Assert.That((m.PerType[type].GoldCount, m.PerType[type].PredictedCount, m.PerType[type].CorrectCount), Is.EqualTo(counts), type);
    }

    private sealed class TagRow
    {
        public string[] Label { get; set; } = Array.Empty<string>();
        public string[] PredictedLabel { get; set; } = Array.Empty<string>();
    }

    private static IDataView Keyed(MLContext ml, IEnumerable<TagRow> rows)
    {
        var data = ml.Data.LoadFromEnumerable(rows);
        return ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.Conversion.MapValueToKey("PredictedLabel"))
            .Fit(data).Transform(data);
    }

    private static TagRow Row(string gold, string predicted) => new() { Label = T(gold), PredictedLabel = T(predicted) };

    [Test]
    public void EvaluatorReadsKeyVectorsByTagName()
    {
        var ml = new MLContext(1);
        // The same two sentences as PerTypeAndMicroAverages. The two columns meet their tags in other orders, so their key
        // orders differ (checked below): the evaluator must match tags by name.
        var data = Keyed(ml, new[]
        {
            Row("B-PER I-PER O B-LOC O B-ORG", "B-PER I-PER O B-LOC O B-LOC"),
            Row("B-MISC O B-PER O", "B-MISC O O B-PER"),
        });
        Assert.That(data.Schema["Label"].Type, Is.InstanceOf<VectorDataViewType>());
        VBuffer<ReadOnlyMemory<char>> labelKeys = default, predictedKeys = default;
        data.Schema["Label"].GetKeyValues(ref labelKeys);
        data.Schema["PredictedLabel"].GetKeyValues(ref predictedKeys);
        Assert.That(labelKeys.DenseValues().Select(v => v.ToString()), Is.Not.EqualTo(predictedKeys.DenseValues().Select(v => v.ToString())));

        var m = ml.MulticlassClassification.EvaluateEntities(data);
        AssertCounts(m, 5, 5, 3);
        Assert.That(m.F1, Is.EqualTo(0.6).Within(1e-12));
        Assert.That((m.TokenAccuracy, m.TokenCount), Is.EqualTo((0.7, 10)));
        Assert.That(m.PerType["LOC"].F1, Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(m.PerType["PER"].CorrectCount, Is.EqualTo(1));
    }

    [Test]
    public void EvaluatorTakesOtherColumnNames()
    {
        var ml = new MLContext(1);
        var data = Keyed(ml, new[] { Row("B-PER O", "B-PER O") });
        var renamed = ml.Transforms.CopyColumns("Gold", "Label").Append(ml.Transforms.CopyColumns("Tags", "PredictedLabel"))
            .Fit(data).Transform(data);
        var m = ml.MulticlassClassification.EvaluateEntities(renamed, labelColumnName: "Gold", predictedLabelColumnName: "Tags");
        AssertCounts(m, 1, 1, 1);
    }

    [Test]
    public void EvaluatorErrorsNameTheColumnAndRow()
    {
        var ml = new MLContext(1);
        var rows = new[] { Row("B-PER O", "B-PER O"), Row("O B-LOC I-LOC", "O B-LOC") };

        var missing = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(Keyed(ml, rows.Take(1)), predictedLabelColumnName: "Tags"))!;
        Assert.That(missing.Message, Does.Contain("'Tags'").And.Contain("not in the data"));

        var text = ml.Data.LoadFromEnumerable(rows.Take(1));
        var notKeys = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(text))!;
        Assert.That(notKeys.Message, Does.Contain("'Label'").And.Contain("vector of keys"));

        var lengths = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(Keyed(ml, rows)))!;
        Assert.That(lengths.Message, Does.Contain("Row 2").And.Contain("3 tags").And.Contain("has 2"));

        // A prediction tag that the key mapping fitted on other data does not know maps to key 0.
        var fitted = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.Conversion.MapValueToKey("PredictedLabel"))
            .Fit(ml.Data.LoadFromEnumerable(new[] { Row("B-PER O", "B-PER O") }));
        var unknown = fitted.Transform(ml.Data.LoadFromEnumerable(new[] { Row("B-PER O", "B-PER O"), Row("O O", "O B-XYZ") }));
        var zero = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(unknown))!;
        Assert.That(zero.Message, Does.Contain("Row 2").And.Contain("word 2").And.Contain("'PredictedLabel'").And.Contain("missing key"));
        var unknownGold = fitted.Transform(ml.Data.LoadFromEnumerable(new[] { Row("B-ABC", "O") }));
        var zeroGold = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(unknownGold))!;
        Assert.That(zeroGold.Message, Does.Contain("Row 1").And.Contain("'Label'").And.Contain("missing key"));
    }

    private sealed class KeyRow
    {
        public uint[] Label { get; set; } = Array.Empty<uint>();
        public uint[] PredictedLabel { get; set; } = Array.Empty<uint>();
    }

    [Test]
    public void EvaluatorNeedsKeyValueNames()
    {
        var ml = new MLContext(1);
        var schema = SchemaDefinition.Create(typeof(KeyRow));
        foreach (var name in new[] { "Label", "PredictedLabel" })
            schema[name].ColumnType = new VectorDataViewType(new KeyDataViewType(typeof(uint), 3));
        var data = ml.Data.LoadFromEnumerable(new[] { new KeyRow { Label = new uint[] { 1, 2 }, PredictedLabel = new uint[] { 1, 2 } } }, schema);
        Assert.That(data.Schema["Label"].Type, Is.EqualTo(new VectorDataViewType(new KeyDataViewType(typeof(uint), 3))));
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.EvaluateEntities(data))!;
        Assert.That(e.Message, Does.Contain("'Label'").And.Contain("no key value names"));
    }
}
