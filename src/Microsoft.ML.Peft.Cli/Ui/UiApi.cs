using System.IO.Compression;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>The web app's page and HTTP API (docs/ui.md): access by token, runs, uploads, training, events, predictions, downloads.</summary>
internal sealed class UiApi
{
    private const string CookieName = "peft-ui-token";
    private const string HeaderName = "X-Peft-Token";
    private const long TextFileLimitBytes = 512L * 1024 * 1024;

    private readonly RunStore store;
    private readonly TrainingQueue queue;
    private readonly Predictor predictor;
    private readonly byte[] token;
    private readonly long maxUploadBytes;
    private readonly int maxUploadMegabytes;

    public UiApi(RunStore store, TrainingQueue queue, Predictor predictor, string token, long maxUploadBytes, int maxUploadMegabytes)
    {
        this.store = store;
        this.queue = queue;
        this.predictor = predictor;
        this.token = Encoding.ASCII.GetBytes(token);
        this.maxUploadBytes = maxUploadBytes;
        this.maxUploadMegabytes = maxUploadMegabytes;
    }

    /// <summary>Adds the token check, the page's assets and the API to <paramref name="app"/>.</summary>
    public void Map(WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            var headers = context.Response.Headers;
            headers.XContentTypeOptions = "nosniff";
            headers["Referrer-Policy"] = "no-referrer";
            headers.CacheControl = "no-store";
            if (!Authorized(context))
            {
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                if (context.Request.Path.StartsWithSegments("/api"))
                    await context.Response.WriteAsJsonAsync(new { error = "Open the address that mlnet-peft ui printed: it carries the access token." });
                else
                {
                    context.Response.ContentType = "text/html; charset=utf-8";
                    await context.Response.WriteAsync("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mlnet-peft</title></head><body><h1>Access token needed</h1>" +
                        "<p>Open the address that <code>mlnet-peft ui</code> printed when it started: it carries the access token.</p></body></html>");
                }
                return;
            }
            try
            {
                await next(context);
            }
            catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge && !context.Response.HasStarted)
            {
                await Error(context, StatusCodes.Status413PayloadTooLarge, $"The upload is larger than the limit of {maxUploadMegabytes} MB (mlnet-peft ui --max-upload-mb).");
            }
            catch (InvalidDataException e) when (!context.Response.HasStarted && e.Message.Contains("Multipart body length limit", StringComparison.Ordinal))
            {
                await Error(context, StatusCodes.Status413PayloadTooLarge, $"The upload is larger than the limit of {maxUploadMegabytes} MB (mlnet-peft ui --max-upload-mb).");
            }
            catch (InvalidOperationException e) when (!context.Response.HasStarted)
            {
                // A change refused because the run moved on meanwhile (it started training...).
                await Error(context, StatusCodes.Status409Conflict, e.Message);
            }
            catch (Exception e) when (!context.Response.HasStarted && e is not OperationCanceledException)
            {
                Console.Error.WriteLine($"error: {context.Request.Method} {context.Request.Path}: {e}");
                await Error(context, StatusCodes.Status500InternalServerError, $"The server failed: {e.GetType().Name}: {e.Message}");
            }
        });

        app.MapGet("/", () => Asset("index.html", "text/html; charset=utf-8", page: true));
        app.MapGet("/app.js", () => Asset("app.js", "text/javascript; charset=utf-8"));
        app.MapGet("/app.css", () => Asset("app.css", "text/css; charset=utf-8"));

        var api = app.MapGroup("/api");
        api.MapGet("/scenarios", () => Results.Json(Scenarios.All, UiJson.Options));
        api.MapGet("/runs", () => Results.Json(store.List().Select(ToApi).ToList(), UiJson.Options));
        api.MapPost("/runs", CreateRun);
        api.MapGet("/runs/{id}", (string id) => WithRun(id, run => Results.Json(ToApi(run), UiJson.Options)));
        api.MapPost("/runs/{id}/data", UploadData);
        api.MapPut("/runs/{id}/columns", SetColumns);
        api.MapGet("/runs/{id}/thumbnail", Thumbnail);
        api.MapPost("/runs/{id}/train", Train);
        api.MapPost("/runs/{id}/cancel", (string id) => WithRun(id, run =>
        {
            if (!queue.Cancel(id)) return Fail(StatusCodes.Status409Conflict, "This run is not training or waiting to train.");
            return Results.Json(ToApi(store.Get(id)!), UiJson.Options);
        }));
        api.MapGet("/runs/{id}/events", Events);
        api.MapGet("/runs/{id}/log", (string id) => RunFile(id, "train.log", "text/plain; charset=utf-8", null, "This run has no training output yet."));
        api.MapGet("/runs/{id}/report", (string id) => RunFile(id, "report.html", "text/html; charset=utf-8", null, "This run has no report yet: train it first."));
        api.MapGet("/runs/{id}/metrics", (string id) => RunFile(id, "metrics.json", "application/json", null, "This run has no metrics yet: train it first."));
        api.MapGet("/runs/{id}/model.zip", (string id) => WithRun(id, run => RunFile(id, "model.zip", "application/zip", DownloadName(run, "model.zip"), "This run has no model yet: train it first.")));
        api.MapGet("/runs/{id}/code.zip", CodeZip);
        api.MapGet("/runs/{id}/snippet", Snippet);
        api.MapPost("/runs/{id}/predict", Predict);
        api.MapFallback(() => Fail(StatusCodes.Status404NotFound, "There is no such API."));
    }

    private bool Authorized(HttpContext context)
    {
        var request = context.Request;
        if (request.Query.TryGetValue("token", out var query) && Matches(query.ToString()))
        {
            context.Response.Cookies.Append(CookieName, Encoding.ASCII.GetString(token), new CookieOptions
            {
                HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/", IsEssential = true,
            });
            return true;
        }
        if (request.Headers.TryGetValue(HeaderName, out var header) && Matches(header.ToString())) return true;
        return request.Cookies.TryGetValue(CookieName, out var cookie) && Matches(cookie);
    }

    private bool Matches(string? given) => given is not null && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(given), token);

    private static IResult Asset(string name, string contentType, bool page = false)
    {
        var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("ui/" + name);
        if (stream is null) return Results.NotFound();
        return page
            ? new PageResult(stream, contentType)
            : Results.Stream(stream, contentType);
    }

    /// <summary>The page, with a content security policy that allows nothing but this app.</summary>
    private sealed class PageResult(Stream stream, string contentType) : IResult
    {
        public async Task ExecuteAsync(HttpContext context)
        {
            context.Response.Headers.ContentSecurityPolicy = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-src 'self'; connect-src 'self'; frame-ancestors 'none'";
            context.Response.ContentType = contentType;
            await using (stream) await stream.CopyToAsync(context.Response.Body);
        }
    }

    private static IResult Fail(int status, string message) => Results.Json(new { error = message }, UiJson.Options, statusCode: status);

    private static async Task Error(HttpContext context, int status, string message)
    {
        context.Response.StatusCode = status;
        await context.Response.WriteAsJsonAsync(new { error = message });
    }

    private IResult WithRun(string id, Func<UiRun, IResult> action)
    {
        var run = store.Get(id);
        return run is null ? Fail(StatusCodes.Status404NotFound, $"There is no run '{id}'.") : action(run);
    }

    private async Task<IResult> WithRunAsync(string id, Func<UiRun, Task<IResult>> action)
    {
        var run = store.Get(id);
        return run is null ? Fail(StatusCodes.Status404NotFound, $"There is no run '{id}'.") : await action(run);
    }

    /// <summary>A run as the page sees it: the server path of uploads left out, its place in the queue added.</summary>
    private JsonObject ToApi(UiRun run)
    {
        var json = JsonSerializer.SerializeToNode(run, UiJson.Options)!.AsObject();
        if (json["data"] is JsonObject data && run.Data?.Source == "upload")
        {
            data.Remove("path");
            data.Remove("imagesFolder");
        }
        json["queuePosition"] = UiStatus.IsActive(run.Status) ? queue.Position(run.Id) : null;
        return json;
    }

    private static string DownloadName(UiRun run, string file)
    {
        var name = new string(run.Name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '-').ToArray()).Trim('-');
        return (name.Length == 0 ? run.Id : name) + "-" + file;
    }

    private IResult RunFile(string id, string file, string contentType, string? downloadName, string missing) => WithRun(id, run =>
    {
        var path = Path.Combine(store.Folder(id), file);
        if (!File.Exists(path)) return Fail(StatusCodes.Status404NotFound, missing);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return Results.Stream(stream, contentType, downloadName);
    });

    private sealed record CreateRunRequest(string? Scenario, string? Name);

    private async Task<IResult> CreateRun(HttpRequest request)
    {
        var body = await ReadJson<CreateRunRequest>(request);
        if (body is null) return Fail(400, "Send {\"scenario\": ...} as JSON.");
        if (!Scenarios.Exists(body.Scenario))
            return Fail(400, $"'{body.Scenario}' is not a scenario; choose one of {string.Join(", ", Scenarios.All.Select(s => s.Id))}.");
        if (body.Name is { Length: > 200 }) return Fail(400, "The run's name is longer than 200 characters.");
        return Results.Json(ToApi(store.Create(body.Scenario!, body.Name)), UiJson.Options);
    }

    private static async Task<T?> ReadJson<T>(HttpRequest request) where T : class
    {
        if (!request.HasJsonContentType()) return null;
        try
        {
            return await request.ReadFromJsonAsync<T>(UiJson.Options);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private sealed record PathRequest(string? Path);

    /// <summary>One data change at a time per run: two uploads at once would swap the run's data folder under each other.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, SemaphoreSlim> uploading = new();

    private async Task<IResult> UploadData(string id, HttpRequest request)
    {
        var gate = uploading.GetOrAdd(id, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(request.HttpContext.RequestAborted);
        try
        {
            return await UploadDataOnce(id, request);
        }
        finally
        {
            gate.Release();
        }
    }

    private Task<IResult> UploadDataOnce(string id, HttpRequest request) => WithRunAsync(id, async run =>
    {
        if (UiStatus.IsActive(run.Status)) return Fail(409, "This run is training: cancel it before changing its data.");
        var scenario = Scenarios.Get(run.Scenario)!;
        var folder = store.Folder(id);
        UiData data;
        try
        {
            if (request.HasJsonContentType())
            {
                var body = await ReadJson<PathRequest>(request);
                if (string.IsNullOrWhiteSpace(body?.Path)) return Fail(400, "Type the path of a file or folder on the server.");
                var path = Path.GetFullPath(Environment.ExpandEnvironmentVariables(body.Path.Trim()));
                bool folderExpected = scenario.Data is "images" or "detection";
                if (!File.Exists(path) && !Directory.Exists(path)) return Fail(400, $"'{body.Path}' does not exist on the server.");
                if (!folderExpected && Directory.Exists(path)) return Fail(400, $"'{body.Path}' is a folder: {scenario.Name.ToLowerInvariant()} reads a file.");
                data = DataIntake.Describe(scenario, path, body.Path.Trim(), "path");
            }
            else if (request.HasFormContentType)
            {
                var form = await request.ReadFormAsync();
                data = await SaveUpload(scenario, folder, form.Files);
            }
            else return Fail(400, "Send the data as a multipart upload (files) or as JSON {\"path\": ...}.");
        }
        catch (InvalidDataException e)
        {
            return Fail(400, e.Message);
        }
        catch (ArgumentException e)
        {
            return Fail(400, e.Message);
        }
        // New data makes the run's model and report stale: they go, and the run starts again from its columns.
        var updated = store.Update(id, r =>
        {
            if (UiStatus.IsActive(r.Status)) throw new InvalidOperationException("This run started training meanwhile.");
            TrainingQueue.ClearOutputs(folder);
            r.Data = data;
            r.Columns = null;
            r.Training = null;
            r.Result = null;
            r.Status = UiStatus.New;
            r.Error = null;
        });
        return Results.Json(ToApi(updated), UiJson.Options);
    });

    /// <summary>
    /// Saves uploaded files in a new folder beside the run's data and swaps it in once the data reads well, so a refused
    /// upload leaves the data as it was. File names are reduced to safe relative paths.
    /// </summary>
    private async Task<UiData> SaveUpload(Scenario scenario, string folder, IFormFileCollection files)
    {
        if (files.Count == 0) throw new InvalidDataException("The upload holds no file.");
        long total = files.Sum(f => f.Length);
        if (total > maxUploadBytes) throw new InvalidDataException($"The upload ({total / 1048576.0:0.#} MB) is larger than the limit of {maxUploadMegabytes} MB.");
        var staging = Path.Combine(folder, ".data-" + Guid.NewGuid().ToString("N"));
        var target = Path.Combine(folder, "data");
        Directory.CreateDirectory(staging);
        try
        {
            UiData data;
            if (scenario.Data == "detection") return await SaveDetectionUpload(scenario, staging, target, files);
            if (scenario.Data == "images")
            {
                var root = Path.Combine(staging, "images");
                var skipped = new List<string>();
                int saved = 0;
                foreach (var file in files)
                {
                    var relative = SafeRelativePath(file.FileName);
                    if (!ImageDataset.IsImageFile(relative))
                    {
                        skipped.Add(relative);
                        continue;
                    }
                    // A folder upload names files "folder/class/image.jpg": the class is the folder just above the file.
                    var parts = relative.Split('/');
                    if (parts.Length < 2) throw new InvalidDataException($"'{relative}' is not in a class folder: upload a folder with one sub-folder of images per class.");
                    var path = Path.Combine(root, parts[^2], parts[^1]);
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    await using (var output = File.Create(path)) await file.CopyToAsync(output);
                    DataIntake.CheckImage(path, relative);
                    saved++;
                }
                if (saved == 0) throw new InvalidDataException($"The upload has no image files (JPEG, PNG, BMP, GIF, WebP, TIFF){(skipped.Count > 0 ? $"; it has {string.Join(", ", skipped.Take(5))}" : "")}.");
                data = Swap(staging, target, () => DataIntake.Describe(scenario, Path.Combine(target, "images"), FirstFolder(files), "upload"),
                    () => DataIntake.Describe(scenario, root, FirstFolder(files), "upload"));
                if (skipped.Count > 0) data.Note = $"Skipped {skipped.Count} file(s) that are not images: {string.Join(", ", skipped.Take(5))}{(skipped.Count > 5 ? ", ..." : "")}.";
                return data;
            }
            if (files.Count != 1) throw new InvalidDataException($"{scenario.Name} reads one file; the upload has {files.Count}.");
            var upload = files[0];
            if (upload.Length > TextFileLimitBytes) throw new InvalidDataException($"'{upload.FileName}' is larger than {TextFileLimitBytes / 1048576} MB.");
            var name = Path.GetFileName(SafeRelativePath(upload.FileName));
            var staged = Path.Combine(staging, name);
            await using (var output = File.Create(staged)) await upload.CopyToAsync(output);
            return Swap(staging, target, () => DataIntake.Describe(scenario, Path.Combine(target, name), name, "upload"),
                () => DataIntake.Describe(scenario, staged, name, "upload"));
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>
    /// Saves a detection folder upload (images, and a labels CSV or VOC XML files) keeping its folder structure, since the
    /// labels name the images by their path relative to the images folder; other files are skipped.
    /// </summary>
    private static async Task<UiData> SaveDetectionUpload(Scenario scenario, string staging, string target, IFormFileCollection files)
    {
        var skipped = new List<string>();
        var saved = new List<string>();
        foreach (var file in files)
        {
            var relative = SafeRelativePath(file.FileName);
            var extension = Path.GetExtension(relative).ToLowerInvariant();
            bool image = ImageDataset.IsImageFile(relative);
            if (!image && extension is not (".csv" or ".xml"))
            {
                skipped.Add(relative);
                continue;
            }
            var path = Path.Combine(staging, relative.Replace('/', Path.DirectorySeparatorChar));
            if (File.Exists(path)) throw new InvalidDataException($"The upload has '{relative}' twice.");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            await using (var output = File.Create(path)) await file.CopyToAsync(output);
            if (image) DataIntake.CheckImage(path, relative);
            saved.Add(relative);
        }
        if (saved.Count == 0) throw new InvalidDataException($"The upload has no images or labels (JPEG, PNG... and a .csv or .xml files){(skipped.Count > 0 ? $"; it has {string.Join(", ", skipped.Take(5))}" : "")}.");
        // A folder upload names its files "folder/...": the data is that folder.
        var top = saved.Select(r => r.Split('/')).ToList();
        string root = top.All(p => p.Length > 1 && p[0] == top[0][0]) ? top[0][0] : "";
        string name = root.Length > 0 ? root : "upload";
        var data = Swap(staging, target, () => DataIntake.Describe(scenario, Path.Combine(target, root), name, "upload"),
            () => DataIntake.Describe(scenario, Path.Combine(staging, root), name, "upload"));
        if (skipped.Count > 0) data.Note = $"Skipped {skipped.Count} file(s) that are neither images nor labels: {string.Join(", ", skipped.Take(5))}{(skipped.Count > 5 ? ", ..." : "")}. " + data.Note;
        return data;
    }

    private static string FirstFolder(IFormFileCollection files)
    {
        var parts = SafeRelativePath(files[0].FileName).Split('/');
        return parts.Length > 2 ? parts[0] : "images";
    }

    /// <summary>Checks the staged data (<paramref name="check"/> throws when it does not read), then moves it into place and describes it there.</summary>
    private static UiData Swap(string staging, string target, Func<UiData> describe, Func<UiData> check)
    {
        check();
        if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
        Directory.Move(staging, target);
        return describe();
    }

    /// <summary>An uploaded file's name as a relative path of safe segments (letters, digits, <c>. _ - space</c>); never absolute, never with <c>..</c>.</summary>
    internal static string SafeRelativePath(string? name)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new InvalidDataException("An uploaded file has no name.");
        var segments = name.Replace('\\', '/').Split('/', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => new string(s.Select(c => char.IsLetterOrDigit(c) || c is '.' or '_' or '-' or ' ' or '(' or ')' ? c : '_').ToArray()).Trim())
            .Where(s => s.Length > 0 && s != "." && s != "..")
            .Select(s => s.TrimStart('.').Length == 0 ? "_" : s)
            .ToList();
        if (segments.Count == 0) throw new InvalidDataException($"The uploaded file name '{name}' has no usable characters.");
        return string.Join('/', segments);
    }

    private sealed record ColumnsRequest(string? Label, string? Text, string? Text2, bool? HasHeader, string? Separator, double? ValidationFraction, int? TagColumn,
        string? User = null, string? Item = null);

    /// <summary>How a role's column is named in messages.</summary>
    private static string RoleName(Scenario scenario, string role) => role switch
    {
        "label" => scenario.Roles.Contains("user") ? "rating" : "label",
        "text2" => "second text",
        _ => role,
    };

    private Task<IResult> SetColumns(string id, HttpRequest request) => WithRunAsync(id, async run =>
    {
        if (UiStatus.IsActive(run.Status)) return Fail(409, "This run is training: cancel it before changing its columns.");
        if (run.Data is null) return Fail(409, "Upload the data first.");
        var body = await ReadJson<ColumnsRequest>(request);
        if (body is null) return Fail(400, "Send the columns as JSON.");
        var scenario = Scenarios.Get(run.Scenario)!;
        double? fraction = scenario.Validation ? body.ValidationFraction ?? 0.2 : null;
        if (fraction is double f && !(f >= 0.05 && f <= 0.5)) return Fail(400, $"The validation split must be between 5% and 50%; it is {f * 100:0.#}%.");
        UiData data;
        try
        {
            data = body.Separator != run.Data.Separator || (body.HasHeader is bool h && h != run.Data.HasHeader) || body.TagColumn != run.Data.Detected.TagColumn
                ? DataIntake.Redescribe(scenario, run.Data, body.Separator, body.HasHeader, body.TagColumn)
                : run.Data;
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException)
        {
            return Fail(400, e.Message);
        }
        var columns = new UiColumns { ValidationFraction = fraction, TagColumn = scenario.Data == "conll" ? body.TagColumn : null };
        if (scenario.Data == "delimited")
        {
            var names = data.Preview.Columns;
            // Every role of the scenario needs a column of the file, each its own.
            var given = new Dictionary<string, string?>
            {
                ["label"] = body.Label, ["text"] = body.Text, ["text2"] = body.Text2, ["user"] = body.User, ["item"] = body.Item,
            };
            var chosenColumns = new Dictionary<string, string>();
            foreach (var role in scenario.Roles)
            {
                var value = given.GetValueOrDefault(role);
                if (string.IsNullOrEmpty(value)) return Fail(400, $"Choose the {RoleName(scenario, role)} column.");
                if (!names.Contains(value)) return Fail(400, $"'{value}' is not a column of '{data.Name}' (its columns: {string.Join(", ", names)}).");
                chosenColumns[role] = value;
            }
            columns.Label = chosenColumns.GetValueOrDefault("label");
            columns.Text = chosenColumns.GetValueOrDefault("text");
            columns.Text2 = chosenColumns.GetValueOrDefault("text2");
            columns.User = chosenColumns.GetValueOrDefault("user");
            columns.Item = chosenColumns.GetValueOrDefault("item");
            if (chosenColumns.Values.Distinct().Count() != chosenColumns.Count)
                return Fail(400, $"The {string.Join(", ", scenario.Roles.Select(r => RoleName(scenario, r)))} columns must be different columns.");
            int labelIndex = names.IndexOf(columns.Label!);
            if (scenario.LabelKind == "number")
            {
                var bad = data.Preview.Rows.FirstOrDefault(r => !double.TryParse(r[labelIndex], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _));
                if (bad is not null) return Fail(400, $"The {RoleName(scenario, "label")} column '{columns.Label}' must hold numbers ({(scenario.Roles.Contains("user") ? "ratings" : "similarity scores")}); it has '{bad[labelIndex]}'.");
            }
            else
            {
                data.Classes = DataIntake.ClassCounts(scenario, data, columns.Label);
                if (data.Classes is null) return Fail(400, $"The label column '{columns.Label}' has more than 1,000 different values: choose a column of classes.");
                if (data.Classes.Count < 2) return Fail(400, $"The label column '{columns.Label}' has a single value ('{data.Classes.FirstOrDefault()?.Name}'): a classifier needs at least two classes.");
                if (data.Classes.Count > 20 && data.Classes.Count * 2 > data.Rows)
                    return Fail(400, $"The label column '{columns.Label}' has {data.Classes.Count:N0} different values in {data.Rows:N0} rows: that is not a column of classes (is it the text?).");
            }
        }
        var updated = store.Update(id, r =>
        {
            if (UiStatus.IsActive(r.Status)) throw new InvalidOperationException("This run started training meanwhile.");
            // Other columns make a trained model stale (it goes); the same ones keep it, so going back and on again changes nothing.
            bool same = r.Columns is not null && JsonSerializer.Serialize(r.Columns, UiJson.Options) == JsonSerializer.Serialize(columns, UiJson.Options);
            if (!same && r.Status is not UiStatus.New)
            {
                TrainingQueue.ClearOutputs(store.Folder(id));
                r.Result = null;
                r.Training = null;
            }
            if (r.Status is UiStatus.New || !same) r.Status = UiStatus.Ready;
            r.Data = data;
            r.Columns = columns;
            r.Error = null;
        });
        return Results.Json(ToApi(updated), UiJson.Options);
    });

    private IResult Thumbnail(string id, string? file) => WithRun(id, run =>
    {
        var data = Scenarios.Get(run.Scenario)!.Data;
        if (run.Data is null || data is not ("images" or "detection")) return Fail(404, "This run has no images.");
        if (string.IsNullOrEmpty(file)) return Fail(400, "Name the image with ?file=.");
        if (data == "detection")
        {
            try
            {
                // The image with its labelled boxes drawn, scaled down for the page.
                return Results.File(DetectionIntake.Thumbnail(run.Data, file, 320), "image/png");
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
            {
                return Fail(404, e.Message);
            }
        }
        var root = Path.GetFullPath(Directory.Exists(run.Data.Path) ? run.Data.Path : Path.GetDirectoryName(run.Data.Path)!);
        var full = Path.GetFullPath(Path.Combine(root, file));
        if (!full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) || !ImageDataset.IsImageFile(full) || !File.Exists(full))
            return Fail(404, $"'{file}' is not an image of this run's data.");
        var type = Path.GetExtension(full).ToLowerInvariant() switch
        {
            ".png" => "image/png", ".gif" => "image/gif", ".bmp" => "image/bmp", ".webp" => "image/webp", ".tif" or ".tiff" => "image/tiff", _ => "image/jpeg",
        };
        return Results.File(full, type);
    });

    private sealed record TrainRequest(string? Mode, int? TrainTime, string? Method, int? Iterations = null);

    private Task<IResult> Train(string id, HttpRequest request) => WithRunAsync(id, async run =>
    {
        if (UiStatus.IsActive(run.Status)) return Fail(409, "This run is already training or waiting to train.");
        if (run.Data is null || run.Columns is null) return Fail(409, "Choose the data and its columns first.");
        var body = await ReadJson<TrainRequest>(request);
        if (body is null) return Fail(400, "Send the training settings as JSON.");
        var scenario = Scenarios.Get(run.Scenario)!;
        var mode = body.Mode ?? (scenario.Budget ? "budget" : "method");
        if (mode is not ("budget" or "method")) return Fail(400, $"The training mode '{mode}' is not 'budget' or 'method'.");
        if (mode == "budget" && !scenario.Budget) return Fail(400, $"{scenario.Name} has no search within a time budget: choose a method ({string.Join(", ", scenario.Methods)}).");
        int time = body.TrainTime ?? 120;
        if (scenario.Budget && (time < Microsoft.ML.Peft.AutoML.PeftExperimentOptions.MinimumTrainTimeSeconds || time > 7 * 24 * 3600))
            return Fail(400, $"The time budget must be at least {Microsoft.ML.Peft.AutoML.PeftExperimentOptions.MinimumTrainTimeSeconds} s (and at most a week); it is {time} s.");
        if (mode == "method" && (body.Method is null || !scenario.Methods.Contains(body.Method)))
            return Fail(400, $"Choose a method of {scenario.Name.ToLowerInvariant()}: {string.Join(", ", scenario.Methods)}.");
        if (body.Iterations is int passes && (scenario.Passes is null || passes < 1 || passes > 10_000))
            return Fail(400, scenario.Passes is null ? $"{scenario.Name} does not take a number of passes." : $"The number of passes must be from 1 to 10,000; it is {passes}.");
        var updated = store.Update(id, r =>
        {
            if (UiStatus.IsActive(r.Status)) throw new InvalidOperationException("This run is already training or waiting to train.");
            r.Training = new UiTraining { Mode = mode, TrainTime = time, Method = mode == "method" ? body.Method : null, Iterations = body.Iterations };
            r.Status = UiStatus.Queued;
            r.Error = null;
            r.Result = null;
        });
        queue.Enqueue(id);
        return Results.Json(ToApi(store.Get(id) ?? updated), UiJson.Options);
    });

    /// <summary>Server-sent events: the run's events.jsonl from the start, then new lines as they are written, and a status event when the status changes; ends once the run is no longer training.</summary>
    private async Task Events(string id, HttpContext context)
    {
        var run = store.Get(id);
        if (run is null)
        {
            await Error(context, 404, $"There is no run '{id}'.");
            return;
        }
        var response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpResponseBodyFeature>()?.DisableBuffering();
        var cancel = context.RequestAborted;
        var path = Path.Combine(store.Folder(id), "events.jsonl");
        long offset = 0;
        var pending = new StringBuilder();
        string? lastStatus = null;
        int? lastPosition = null;
        try
        {
            while (!cancel.IsCancellationRequested)
            {
                run = store.Get(id)!;
                // The file first, then the status: a run that ended has written all its events before its status changed.
                if (File.Exists(path))
                {
                    await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    if (stream.Length < offset) offset = 0;   // a new training started the file again
                    stream.Seek(offset, SeekOrigin.Begin);
                    using var reader = new StreamReader(stream, Encoding.UTF8);
                    var text = await reader.ReadToEndAsync(cancel);
                    offset += Encoding.UTF8.GetByteCount(text);
                    pending.Append(text);
                    var all = pending.ToString();
                    int end = all.LastIndexOf('\n');
                    if (end >= 0)
                    {
                        foreach (var line in all[..end].Split('\n'))
                            if (line.Trim().Length > 0) await response.WriteAsync($"data: {line.Trim()}\n\n", cancel);
                        pending.Clear().Append(all[(end + 1)..]);
                    }
                }
                var position = UiStatus.IsActive(run.Status) ? queue.Position(id) : null;
                if (run.Status != lastStatus || position != lastPosition)
                {
                    lastStatus = run.Status;
                    lastPosition = position;
                    var status = new JsonObject { ["type"] = "status", ["status"] = run.Status, ["error"] = run.Error, ["queuePosition"] = position };
                    await response.WriteAsync($"data: {status.ToJsonString()}\n\n", cancel);
                }
                await response.Body.FlushAsync(cancel);
                if (!UiStatus.IsActive(run.Status)) break;
                await Task.Delay(300, cancel);
            }
        }
        catch (OperationCanceledException)
        {
            // The page went away.
        }
    }

    /// <summary>Why a run has no generated project: its scenario has none, or it is not trained yet.</summary>
    private static string NoCode(UiRun run)
    {
        var scenario = Scenarios.Get(run.Scenario)!;
        return scenario.Code ? "This run has no generated project yet: train it first."
            : $"The project generator does not cover {scenario.Name.ToLowerInvariant()}: download the model and score images with `mlnet-peft predict --model model.zip --images FOLDER --draw OUT`, or load it with ML.NET (mlContext.Model.Load).";
    }

    private IResult CodeZip(string id) => WithRun(id, run =>
    {
        var code = Path.Combine(store.Folder(id), TrainingQueue.CodeFolder);
        if (!Directory.Exists(code)) return Fail(404, NoCode(run));
        var memory = new MemoryStream();
        using (var zip = new ZipArchive(memory, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var file in Directory.EnumerateFiles(code, "*", SearchOption.AllDirectories))
            {
                var relative = Path.GetRelativePath(code, file).Replace('\\', '/');
                if (relative.StartsWith("bin/", StringComparison.Ordinal) || relative.StartsWith("obj/", StringComparison.Ordinal)) continue;
                zip.CreateEntryFromFile(file, TrainingQueue.CodeFolder + "/" + relative, CompressionLevel.Optimal);
            }
        }
        memory.Position = 0;
        return Results.Stream(memory, "application/zip", DownloadName(run, "code.zip"));
    });

    private IResult Snippet(string id) => WithRun(id, run =>
    {
        var program = Path.Combine(store.Folder(id), TrainingQueue.CodeFolder, "Program.cs");
        if (!File.Exists(program)) return Fail(404, NoCode(run));
        var code = File.ReadAllText(program);
        var usage = code.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("//   dotnet run -- ", StringComparison.Ordinal));
        var command = $"cd {TrainingQueue.CodeFolder} && " + (usage is null ? "dotnet run" : usage["//   ".Length..]);
        return Results.Json(new { fileName = "Program.cs", code, command }, UiJson.Options);
    });

    private sealed record PredictRequest(string? Text, string? Text2, string? User = null, string? Item = null);

    private Task<IResult> Predict(string id, HttpRequest request) => WithRunAsync(id, async run =>
    {
        var scenario = Scenarios.Get(run.Scenario)!;
        var folder = store.Folder(id);
        if (!File.Exists(Path.Combine(folder, "model.zip"))) return Fail(409, "This run has no model yet: train it first.");
        string? image = null;
        try
        {
            if (scenario.Data is "images" or "detection")
            {
                if (!request.HasFormContentType) return Fail(400, "Send the image as a multipart upload (field 'image').");
                var form = await request.ReadFormAsync(request.HttpContext.RequestAborted);
                var file = form.Files.GetFile("image") ?? form.Files.FirstOrDefault();
                if (file is null || file.Length == 0) return Fail(400, scenario.Data == "detection" ? "Choose an image to detect objects in." : "Choose an image to classify.");
                if (file.Length > 50L * 1024 * 1024) return Fail(400, "The image is larger than 50 MB.");
                var name = Path.GetFileName(SafeRelativePath(file.FileName));
                if (!ImageDataset.IsImageFile(name)) return Fail(400, $"'{name}' is not an image file (JPEG, PNG, BMP, GIF, WebP, TIFF).");
                var uploads = Path.Combine(folder, "try");
                Directory.CreateDirectory(uploads);
                image = Path.Combine(uploads, Guid.NewGuid().ToString("N") + Path.GetExtension(name).ToLowerInvariant());
                await using (var output = File.Create(image)) await file.CopyToAsync(output);
                DataIntake.CheckImage(image, name);
                return Results.Json(await predictor.PredictAsync(scenario, folder, null, null, image, request.HttpContext.RequestAborted), UiJson.Options);
            }
            var body = await ReadJson<PredictRequest>(request);
            if (body is null) return Fail(400, scenario.Roles.Contains("user") ? "Send {\"user\": ..., \"item\": ...} as JSON." : "Send {\"text\": ...} as JSON.");
            var prediction = scenario.Roles.Contains("user")
                ? await predictor.PredictRatingAsync(folder, body.User, body.Item, request.HttpContext.RequestAborted)
                : await predictor.PredictAsync(scenario, folder, body.Text, body.Text2, null, request.HttpContext.RequestAborted);
            return Results.Json(prediction, UiJson.Options);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or InvalidOperationException or IOException or FormatException)
        {
            return Fail(400, e.Message);
        }
        finally
        {
            if (image is not null) File.Delete(image);
        }
    });
}
