using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The web app's recommendation scenario over HTTP: <c>mlnet-peft ui</c> as a process, a run on the first 3,000 MovieLens
/// ratings, the detected columns, a short matrix-factorisation training, its metrics and events, and predictions.
/// </summary>
[TestFixture]
[NonParallelizable]
public class UiRecommendationTests
{
    private static readonly TimeSpan TrainingTimeout = TimeSpan.FromSeconds(60);
    private UiHost? host;
    private HttpClient? client;

    [SetUp]
    public void StartServer()
    {
        host = UiHost.Start();
        client = host.Client;
    }

    [TearDown]
    public void StopServer() => host?.Dispose();

    [Test]
    public async Task RecommendationRunTrainsEvaluatesAndPredicts()
    {
        var http = client!;
        // The scenario: three roles, its model kinds as methods, no search and no report.
        using (var scenarios = await UiApi.DocumentOkAsync(await http.GetAsync("/api/scenarios")))
        {
            var rec = scenarios.RootElement.EnumerateArray().Single(s => s.GetProperty("id").GetString() == "recommendation");
            Assert.That(rec.GetProperty("roles").EnumerateArray().Select(r => r.GetString()), Is.EquivalentTo(new[] { "user", "item", "label" }));
            Assert.That(rec.GetProperty("methods").EnumerateArray().Select(r => r.GetString()), Is.EqualTo(new[] { "mf", "ncf" }));
            Assert.That(rec.GetProperty("budget").GetBoolean(), Is.False);
            Assert.That(rec.GetProperty("report").GetBoolean(), Is.False);
            Assert.That(rec.GetProperty("command").GetString(), Is.EqualTo("recommendation"));
        }

        string id;
        using (var run = await UiApi.DocumentOkAsync(await http.PostAsJsonAsync("/api/runs", new { scenario = "recommendation", name = "ratings" })))
            id = run.RootElement.GetProperty("id").GetString()!;

        // The first 3,000 ratings of MovieLens-100K, with their header: user|item|rating|timestamp.
        var lines = File.ReadLines(Path.Combine(TestData.SharedData, "movielens-100k", "u.data")).Take(3001).ToList();
        Assert.That(lines[0], Is.EqualTo("user|item|rating|timestamp"));
        using (var form = new MultipartFormDataContent())
        {
            var file = new ByteArrayContent(Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"));
            file.Headers.ContentType = new MediaTypeHeaderValue("text/plain");
            form.Add(file, "files", "u.data");
            using var run = await UiApi.DocumentOkAsync(await http.PostAsync($"/api/runs/{id}/data", form));
            var data = run.RootElement.GetProperty("data");
            Assert.That(data.GetProperty("rows").GetInt64(), Is.EqualTo(3000));
            Assert.That(data.GetProperty("separator").GetString(), Is.EqualTo("PIPE"));
            Assert.That(data.GetProperty("hasHeader").GetBoolean(), Is.True);
            var detected = data.GetProperty("detected");
            Assert.That(detected.GetProperty("user").GetString(), Is.EqualTo("user"));
            Assert.That(detected.GetProperty("item").GetString(), Is.EqualTo("item"));
            Assert.That(detected.GetProperty("label").GetString(), Is.EqualTo("rating"));
        }

        // The same column twice is refused; then the detected columns.
        var same = await http.PutAsJsonAsync($"/api/runs/{id}/columns", new { user = "user", item = "user", label = "rating", hasHeader = true, separator = "PIPE" });
        Assert.That(same.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), await same.Content.ReadAsStringAsync());
        using (var run = await UiApi.DocumentOkAsync(await http.PutAsJsonAsync($"/api/runs/{id}/columns", new { user = "user", item = "item", label = "rating", hasHeader = true, separator = "PIPE" })))
        {
            var columns = run.RootElement.GetProperty("columns");
            Assert.That(columns.GetProperty("user").GetString(), Is.EqualTo("user"));
            Assert.That(columns.GetProperty("item").GetString(), Is.EqualTo("item"));
            Assert.That(columns.GetProperty("label").GetString(), Is.EqualTo("rating"));
            Assert.That(run.RootElement.GetProperty("status").GetString(), Is.EqualTo("ready"));
        }

        // No time budget for this scenario; method mf with a few passes.
        var budget = await http.PostAsJsonAsync($"/api/runs/{id}/train", new { mode = "budget", trainTime = 60 });
        Assert.That(budget.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), await budget.Content.ReadAsStringAsync());
        (await UiApi.DocumentOkAsync(await http.PostAsJsonAsync($"/api/runs/{id}/train", new { mode = "method", method = "mf", iterations = 5 }))).Dispose();

