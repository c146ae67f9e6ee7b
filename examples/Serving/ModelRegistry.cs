using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace PeftServing;

/// <summary>A model file that failed to load: the message, when, and the hash of the bytes that were tried.</summary>
/// <param name="Message">The loader's message (it names the entry or field at fault).</param>
/// <param name="At">When the load failed.</param>
/// <param name="FileSha256">SHA-256 of the file that failed, or null when it could not be read.</param>
public sealed record LoadError(string Message, DateTimeOffset At, string? FileSha256);

/// <summary>The request names an adapter that has no loaded model (its only file failed to load).</summary>
public sealed class AdapterUnavailableException(string message) : Exception(message);

/// <summary>
/// One adapter name and its file: the model serving now (replaced atomically when the file changes and the new one
/// loads), the last load error, and its request batcher.
/// </summary>
public sealed class AdapterSlot : IAsyncDisposable
{
    private readonly ServingOptions options;
    private ServedModel? current;
    private LoadError? lastError;
    private long requests;

    internal AdapterSlot(string name, string file, ServingOptions options)
    {
        Name = name;
        FilePath = file;
        this.options = options;
        Batcher = options.BatchWindowMilliseconds > 0
            ? new PredictionBatcher(Score, TimeSpan.FromMilliseconds(options.BatchWindowMilliseconds), options.MaxBatchRows)
            : null;
    }

    /// <summary>The adapter's name (<c>/predict/{name}</c>).</summary>
    public string Name { get; }

    /// <summary>The model file watched for this adapter.</summary>
    public string FilePath { get; }

    /// <summary>The model serving now, or null when the file never loaded.</summary>
    public ServedModel? Current => Volatile.Read(ref current);

    /// <summary>The last failed load of the file (cleared by the next successful one); the previous model keeps serving.</summary>
    public LoadError? LastError => Volatile.Read(ref lastError);

    /// <summary>The batcher, or null when batching is off.</summary>
    public PredictionBatcher? Batcher { get; }

    /// <summary>Requests answered so far.</summary>
    public long Requests => Interlocked.Read(ref requests);

    /// <summary>The file's last write time and length when it was last tried (loaded or failed).</summary>
    internal (DateTime WriteTime, long Length) Tried { get; set; }

    /// <summary>Scores one request's rows: through the batcher, or directly (pooled engine) when batching is off.</summary>
    public async Task<ScoredRows> PredictAsync(IReadOnlyList<TextRow> rows)
    {
        var result = Batcher is null ? Score(rows) : await Batcher.PredictAsync(rows).ConfigureAwait(false);
        Interlocked.Increment(ref requests);
        return result;
    }

    /// <summary>Scores with a lease on the current model, so that a swap meanwhile waits for this call before disposing it.</summary>
    private ScoredRows Score(IReadOnlyList<TextRow> rows)
    {
        while (true)
        {
            var model = Current ?? throw new AdapterUnavailableException(
                $"The adapter '{Name}' has no loaded model: {LastError?.Message ?? "its file has not been loaded yet."}");
            if (!model.TryAcquire()) continue; // retired between the read and the lease: the newer one is current now
            try
            {
                return new ScoredRows(model.Sha256, model.Labels, model.Predict(rows));
            }
            finally
            {
                model.Release();
            }
        }
    }

    /// <summary>Makes <paramref name="model"/> current and retires the previous one (disposed after its last request).</summary>
    internal void Swap(ServedModel model)
    {
        var previous = Interlocked.Exchange(ref current, model);
        Volatile.Write(ref lastError, null);
        previous?.Retire();
    }

    internal void Fail(LoadError? error) => Volatile.Write(ref lastError, error);

    /// <summary>Scores what is queued, then retires the model.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Batcher is not null) await Batcher.DisposeAsync().ConfigureAwait(false);
        Interlocked.Exchange(ref current, null)?.Retire();
    }
}

