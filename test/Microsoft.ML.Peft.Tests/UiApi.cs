using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Calls of the web app's HTTP API (docs/ui.md) that the UI tests share.</summary>
internal static class UiApi
{
    /// <summary>POST /api/runs: a new run of <paramref name="scenario"/>; fails the test unless it succeeds.</summary>
    public static async Task<JsonElement> CreateRunAsync(HttpClient client, string scenario, string? name = null)
    {
        using var response = await client.PostAsJsonAsync("api/runs", new { scenario, name });
        return await JsonOkAsync(response, $"POST /api/runs {scenario}");
    }

    /// <summary>POST /api/runs/{id}/data with one file, as a browser's form sends it (multipart field <c>files</c>).</summary>
    public static async Task<HttpResponseMessage> UploadAsync(HttpClient client, string runId, string fileName, byte[] content, string contentType = "text/tab-separated-values")
    {
        using var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(content);
        file.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        form.Add(file, "files", fileName);
        // HttpClient quotes the name but keeps it as given, slashes and dots included: what a hostile client would send.
        return await client.PostAsync($"api/runs/{runId}/data", form);
    }

    /// <summary>POST /api/runs/{id}/data with several files (image folders: names are relative paths).</summary>
    public static async Task<HttpResponseMessage> UploadAsync(HttpClient client, string runId, IEnumerable<(string FileName, byte[] Content, string ContentType)> files)
    {
        using var form = new MultipartFormDataContent();
        foreach (var (fileName, content, contentType) in files)
        {
            var file = new ByteArrayContent(content);
            file.Headers.ContentType = new MediaTypeHeaderValue(contentType);
            form.Add(file, "files", fileName);
        }
        return await client.PostAsync($"api/runs/{runId}/data", form);
    }

    /// <summary>The JSON body of a 2xx answer; fails the test with the status and body otherwise.</summary>
    public static async Task<JsonElement> JsonOkAsync(HttpResponseMessage response, string what)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.That(response.IsSuccessStatusCode, Is.True, $"{what}: {(int)response.StatusCode} {response.StatusCode}: {body}");
        return Parse(body, what);
    }

    /// <summary>The JSON document of a 2xx answer (the caller disposes it); fails the test with the request, status and body otherwise.</summary>
    public static async Task<JsonDocument> DocumentOkAsync(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.That(response.IsSuccessStatusCode, Is.True, $"{(int)response.StatusCode} {response.RequestMessage?.Method} {response.RequestMessage?.RequestUri}: {body}");
        return JsonDocument.Parse(body);
    }

    /// <summary>
    /// Checks that <paramref name="response"/> is one of <paramref name="statuses"/> with a JSON body <c>{"error": "..."}</c>
    /// whose message is not empty; returns the message.
    /// </summary>
    public static async Task<string> ErrorAsync(HttpResponseMessage response, string what, params HttpStatusCode[] statuses)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.That(statuses, Does.Contain(response.StatusCode), $"{what}: expected {string.Join(" or ", statuses.Select(s => (int)s))}, got {(int)response.StatusCode}: {body}");
        var json = Parse(body, what);
        Assert.That(json.ValueKind == JsonValueKind.Object && json.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.String,
            $"{what}: the error is not {{\"error\": \"message\"}}: {body}");
        var message = json.GetProperty("error").GetString()!;
        Assert.That(message, Is.Not.Empty, $"{what}: empty error message");
        return message;
    }

    private static JsonElement Parse(string body, string what)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            Assert.Fail($"{what}: the answer is not JSON ({e.Message}): {body}");
            throw;
        }
    }
}
