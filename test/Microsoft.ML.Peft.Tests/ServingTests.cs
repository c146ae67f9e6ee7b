using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using NUnit.Framework;
using PeftServing;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The serving example (examples/Serving) on Kestrel at 127.0.0.1, port 0: unknown adapters, malformed bodies, batched
/// answers against PredictionEngine, a damaged file while running, and a swap under load. Models: LoRA on a tiny BERT.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ServingTests
{
    private string tiny = "";
    private string modelA = "";
    private string modelB = "";
    private readonly List<string> folders = new();

    [OneTimeSetUp]
    public void TrainModels()
    {
        tiny = TinyBert.WriteDirectory(seed: 31);
        modelA = Train(seed: 1);
        modelB = Train(seed: 2);
    }

    private string Train(int seed)
    {
        var ml = new MLContext(seed);
        var data = ml.Data.LoadFromEnumerable(TinyTraining.Rows(32, seed));
        var options = TinyTraining.Options(tiny);
        options.MaxEpoch = 2;
        options.Seed = seed;
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.PeftTextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(data);
        var path = Path.Combine(Path.GetTempPath(), $"peft-serving-{seed}-{Guid.NewGuid():N}.zip");
        ml.Model.Save(model, data.Schema, path);
        foreach (var d in model.OfType<IDisposable>()) d.Dispose();
        return path;
    }

    [OneTimeTearDown]
    public void Clean()
    {
        foreach (var f in new[] { modelA, modelB }) File.Delete(f);
        foreach (var d in folders.Append(tiny)) Directory.Delete(d, recursive: true);
    }

    /// <summary>A folder holding the given models under the given adapter names.</summary>
    private string Folder(params (string Name, string File)[] models)
    {
        var folder = Path.Combine(Path.GetTempPath(), $"peft-serving-models-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        folders.Add(folder);
        foreach (var (name, file) in models) File.Copy(file, Path.Combine(folder, name + ".zip"));
        return folder;
    }

    private static async Task<(WebApplication App, HttpClient Client)> StartAsync(string folder, double batchWindowMs = 5)
    {
        var app = ServingApp.Build(new[] { "--urls", "http://127.0.0.1:0" }, o =>
        {
            o.ModelFolder = folder;
            o.BatchWindowMilliseconds = batchWindowMs;
            o.ReloadPollMilliseconds = 50;
            o.SettleMilliseconds = 50;
        });
        await app.StartAsync();
        return (app, new HttpClient { BaseAddress = new Uri(app.Urls.Single()), Timeout = TimeSpan.FromSeconds(60) });
    }

    /// <summary>What ML.NET's own PredictionEngine says for each text on the whole saved pipeline, loaded on its own.</summary>
    private static Dictionary<string, SentencePrediction> Expected(string file, IEnumerable<string> texts)
    {
        var ml = new MLContext(1);
        var model = ml.Model.Load(file, out _);
        try
        {
            using var engine = ml.Model.CreatePredictionEngine<SentenceRow, SentencePrediction>(model);
            return texts.Distinct().ToDictionary(t => t, t => engine.Predict(new SentenceRow { Sentence = t, Label = "positive" }));
        }
        finally
        {
            foreach (var d in ((IEnumerable<ITransformer>)model).OfType<IDisposable>()) d.Dispose();
        }
    }

    private static async Task<JsonNode> Json(HttpResponseMessage response) => JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    private static Task<HttpResponseMessage> Post(HttpClient client, string adapter, string body) =>
        client.PostAsync($"/predict/{adapter}", new StringContent(body, Encoding.UTF8, "application/json"));

    private static void AssertPrediction(JsonNode prediction, SentencePrediction expected, string text)
    {
        Assert.That(prediction["label"]!.GetValue<string>(), Is.EqualTo(expected.PredictedLabel), text);
        var scores = prediction["scores"]!.AsObject();
        Assert.That(scores.Select(p => p.Key), Is.EquivalentTo(new[] { "negative", "positive" }));
        // The engine's Score is in key order: MapValueToKey numbers the labels in the order the training rows show them.
        var actual = new[] { scores["positive"]!.GetValue<float>(), scores["negative"]!.GetValue<float>() };
        Assert.That(actual, Is.EqualTo(expected.Score).Within(1e-5f), text);
    }

    [Test]
    public async Task UnknownAdapterIs404WithTheList()
    {
        var (app, client) = await StartAsync(Folder(("sst-a", modelA), ("sst-b", modelB)));
        await using var _ = app;
        using var response = await Post(client, "nope", "{\"text\": \"good\"}");
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        var body = await Json(response);
        Assert.That(body["error"]!.GetValue<string>(), Does.Contain("nope"));
        Assert.That(body["adapters"]!.AsArray().Select(a => a!.GetValue<string>()), Is.EqualTo(new[] { "sst-a", "sst-b" }));
    }

    [TestCase("this is not json", "not valid JSON")]
    [TestCase("", "not valid JSON")]
    [TestCase("null", "empty or null")]
    [TestCase("{}", "neither")]
    [TestCase("{\"text\": 5}", "not valid JSON")]
    [TestCase("{\"txt\": \"good\"}", "txt")]
    [TestCase("{\"text\": \"good\", \"texts\": [\"bad\"]}", "not both")]
    [TestCase("{\"texts\": []}", "empty")]
    [TestCase("{\"texts\": [\"good\", null]}", "[1] is null")]
    [TestCase("{\"text\": \"good\", \"text2\": \"bad\"}", "single texts")]
    [TestCase("[\"good\"]", "not valid JSON")]
    public async Task MalformedBodyIs400WithAMessage(string body, string message)
    {
        var (app, client) = await StartAsync(Folder(("sst", modelA)));
        await using var _ = app;
        using var response = await Post(client, "sst", body);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        var error = (await Json(response))["error"]!.GetValue<string>();
        TestContext.Out.WriteLine(error);
        Assert.That(error, Does.Contain(message));
    }

    [TestCase(20.0)]
    [TestCase(0.0)]
    public async Task ConcurrentRequestsEachGetTheirOwnPrediction(double batchWindowMs)
    {
        var texts = TinyTraining.Rows(40, seed: 9).Select(r => r.Sentence).Distinct().ToList();
        var expected = Expected(modelA, texts);
        var (app, client) = await StartAsync(Folder(("sst", modelA)), batchWindowMs);
        await using var _ = app;

        // One request per text at once, and one request with several texts.
        var single = texts.Select(async t =>
        {
            using var response = await client.PostAsJsonAsync("/predict/sst", new { text = t });
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), await response.Content.ReadAsStringAsync());
            return (Text: t, Body: await Json(response));
        }).ToList();
        var several = texts.Take(7).ToList();
        using var batchResponse = await client.PostAsJsonAsync("/predict/sst", new { texts = several });
        foreach (var (text, body) in await Task.WhenAll(single))
            AssertPrediction(body["prediction"]!, expected[text], text);
        Assert.That(batchResponse.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var predictions = (await Json(batchResponse))["predictions"]!.AsArray();
        Assert.That(predictions, Has.Count.EqualTo(several.Count));
        for (int i = 0; i < several.Count; i++) AssertPrediction(predictions[i]!, expected[several[i]], several[i]);

        var models = (await Json(await client.GetAsync("/models"))).AsArray();
        var sst = models.Single()!;
        Assert.That(sst["requests"]!.GetValue<long>(), Is.EqualTo(texts.Count + 1));
        if (batchWindowMs > 0)
        {
            long batches = sst["batches"]!.GetValue<long>(), rows = sst["batchedRows"]!.GetValue<long>();
            TestContext.Out.WriteLine($"{rows} rows in {batches} batches");
            Assert.That(rows, Is.EqualTo(texts.Count + several.Count));
            Assert.That(batches, Is.LessThan(texts.Count), "concurrent requests were gathered into batches");
        }
        else
        {
            Assert.That(sst["batches"], Is.Null, "batching is off");
        }
    }

    [Test]
    public async Task ModelsAndHealthDescribeTheAdapters()
    {
        var (app, client) = await StartAsync(Folder(("a", modelA), ("b", modelB)));
        await using var _ = app;
        var models = (await Json(await client.GetAsync("/models"))).AsArray();
        Assert.That(models.Select(m => m!["name"]!.GetValue<string>()), Is.EqualTo(new[] { "a", "b" }));
        foreach (var m in models)
        {
            Assert.That(m!["method"]!.GetValue<string>(), Is.EqualTo("LORA"));
            Assert.That(m["labels"]!.AsArray().Select(l => l!.GetValue<string>()), Is.EqualTo(new[] { "positive", "negative" }), "the training rows' order");
            Assert.That(m["baseModel"]!.GetValue<string>(), Is.Not.Empty);
            Assert.That(m["sharesBaseModel"]!.GetValue<bool>(), Is.True);
            Assert.That(m["loadedAt"], Is.Not.Null);
            Assert.That(m["lastError"], Is.Null);
        }
        Assert.That(models[0]!["sha256"]!.GetValue<string>(), Is.EqualTo(Sha256(modelA)));
        Assert.That(models[1]!["sha256"]!.GetValue<string>(), Is.EqualTo(Sha256(modelB)));
        using var health = await client.GetAsync("/health");
        Assert.That(health.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((await Json(health))["status"]!.GetValue<string>(), Is.EqualTo("healthy"));
    }

    [Test]
    public async Task AFileThatFailsItsHashWhileRunningLeavesTheOldModelServingAndIsReported()
    {
        var folder = Folder(("sst", modelA));
        var (app, client) = await StartAsync(folder);
        await using var _ = app;
        var oldSha = Sha256(modelA);

        // The adapter entry changed after saving, its hash in the header left as it was.
        var damaged = SafeLoadingTests.RewriteEntry(modelA, "Adapter.safetensors", b => { b = (byte[])b.Clone(); b[^1] ^= 0x55; return b; }, recomputeHash: false);
        try
        {
            Replace(damaged, Path.Combine(folder, "sst.zip"));
            var error = await WaitForAsync(client, m => m["lastError"] is not null);
            TestContext.Out.WriteLine(error["lastError"]!.ToJsonString());
            Assert.That(error["lastError"]!["message"]!.GetValue<string>(), Does.Contain("SHA-256").And.Contain("damaged"));
            Assert.That(error["lastError"]!["fileSha256"]!.GetValue<string>(), Is.EqualTo(Sha256(damaged)));
            Assert.That(error["sha256"]!.GetValue<string>(), Is.EqualTo(oldSha), "the old model still serves");

            using var health = await client.GetAsync("/health");
            var healthBody = await Json(health);
            Assert.That(health.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(healthBody["status"]!.GetValue<string>(), Is.EqualTo("degraded"));
            Assert.That(healthBody["errors"]![0]!["adapter"]!.GetValue<string>(), Is.EqualTo("sst"));

            using var response = await client.PostAsJsonAsync("/predict/sst", new { text = "the movie was good" });
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That((await Json(response))["model"]!.GetValue<string>(), Is.EqualTo(oldSha));

            // A good file then loads and clears the error.
            Replace(modelB, Path.Combine(folder, "sst.zip"));
            var swapped = await WaitForAsync(client, m => m["sha256"]!.GetValue<string>() != oldSha);
            Assert.That(swapped["sha256"]!.GetValue<string>(), Is.EqualTo(Sha256(modelB)));
            Assert.That(swapped["lastError"], Is.Null);
            Assert.That((await Json(await client.GetAsync("/health")))["status"]!.GetValue<string>(), Is.EqualTo("healthy"));
        }
        finally
        {
            File.Delete(damaged);
        }
    }

    [Test]
    public async Task ASwapWhileRequestsRunLosesNone()
    {
        var folder = Folder(("sst", modelA));
        var texts = TinyTraining.Rows(24, seed: 5).Select(r => r.Sentence).Distinct().ToList();
        var expected = new Dictionary<string, Dictionary<string, SentencePrediction>>
        {
            [Sha256(modelA)] = Expected(modelA, texts),
            [Sha256(modelB)] = Expected(modelB, texts),
        };
        var (app, client) = await StartAsync(folder, batchWindowMs: 2);
        await using var _ = app;

        var answers = new ConcurrentBag<(string Text, HttpStatusCode Status, JsonNode? Body)>();
        int newModelAnswers = 0;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var clients = Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            // Each client runs until the new model has answered 60 requests (or the time runs out).
            for (int i = c; Volatile.Read(ref newModelAnswers) < 60 && !stop.IsCancellationRequested; i++)
            {
                var text = texts[i % texts.Count];
                using var response = await client.PostAsJsonAsync("/predict/sst", new { text });
                var body = response.IsSuccessStatusCode ? await Json(response) : null;
                answers.Add((text, response.StatusCode, body));
                if (body?["model"]!.GetValue<string>() == Sha256(modelB)) Interlocked.Increment(ref newModelAnswers);
            }
        })).ToList();

        while (answers.Count < 50) await Task.Delay(10);
        Replace(modelB, Path.Combine(folder, "sst.zip"));
        await Task.WhenAll(clients);

        Assert.That(stop.IsCancellationRequested, Is.False, "the new model answered in time");
        Assert.That(answers.Where(a => a.Status != HttpStatusCode.OK).Select(a => a.Status), Is.Empty, "no request failed");
        var byModel = answers.GroupBy(a => a.Body!["model"]!.GetValue<string>()).ToDictionary(g => g.Key, g => g.Count());
        TestContext.Out.WriteLine($"{answers.Count} answers: " + string.Join(", ", byModel.Select(p => $"{p.Key[..8]} {p.Value}")));
        Assert.That(byModel.Keys, Is.EquivalentTo(expected.Keys), "both models answered");
        foreach (var (text, _, body) in answers)
            AssertPrediction(body!["prediction"]!, expected[body["model"]!.GetValue<string>()][text], text);
    }

    /// <summary>Replaces a served file the way a deployment should: a copy beside it (not *.zip), then a rename over it.</summary>
    private static void Replace(string source, string target)
    {
        var temporary = target + ".uploading";
        File.Copy(source, temporary, overwrite: true);
        File.Move(temporary, target, overwrite: true);
    }

    private static async Task<JsonNode> WaitForAsync(HttpClient client, Func<JsonNode, bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var model = (await Json(await client.GetAsync("/models"))).AsArray().Single()!;
            if (condition(model)) return model;
            if (DateTime.UtcNow > deadline) Assert.Fail($"The service did not pick up the new file: {model.ToJsonString()}");
            await Task.Delay(50);
        }
    }

    private static string Sha256(string file) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(file)));
}