        JsonElement final = default;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TrainingTimeout)
        {
            using var run = await UiApi.DocumentOkAsync(await http.GetAsync($"/api/runs/{id}"));
            var status = run.RootElement.GetProperty("status").GetString();
            if (status is not ("queued" or "training"))
            {
                final = run.RootElement.Clone();
                break;
            }
            await Task.Delay(500);
        }
        Assert.That(final.ValueKind, Is.EqualTo(JsonValueKind.Object), $"the training did not end within {TrainingTimeout}\n{host!.Output}");
        var log = await http.GetStringAsync($"/api/runs/{id}/log");
        Assert.That(final.GetProperty("status").GetString(), Is.EqualTo("completed"), $"{final}\n--- log ---\n{log}");
        Assert.That(log, Does.Contain("--model-kind mf"));
        Assert.That(log, Does.Contain("--iterations 5"));

        // The metrics: recommendation's metrics JSON as written.
        var result = final.GetProperty("result");
        double rmse = result.GetProperty("rmse").GetDouble(), mae = result.GetProperty("mae").GetDouble();
        Assert.That(rmse, Is.GreaterThan(0).And.LessThan(3), result.ToString());
        Assert.That(mae, Is.GreaterThan(0).And.LessThanOrEqualTo(rmse), result.ToString());
        Assert.That(result.GetProperty("modelKind").GetString(), Is.EqualTo("mf"));

        // The events, as auto's: one trial, an epoch per pass with its loss, done with the test metrics.
        var events = (await http.GetStringAsync($"/api/runs/{id}/events")).Split('\n')
            .Where(l => l.StartsWith("data: ", StringComparison.Ordinal)).Select(l => JsonDocument.Parse(l["data: ".Length..]).RootElement.Clone()).ToList();
        var types = events.Select(e => e.GetProperty("type").GetString()).ToList();
        Assert.That(types.First(), Is.EqualTo("search"), string.Join(", ", types));
        var epochs = events.Where(e => e.GetProperty("type").GetString() == "epoch").ToList();
        Assert.That(epochs.Select(e => e.GetProperty("epoch").GetInt32()), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        Assert.That(epochs.All(e => e.GetProperty("trial").GetInt32() == 1 && e.GetProperty("maxEpoch").GetInt32() == 5 && e.GetProperty("loss").GetDouble() > 0), Is.True);
        var done = events.Single(e => e.GetProperty("type").GetString() == "done");
        Assert.That(done.GetProperty("metrics").GetProperty("rmse").GetDouble(), Is.EqualTo(rmse).Within(1e-5));
        Assert.That(types, Does.Contain("trial").And.Contain("trialEnd").And.Contain("status"));

        // No report; the model and the generated project download.
        Assert.That((await http.GetAsync($"/api/runs/{id}/report")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        var model = await http.GetAsync($"/api/runs/{id}/model.zip");
        Assert.That(model.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((await model.Content.ReadAsByteArrayAsync()).Length, Is.GreaterThan(1000));
        Assert.That((await http.GetAsync($"/api/runs/{id}/code.zip")).StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using (var snippet = await UiApi.DocumentOkAsync(await http.GetAsync($"/api/runs/{id}/snippet")))
            Assert.That(snippet.RootElement.GetProperty("command").GetString(), Does.Contain("dotnet run"));

        // A prediction for the most frequent user and item (both certainly in the training ratings).
        var rows = lines.Skip(1).Select(l => l.Split('|')).ToList();
        var user = rows.GroupBy(r => r[0]).OrderByDescending(g => g.Count()).First().Key;
        var item = rows.GroupBy(r => r[1]).OrderByDescending(g => g.Count()).First().Key;
        using (var prediction = await UiApi.DocumentOkAsync(await http.PostAsJsonAsync($"/api/runs/{id}/predict", new { user, item })))
        {
            var score = prediction.RootElement.GetProperty("score").GetDouble();
            Assert.That(double.IsFinite(score), Is.True);
            Assert.That(score, Is.InRange(0.5, 5.5), prediction.RootElement.ToString());
            Assert.That(double.Parse(prediction.RootElement.GetProperty("predicted").GetString()!, System.Globalization.CultureInfo.InvariantCulture),
                Is.EqualTo(score).Within(1e-3));
        }

        // An id the model was not trained on is refused with a message that names it; so is a missing id.
        var unknown = await http.PostAsJsonAsync($"/api/runs/{id}/predict", new { user = "no-such-user", item });
        Assert.That(unknown.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        var message = await UiApi.ErrorAsync(unknown, "predict, unknown user", HttpStatusCode.BadRequest);
        Assert.That(message, Does.Contain("'no-such-user'"));
        Assert.That(message, Does.Contain("does not know user"));
        var unknownItem = await http.PostAsJsonAsync($"/api/runs/{id}/predict", new { user, item = "99999" });
        Assert.That(unknownItem.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That(await UiApi.ErrorAsync(unknownItem, "predict, unknown item", HttpStatusCode.BadRequest), Does.Contain("does not know item '99999'"));
        var missing = await http.PostAsJsonAsync($"/api/runs/{id}/predict", new { user });
        Assert.That(missing.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That(await UiApi.ErrorAsync(missing, "predict, no item", HttpStatusCode.BadRequest), Does.Contain("item id"));
    }
}