/// <summary>
/// The adapters served: loads every model file at start, then watches the files (file-system notifications and a
/// periodic check) and reloads a file that changed. A file that fails to load leaves the previous model serving; the
/// error is logged and kept on the adapter (<see cref="AdapterSlot.LastError"/>) until a later version loads.
/// </summary>
public sealed class ModelRegistry : IAsyncDisposable
{
    private readonly ServingOptions options;
    private readonly ILogger<ModelRegistry> log;
    private readonly string? folder;
    private readonly ConcurrentDictionary<string, AdapterSlot> slots = new(StringComparer.OrdinalIgnoreCase);
    private readonly SemaphoreSlim refreshing = new(1, 1);
    private readonly CancellationTokenSource stop = new();
    private FileSystemWatcher? watcher;
    private Task? polling;
    private int changeSignalled;

    /// <summary>Creates the registry; <see cref="LoadAll"/> loads the models and <see cref="StartWatching"/> watches them.</summary>
    /// <param name="options">The validated serving options.</param>
    /// <param name="contentRoot">The folder relative paths are taken from.</param>
    /// <param name="log">Where loads, swaps and failures are logged.</param>
    public ModelRegistry(ServingOptions options, string contentRoot, ILogger<ModelRegistry> log)
    {
        this.options = options;
        this.log = log;
        folder = string.IsNullOrWhiteSpace(options.ModelFolder) ? null : Path.GetFullPath(options.ModelFolder, contentRoot);
        if (folder is not null && !Directory.Exists(folder))
            throw new DirectoryNotFoundException($"{ServingOptions.Section}:ModelFolder: the folder '{folder}' does not exist.");
        foreach (var (name, file) in options.Models)
            slots[name] = new AdapterSlot(name, Path.GetFullPath(file, contentRoot), options);
    }

    /// <summary>The adapters, by name.</summary>
    public IReadOnlyList<AdapterSlot> Adapters => slots.Values.OrderBy(s => s.Name, StringComparer.OrdinalIgnoreCase).ToList();

    /// <summary>Finds an adapter by name (case-insensitive).</summary>
    public bool TryGet(string name, out AdapterSlot slot) => slots.TryGetValue(name, out slot!);

    /// <summary>Loads every model file now (a file that fails is reported, the others are served).</summary>
    public void LoadAll() => Refresh(ignoreSettling: true, hashAll: true);

    /// <summary>Starts watching the files for changes.</summary>
    public void StartWatching()
    {
        if (folder is not null)
        {
            watcher = new FileSystemWatcher(folder, "*.zip") { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size };
            watcher.Changed += (_, _) => Signal();
            watcher.Created += (_, _) => Signal();
            watcher.Renamed += (_, _) => Signal();
            watcher.EnableRaisingEvents = true;
        }
        polling = Task.Run(PollAsync);
    }

    private void Signal() => Interlocked.Exchange(ref changeSignalled, 1);

    /// <summary>Checks the files every <c>ReloadPollMilliseconds</c>, sooner after a file-system notification.</summary>
    private async Task PollAsync()
    {
        var tick = TimeSpan.FromMilliseconds(Math.Min(options.ReloadPollMilliseconds, 50));
        var lastFull = DateTime.UtcNow;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(tick, stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            bool due = (DateTime.UtcNow - lastFull).TotalMilliseconds >= options.ReloadPollMilliseconds;
            bool signalled = Interlocked.Exchange(ref changeSignalled, 0) == 1;
            if (!signalled && !due) continue;
            if (due) lastFull = DateTime.UtcNow;
            try
            {
                if (Refresh(ignoreSettling: false, hashAll: signalled)) Signal(); // a file still settling: look again soon
            }
            catch (Exception e)
            {
                log.LogError(e, "Checking the model files failed.");
            }
        }
    }

