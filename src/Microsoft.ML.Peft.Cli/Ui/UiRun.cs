using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peft.Cli.Ui;

/// <summary>What a run's status can be (written in run.json and sent to the page in lower case).</summary>
internal static class UiStatus
{
    public const string New = "new";
    public const string Ready = "ready";
    public const string Queued = "queued";
    public const string Training = "training";
    public const string Completed = "completed";
    public const string Failed = "failed";
    public const string Cancelled = "cancelled";
    public const string Interrupted = "interrupted";

    /// <summary>Whether a run in <paramref name="status"/> is waiting for or doing a training.</summary>
    public static bool IsActive(string status) => status is Queued or Training;
}

/// <summary>One run of the guided flow: a scenario, its data and columns, a training and what it produced (run.json).</summary>
internal sealed class UiRun
{
    public string Id { get; set; } = "";
    public string Name { get; set; } = "";
    public string Scenario { get; set; } = "";
    public string Status { get; set; } = UiStatus.New;
    public DateTime Created { get; set; }
    public DateTime Updated { get; set; }
    public UiData? Data { get; set; }
    public UiColumns? Columns { get; set; }
    public UiTraining? Training { get; set; }
    public JsonObject? Result { get; set; }
    public string? Error { get; set; }

    /// <summary>A deep copy, so that a snapshot can be sent or saved while the run changes.</summary>
    public UiRun Clone() => JsonSerializer.Deserialize<UiRun>(JsonSerializer.Serialize(this, UiJson.Options), UiJson.Options)!;
}

/// <summary>The data of a run: where it is and what the page previews of it.</summary>
internal sealed class UiData
{
    /// <summary><c>upload</c> or <c>path</c>.</summary>
    public string Source { get; set; } = "";

    /// <summary>The file or folder name shown on the page.</summary>
    public string Name { get; set; } = "";

    /// <summary>The full path on the server (never sent to the page for uploads).</summary>
    public string Path { get; set; } = "";

    /// <summary>Data rows (text), sentences (CoNLL) or images.</summary>
    public long Rows { get; set; }

    /// <summary>The boxes of all images (object detection); else null.</summary>
    public long? Boxes { get; set; }

    /// <summary>The full path of the images folder the labels' file names are relative to (object detection; never sent to the page for uploads).</summary>
    public string? ImagesFolder { get; set; }

    public string? Separator { get; set; }
    public bool HasHeader { get; set; }
    public List<string>? Header { get; set; }
    public UiPreview Preview { get; set; } = new();
    public UiColumns Detected { get; set; } = new();
    public List<UiClassCount>? Classes { get; set; }
    public List<UiImage>? Images { get; set; }

    /// <summary>Something the page should tell the user about the data (files skipped...).</summary>
    public string? Note { get; set; }
}

/// <summary>A table of the first rows.</summary>
internal sealed class UiPreview
{
    public List<string> Columns { get; set; } = new();
    public List<List<string>> Rows { get; set; } = new();
}

/// <summary>A class (or tag) and how many rows have it.</summary>
internal sealed record UiClassCount(string Name, long Count);

/// <summary>An image of the data: its path relative to the image folder, and its class.</summary>
internal sealed record UiImage(string File, string Label);

/// <summary>Which columns play which role, and the validation split.</summary>
internal sealed class UiColumns
{
    public string? Label { get; set; }
    public string? Text { get; set; }
    public string? Text2 { get; set; }

    /// <summary>The user id column (recommendation).</summary>
    public string? User { get; set; }

    /// <summary>The item id column (recommendation).</summary>
    public string? Item { get; set; }

    public bool? HasHeader { get; set; }
    public string? Separator { get; set; }
    public double? ValidationFraction { get; set; }
    public int? TagColumn { get; set; }
}

/// <summary>How the run trains: within a time budget over every method, or one chosen method.</summary>
internal sealed class UiTraining
{
    /// <summary><c>budget</c> or <c>method</c>.</summary>
    public string Mode { get; set; } = "budget";

    public int TrainTime { get; set; }
    public string? Method { get; set; }

    /// <summary>Passes over the data (scenarios whose command takes it, as <c>--iterations</c>); null for the method's default.</summary>
    public int? Iterations { get; set; }
}

/// <summary>The JSON settings of run.json and of the API: camelCase, nulls left out of files.</summary>
internal static class UiJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };
}
