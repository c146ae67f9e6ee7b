using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Inputs;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Training;
using NUnit.Framework;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Fused scaled dot-product attention against the attention formula, the <c>AttentionDropout</c> option, and bfloat16
/// mixed precision (<c>Precision = Bf16</c>): accuracy against fp32, training, merging, saving and loading.
/// </summary>
[TestFixture]
public class PrecisionAndAttentionTests
{
    private string tiny = "";

    [OneTimeSetUp]
    public void WriteTinyBert() => tiny = TinyBert.WriteDirectory(seed: 31);

    [OneTimeTearDown]
    public void RemoveTinyBert() => Directory.Delete(tiny, recursive: true);

    /// <summary>A self-attention block of the tiny BERT's shape with seeded random projections.</summary>
    private static BertSelfAttention RandomAttention(int seed)
    {
        var attention = new BertSelfAttention(TinyBert.Config);
        using var generator = new Generator((ulong)seed);
        using (no_grad()) foreach (var p in attention.parameters()) p.uniform_(-0.5, 0.5, generator);
        return attention;
    }

    /// <summary>softmax(QK^T/sqrt(d) + mask) V over heads, written out from the weights (the definition, not our code path).</summary>
    private static Tensor Reference(BertSelfAttention attention, Tensor hidden, Tensor additiveMask, Tensor? prefix = null)
    {
        var p = attention.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);
        int heads = TinyBert.Config.NumAttentionHeads, size = TinyBert.Config.HiddenSize / heads;
        long batch = hidden.shape[0], length = hidden.shape[1];
        Tensor Heads(string name) => matmul(hidden, p[name + ".weight"].t()).add(p[name + ".bias"]).view(batch, length, heads, size).permute(0, 2, 1, 3);
        var q = Heads("query");
        var k = Heads("key");
        var v = Heads("value");
        if (prefix is not null)
        {
            k = cat(new[] { prefix[0], k }, 2);
            v = cat(new[] { prefix[1], v }, 2);
        }
        var scores = matmul(q, k.transpose(2, 3)).div(Math.Sqrt(size)).add(additiveMask);
        var context = matmul(softmax(scores, 3), v);
        return context.permute(0, 2, 1, 3).reshape(batch, length, heads * size);
    }

    private static (Tensor Hidden, Tensor Mask) Inputs(long keys = 0)
    {
        using var generator = new Generator(11);
        var hidden = randn(new long[] { 3, 9, TinyBert.Config.HiddenSize }, generator: generator);
        var attend = ones(3, keys + 9);
        attend[1, TensorIndex.Slice(keys + 6)] = 0; // padding at the end of row 1
        attend[2, TensorIndex.Slice(keys + 8)] = 0;
        var additive = attend.neg().add(1).mul(-1e9f).unsqueeze(1).unsqueeze(1);
        return (hidden, additive);
    }

    private static double MaxDiff(Tensor a, Tensor b, Tensor? rowMask = null)
    {
        using var diff = a.to(ScalarType.Float32).sub(b.to(ScalarType.Float32)).abs();
        using var masked = rowMask is null ? diff.alias() : diff.mul(rowMask.unsqueeze(-1));
        return masked.max().item<float>();
    }

    [Test]
    public void FusedAttentionEqualsTheFormulaInEvaluationTrainingAndFusedProjectionPaths()
    {
        using var scope = NewDisposeScope();
        using var attention = RandomAttention(1);
        var (hidden, mask) = Inputs();
        var expected = Reference(attention, hidden, mask);
        // Padded query positions are compared too: with an additive mask they attend to the real keys like the others.
        attention.eval();
        using (no_grad())
        {
            Assert.That(MaxDiff(attention.Forward(hidden, mask, null), expected), Is.LessThan(1e-5), "evaluation, separate projections");
            attention.FuseProjections();
            Assert.That(MaxDiff(attention.Forward(hidden, mask, null), expected), Is.LessThan(1e-5), "evaluation, fused projection");
            attention.ClearFusedProjections();
        }
        // Training without attention dropout takes the fused kernel; with dropout 0 it must equal the formula.
        attention.train();
        attention.AttentionDropout = 0;
        using (no_grad()) Assert.That(MaxDiff(attention.Forward(hidden, mask, null), expected), Is.LessThan(1e-5), "training, dropout 0");
    }

    [Test]
    public void PrefixKeysAndValuesAreAttendedOnTheFusedPath()
    {
        using var scope = NewDisposeScope();
        using var attention = RandomAttention(2);
        int heads = TinyBert.Config.NumAttentionHeads, size = TinyBert.Config.HiddenSize / heads;
        var (hidden, mask) = Inputs(keys: 4);
        using var generator = new Generator(12);
        var prefix = randn(new long[] { 2, 3, heads, 4, size }, generator: generator);
        var expected = Reference(attention, hidden, mask, prefix);
        attention.eval();
        using (no_grad()) Assert.That(MaxDiff(attention.Forward(hidden, mask, prefix), expected), Is.LessThan(1e-5));
        attention.train();
        attention.AttentionDropout = 0;
        using (no_grad()) Assert.That(MaxDiff(attention.Forward(hidden, mask, prefix), expected), Is.LessThan(1e-5));
    }

    [Test]
    public void GradientsThroughTheFusedKernelEqualTheFormulasGradients()
    {
        using var scope = NewDisposeScope();
        using var attention = RandomAttention(3);
        attention.train();
        attention.AttentionDropout = 0;
        var (hidden, mask) = Inputs();
        using var generator = new Generator(13);
        var upstream = randn(new long[] { 3, 9, TinyBert.Config.HiddenSize }, generator: generator);
        var input = hidden.clone().requires_grad_(true);
        attention.Forward(input, mask, null).mul(upstream).sum().backward();
        var fusedInput = input.grad!.clone();
        var fusedQuery = attention.named_parameters().Single(p => p.name == "query.weight").parameter.grad!.clone();
        Assert.That(fusedQuery.abs().sum().item<float>(), Is.GreaterThan(0), "the query weight gets a gradient");

        attention.zero_grad();
        var input2 = hidden.clone().requires_grad_(true);
        Reference(attention, input2, mask).mul(upstream).sum().backward();
        var query = attention.named_parameters().Single(p => p.name == "query.weight").parameter.grad!;
        Assert.That(MaxDiff(fusedInput, input2.grad!), Is.LessThan(1e-4));
        Assert.That(MaxDiff(fusedQuery, query), Is.LessThan(1e-4));
    }

    [Test]
    public void DropoutAttentionEqualsTheFormulaWithTheSameMaskForwardAndBackward()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(21);
        var (_, mask) = Inputs(keys: 4);
        Tensor Random(long length) => randn(new long[] { 3, 2, length, 8 }, generator: generator);
        var (q0, k0, v0) = (Random(9), Random(13), Random(13));
        var keep = rand(new long[] { 3, 2, 9, 13 }, generator: generator).gt(0.3);
        var upstream = randn(new long[] { 3, 2, 9, 8 }, generator: generator);
        const double p = 0.3;

        var (q, k, v) = (q0.clone().requires_grad_(true), k0.clone().requires_grad_(true), v0.clone().requires_grad_(true));
        var ours = DropoutAttention.Run(q, k, v, mask, keep, p);
        ours.mul(upstream).sum().backward();

        // The definition, through autograd: (softmax(QK^T/sqrt(d) + mask) * keep / (1 - p)) V.
        var (rq, rk, rv) = (q0.clone().requires_grad_(true), k0.clone().requires_grad_(true), v0.clone().requires_grad_(true));
        var probabilities = softmax(matmul(rq, rk.transpose(2, 3)).div(Math.Sqrt(8)).add(mask), 3);
        var expected = matmul(probabilities.mul(keep.to(ScalarType.Float32)).div(1 - p), rv);
        expected.mul(upstream).sum().backward();

        Assert.That(MaxDiff(ours, expected), Is.LessThan(1e-5), "forward");
        Assert.That(MaxDiff(q.grad!, rq.grad!), Is.LessThan(1e-5), "query gradient");
        Assert.That(MaxDiff(k.grad!, rk.grad!), Is.LessThan(1e-5), "key gradient");
        Assert.That(MaxDiff(v.grad!, rv.grad!), Is.LessThan(1e-5), "value gradient");
        Assert.That(rk.grad!.abs().sum().item<float>(), Is.GreaterThan(0), "the keys get a gradient");
        Assert.That(() => DropoutAttention.Run(q, k, v, mask, keep.to(ScalarType.Float32), p), Throws.ArgumentException);
    }

    [Test]
    public void TrainingWithAttentionDropoutUsesTheRunsGeneratorAndMatchesTheFormula()
    {
        using var scope = NewDisposeScope();
        using var attention = RandomAttention(4);
        attention.train();
        attention.AttentionDropout = 0.25;
        var (hidden, mask) = Inputs();
        using var random = new Microsoft.ML.Peft.Torch.RandomSource(5, CPU);
        Microsoft.ML.Peft.Torch.RunDropout.Attach(attention, random);
        var input = hidden.clone().requires_grad_(true);
        var ours = attention.Forward(input, mask, null);
        ours.sum().backward();

        // The same draws from a generator seeded alike, applied by the formula.
        using var again = new Microsoft.ML.Peft.Torch.RandomSource(5, CPU);
        int heads = TinyBert.Config.NumAttentionHeads, size = TinyBert.Config.HiddenSize / heads;
        var keep = rand(new long[] { 3, heads, 9, 9 }, generator: again.Dropout).lt(0.75).to(ScalarType.Float32); // u < 1 - p
        var w = attention.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);
        var input2 = hidden.clone().requires_grad_(true);
        Tensor Heads(string name) => matmul(input2, w[name + ".weight"].t()).add(w[name + ".bias"]).view(3, 9, heads, size).permute(0, 2, 1, 3);
        var probabilities = softmax(matmul(Heads("query"), Heads("key").transpose(2, 3)).div(Math.Sqrt(size)).add(mask), 3);
        var expected = matmul(probabilities.mul(keep).div(0.75), Heads("value")).permute(0, 2, 1, 3).reshape(3, 9, heads * size);
        var inputGrad = input.grad!.clone();
        expected.sum().backward();
        Assert.That(MaxDiff(ours, expected), Is.LessThan(1e-5), "forward");
        Assert.That(MaxDiff(inputGrad, input2.grad!), Is.LessThan(1e-4), "input gradient");
        Assert.That(keep.mean().item<float>(), Is.InRange(0.5f, 0.95f), "dropout dropped some probabilities, not all");
    }

    /// <summary>A frozen base, as a method leaves it: only weights that are not trained get bfloat16 copies.</summary>
    private static void Freeze(nn.Module model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    [Test]
    public void Bf16AttentionAndProjectionsStayCloseToFp32()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel(seed: 4);
        var (ids, mask, types) = TinyBert.RandomBatch(4, 12);
        Tensor fp32, bf16, bf16Fused;
        using (no_grad())
        {
            fp32 = model.forward(ids, mask, types);
            Freeze(model);
            model.SetComputeType(ScalarType.BFloat16);
            bf16 = model.forward(ids, mask, types);
            model.FuseProjections();
            bf16Fused = model.forward(ids, mask, types);
        }
        Assert.That(bf16.dtype, Is.EqualTo(ScalarType.Float32), "hidden states stay fp32 between layers");
        // The hidden states are LayerNorm outputs (unit scale): bfloat16's 8-bit mantissa leaves errors of a few 1e-2.
        var real = mask.to(ScalarType.Float32);
        double diff = MaxDiff(bf16, fp32, real), fusedDiff = MaxDiff(bf16Fused, fp32, real);
        TestContext.Out.WriteLine($"tiny BERT bf16 vs fp32 max |diff| {diff:E2}, fused {fusedDiff:E2}");
        Assert.That(diff, Is.LessThan(0.1).And.GreaterThan(0), "bf16 differs from fp32, but little");
        Assert.That(fusedDiff, Is.LessThan(0.1));
        foreach (var (_, linear) in model.Linears())
        {
            Assert.That(linear.Weight.dtype, Is.EqualTo(ScalarType.Float32), "the fp32 weights are kept");
            Assert.That(linear.ComputeWeight!.dtype, Is.EqualTo(ScalarType.BFloat16));
        }
    }

    [Test]
    public void Bf16ProbabilitiesOnSst2RowsAreWithinTwoHundredthsOfFp32()
    {
        using var scope = NewDisposeScope();
        var loaded = BaseModelSource.MiniLM().Load();
        var rows = TestData.ReadSst2(TestData.Sst2Dev, skip: 100, take: 48);
        var batch = new TextEncoder(loaded.Vocab, lowerCase: true, maxLength: 64).Encode(rows.Select(r => r.Sentence).ToList());
        var shape = new long[] { batch.Rows, batch.Length };
        var (ids, mask, types) = (tensor(batch.InputIds, shape), tensor(batch.AttentionMask, shape), tensor(batch.TokenTypeIds, shape));
        using var model = new BertModel(loaded.Config);
        BertWeights.Load(model, loaded.Weights, "MiniLM");
        model.eval();
        Tensor Pooled()
        {
            using (no_grad()) return Heads.Pooling.Mean(model.forward(ids, mask, types), mask);
        }
        var fp32 = Pooled();
        Freeze(model);
        model.SetComputeType(ScalarType.BFloat16);
        var bf16 = Pooled();
        var cosine = nn.functional.cosine_similarity(fp32, bf16, 1);
        Assert.That(cosine.min().item<float>(), Is.GreaterThan(0.995f));
        // A linear sentiment probe fitted on the fp32 features (difference of the class means, scaled so that logits
        // spread over about +-4): probabilities far from 1/2, where a precision error shows.
        var labels = tensor(rows.Select(r => (float)r.Label).ToArray());
        var positive = fp32[labels.eq(1)].mean(new long[] { 0 });
        var negative = fp32[labels.eq(0)].mean(new long[] { 0 });
        var direction = positive.sub(negative);
        var centre = positive.add(negative).div(2);
        var logits = fp32.sub(centre).matmul(direction);
        var scale = 4 / logits.abs().max().item<float>();
        var p32 = sigmoid(logits.mul(scale));
        var p16 = sigmoid(bf16.sub(centre).matmul(direction).mul(scale));
        double maxDiff = MaxDiff(p32, p16);
        TestContext.Out.WriteLine($"MiniLM bf16 vs fp32 on {rows.Count} SST-2 rows: min cosine {cosine.min().item<float>():F5}, max |p diff| {maxDiff:E2}");
        Assert.That(p32.sub(0.5).abs().max().item<float>(), Is.GreaterThan(0.3f), "the probe gives confident probabilities");
        Assert.That(maxDiff, Is.LessThan(2e-2));
    }

    [Test]
    public void MergingAndUnmergingRefreshTheBf16Copies()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel(seed: 5);
        var adapted = TinyBert.Adapt(model, new LoraOptions { Rank = 2, TargetModules = new[] { "query", "value" } }, new Generator(2));
        using (no_grad()) foreach (var (_, linear) in model.Linears()) if (linear.Adapter("default") is LoraLayer l) l.B.normal_(0, 0.5);
        model.eval(); // the adapters' dropout too
        ((ITextBackbone)adapted.Backbone).SetComputeType(ScalarType.BFloat16);
        var query = model.Linears().Single(l => l.Name == "encoder.layer.0.attention.self.query").Layer;
        var original = query.Weight.detach().clone();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        Tensor unmerged, merged, restored;
        using (no_grad())
        {
            unmerged = model.forward(ids, mask, types);
            adapted.Merge();
            Assert.That(MaxDiff(query.ComputeWeight!, query.Weight.to(ScalarType.BFloat16)), Is.EqualTo(0), "the copy follows the merged weight");
            Assert.That(MaxDiff(query.Weight, original), Is.GreaterThan(1e-3), "merging changed the fp32 weight");
            merged = model.forward(ids, mask, types);
            adapted.Unmerge();
            Assert.That(MaxDiff(query.ComputeWeight!, original.to(ScalarType.BFloat16)), Is.EqualTo(0), "the copy follows the restored weight");
            restored = model.forward(ids, mask, types);
        }
        var real = mask.to(ScalarType.Float32);
        Assert.That(MaxDiff(merged, unmerged, real), Is.LessThan(0.1), "merged bf16 scores as the unmerged adapter does, to bf16 accuracy");
        Assert.That(MaxDiff(restored, unmerged, real), Is.EqualTo(0), "unmerging restores the exact outputs");
    }

    [Test]
    public void MergingForScoringOnlyKeepsNoBaseCopyAndRefusesToUnmerge()
    {
        using var scope = NewDisposeScope();
        var (ids, mask, types) = TinyBert.RandomBatch(3, 10);
        Tensor Merged(bool keepBase, out AdaptedBackbone adapted, out BertModel model)
        {
            model = TinyBert.CreateModel(seed: 8);
            adapted = TinyBert.Adapt(model, new LoraOptions { Rank = 2 }, new Generator(4));
            using (no_grad()) foreach (var (_, linear) in model.Linears()) if (linear.Adapter("default") is LoraLayer l) l.B.normal_(0, 0.2, new Generator(5));
            model.eval();
            adapted.Merge(keepBase);
            using (no_grad()) return model.forward(ids, mask, types);
        }
        var reversible = Merged(true, out _, out var first);
        var scoringOnly = Merged(false, out var adapted, out var second);
        Assert.That(MaxDiff(scoringOnly, reversible), Is.EqualTo(0), "the same merged weights");
        Assert.Throws<InvalidOperationException>(() => adapted.Unmerge());
        first.Dispose();
        second.Dispose();
    }

    [Test]
    public void TrainedWeightsGetNoBf16Copy()
    {
        using var scope = NewDisposeScope();
        using var model = TinyBert.CreateModel(seed: 6);
        var adapted = TinyBert.Adapt(model, new Methods.Full.FullFineTuningOptions());
        ((ITextBackbone)adapted.Backbone).SetComputeType(ScalarType.BFloat16);
        Assert.That(model.Linears().All(l => l.Layer.ComputeWeight is null), Is.True, "full fine-tuning trains every weight in fp32");
    }

    private PeftTextClassificationTrainer.Options Options(PeftPrecision precision, int seed = 1)
    {
        var options = TinyTraining.Options(tiny);
        options.Precision = precision;
        options.Seed = seed;
        options.MaxEpoch = 5;
        return options;
    }

    private static float[][] Score(MLContext ml, ITransformer model, IEnumerable<SentenceRow> rows) =>
        ml.Data.CreateEnumerable<ScoreRow>(model.Transform(ml.Data.LoadFromEnumerable(rows)), reuseRowObject: false).Select(r => r.Score).ToArray();

    [Test]
    public void Bf16TrainingLowersTheLossAndItsModelSavesAndLoadsScoringIdentically()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(64, 3));
        var fp32Trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(Options(PeftPrecision.Fp32));
        var fp32Losses = new List<double>();
        fp32Trainer.EpochCompleted += (_, m) => fp32Losses.Add(m.TrainingLoss);
        foreach (var d in ml.Transforms.Conversion.MapValueToKey("Label").Append(fp32Trainer).Fit(data).OfType<IDisposable>()) d.Dispose();
        var trainer = ml.MulticlassClassification.Trainers.PeftTextClassification(Options(PeftPrecision.Bf16));
        var losses = new List<double>();
        trainer.EpochCompleted += (_, m) => losses.Add(m.TrainingLoss);
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(trainer).Fit(data);
        TestContext.Out.WriteLine($"fp32 losses: {string.Join(", ", fp32Losses.Select(l => l.ToString("F4")))}; bf16: {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.That(losses[^1], Is.LessThan(losses[0] * 0.8), "bf16 training learns");
        Assert.That(losses[^1], Is.EqualTo(fp32Losses[^1]).Within(0.1), "and about as fast as fp32");

        var peft = model.LastTransformer;
        Assert.That(peft.Model.Precision, Is.EqualTo(PeftPrecision.Bf16));
        foreach (var p in peft.Model.TrainableParameters()) Assert.That(p.Parameter.dtype, Is.EqualTo(ScalarType.Float32), $"{p.Key} is an fp32 master weight");
        var path = Path.Combine(Path.GetTempPath(), $"peft-bf16-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var rows = TinyTraining.Rows(16, 9);
            var before = Score(ml, model, rows);
            // Loaded on its own, the model merges its adapter and rounds the merged weights to bf16, as the trained one did: the same scores.
            var loaded = ml.Model.LoadPeft(path, new PeftLoadOptions { ShareBaseModel = false }, out _);
            var loadedPeft = ((TransformerChain<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
            Assert.That(loadedPeft.Model.Precision, Is.EqualTo(PeftPrecision.Bf16), "the precision is saved");
            var after = Score(ml, loaded, rows);
            for (int i = 0; i < rows.Count; i++) Assert.That(after[i], Is.EqualTo(before[i]).Within(1e-6), $"row {i}");
            Assert.That(MetadataJson(path)["precision"]?.GetValue<string>(), Is.EqualTo("bf16"));
            // Sharing the base, it keeps the adapter unmerged (fp32 branch over the bf16 base product): equal to bf16 rounding.
            var shared = ml.Model.LoadPeft(path, new PeftLoadOptions { ShareBaseModel = true }, out _);
            var sharedPeft = ((TransformerChain<ITransformer>)shared).OfType<PeftTextClassificationTransformer>().Single();
            var sharedScores = Score(ml, shared, rows);
            for (int i = 0; i < rows.Count; i++) Assert.That(sharedScores[i], Is.EqualTo(before[i]).Within(2e-3), $"row {i}, shared base");
            // The shared base's fp32 tensors are untouched by the bf16 copies.
            foreach (var (name, parameter) in sharedPeft.Model.Backbone.Module.named_parameters())
                Assert.That(parameter.dtype, Is.EqualTo(ScalarType.Float32), name);
            foreach (var d in ((IEnumerable<ITransformer>)shared).OfType<IDisposable>()) d.Dispose();
            foreach (var d in ((IEnumerable<ITransformer>)loaded).OfType<IDisposable>()) d.Dispose();
        }
        finally
        {
            File.Delete(path);
            foreach (var d in model.OfType<IDisposable>()) d.Dispose();
        }
    }

    /// <summary>The metadata entry of a saved model file.</summary>
    private static JsonObject MetadataJson(string path)
    {
        using var zip = System.IO.Compression.ZipFile.OpenRead(path);
        var entry = zip.Entries.Single(e => e.FullName.EndsWith(ModelEntries.Metadata, StringComparison.Ordinal));
        using var reader = new BinaryReader(entry.Open());
        return JsonNode.Parse(Encoding.UTF8.GetString(ModelEntries.Read(reader, ModelEntries.Metadata, path)))!.AsObject();
    }

    [Test]
    public void Fp32ModelsKeepTheirMetadataAndAttentionDropoutIsSaved()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(16, 4));
        var options = Options(PeftPrecision.Fp32);
        options.MaxEpoch = 1;
        options.AttentionDropout = 0;
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options)).Fit(data);
        Assert.That(model.LastTransformer.Model.Backbone.AttentionDropout, Is.EqualTo(0));
        var path = Path.Combine(Path.GetTempPath(), $"peft-attn-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var json = MetadataJson(path);
            Assert.That(json.ContainsKey("precision"), Is.False, "fp32 models are written as before");
            Assert.That(json["attention_dropout"]?.GetValue<double>(), Is.EqualTo(0));
            var loaded = ml.Model.Load(path, out _);
            var peft = ((TransformerChain<ITransformer>)loaded).OfType<PeftTextClassificationTransformer>().Single();
            Assert.That(peft.Model.Backbone.AttentionDropout, Is.EqualTo(0));
            Assert.That(peft.Model.Precision, Is.EqualTo(PeftPrecision.Fp32));
            foreach (var d in ((IEnumerable<ITransformer>)loaded).OfType<IDisposable>()) d.Dispose();
        }
        finally
        {
            File.Delete(path);
            foreach (var d in model.OfType<IDisposable>()) d.Dispose();
        }
    }

    [Test]
    public void BadOptionsAndSavedValuesAreRefusedByName()
    {
        var ml = new MLContext(1);
        var options = Options(PeftPrecision.Fp32);
        options.AttentionDropout = 1.5f;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options));
        Assert.That(e!.ParamName, Is.EqualTo("AttentionDropout"));
        options = Options((PeftPrecision)7);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.PeftTextClassification(options));
        Assert.That(e!.ParamName, Is.EqualTo("Precision"));
        var bad = Assert.Throws<InvalidDataException>(() => PeftPrecisionNames.Parse("fp8", "the model"));
        Assert.That(bad!.Message, Does.Contain("fp8"));
    }

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = Array.Empty<float>();
    }
}
