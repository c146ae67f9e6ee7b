using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftServing;

/// <summary>The body of <c>POST /predict/{adapter}</c>: one text (<c>text</c>) or several (<c>texts</c>); pair models also take <c>text2</c>/<c>texts2</c>.</summary>
public sealed class PredictRequest
{
    /// <summary>One text to classify.</summary>
    public string? Text { get; set; }

    /// <summary>Its second text, for sentence-pair models.</summary>
    public string? Text2 { get; set; }

    /// <summary>Several texts to classify in one request.</summary>
    public List<string?>? Texts { get; set; }

    /// <summary>Their second texts, for sentence-pair models (as many as <see cref="Texts"/>).</summary>
    public List<string?>? Texts2 { get; set; }
}

/// <summary>The minimal API: <c>POST /predict/{adapter}</c>, <c>GET /models</c>, <c>GET /health</c>.</summary>
public static class ServingApp
{
    /// <summary>How request bodies are read: camel-case names, and a property the request type lacks is an error.</summary>
    private static readonly JsonSerializerOptions RequestJson = new(JsonSerializerDefaults.Web) { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };

    private const string BodyShape = "Send {\"text\": \"...\"} or {\"texts\": [\"...\", ...]} (with \"text2\"/\"texts2\" for sentence-pair models).";

    /// <summary>
    /// Builds the application: reads <see cref="ServingOptions"/> (section <c>Serving</c>; <c>--models FOLDER</c> is
    /// short for <c>--Serving:ModelFolder=FOLDER</c>), applies <paramref name="configure"/>, loads every model, starts
    /// watching the files and maps the endpoints. Run it with <c>app.Run()</c> (or <c>StartAsync</c>).
    /// </summary>
    public static WebApplication Build(string[] args, Action<ServingOptions>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        builder.Configuration.AddCommandLine(args, new Dictionary<string, string> { ["--models"] = $"{ServingOptions.Section}:ModelFolder" });
        var options = new ServingOptions();
        builder.Configuration.GetSection(ServingOptions.Section).Bind(options);
        configure?.Invoke(options);
        options.Validate();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(services => new ModelRegistry(options, builder.Environment.ContentRootPath, services.GetRequiredService<ILogger<ModelRegistry>>()));

        var app = builder.Build();
        var registry = app.Services.GetRequiredService<ModelRegistry>();
        registry.LoadAll();
        registry.StartWatching();
        app.MapPost("/predict/{adapter}", PredictAsync);
        app.MapGet("/models", (ModelRegistry models) => Results.Json(models.Adapters.Select(Describe)));
        app.MapGet("/health", Health);
        return app;
    }

    private static async Task<IResult> PredictAsync(string adapter, HttpRequest request, ModelRegistry registry, ServingOptions options, ILogger<ModelRegistry> log)
    {
        if (!registry.TryGet(adapter, out var slot))
            return Results.Json(new { error = $"No adapter named '{adapter}'.", adapters = registry.Adapters.Select(a => a.Name) }, statusCode: StatusCodes.Status404NotFound);

        PredictRequest? body;
        try
        {
            body = await JsonSerializer.DeserializeAsync<PredictRequest>(request.Body, RequestJson, request.HttpContext.RequestAborted);
        }
        catch (JsonException e)
        {
            return BadRequest($"The request body is not valid JSON for this endpoint: {e.Message} {BodyShape}");
        }
        if (body is null) return BadRequest($"The request body is empty or null. {BodyShape}");
        var model = slot.Current;
        if (!TryReadRows(body, model?.IsPairModel ?? false, adapter, options, out var rows, out var error)) return BadRequest(error);

        try
        {
            var scored = await slot.PredictAsync(rows);
            object Item(Prediction p) => new { label = p.Label, scores = Scores(p, scored.Labels) };
            return body.Texts is null
                ? Results.Json(new { adapter = slot.Name, model = scored.ModelSha256, prediction = Item(scored.Predictions[0]) })
                : Results.Json(new { adapter = slot.Name, model = scored.ModelSha256, predictions = scored.Predictions.Select(Item) });
        }
        catch (AdapterUnavailableException e)
        {
            return Results.Json(new { error = e.Message }, statusCode: StatusCodes.Status503ServiceUnavailable);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            log.LogError(e, "Scoring a request for adapter {Adapter} failed.", adapter);
            return Results.Json(new { error = $"Scoring failed: {e.Message}" }, statusCode: StatusCodes.Status500InternalServerError);
        }
    }