    /// <summary>
    /// Loads the files that are new or changed since they were last tried (by write time and length, or by content
    /// with <paramref name="hashAll"/>: a file renamed over another may keep an old write time). Returns whether a
    /// changed file was left for later because it changed less than <c>SettleMilliseconds</c> ago.
    /// </summary>
    public bool Refresh(bool ignoreSettling, bool hashAll = false)
    {
        refreshing.Wait();
        try
        {
            if (folder is not null)
            {
                foreach (var file in Directory.EnumerateFiles(folder, "*.zip"))
                {
                    var name = Path.GetFileNameWithoutExtension(file);
                    if (slots.ContainsKey(name)) continue;
                    if (!ServingOptions.IsValidName(name))
                    {
                        log.LogWarning("Skipping the model file {File}: an adapter name may only hold letters, digits, '-', '_' and '.'.", file);
                        continue;
                    }
                    slots[name] = new AdapterSlot(name, file, options);
                }
            }
            bool settling = false;
            foreach (var slot in slots.Values)
            {
                var info = new FileInfo(slot.FilePath);
                if (!info.Exists)
                {
                    if (slot.LastError is null || slot.Tried != default)
                    {
                        slot.Tried = default;
                        Fail(slot, new LoadError($"The model file '{slot.FilePath}' does not exist.", DateTimeOffset.UtcNow, null));
                    }
                    continue;
                }
                var stamp = (info.LastWriteTimeUtc, info.Length);
                if (stamp == slot.Tried && !hashAll) continue;
                if (!ignoreSettling && (DateTime.UtcNow - info.LastWriteTimeUtc).TotalMilliseconds < options.SettleMilliseconds)
                {
                    settling = true;
                    continue;
                }
                slot.Tried = stamp;
                Load(slot);
            }
            return settling;
        }
        finally
        {
            refreshing.Release();
        }
    }

    private void Load(AdapterSlot slot)
    {
        string? sha256 = null;
        try
        {
            sha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(slot.FilePath)));
            if (slot.Current?.Sha256 == sha256)
            {
                slot.Fail(null); // the serving bytes again (rewritten, or a failed version replaced by them): nothing to load
                return;
            }
            if (slot.LastError?.FileSha256 == sha256) return; // these bytes failed already
            var model = ServedModel.Load(slot.Name, slot.FilePath, options);
            var previous = slot.Current;
            slot.Swap(model);
            // Loading parsed the base model's file into arrays that are garbage now (the weights are shared): give that
            // memory back at once rather than whenever the collector next runs. Loads are rare; this costs a short pause.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            if (previous is null)
                log.LogInformation("Loaded adapter {Adapter} from {File} (SHA-256 {Sha}, {Method}, labels {Labels}, shares the base model: {Shares}).",
                    slot.Name, slot.FilePath, model.Sha256, model.Peft.Method, string.Join(",", model.Labels), model.Peft.SharesBaseModel);
            else
                log.LogInformation("Swapped adapter {Adapter}: SHA-256 {Old} -> {New}; the old model finishes its requests and is released.",
                    slot.Name, previous.Sha256, model.Sha256);
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            Fail(slot, new LoadError(e.Message, DateTimeOffset.UtcNow, sha256));
        }
    }

    private void Fail(AdapterSlot slot, LoadError error)
    {
        slot.Fail(error);
        if (slot.Current is { } serving)
            log.LogError("Adapter {Adapter}: the model file failed to load; the previous model (SHA-256 {Sha}) keeps serving. {Message}", slot.Name, serving.Sha256, error.Message);
        else
            log.LogError("Adapter {Adapter}: the model file failed to load and there is no previous model to serve. {Message}", slot.Name, error.Message);
    }

    /// <summary>Stops watching, scores the queued requests and releases the models.</summary>
    public async ValueTask DisposeAsync()
    {
        stop.Cancel();
        watcher?.Dispose();
        if (polling is not null) await polling.ConfigureAwait(false);
        foreach (var slot in slots.Values) await slot.DisposeAsync().ConfigureAwait(false);
        stop.Dispose();
        refreshing.Dispose();
    }
}
