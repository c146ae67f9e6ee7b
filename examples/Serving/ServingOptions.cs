namespace PeftServing;

/// <summary>
/// What the service serves and how (configuration section <c>Serving</c>: <c>appsettings.json</c>, environment variables
/// such as <c>Serving__ModelFolder</c>, or command-line arguments such as <c>--Serving:ModelFolder=models</c>).
/// </summary>
public sealed class ServingOptions
{
    /// <summary>The configuration section these options are read from.</summary>
    public const string Section = "Serving";

    /// <summary>
    /// A folder of model files (<c>*.zip</c> saved by <c>mlContext.Model.Save</c> from a <c>PeftTextClassification</c>
    /// pipeline); each file is an adapter named after the file without its extension. Files added later are served
    /// too; a file that changes is reloaded. Relative to the content root (the working directory).
    /// </summary>
    public string? ModelFolder { get; set; }

    /// <summary>Adapters by name and file, in addition to (or instead of) <see cref="ModelFolder"/>.</summary>
    public Dictionary<string, string> Models { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// How long (milliseconds) a batch waits for more requests after its first one arrived before it is scored in one
    /// transformer call. 0 turns batching off: each request is scored on its own thread with a pooled prediction engine.
    /// </summary>
    public double BatchWindowMilliseconds { get; set; } = 3;

    /// <summary>The most texts one batch gathers (a single request with more texts is scored alone).</summary>
    public int MaxBatchRows { get; set; } = 64;

    /// <summary>The most texts one request may send.</summary>
    public int MaxTextsPerRequest { get; set; } = 256;

    /// <summary>The longest text (characters) a request may send; the model truncates to its sequence length anyway.</summary>
    public int MaxTextLength { get; set; } = 20_000;

    /// <summary>Prediction engines kept per model for requests scored one at a time (default: twice the processor count).</summary>
    public int EnginePoolSize { get; set; } = 2 * Environment.ProcessorCount;

    /// <summary>How often (milliseconds) the model files are checked for changes, besides the file-system notifications.</summary>
    public int ReloadPollMilliseconds { get; set; } = 1000;

    /// <summary>A file must have been left unchanged this long (milliseconds) before it is (re)loaded, so half-written files are skipped.</summary>
    public int SettleMilliseconds { get; set; } = 200;

    /// <summary>The base model to use instead of the location stored in the model files (<c>PeftLoadOptions.BaseModelPath</c>).</summary>
    public string? BaseModelPath { get; set; }

    /// <summary>Share the frozen base weights between the models (<c>PeftLoadOptions.ShareBaseModel</c>; default true).</summary>
    public bool ShareBaseModel { get; set; } = true;

    /// <summary>Checks the values; the message names the option at fault.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelFolder) && Models.Count == 0)
            throw new InvalidOperationException($"Nothing to serve: set {Section}:ModelFolder (a folder of model .zip files) or {Section}:Models (name = file).");
        if (BatchWindowMilliseconds < 0 || BatchWindowMilliseconds > 1000)
            throw new InvalidOperationException($"{Section}:BatchWindowMilliseconds must be between 0 and 1000 (it is {BatchWindowMilliseconds}).");
        if (MaxBatchRows < 1) throw new InvalidOperationException($"{Section}:MaxBatchRows must be at least 1 (it is {MaxBatchRows}).");
        if (MaxTextsPerRequest < 1) throw new InvalidOperationException($"{Section}:MaxTextsPerRequest must be at least 1 (it is {MaxTextsPerRequest}).");
        if (MaxTextLength < 1) throw new InvalidOperationException($"{Section}:MaxTextLength must be at least 1 (it is {MaxTextLength}).");
        if (EnginePoolSize < 1) throw new InvalidOperationException($"{Section}:EnginePoolSize must be at least 1 (it is {EnginePoolSize}).");
        if (ReloadPollMilliseconds < 10) throw new InvalidOperationException($"{Section}:ReloadPollMilliseconds must be at least 10 (it is {ReloadPollMilliseconds}).");
        if (SettleMilliseconds < 0) throw new InvalidOperationException($"{Section}:SettleMilliseconds must not be negative (it is {SettleMilliseconds}).");
        foreach (var (name, file) in Models)
        {
            if (!IsValidName(name)) throw new InvalidOperationException($"{Section}:Models: the adapter name '{name}' may only hold letters, digits, '-', '_' and '.'.");
            if (string.IsNullOrWhiteSpace(file)) throw new InvalidOperationException($"{Section}:Models:{name} has no file.");
        }
    }

    /// <summary>Adapter names are path segments of <c>/predict/{adapter}</c>: letters, digits, '-', '_' and '.'.</summary>
    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 100 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
}