    /// <summary>Class name to probability, in score order (the class names of the model that scored).</summary>
    private static Dictionary<string, float> Scores(Prediction p, IReadOnlyList<string> labels)
    {
        var result = new Dictionary<string, float>(p.Scores.Length);
        for (int i = 0; i < p.Scores.Length; i++) result[labels[i]] = p.Scores[i];
        return result;
    }

    /// <summary>Checks the body's shape and sizes; the message says what is wrong and which limit applies.</summary>
    private static bool TryReadRows(PredictRequest body, bool pairs, string adapter, ServingOptions options, out List<TextRow> rows, out string error)
    {
        rows = new List<TextRow>();
        error = "";
        if (body.Text is not null && body.Texts is not null) { error = $"Send either \"text\" or \"texts\", not both. {BodyShape}"; return false; }
        if (body.Text is null && body.Texts is null) { error = $"The body has neither \"text\" nor \"texts\". {BodyShape}"; return false; }
        if (body.Texts is not null ? body.Text2 is not null : body.Texts2 is not null) { error = "\"text2\" goes with \"text\", \"texts2\" with \"texts\"."; return false; }
        var first = body.Texts ?? new List<string?> { body.Text };
        var second = body.Texts is not null ? body.Texts2 : body.Text2 is null ? null : new List<string?> { body.Text2 };
        string plural = body.Texts is null ? "" : "s";
        if (first.Count == 0) { error = "\"texts\" is empty."; return false; }
        if (first.Count > options.MaxTextsPerRequest) { error = $"\"texts\" holds {first.Count} texts; at most {options.MaxTextsPerRequest} are allowed per request ({ServingOptions.Section}:MaxTextsPerRequest)."; return false; }
        if (pairs && second is null) { error = $"The adapter '{adapter}' classifies text pairs: send \"text{plural}2\" with \"text{plural}\"."; return false; }
        if (!pairs && second is not null) { error = $"The adapter '{adapter}' classifies single texts: \"text{plural}2\" is not used."; return false; }
        if (second is not null && second.Count != first.Count) { error = $"\"texts2\" holds {second.Count} texts and \"texts\" {first.Count}: they go in pairs."; return false; }
        for (int i = 0; i < first.Count; i++)
        {
            var a = first[i];
            var b = second?[i];
            string at = body.Texts is null ? "" : $"[{i}]";
            if (a is null || (second is not null && b is null)) { error = $"\"text{plural}{(a is null ? "" : "2")}\"{at} is null."; return false; }
            if (a.Length > options.MaxTextLength || (b?.Length ?? 0) > options.MaxTextLength)
            {
                error = $"\"text{plural}\"{at} is longer than {options.MaxTextLength} characters ({ServingOptions.Section}:MaxTextLength).";
                return false;
            }
            rows.Add(new TextRow { Text = a, Text2 = b ?? "" });
        }
        return true;
    }

    private static IResult BadRequest(string message) => Results.Json(new { error = message }, statusCode: StatusCodes.Status400BadRequest);

    private static object Describe(AdapterSlot slot)
    {
        var model = slot.Current;
        return new
        {
            name = slot.Name,
            file = slot.FilePath,
            serving = model is not null,
            sha256 = model?.Sha256,
            fileBytes = model?.FileBytes,
            loadedAt = model?.LoadedAt,
            baseModel = model?.Peft.BaseModelDescription,
            method = model?.Peft.Method,
            labels = model?.Labels,
            textColumns = model is null ? null : new[] { model.Peft.Sentence1ColumnName, model.Peft.Sentence2ColumnName }.OfType<string>(),
            sharesBaseModel = model?.Peft.SharesBaseModel,
            trainableParameters = model?.Peft.TrainableParameterCount,
            requests = slot.Requests,
            batches = slot.Batcher?.Batches,
            batchedRows = slot.Batcher?.Rows,
            lastError = slot.LastError,
        };
    }

    private static IResult Health(ModelRegistry registry)
    {
        var adapters = registry.Adapters;
        int serving = adapters.Count(a => a.Current is not null);
        var errors = adapters.Where(a => a.LastError is not null).Select(a => new { adapter = a.Name, a.LastError!.Message, a.LastError.At, stillServing = a.Current?.Sha256 }).ToList();
        string status = serving == 0 ? "unhealthy" : errors.Count > 0 ? "degraded" : "healthy";
        using var process = Process.GetCurrentProcess();
        return Results.Json(new { status, adapters = adapters.Count, serving, errors, workingSetBytes = process.WorkingSet64 },
            statusCode: serving == 0 ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status200OK);
    }
}
