using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The web app's object-detection scenario over HTTP: <c>mlnet-peft ui</c> as a process, a folder upload of 24 raccoon
/// photos and their labels CSV, its description, a broken labels file refused naming the row, a one-epoch linear-probe
/// training, its mAP and events, the thumbnails with boxes, and a prediction with the boxes drawn.
/// </summary>
[TestFixture]
[NonParallelizable]
public class UiObjectDetectionTests
{
    private static readonly TimeSpan TrainingTimeout = TimeSpan.FromSeconds(90);
    private UiHost? host;

    [SetUp]
    public void StartServer() => host = UiHost.Start();

    [TearDown]
    public void StopServer() => host?.Dispose();

    /// <summary>The labels CSV's header and the rows of the first <paramref name="count"/> images of the raccoon data set, with those images.</summary>
    private static (List<string> Lines, List<string> Images) Raccoons(int count)
    {
        var folder = Path.Combine(TestData.SharedData, "raccoon");
        var lines = File.ReadAllLines(Path.Combine(folder, "labels.csv")).Where(l => l.Length > 0).ToList();
        Assert.That(lines[0], Is.EqualTo("filename,width,height,class,xmin,ymin,xmax,ymax"));
        var images = lines.Skip(1).Select(l => l.Split(',')[0]).Distinct().Take(count).ToList();
        var kept = images.ToHashSet();
        return (new[] { lines[0] }.Concat(lines.Skip(1).Where(l => kept.Contains(l.Split(',')[0]))).ToList(), images);
    }

