using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using NUnit.Framework;
using SixLabors.ImageSharp.Formats.Png;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The HTTP side of <c>mlnet-peft ui</c> (docs/ui.md), without a browser: the access token, requests that try to read or
/// write outside the work folder, bounded uploads, clear errors, and runs that survive a restart. The app runs as a
/// process (<see cref="UiHost"/>); no test here trains.
/// </summary>
[TestFixture]
[Category("Ui")]
[NonParallelizable]
public class UiServerTests
{
    private string root = null!;
    private UiHost host = null!;

    [OneTimeSetUp]
    public void StartApp()
    {
        // The work folder sits inside a folder of its own, so that a file written next to it (../evil.tsv) can be found.
        root = TestTemp.Track(Directory.CreateTempSubdirectory("peft-ui-server-").FullName);
        var work = Directory.CreateDirectory(Path.Combine(root, "work")).FullName;
        host = UiHost.Start(work);
    }

    [OneTimeTearDown]
    public void StopApp() => host?.Dispose();

    private HttpClient Client => host.Client;

    private static byte[] SmallSst2(int rows) =>
        Encoding.UTF8.GetBytes(string.Join("\n", File.ReadLines(TestData.Sst2Train).Take(rows + 1)) + "\n");

    [Test]
    public async Task EveryRequestNeedsTheToken()
    {
        using var anonymous = host.ClientWithoutToken();
        foreach (var path in new[] { "", "app.js", "api/runs", "api/scenarios" })
        {
            using var response = await anonymous.GetAsync(path);
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), $"GET /{path} without the token");
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, "api/runs"))
        {
            wrong.Headers.Add("X-Peft-Token", host.Token + "x");
            using var response = await anonymous.SendAsync(wrong);
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), "GET /api/runs with a wrong token");
        }
        using (var post = await anonymous.PostAsJsonAsync("api/runs", new { scenario = "text-classification" }))
            Assert.That(post.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), "POST /api/runs without the token");
        using (var wrongQuery = await anonymous.GetAsync("?token=" + Uri.EscapeDataString(host.Token + "x")))
            Assert.That(wrongQuery.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), "GET /?token=WRONG");

        // The printed URL: the page, and a cookie that lets the page's later requests in.
        var cookies = new CookieContainer();
        using var browser = new HttpClient(new HttpClientHandler { CookieContainer = cookies, UseCookies = true }) { BaseAddress = host.BaseAddress };
        using (var page = await browser.GetAsync(host.StartUrl))
        {
            Assert.That(page.StatusCode, Is.EqualTo(HttpStatusCode.OK), "GET the printed URL");
            Assert.That(page.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/html"));
            var setCookie = string.Join("\n", page.Headers.TryGetValues("Set-Cookie", out var values) ? values : []);
            Assert.That(setCookie, Does.Contain("httponly").IgnoreCase.And.Contain("samesite=strict").IgnoreCase, "the token's cookie");
        }
        using (var api = await browser.GetAsync("api/runs"))
            Assert.That(api.StatusCode, Is.EqualTo(HttpStatusCode.OK), "GET /api/runs with the cookie");
        using (var header = await Client.GetAsync("api/runs"))
            Assert.That(header.StatusCode, Is.EqualTo(HttpStatusCode.OK), "GET /api/runs with the header");
    }

    [Test]
    public async Task ScenariosListTextClassification()
    {
        using var response = await Client.GetAsync("api/scenarios");
        var scenarios = await UiApi.JsonOkAsync(response, "GET /api/scenarios");
        var text = scenarios.EnumerateArray().SingleOrDefault(s => s.GetProperty("id").GetString() == "text-classification");
        Assert.That(text.ValueKind, Is.EqualTo(JsonValueKind.Object), $"no text-classification scenario in {scenarios}");
        Assert.That(text.GetProperty("data").GetString(), Is.EqualTo("delimited"));
        Assert.That(text.GetProperty("roles").EnumerateArray().Select(r => r.GetString()), Is.SupersetOf(new[] { "label", "text" }));
        Assert.That(text.GetProperty("methods").GetArrayLength(), Is.GreaterThan(0));
    }

    [Test]
    public async Task ARunIdCannotReachOutsideTheRuns()
    {
        var run = await UiApi.CreateRunAsync(Client, "text-classification", "traversal");
        var id = run.GetProperty("id").GetString()!;
        foreach (var path in new[]
                 {
                     "api/runs/..%2F..%2Fetc%2Fpasswd/report",
                     "api/runs/..%2F..%2Fetc%2Fpasswd",
                     "api/runs/%2E%2E/report",
                     "api/runs/..%5C..%5Crun.json/log",
                     $"api/runs/{id}%2F..%2F..%2Fruns/report",
                     $"api/runs/{id}%2F..%2F{id}/log",
                 })
        {
            using var response = await Client.GetAsync(new Uri(host.BaseAddress, path));
            var body = await response.Content.ReadAsStringAsync();
            Assert.That((int)response.StatusCode, Is.InRange(400, 404), $"GET /{path}: {(int)response.StatusCode} {body}");
            Assert.That(body, Does.Not.Contain("root:").And.Not.Contain("\"scenario\""), $"GET /{path} served a file: {body}");
        }
    }

    [Test]
    public async Task ThumbnailsServeOnlyTheRunsImages()
    {
        var run = await UiApi.CreateRunAsync(Client, "image-classification", "thumbnails");
        var id = run.GetProperty("id").GetString()!;
        var files = new List<(string, byte[], string)>();
        foreach (var (label, color) in new[] { ("red", (byte)200), ("blue", (byte)40) })
            for (int i = 0; i < 6; i++)
            {
                using var image = ImageTestImages.Rgb(32, 32, (x, y) => (color, (byte)(x * 7 + i), (byte)(255 - color)));
                files.Add(($"{label}/{label}{i}.png", ImageTestImages.Encode(image, new PngEncoder()), "image/png"));
            }
        using (var upload = await UiApi.UploadAsync(Client, id, files))
            run = await UiApi.JsonOkAsync(upload, "upload of an image folder");
        var images = run.GetProperty("data").GetProperty("images").EnumerateArray().ToList();
        Assert.That(images, Is.Not.Empty, $"no images listed: {run}");
        var listed = images[0].GetProperty("file").GetString()!;
        using (var thumbnail = await Client.GetAsync($"api/runs/{id}/thumbnail?file={Uri.EscapeDataString(listed)}"))
        {
            Assert.That(thumbnail.StatusCode, Is.EqualTo(HttpStatusCode.OK), $"the thumbnail of {listed}");
            Assert.That(thumbnail.Content.Headers.ContentType?.MediaType, Does.StartWith("image/"));
        }

        var runJson = File.ReadAllText(Path.Combine(host.WorkDir, "runs", id, "run.json"));
        foreach (var file in new[] { "../../run.json", "../run.json", "/etc/passwd", "..%2F..%2Frun.json", "data/../../run.json", $"../../{id}/run.json", Path.Combine(host.WorkDir, "runs", id, "run.json") })
        {
            using var response = await Client.GetAsync($"api/runs/{id}/thumbnail?file={Uri.EscapeDataString(file)}");
            var body = await response.Content.ReadAsStringAsync();
            Assert.That((int)response.StatusCode, Is.InRange(400, 404), $"thumbnail ?file={file}: {(int)response.StatusCode} {body}");
            Assert.That(body, Does.Not.Contain("root:").And.Not.Contain(runJson.Length > 20 ? runJson[..20] : runJson), $"thumbnail ?file={file} served a file");
        }
    }

    [TestCase("../../evil.tsv")]
    [TestCase("..\\..\\evil.tsv")]
    [TestCase("data/../../../evil.tsv")]
    [TestCase("/etc/peft-ui-evil.tsv")]
    [TestCase("OUTSIDE")]
    public async Task UploadedNamesStayInTheRunsDataFolder(string fileName)
    {
        if (fileName == "OUTSIDE") fileName = Path.Combine(root, "evil.tsv"); // an absolute path that the server could write to
        // A name of this case's own, so that the files of the other cases (in their runs' data folders) do not count.
        var marker = "evil-" + Guid.NewGuid().ToString("N")[..8];
        fileName = fileName.Replace("evil", marker, StringComparison.Ordinal);
        var run = await UiApi.CreateRunAsync(Client, "text-classification", "upload names");
        var id = run.GetProperty("id").GetString()!;
        using var upload = await UiApi.UploadAsync(Client, id, fileName, SmallSst2(20));
        var body = await upload.Content.ReadAsStringAsync();
        var dataFolder = Path.Combine(host.WorkDir, "runs", id, "data");
        try
        {
            if (upload.IsSuccessStatusCode)
            {
                var data = JsonDocument.Parse(body).RootElement.GetProperty("data");
                Assert.That(data.GetProperty("rows").GetInt32(), Is.EqualTo(20), body);
                var written = Directory.GetFiles(dataFolder, "*", SearchOption.AllDirectories);
                Assert.That(written, Is.Not.Empty, $"accepted {fileName} but wrote nothing in {dataFolder}");
            }
            else
            {
                Assert.That((int)upload.StatusCode, Is.EqualTo(400), $"upload named {fileName}: {body}");
            }
            // Nothing of that name anywhere but in the run's data folder: not beside the work folder, not in runs/, not in /etc.
            var outside = Directory.GetFiles(root, "*" + marker + "*", SearchOption.AllDirectories)
                .Where(f => !Path.GetFullPath(f).StartsWith(dataFolder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                .ToList();
            Assert.That(outside, Is.Empty, $"upload named {fileName} wrote outside {dataFolder}");
            Assert.That(File.Exists($"/etc/peft-ui-{marker}.tsv"), Is.False, $"upload named {fileName} wrote /etc/peft-ui-{marker}.tsv");
        }
        finally
        {
            if (File.Exists($"/etc/peft-ui-{marker}.tsv")) File.Delete($"/etc/peft-ui-{marker}.tsv");
        }
    }

    [Test]
    public async Task AServerPathThatDoesNotExistIsAClearError()
    {
        var run = await UiApi.CreateRunAsync(Client, "text-classification", "missing path");
        var id = run.GetProperty("id").GetString()!;
        var missing = Path.Combine(root, "no-such-folder", "train.tsv");
        using var response = await Client.PostAsJsonAsync($"api/runs/{id}/data", new { path = missing });
        var message = await UiApi.ErrorAsync(response, "a server path that does not exist", HttpStatusCode.BadRequest);
        Assert.That(message, Does.Contain(missing).Or.Contain("train.tsv"), "the message names the path");

        // The same run still takes a real file from the server.
        var real = Path.Combine(root, "sst2-sample.tsv");
        File.WriteAllBytes(real, SmallSst2(30));
        using var ok = await Client.PostAsJsonAsync($"api/runs/{id}/data", new { path = real });
        var loaded = await UiApi.JsonOkAsync(ok, "a server path that exists");
        var data = loaded.GetProperty("data");
        Assert.That(data.GetProperty("rows").GetInt32(), Is.EqualTo(30));
        Assert.That(data.GetProperty("detected").GetProperty("label").GetString(), Is.EqualTo("label"));
        Assert.That(data.GetProperty("detected").GetProperty("text").GetString(), Is.EqualTo("sentence"));
    }

    [Test]
    public async Task AnUploadOverTheLimitIsRefused()
    {
        // The limit set low (mlnet-peft ui --max-upload-mb 1): a 2 MB file is over it.
        using var small = UiHost.Start(null, "--max-upload-mb", "1");
        var run = await UiApi.CreateRunAsync(small.Client, "text-classification", "too big");
        var id = run.GetProperty("id").GetString()!;
        var text = new StringBuilder("sentence\tlabel\n");
        while (text.Length < 2 * 1024 * 1024) text.Append("a sentence that is repeated to fill the file\t1\n");
        var dataFolder = Path.Combine(small.WorkDir, "runs", id, "data");
        HttpResponseMessage response;
        try
        {
            response = await UiApi.UploadAsync(small.Client, id, "big.tsv", Encoding.UTF8.GetBytes(text.ToString()));
        }
        catch (HttpRequestException e)
        {
            // The server may close the connection as soon as the body is over its limit; then nothing may be kept.
            Assert.That(Directory.Exists(dataFolder) ? Directory.GetFiles(dataFolder) : [], Is.Empty, e.Message);
            return;
        }
        using (response)
        {
            var message = await UiApi.ErrorAsync(response, "an upload over the limit", HttpStatusCode.RequestEntityTooLarge, HttpStatusCode.BadRequest);
            Assert.That(message, Does.Contain("1 MB"), "the message gives the limit");
        }
        Assert.That(Directory.Exists(dataFolder) ? Directory.GetFiles(dataFolder, "*", SearchOption.AllDirectories) : [], Is.Empty, "nothing of the refused upload is kept");
        var after = await UiApi.JsonOkAsync(await small.Client.GetAsync($"api/runs/{id}"), "the run after the refused upload");
        Assert.That(after.GetProperty("status").GetString(), Is.EqualTo("new"), "the refused upload set no data");

        // A file under the limit is then taken.
        using var ok = await UiApi.UploadAsync(small.Client, id, "sample.tsv", SmallSst2(40));
        var loaded = await UiApi.JsonOkAsync(ok, "an upload under the limit");
        Assert.That(loaded.GetProperty("data").GetProperty("rows").GetInt32(), Is.EqualTo(40));
    }

    [Test]
    public async Task UnknownRunsAre404WithAJsonError()
    {
        foreach (var path in new[] { "api/runs/0000000000", "api/runs/0000000000/report", "api/runs/0000000000/model.zip", "api/runs/0000000000/log" })
        {
            using var response = await Client.GetAsync(path);
            await UiApi.ErrorAsync(response, $"GET /{path}", HttpStatusCode.NotFound);
        }
        using var train = await Client.PostAsJsonAsync("api/runs/0000000000/train", new { mode = "budget", trainTime = 30 });
        await UiApi.ErrorAsync(train, "POST train of an unknown run", HttpStatusCode.NotFound);
        using var unknownScenario = await Client.PostAsJsonAsync("api/runs", new { scenario = "no-such-scenario" });
        var message = await UiApi.ErrorAsync(unknownScenario, "POST /api/runs with an unknown scenario", HttpStatusCode.BadRequest);
        Assert.That(message, Does.Contain("no-such-scenario"));
    }

    [Test]
    public async Task PredictingOrTrainingTooEarlyIsAClearError()
    {
        var run = await UiApi.CreateRunAsync(Client, "text-classification", "too early");
        var id = run.GetProperty("id").GetString()!;
        using (var predict = await Client.PostAsJsonAsync($"api/runs/{id}/predict", new { text = "a gorgeous , witty , seductive movie ." }))
            await UiApi.ErrorAsync(predict, "predict before training", HttpStatusCode.BadRequest, HttpStatusCode.Conflict);
        using (var train = await Client.PostAsJsonAsync($"api/runs/{id}/train", new { mode = "budget", trainTime = 30 }))
            await UiApi.ErrorAsync(train, "train before any data", HttpStatusCode.BadRequest, HttpStatusCode.Conflict);
        using (var model = await Client.GetAsync($"api/runs/{id}/model.zip"))
            Assert.That((int)model.StatusCode, Is.InRange(400, 409), "model.zip before training");
    }

    [Test]
    public async Task RestartKeepsTheRunsAndSigtermStopsTheApp()
    {
        using var own = UiHost.Start();
        var run = await UiApi.CreateRunAsync(own.Client, "text-classification", "kept across restarts");
        var id = run.GetProperty("id").GetString()!;
        using (var upload = await UiApi.UploadAsync(own.Client, id, "sample.tsv", SmallSst2(25)))
            await UiApi.JsonOkAsync(upload, "upload");

        var (stoppedBySignal, exitCode) = own.Stop();
        Assert.That(stoppedBySignal, Is.True, $"mlnet-peft ui did not stop within {UiHost.StopTimeout.TotalSeconds:0} s of SIGTERM:\n{own.Output}");
        Assert.That(exitCode, Is.Zero, $"exit code after SIGTERM:\n{own.Output}");

        own.Restart();
        var runs = await UiApi.JsonOkAsync(await own.Client.GetAsync("api/runs"), "GET /api/runs after the restart");
        var kept = runs.EnumerateArray().SingleOrDefault(r => r.GetProperty("id").GetString() == id);
        Assert.That(kept.ValueKind, Is.EqualTo(JsonValueKind.Object), $"run {id} is gone after the restart: {runs}");
        Assert.That(kept.GetProperty("name").GetString(), Is.EqualTo("kept across restarts"));
        Assert.That(kept.GetProperty("scenario").GetString(), Is.EqualTo("text-classification"));
        var again = await UiApi.JsonOkAsync(await own.Client.GetAsync($"api/runs/{id}"), "GET the run after the restart");
        Assert.That(again.GetProperty("data").GetProperty("rows").GetInt32(), Is.EqualTo(25), "its data is kept");
    }
}
