using System.Security.Cryptography;
using Microsoft.Extensions.ObjectPool;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peft;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.TextClassification;

namespace PeftServing;

/// <summary>One text (or text pair) to classify, as the model's input row; the columns are renamed to the model's own.</summary>
public sealed class TextRow
{
    /// <summary>The text (the model's <c>Sentence1ColumnName</c>).</summary>
    public string Text { get; set; } = "";

    /// <summary>The second text of sentence-pair models (<c>Sentence2ColumnName</c>); unused otherwise.</summary>
    public string Text2 { get; set; } = "";
}

/// <summary>The model's class probabilities (its <c>ScoreColumnName</c>).</summary>
public sealed class ScoreRow
{
    /// <summary>One probability per class, in <see cref="PeftTextClassificationTransformer.ClassNames"/> order.</summary>
    public float[] Score { get; set; } = Array.Empty<float>();
}

/// <summary>The prediction for one text: the most probable class and every class's probability.</summary>
/// <param name="Label">The most probable class (the first one on a tie).</param>
/// <param name="Scores">The probabilities, in <see cref="ServedModel.Labels"/> order.</param>
public sealed record Prediction(string Label, float[] Scores);

/// <summary>
/// One loaded model file: the fitted pipeline from the PEFT classifier on, a pool of prediction engines for requests
/// scored one at a time, and its metadata. Requests hold a lease on it while they score (<see cref="TryAcquire"/>,
/// <see cref="Release"/>); a model replaced by a newer file is retired and disposed when its last lease is released,
/// so a swap never pulls a model from under a running request.
/// </summary>
public sealed class ServedModel
{
    private readonly MLContext ml;
    private readonly ITransformer loaded;
    private readonly ITransformer scorer;
    private readonly SchemaDefinition inputDefinition;
    private readonly SchemaDefinition outputDefinition;
    private readonly ObjectPool<PredictionEngine<TextRow, ScoreRow>> engines; // disposes the engines it keeps
    private int leases = 1; // the registry's own reference, released by Retire

    private ServedModel(string name, string file, string sha256, long bytes, MLContext ml, ITransformer loaded,
        PeftTextClassificationTransformer peft, ITransformer scorer, int poolSize)
    {
        Name = name;
        FilePath = file;
        Sha256 = sha256;
        FileBytes = bytes;
        LoadedAt = DateTimeOffset.UtcNow;
        this.ml = ml;
        this.loaded = loaded;
        this.scorer = scorer;
        Peft = peft;
        Labels = peft.ClassNames.ToArray();

        inputDefinition = SchemaDefinition.Create(typeof(TextRow));
        inputDefinition[nameof(TextRow.Text)].ColumnName = peft.Sentence1ColumnName;
        if (peft.Sentence2ColumnName is null) inputDefinition.Remove(inputDefinition[nameof(TextRow.Text2)]);
        else inputDefinition[nameof(TextRow.Text2)].ColumnName = peft.Sentence2ColumnName;
        outputDefinition = SchemaDefinition.Create(typeof(ScoreRow), SchemaDefinition.Direction.Read);
        outputDefinition[nameof(ScoreRow.Score)].ColumnName = peft.ScoreColumnName;

        var provider = new DefaultObjectPoolProvider { MaximumRetained = poolSize };
        engines = provider.Create(new EnginePolicy(this));
    }

    /// <summary>The adapter's name.</summary>
    public string Name { get; }

    /// <summary>The model file it was loaded from.</summary>
    public string FilePath { get; }

    /// <summary>SHA-256 of the file's bytes that were loaded (lower-case hex).</summary>
    public string Sha256 { get; }

    /// <summary>Size of the loaded file.</summary>
    public long FileBytes { get; }

    /// <summary>When it was loaded.</summary>
    public DateTimeOffset LoadedAt { get; }

    /// <summary>The PEFT classifier inside the pipeline (method, base model, columns, parameter counts).</summary>
    public PeftTextClassificationTransformer Peft { get; }

    /// <summary>The class names, in score order.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Whether the model is a sentence-pair classifier (requests then send <c>text2</c>).</summary>
    public bool IsPairModel => Peft.Sentence2ColumnName is not null;

    /// <summary>
    /// Loads <paramref name="file"/>: reads it once, hashes those bytes, and loads the same bytes (from a private copy,
    /// so a file being rewritten cannot change under the loader). Throws the library's own exception
    /// (<see cref="InvalidDataException"/> for a damaged file, <see cref="FileNotFoundException"/> for a missing base model).
    /// </summary>
    public static ServedModel Load(string name, string file, ServingOptions options)
    {
        var bytes = File.ReadAllBytes(file);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(bytes));
        var snapshot = Path.Combine(Path.GetTempPath(), $"peft-serving-{Guid.NewGuid():N}.zip");
        var ml = new MLContext();
        ITransformer loaded;
        DataViewSchema inputSchema;
        try
        {
            File.WriteAllBytes(snapshot, bytes);
            loaded = ml.Model.LoadPeft(snapshot, new PeftLoadOptions { BaseModelPath = options.BaseModelPath, ShareBaseModel = options.ShareBaseModel }, out inputSchema);
        }
        catch (Exception e) when (e is not (InvalidDataException or FileNotFoundException or OutOfMemoryException))
        {
            // ML.NET's own zip and header checks throw other types: one type for "this file does not load".
            throw new InvalidDataException($"The model file '{file}' does not load: {e.Message}", e);
        }
        finally
        {
            File.Delete(snapshot);
        }