    /// <summary>The upload of a folder "raccoons" with labels.csv and images/, as a browser sends it (relative names).</summary>
    private static List<(string, byte[], string)> Folder(IEnumerable<string> lines, IEnumerable<string> images) =>
        new[] { ("raccoons/labels.csv", Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"), "text/csv") }
            .Concat(images.Select(i => ($"raccoons/images/{i}", File.ReadAllBytes(Path.Combine(TestData.SharedData, "raccoon", "images", i)), "image/jpeg"))).ToList();

    [Test]
    public async Task DetectionRunUploadsTrainsEvaluatesAndPredicts()
    {
        var http = host!.Client;
        using (var scenarios = await UiApi.DocumentOkAsync(await http.GetAsync("/api/scenarios")))
        {
            var s = scenarios.RootElement.EnumerateArray().Single(x => x.GetProperty("id").GetString() == "object-detection");
            Assert.That(s.GetProperty("data").GetString(), Is.EqualTo("detection"));
            Assert.That(s.GetProperty("command").GetString(), Is.EqualTo("object-detection"));
            Assert.That(s.GetProperty("budget").GetBoolean(), Is.False);
            Assert.That(s.GetProperty("report").GetBoolean(), Is.False);
            Assert.That(s.GetProperty("code").GetBoolean(), Is.False);
            Assert.That(s.GetProperty("methods").EnumerateArray().Select(m => m.GetString()), Does.Contain("probe").And.Contain("lora"));
            Assert.That(s.GetProperty("passes").GetProperty("probe").GetInt32(), Is.EqualTo(10));
        }
        var id = (await UiApi.CreateRunAsync(http, "object-detection", "raccoons")).GetProperty("id").GetString()!;

        // A broken labels file: a box past its image's edge on the third row is refused with the file and the row named.
        var (lines, images) = Raccoons(24);
        var broken = lines.ToList();
        var fields = broken[3].Split(',');
        fields[6] = (int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture) + 50).ToString(System.Globalization.CultureInfo.InvariantCulture);
        broken[3] = string.Join(',', fields);
        var refused = await UiApi.UploadAsync(http, id, Folder(broken, images));
        var message = await UiApi.ErrorAsync(refused, "broken labels", HttpStatusCode.BadRequest);
        Assert.That(message, Does.Contain("labels.csv"));
        Assert.That(message, Does.Match("row 4|line 4"), message);
        Assert.That(message, Does.Not.Contain(host.WorkDir), "an upload's server path is not shown");

        // The good folder: the labels found beside the images/ folder, described by the CLI's own loader.
        var uploaded = await UiApi.JsonOkAsync(await UiApi.UploadAsync(http, id, Folder(lines, images)), "upload");
        var data = uploaded.GetProperty("data");
        Assert.That(data.GetProperty("rows").GetInt64(), Is.EqualTo(24));
        Assert.That(data.GetProperty("boxes").GetInt64(), Is.EqualTo(lines.Count - 1));
        Assert.That(data.GetProperty("name").GetString(), Is.EqualTo("raccoons"));
        Assert.That(data.TryGetProperty("path", out _), Is.False, "the server path of an upload is not sent");
        Assert.That(data.TryGetProperty("imagesFolder", out _), Is.False, "the server path of an upload is not sent");
        var classes = data.GetProperty("classes").EnumerateArray().ToList();
        Assert.That(classes.Select(c => c.GetProperty("name").GetString()), Is.EqualTo(new[] { "raccoon" }));
        Assert.That(classes[0].GetProperty("count").GetInt64(), Is.EqualTo(lines.Count - 1));
        var preview = data.GetProperty("preview");
        Assert.That(preview.GetProperty("rows")[0][0].GetString(), Is.EqualTo(images[0]));
        Assert.That(preview.GetProperty("rows")[0][1].GetString(), Is.EqualTo("raccoon"));
        var thumbnails = data.GetProperty("images").EnumerateArray().Select(i => i.GetProperty("file").GetString()!).ToList();
        Assert.That(thumbnails, Is.Not.Empty);
        var thumbnail = await http.GetAsync($"/api/runs/{id}/thumbnail?file={Uri.EscapeDataString(thumbnails[0])}");
        Assert.That(thumbnail.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(thumbnail.Content.Headers.ContentType?.MediaType, Is.EqualTo("image/png"));
        Assert.That((await http.GetAsync($"/api/runs/{id}/thumbnail?file=../../run.json")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));

        var ready = await UiApi.JsonOkAsync(await http.PutAsJsonAsync($"/api/runs/{id}/columns", new { }), "PUT columns");
        Assert.That(ready.GetProperty("status").GetString(), Is.EqualTo("ready"));

        // No time budget; the linear probe for one epoch.
        var budget = await http.PostAsJsonAsync($"/api/runs/{id}/train", new { mode = "budget", trainTime = 60 });
        Assert.That(budget.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), await budget.Content.ReadAsStringAsync());
        await UiApi.JsonOkAsync(await http.PostAsJsonAsync($"/api/runs/{id}/train", new { mode = "method", method = "probe", iterations = 1 }), "train");

        JsonElement final = default;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TrainingTimeout)
        {
            using var run = await UiApi.DocumentOkAsync(await http.GetAsync($"/api/runs/{id}"));
            if (run.RootElement.GetProperty("status").GetString() is not ("queued" or "training"))
            {
                final = run.RootElement.Clone();
                break;
            }
            await Task.Delay(500);
        }
        Assert.That(final.ValueKind, Is.EqualTo(JsonValueKind.Object), $"the training did not end within {TrainingTimeout}\n{host.Output}");
        var log = await http.GetStringAsync($"/api/runs/{id}/log");
        Assert.That(final.GetProperty("status").GetString(), Is.EqualTo("completed"), $"{final}\n--- log ---\n{log}");
        Assert.That(log, Does.Contain("object-detection").And.Contain("--method probe").And.Contain("--epochs 1"));

        var result = final.GetProperty("result");
        double map50 = result.GetProperty("map50").GetDouble();
        Assert.That(map50, Is.InRange(0.0, 1.0), result.ToString());
        Assert.That(result.GetProperty("map").GetDouble(), Is.InRange(0.0, map50 + 1e-9), result.ToString());

        // The events, as auto's: one trial, an epoch event with its loss, done with the test mAP.
        var events = (await http.GetStringAsync($"/api/runs/{id}/events")).Split('\n')
            .Where(l => l.StartsWith("data: ", StringComparison.Ordinal)).Select(l => JsonDocument.Parse(l["data: ".Length..]).RootElement.Clone()).ToList();
        var epochs = events.Where(e => e.GetProperty("type").GetString() == "epoch").ToList();
        Assert.That(epochs.Select(e => e.GetProperty("epoch").GetInt32()), Is.EqualTo(new[] { 1 }));
        Assert.That(epochs[0].GetProperty("loss").GetDouble(), Is.GreaterThan(0));
        var done = events.Single(e => e.GetProperty("type").GetString() == "done");
        Assert.That(done.GetProperty("metrics").GetProperty("map50").GetDouble(), Is.EqualTo(map50).Within(1e-5));

        // The model downloads; the project generator does not cover detection, and says so.
        Assert.That((await http.GetAsync($"/api/runs/{id}/model.zip")).StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var snippet = await UiApi.ErrorAsync(await http.GetAsync($"/api/runs/{id}/snippet"), "snippet", HttpStatusCode.NotFound);
        Assert.That(snippet, Does.Contain("does not cover object detection"));

        // A prediction: the boxes and the image with them drawn.
        using var form = new MultipartFormDataContent();
        var image = new ByteArrayContent(File.ReadAllBytes(Path.Combine(TestData.SharedData, "raccoon", "images", images[0])));
        image.Headers.ContentType = new MediaTypeHeaderValue("image/jpeg");
        form.Add(image, "image", images[0]);
        using var prediction = await UiApi.DocumentOkAsync(await http.PostAsync($"/api/runs/{id}/predict", form));
        var p = prediction.RootElement;
        var boxes = p.GetProperty("boxes").EnumerateArray().ToList();
        Assert.That(p.GetProperty("predicted").GetString(), Does.EndWith(boxes.Count == 1 ? "1 box" : $"{boxes.Count} boxes"));
        Assert.That(p.GetProperty("image").GetString(), Does.StartWith("data:image/png;base64,"));
        foreach (var b in boxes)
        {
            Assert.That(b.GetProperty("label").GetString(), Is.EqualTo("raccoon"));
            Assert.That(b.GetProperty("score").GetDouble(), Is.InRange(0.0, 1.0));
            Assert.That(b.GetProperty("xmin").GetDouble(), Is.LessThan(b.GetProperty("xmax").GetDouble()));
        }
    }

    [Test]
    public async Task PascalVocFolderUploadIsReadWithItsImagesFolder()
    {
        var http = host!.Client;
        var id = (await UiApi.CreateRunAsync(http, "object-detection", "voc")).GetProperty("id").GetString()!;
        // Six raccoon photos as Pascal VOC: Annotations/*.xml beside JPEGImages/, a stray file skipped.
        var (lines, images) = Raccoons(6);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        var files = new List<(string, byte[], string)> { ("voc/README.txt", Encoding.UTF8.GetBytes("notes"), "text/plain") };
        foreach (var image in images)
        {
            var boxes = rows.Where(r => r[0] == image).ToList();
            var xml = $"<annotation><filename>{image}</filename><size><width>{boxes[0][1]}</width><height>{boxes[0][2]}</height></size>" +
                string.Concat(boxes.Select(b => $"<object><name>{b[3]}</name><bndbox><xmin>{b[4]}</xmin><ymin>{b[5]}</ymin><xmax>{b[6]}</xmax><ymax>{b[7]}</ymax></bndbox></object>")) +
                "</annotation>";
            files.Add(($"voc/Annotations/{Path.ChangeExtension(image, ".xml")}", Encoding.UTF8.GetBytes(xml), "application/xml"));
            files.Add(($"voc/JPEGImages/{image}", File.ReadAllBytes(Path.Combine(TestData.SharedData, "raccoon", "images", image)), "image/jpeg"));
        }
        var data = (await UiApi.JsonOkAsync(await UiApi.UploadAsync(http, id, files), "VOC upload")).GetProperty("data");
        Assert.That(data.GetProperty("rows").GetInt64(), Is.EqualTo(6));
        Assert.That(data.GetProperty("boxes").GetInt64(), Is.EqualTo(rows.Count));
        var note = data.GetProperty("note").GetString();
        Assert.That(note, Does.Contain("voc/Annotations").And.Contain("voc/JPEGImages").And.Contain("README.txt"));
        Assert.That(note, Does.Not.Contain(host.WorkDir));
    }
}
