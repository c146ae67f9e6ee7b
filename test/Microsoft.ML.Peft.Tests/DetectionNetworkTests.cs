using System.Diagnostics;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.ObjectDetection;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tests;

/// <summary>The detector's network (ResNet C3-C5, pyramid, FCOS head), its losses against hand-computed values, target assignment, decoding, and that it learns.</summary>
[TestFixture]
public class DetectionNetworkTests
{
    /// <summary>
    /// A small ResNet (one basic block per stage, width 8) with He-initialised convolutions and identity batch
    /// normalisations, so signals keep their scale through the random network.
    /// </summary>
    private static ResNetBackbone RandomResNet(int seed)
    {
        var config = new ResNetConfig { Block = "basic", Layers = new[] { 1, 1, 1, 1 }, Width = 8 };
        var weights = new Dictionary<string, NamedArray>();
        using var generator = new Generator((ulong)seed);
        using (var model = new ResNetModel(config))
        {
            foreach (var (name, t) in model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers()))
            {
                using var values = t.dim() == 4
                    ? randn(t.shape, generator: generator).mul_(Math.Sqrt(2.0 / (t.shape[1] * t.shape[2] * t.shape[3])))
                    : name.EndsWith("weight") || name.EndsWith("running_var") ? ones(t.shape) : zeros(t.shape);
                weights[name] = new NamedArray(t.shape, values.data<float>().ToArray()) { SourceName = name };
            }
        }
        return new ResNetBackbone(config, weights, "random ResNet");
    }

    private static IReadOnlyList<IReadOnlyList<DetectionBox>> Lists(params DetectionBox[][] boxes) => boxes;

    [Test]
    public void MultiScaleFeaturesAreTheForwardPassStages()
    {
        using var scope = NewDisposeScope();
        var backbone = RandomResNet(3);
        using var generator = new Generator(7);
        var images = randn(new long[] { 2, 3, 96, 64 }, generator: generator);
        var features = backbone.Model.MultiScaleFeatures(images);
        Assert.That(features.Select(f => f.shape), Is.EqualTo(new[]
        {
            new long[] { 2, 16, 12, 8 }, new long[] { 2, 32, 6, 4 }, new long[] { 2, 64, 3, 2 },
        }), "strides 8, 16, 32 with layer2-4's channels");
        Assert.That(backbone.Model.MultiScaleChannels, Is.EqualTo(new long[] { 16, 32, 64 }));
        // The pooled forward pass is the mean of layer4's output: the same network.
        var pooled = features[2].mean(new long[] { 2, 3 });
        Assert.That(pooled.sub(backbone.Forward(images)).abs().max().item<float>(), Is.LessThan(1e-5f));
        backbone.Model.Dispose();
    }

    [Test]
    public void NetworkShapesAndInitialPrior()
    {
        using var scope = NewDisposeScope();
        var backbone = RandomResNet(3);
        using var generator = new Generator(11);
        using var network = new DetectionNetwork(backbone, classCount: 3, channels: 32, towerDepth: 2, generator: generator);
        var images = randn(new long[] { 2, 3, 64, 64 }, generator: generator);
        using var outputs = network.forward(images);
        // 64 / 8 = 8, 64 / 16 = 4, 64 / 32 = 2: 64 + 16 + 4 locations.
        Assert.That(outputs.ClassLogits.shape, Is.EqualTo(new long[] { 2, 84, 3 }));
        Assert.That(outputs.Distances.shape, Is.EqualTo(new long[] { 2, 84, 4 }));
        Assert.That(outputs.CenternessLogits.shape, Is.EqualTo(new long[] { 2, 84 }));
        Assert.That(outputs.Levels, Is.EqualTo(new[] { new DetectionLevel(8, 8, 8), new DetectionLevel(16, 4, 4), new DetectionLevel(32, 2, 2) }));
        var locations = outputs.Locations();
        Assert.That(locations[0], Is.EqualTo((4f, 4f)));
        Assert.That(locations[9], Is.EqualTo((12f, 12f)), "row 1, column 1 of P3");
        Assert.That(locations[64 + 16 + 3], Is.EqualTo((48f, 48f)), "the last of P5");
        // Class bias -log(99): sigmoid 0.01; the small initial weights move it little.
        Assert.That(outputs.ClassLogits.sigmoid().mean().item<float>(), Is.EqualTo(0.01f).Within(0.003f));
        Assert.That(outputs.Distances.min().item<float>(), Is.GreaterThan(0), "distances are positive");
        // With weights of std 0.01 the regression output is near 0: distances near exp(0) x stride.
        Assert.That(outputs.Distances[0, 0, 0].item<float>(), Is.EqualTo(8f).Within(2f));
        Assert.That(outputs.Distances[0, 83, 0].item<float>(), Is.EqualTo(32f).Within(8f));

        var names = network.HeadParameters().Select(p => p.Key).ToList();
        Assert.That(names, Does.Contain("fpn.lateral.0.weight").And.Contain("fpn.smooth.2.bias").And.Contain("head.cls_logits.bias")
            .And.Contain("head.bbox_tower.1.norm.weight").And.Contain("head.scales").And.Contain("head.centerness.weight"));
        Assert.That(names.Any(n => n.Contains("resnet")), Is.False, "the backbone is the method's business");
        Assert.That(network.named_parameters().Select(p => p.name), Does.Contain("resnet.layer2.0.conv1.weight"), "the backbone under its usual name");

        Assert.Throws<ArgumentException>(() => network.forward(zeros(1, 3, 48, 64)), "sides must be multiples of 32");
    }

    [Test]
    public void FocalLossByHand()
    {
        using var scope = NewDisposeScope();
        // FL = -alpha_t (1 - p_t)^2 ln(p_t), alpha_t = 0.25 for targets 1 and 0.75 for targets 0.
        // x = 0,   t = 1: p = 0.5,      p_t = 0.5,      ln term 0.693147, (1 - p_t)^2 = 0.25,     0.25 x 0.25 x 0.693147 = 0.0433217
        // x = 2,   t = 0: p = 0.880797, p_t = 0.119203, ln term 2.126928, (1 - p_t)^2 = 0.775803, 0.75 x 0.775803 x 2.126928 = 1.2375586
        // x = -1,  t = 0: p = 0.268941, p_t = 0.731059, ln term 0.313262, (1 - p_t)^2 = 0.072329, 0.75 x 0.072329 x 0.313262 = 0.0169935
        // x = 1.5, t = 1: p = 0.817574, p_t = 0.817574, ln term 0.201413, (1 - p_t)^2 = 0.033279, 0.25 x 0.033279 x 0.201413 = 0.0016757
        var loss = DetectionLoss.SigmoidFocalLoss(tensor(new[] { 0f, 2f, -1f, 1.5f }), tensor(new[] { 1f, 0f, 0f, 1f }));
        var values = loss.data<float>().ToArray();
        Assert.That(values[0], Is.EqualTo(0.0433217f).Within(1e-6f));
        Assert.That(values[1], Is.EqualTo(1.2375586f).Within(1e-5f));
        Assert.That(values[2], Is.EqualTo(0.0169935f).Within(1e-6f));
        Assert.That(values[3], Is.EqualTo(0.0016757f).Within(1e-6f));
    }

    [Test]
    public void GIoULossByHand()
    {
        using var scope = NewDisposeScope();
        var predicted = tensor(new[] { 2f, 2, 2, 2, 1, 1, 1, 1, 3, 1, 2, 4 }, new long[] { 3, 4 });
        var target = tensor(new[] { 1f, 1, 3, 3, 3, 3, 3, 3, 3, 1, 2, 4 }, new long[] { 3, 4 });
        var loss = DetectionLoss.GIoULoss(predicted, target).data<float>().ToArray();
        // Row 0, location at the origin: predicted [-2, -2, 2, 2] (area 16), target [-1, -1, 3, 3] (area 16);
        // intersection [-1, -1, 2, 2] = 3 x 3 = 9, union 16 + 16 - 9 = 23, IoU 9/23 = 0.391304;
        // enclosing [-2, -2, 3, 3] = 25, GIoU = 9/23 - (25 - 23)/25 = 0.311304, loss 1 - GIoU = 0.688696.
        Assert.That(loss[0], Is.EqualTo(0.688696f).Within(1e-5f));
        // Row 1: a 2 x 2 box inside a 6 x 6 one: IoU 4/36, the enclosing box is the union: loss 1 - 1/9 = 0.888889.
        Assert.That(loss[1], Is.EqualTo(0.888889f).Within(1e-5f));
        // Row 2: the same box: loss 0.
        Assert.That(loss[2], Is.EqualTo(0f).Within(1e-6f));
    }

    [Test]
    public void TargetAssignmentByHand()
    {
        // A 128 x 128 input: P3 16 x 16 locations at 8j + 4, P4 8 x 8 at 16j + 8, P5 4 x 4 at 32j + 16.
        var levels = DetectionNetwork.LevelsOf(128, 128);
        var boxes = new[]
        {
            // A (area 256), centre (8, 8); P3's sampling radius 1.5 x 8 = 12 covers the whole box: P3 locations x, y in
            // {4, 12}, largest distance 12 <= 64. On P4 only (8, 8) is inside, largest distance 8 is not above 64.
            new DetectionBox(0, 0, 16, 16, 0),
            // B (area 12,288), centre (64, 48). P3: the sampling square (52, 36)-(76, 60) holds x in {60, 68}, y in {44, 52},
            // each with a largest distance of 68 > 64: none. P4: radius 24, square (40, 24)-(88, 72) holds x in {56, 72},
            // y in {40, 56}, largest distance 72 in (64, 128]: four positives. P5 needs a distance above 128: none.
            new DetectionBox(0, 0, 128, 96, 1),
            // C (area 1,024), centre (16, 16): P3 square (4, 4)-(28, 28) holds x, y in {12, 20}, largest distance 20;
            // (12, 12) is also A's and goes to the smaller A.
            new DetectionBox(0, 0, 32, 32, 1),
        };
        var targets = DetectionLoss.Assign(levels, boxes, classCount: 2);
        var locations = DetectionOutputs.Locate(levels);
        var positives = Enumerable.Range(0, locations.Length).Where(n => targets.Classes[n] >= 0)
            .Select(n => (Level: n < 256 ? 3 : n < 320 ? 4 : 5, locations[n].X, locations[n].Y, Box: targets.Boxes[n], Class: targets.Classes[n],
                L: targets.Distances[4 * n], T: targets.Distances[4 * n + 1], R: targets.Distances[4 * n + 2], B: targets.Distances[4 * n + 3]))
            .ToList();
        Assert.That(positives, Is.EquivalentTo(new[]
        {
            (3, 4f, 4f, 0, 0, 4f, 4f, 12f, 12f), (3, 12f, 4f, 0, 0, 12f, 4f, 4f, 12f),
            (3, 4f, 12f, 0, 0, 4f, 12f, 12f, 4f), (3, 12f, 12f, 0, 0, 12f, 12f, 4f, 4f),
            (3, 20f, 12f, 2, 1, 20f, 12f, 12f, 20f), (3, 12f, 20f, 2, 1, 12f, 20f, 20f, 12f), (3, 20f, 20f, 2, 1, 20f, 20f, 12f, 12f),
            (4, 56f, 40f, 1, 1, 56f, 40f, 72f, 56f), (4, 72f, 40f, 1, 1, 72f, 40f, 56f, 56f),
            (4, 56f, 56f, 1, 1, 56f, 56f, 72f, 40f), (4, 72f, 56f, 1, 1, 72f, 56f, 56f, 40f),
        }));
        Assert.That(targets.PositiveCount, Is.EqualTo(11));
        // Centerness of A at (4, 4): sqrt(4/12 x 4/12) = 1/3; at (12, 12) of C's neighbour (20, 12): sqrt(12/20 x 12/20) = 0.6.
        Assert.That(targets.Centerness[0], Is.EqualTo(1f / 3).Within(1e-6f));
        Assert.That(targets.Centerness[16 + 2], Is.EqualTo(0.6f).Within(1e-6f), "row 1, column 2 of P3 is (20, 12)");

        var error = Assert.Throws<ArgumentException>(() => DetectionLoss.Assign(levels, new[] { new DetectionBox(10, 10, 5, 20, 0) }, 2, what: "photo.jpg"))!;
        Assert.That(error.Message, Does.Contain("photo.jpg").And.Contain("box 0"));
        error = Assert.Throws<ArgumentException>(() => DetectionLoss.Assign(levels, new[] { new DetectionBox(0, 0, 5, 20, 2) }, 2))!;
        Assert.That(error.Message, Does.Contain("class 2"));
    }

    [Test]
    public void LossOfABatchWithAndWithoutBoxes()
    {
        using var scope = NewDisposeScope();
        var levels = DetectionNetwork.LevelsOf(64, 64);
        // Every class logit 0 and every distance the truth: the GIoU term is 0 and the focal term is known.
        var boxes = new[] { new DetectionBox(0, 0, 16, 16, 0) };
        var targets = DetectionLoss.Assign(levels, boxes, 2);
        var locations = DetectionOutputs.Locate(levels);
        var distances = zeros(2, 84, 4);
        for (int n = 0; n < 84; n++)
            for (int s = 0; s < 4; s++) distances[0, n, s] = targets.Classes[n] >= 0 ? targets.Distances[4 * n + s] : 1f;
        distances[1] = ones(84, 4);
        var outputs = new DetectionOutputs(zeros(2, 84, 2).requires_grad_(), distances.requires_grad_(), zeros(2, 84).requires_grad_(), levels, 64, 64);
        var loss = DetectionLoss.Compute(outputs, Lists(boxes, Array.Empty<DetectionBox>()));
        // A's positives are P3's (4, 4), (12, 4), (4, 12), (12, 12): 4. At logit 0 each element's focal loss is
        // alpha_t x 0.25 x ln 2: positives 0.25 x 0.25 x 0.693147 = 0.0433217, negatives 0.75 x 0.25 x 0.693147 = 0.1299651.
        // 2 images x 84 locations x 2 classes = 336 elements, 4 positives: (4 x 0.0433217 + 332 x 0.1299651) / 4 = 10.830425.
        Assert.That(loss.Positives, Is.EqualTo(4));
        Assert.That(loss.Classification.item<float>(), Is.EqualTo(10.830425f).Within(1e-4f));
        Assert.That(loss.Box.item<float>(), Is.EqualTo(0f).Within(1e-6f));
        // Centerness logit 0 against the four targets (each sqrt(4/12 x 4/12) = 1/3): BCE at logit 0 is
        // -(t ln 0.5 + (1 - t) ln 0.5) = ln 2 = 0.693147 whatever t; summed over 4 positives, divided by 4.
        Assert.That(loss.Centerness.item<float>(), Is.EqualTo(0.693147f).Within(1e-5f));
        loss.Total.backward();
        Assert.That(outputs.ClassLogits.grad!.abs().sum().item<float>(), Is.GreaterThan(0));

        var empty = DetectionLoss.Compute(new DetectionOutputs(zeros(1, 84, 2), ones(1, 84, 4), zeros(1, 84), levels, 64, 64), Lists(Array.Empty<DetectionBox>()));
        // 168 negatives, normalised by max(1, 0) = 1: 168 x 0.1299651 = 21.834137.
        Assert.That(empty.Classification.item<float>(), Is.EqualTo(21.834137f).Within(1e-3f));
        Assert.That(empty.Box.item<float>(), Is.EqualTo(0f));
        Assert.That(empty.Positives, Is.EqualTo(0));
    }

    [Test]
    public void DecodingScoresSuppressesAndClips()
    {
        using var scope = NewDisposeScope();
        var levels = DetectionNetwork.LevelsOf(64, 64);
        var classLogits = full(1, 84, 2, -10f);
        var centerness = zeros(1, 84);
        var distances = full(1, 84, 4, 8f);
        // P3 row 2, column 3: location (28, 20), class 0, logits 2 and 2: score sqrt(s(2) s(2)) = s(2) = 0.880797;
        // distances 10: box [18, 10, 38, 30].
        int a = 2 * 8 + 3;
        classLogits[0, a, 0] = 2f;
        centerness[0, a] = 2f;
        distances[0, a] = tensor(new[] { 10f, 10, 10, 10 });
        // P3 row 2, column 4: location (36, 20), class 0 logit 1, class 1 logit 0, centerness 1: scores
        // s(1) = 0.731059 and sqrt(0.5 x 0.731059) = 0.604591; distances (12, 10, 8, 10): box [24, 10, 44, 30], whose IoU
        // with [18, 10, 38, 30] is (14 x 20) / (400 + 400 - 280) = 0.538: suppressed in class 0, kept in class 1.
        int b = 2 * 8 + 4;
        classLogits[0, b, 0] = 1f;
        classLogits[0, b, 1] = 0f;
        centerness[0, b] = 1f;
        distances[0, b] = tensor(new[] { 12f, 10, 8, 10 });
        // P4 row 0, column 0: location (8, 8), class 1, logits 3 and 3: score s(3) = 0.952574; distances (20, 20, 10, 10):
        // [-12, -12, 18, 18] clipped to [0, 0, 18, 18].
        int c = 64;
        classLogits[0, c, 1] = 3f;
        centerness[0, c] = 3f;
        distances[0, c] = tensor(new[] { 20f, 20, 10, 10 });
        // Everything else scores sqrt(s(-10) x 0.5) = 0.0047, below the threshold.
        using var outputs = new DetectionOutputs(classLogits, distances, centerness, levels, 64, 64);
        var boxes = DetectionDecoder.Decode(outputs, scoreThreshold: 0.05f, iouThreshold: 0.5f).Single();
        Assert.That(boxes, Has.Count.EqualTo(3));
        AssertBox(boxes[0], 0, 0, 18, 18, 1, 0.952574f);
        AssertBox(boxes[1], 18, 10, 38, 30, 0, 0.880797f);
        AssertBox(boxes[2], 24, 10, 44, 30, 1, 0.604591f);
        Assert.That(DetectionDecoder.Decode(outputs, 0.05f, 0.5f, maxDetections: 2).Single().Select(x => x.Score), Is.EqualTo(new[] { boxes[0].Score, boxes[1].Score }));
        Assert.That(DetectionDecoder.Decode(outputs, 0.05f, 0.6f).Single(), Has.Count.EqualTo(4), "IoU 0.538 is under 0.6: kept");
        Assert.That(DetectionDecoder.Decode(outputs, 0.9f, 0.5f).Single(), Has.Count.EqualTo(1));
    }

    private static void AssertBox(DetectionBox box, float xMin, float yMin, float xMax, float yMax, int cls, float score)
    {
        Assert.That(new[] { box.XMin, box.YMin, box.XMax, box.YMax }, Is.EqualTo(new[] { xMin, yMin, xMax, yMax }).Within(1e-4f));
        Assert.That(box.Class, Is.EqualTo(cls));
        Assert.That(box.Score, Is.EqualTo(score).Within(1e-5f));
    }

    [Test]
    public void LoraOnTheBackboneTrainsWithTheHead()
    {
        using var scope = NewDisposeScope();
        var backbone = RandomResNet(3);
        using var generator = new Generator(5);
        var adapted = new AdaptedBackbone(backbone, new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0, TargetModules = new[] { Tasks.ImageClassification.PeftImageClassificationTrainer.Options.AllConvolutions } }, generator);
        using var network = new DetectionNetwork(backbone, 1, 16, 1, generator);
        var images = randn(new long[] { 1, 3, 64, 64 }, generator: generator);
        using (no_grad()) foreach (var p in adapted.Parameters().Where(p => p.Key.Contains("lora_B"))) p.Parameter.normal_(0, 0.1, generator);
        using var outputs = network.forward(images);
        DetectionLoss.Compute(outputs, Lists(new[] { new DetectionBox(8, 8, 40, 40, 0) })).Total.backward();
        Assert.That(adapted.Parameters().All(p => p.Parameter.grad is not null), "LoRA's A and B get gradients through the pyramid");
        Assert.That(network.HeadParameters().All(p => p.Parameter.requires_grad && p.Parameter.grad is not null), "the head trains in full");
        Assert.That(backbone.Convolutions().All(c => !c.Module.Weight.requires_grad), "the base convolutions stay frozen");
    }

    /// <summary>Synthetic scenes: dark noise with one bright square of known box.</summary>
    private static (Tensor Images, List<DetectionBox[]> Boxes) Squares(int count, int size, int seed)
    {
        var random = new Random(seed);
        var pixels = new float[count * 3 * size * size];
        var boxes = new List<DetectionBox[]>();
        for (int i = 0; i < count; i++)
        {
            int side = random.Next(18, 33), x0 = random.Next(0, size - side), y0 = random.Next(0, size - side);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < size; y++)
                    for (int x = 0; x < size; x++)
                    {
                        bool inside = x >= x0 && x < x0 + side && y >= y0 && y < y0 + side;
                        pixels[((i * 3 + c) * size + y) * size + x] = (inside ? 1.5f : -1f) + 0.3f * (float)(random.NextDouble() - 0.5);
                    }
            boxes.Add(new[] { new DetectionBox(x0, y0, x0 + side, y0 + side, 0) });
        }
        return (tensor(pixels, new long[] { count, 3, size, size }), boxes);
    }

    private static float Iou(DetectionBox a, DetectionBox b)
    {
        float w = Math.Max(0, Math.Min(a.XMax, b.XMax) - Math.Max(a.XMin, b.XMin)), h = Math.Max(0, Math.Min(a.YMax, b.YMax) - Math.Max(a.YMin, b.YMin));
        return w * h / (a.Area + b.Area - w * h);
    }

    [Test]
    public void LearnsToFindASquare()
    {
        using var scope = NewDisposeScope();
        var backbone = RandomResNet(1);
        foreach (var p in backbone.Model.parameters()) p.requires_grad = false;
        using var generator = new Generator(2);
        using var network = new DetectionNetwork(backbone, classCount: 1, channels: 32, towerDepth: 2, generator: generator);
        var (images, boxes) = Squares(8, 64, 3);
        var lists = boxes.Select(b => (IReadOnlyList<DetectionBox>)b).ToList();
        using var optimizer = optim.AdamW(network.HeadParameters().Select(p => p.Parameter), lr: 3e-3, weight_decay: 1e-4);
        var watch = Stopwatch.StartNew();
        var losses = new List<float>();
        for (int step = 0; step < 100; step++)
        {
            using var stepScope = NewDisposeScope();
            optimizer.zero_grad();
            using var outputs = network.forward(images);
            var loss = DetectionLoss.Compute(outputs, lists);
            loss.Total.backward();
            optimizer.step();
            losses.Add(loss.Total.item<float>());
        }
        TestContext.Out.WriteLine($"loss {losses[0]:F3} -> {losses.TakeLast(5).Average():F3} in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(0.5f * losses.Take(5).Average()), "the loss falls substantially");

        var (test, testBoxes) = Squares(4, 64, 99);
        IReadOnlyList<IReadOnlyList<DetectionBox>> train, held;
        using (no_grad())
        {
            using (var outputs = network.forward(images)) train = DetectionDecoder.Decode(outputs, 0.05f, 0.5f);
            using (var outputs = network.forward(test)) held = DetectionDecoder.Decode(outputs, 0.05f, 0.5f);
        }
        var trainIou = train.Select((d, i) => d.Count == 0 ? 0 : Iou(d[0], boxes[i][0])).ToList();
        var heldIou = held.Select((d, i) => d.Count == 0 ? 0 : Iou(d[0], testBoxes[i][0])).ToList();
        TestContext.Out.WriteLine($"top-box IoU: training {string.Join(", ", trainIou.Select(x => x.ToString("F2")))}; held-out {string.Join(", ", heldIou.Select(x => x.ToString("F2")))}");
        Assert.That(trainIou, Has.All.GreaterThan(0.5f), "the top box finds each training square");
        Assert.That(heldIou, Has.All.GreaterThan(0.5f), "and each square of new scenes");
    }
}