        try
        {
            var (peft, scorer) = ScoringPart(loaded, inputSchema, file);
            return new ServedModel(name, file, sha256, bytes.LongLength, ml, loaded, peft, scorer, options.EnginePoolSize);
        }
        catch
        {
            DisposeAll(loaded);
            throw;
        }
    }

    /// <summary>
    /// The PEFT text classifier of the pipeline and everything after it (typically <c>MapKeyToValue</c>). What comes
    /// before it only prepares the label for training (<c>MapValueToKey</c>) and is left out, so that requests need
    /// not send a label; a pipeline that computes the classifier's text column before it is refused.
    /// </summary>
    private static (PeftTextClassificationTransformer Peft, ITransformer Scorer) ScoringPart(ITransformer loaded, DataViewSchema inputSchema, string file)
    {
        var parts = loaded is IEnumerable<ITransformer> chain ? chain.ToList() : new List<ITransformer> { loaded };
        int at = parts.FindIndex(t => t is PeftTextClassificationTransformer);
        if (at < 0)
            throw new InvalidDataException($"The model file '{file}' holds no PEFT text classifier (it holds {string.Join(", ", parts.Select(p => p.GetType().Name))}); " +
                "this service serves models saved from a PeftTextClassification pipeline.");
        var peft = (PeftTextClassificationTransformer)parts[at];
        var before = new TransformerChain<ITransformer>(parts.Take(at).ToArray()).GetOutputSchema(inputSchema);
        foreach (var column in new[] { peft.Sentence1ColumnName, peft.Sentence2ColumnName }.OfType<string>())
        {
            if (inputSchema.GetColumnOrNull(column) is not { } input || before.GetColumnOrNull(column)?.Index != input.Index)
                throw new InvalidDataException($"The model file '{file}': the classifier's text column '{column}' is computed by the pipeline before it; " +
                    "this service sends the request's text straight to the classifier and serves pipelines whose input holds that column.");
        }
        return (peft, new TransformerChain<ITransformer>(parts.Skip(at).ToArray()));
    }

    /// <summary>Takes a lease for one scoring call; false once the model is retired and its last lease is gone.</summary>
    public bool TryAcquire()
    {
        while (true)
        {
            int current = Volatile.Read(ref leases);
            if (current <= 0) return false;
            if (Interlocked.CompareExchange(ref leases, current + 1, current) == current) return true;
        }
    }

    /// <summary>Gives a lease back; the last one of a retired model disposes it.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref leases) == 0) DisposeModel();
    }

    /// <summary>Called by the registry when a newer model replaces this one (or the service stops).</summary>
    public void Retire() => Release();

    /// <summary>
    /// Scores the rows with the caller's lease held: one row through a pooled <see cref="PredictionEngine{TSrc, TDst}"/>,
    /// several as one <see cref="ITransformer.Transform"/> call over an <see cref="IDataView"/> of them.
    /// </summary>
    public IReadOnlyList<Prediction> Predict(IReadOnlyList<TextRow> rows)
    {
        if (rows.Count == 1)
        {
            var engine = engines.Get();
            try
            {
                return new[] { ToPrediction(engine.Predict(rows[0]).Score) };
            }
            finally
            {
                engines.Return(engine);
            }
        }
        var scored = scorer.Transform(ml.Data.LoadFromEnumerable(rows, inputDefinition));
        var result = ml.Data.CreateEnumerable<ScoreRow>(scored, reuseRowObject: false, ignoreMissingColumns: true, schemaDefinition: outputDefinition)
            .Select(r => ToPrediction(r.Score)).ToList();
        if (result.Count != rows.Count) throw new InvalidOperationException($"The model '{Name}' returned {result.Count} rows for {rows.Count}.");
        return result;
    }

    private Prediction ToPrediction(float[] scores)
    {
        int best = 0;
        for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
        return new Prediction(Labels[best], scores);
    }

    private void DisposeModel()
    {
        (engines as IDisposable)?.Dispose();
        DisposeAll(loaded);
    }

    private static void DisposeAll(ITransformer model)
    {
        var parts = model is IEnumerable<ITransformer> chain ? chain.ToList() : new List<ITransformer> { model };
        foreach (var part in parts.OfType<IDisposable>()) part.Dispose();
    }

    /// <summary>Creates prediction engines over the scoring part, with the model's column names.</summary>
    private sealed class EnginePolicy(ServedModel model) : IPooledObjectPolicy<PredictionEngine<TextRow, ScoreRow>>
    {
        // OwnsTransformer = false: an engine the pool drops (beyond its size) must not dispose the model with it.
        public PredictionEngine<TextRow, ScoreRow> Create() => model.ml.Model.CreatePredictionEngine<TextRow, ScoreRow>(model.scorer, new PredictionEngineOptions
        {
            IgnoreMissingColumns = true,
            InputSchemaDefinition = model.inputDefinition,
            OutputSchemaDefinition = model.outputDefinition,
            OwnsTransformer = false,
        });

        public bool Return(PredictionEngine<TextRow, ScoreRow> obj) => true;
    }
}
