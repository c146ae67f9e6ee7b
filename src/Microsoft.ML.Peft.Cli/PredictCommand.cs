using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary><c>predict</c>: scores a file with a saved model and writes the predicted label and class probabilities.</summary>
internal static class PredictCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "The model file written by text-classification, sentence-similarity, image-classification or ner (.zip).", Required = true };
        var dataset = CommandOptions.Dataset("The data to score: for a text model a delimited text file (a label column, if any, is ignored); for an image model a folder of images (flat or with class sub-folders) or a TSV of image paths; for a named-entity recognizer a CoNLL file or plain text, one sentence a line.");
        var hasHeader = CommandOptions.HasHeader();
        var separator = CommandOptions.Separator();
        var textCol = CommandOptions.TextColumn();
        textCol.Required = false;
        textCol.Description += " Required for text models.";
        var text2Col = CommandOptions.Text2Column();
        var output = new Option<string>("--output") { Description = "The TSV file to write: the text (or image path), PredictedLabel and one probability column per class; for a sentence-similarity model the two sentences and the Score.", Required = true };
        var baseModel = new Option<string>("--base-model") { Description = "Where the base model is now (ONNX file or Hugging Face directory; for an adapted recommender the base model file), if it moved since training." };
        var userCol = new Option<string>("--user-col") { Description = "For a recommender: the user id column (a header name with --has-header, or a 0-based index)." };
        var itemCol = new Option<string>("--item-col") { Description = "For a recommender: the item id column." };
        var images = new Option<string>("--images") { Description = "For an object detector: the folder of images to detect in (instead of --dataset)." };
        var draw = new Option<string>("--draw") { Description = "For an object detector: also write each image with its boxes drawn (PNG) to this folder." };
        dataset.Required = false;

        var command = new Command("predict", "Score a file with a saved model.")
        {
            model, dataset, images, hasHeader, separator, textCol, text2Col, userCol, itemCol, output, baseModel, draw,
        };
        command.SetAction(parse => Dispatch(parse, model, dataset, images, draw, output, baseModel) ?? (parse.GetValue(userCol) is not null || parse.GetValue(itemCol) is not null || IsRecommender(parse.GetValue(model)!)
            ? RecommendationPredictions.Run(
                parse.GetValue(model)!,
                parse.GetValue(dataset)!,
                new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(separator)), parse.GetValue(hasHeader)),
                parse.GetValue(userCol),
                parse.GetValue(itemCol),
                parse.GetValue(textCol) ?? parse.GetValue(text2Col),
                parse.GetValue(output)!,
                parse.GetValue(baseModel))
            : Run(
            parse.GetValue(model)!,
            parse.GetValue(dataset)!,
            new TextFileFormat(TextFileFormat.ParseSeparator(parse.GetValue(separator)), parse.GetValue(hasHeader)),
            parse.GetValue(textCol),
            parse.GetValue(text2Col),
            parse.GetValue(output)!,
            parse.GetValue(baseModel))));
        return command;
    }

    /// <summary>
    /// The object-detector path of <c>predict</c> (<c>--images</c>, <c>--draw</c>), or null for the other models; checks
    /// that exactly one of <c>--dataset</c> and <c>--images</c> is given and that <c>--draw</c> goes with a detector.
    /// </summary>
    private static int? Dispatch(System.CommandLine.ParseResult parse, Option<string> model, Option<string> dataset, Option<string> images,
        Option<string> draw, Option<string> output, Option<string> baseModel)
    {
        var modelPath = parse.GetValue(model)!;
        string? data = parse.GetValue(dataset), folder = parse.GetValue(images);
        if (data is not null && folder is not null) throw new UsageException("Give the data to score with --dataset or --images, not both.");
        if (data is null && folder is null) throw new UsageException("Give the data to score: --dataset (or --images for an object detector).");
        bool detector = File.Exists(modelPath) && SavedSignaturesOrNone(modelPath).Contains("PEFTODET");
        if (!detector)
        {
            if (folder is not null) throw new UsageException("--images applies to object detectors; give --dataset for this model.");
            if (parse.GetValue(draw) is not null) throw new UsageException("--draw applies to object detectors.");
            return null;
        }
        var baseModelPath = parse.GetValue(baseModel);
        if (baseModelPath is not null && !File.Exists(baseModelPath) && !Directory.Exists(baseModelPath))
            throw new FileNotFoundException($"The base model '{baseModelPath}' (--base-model) does not exist.", baseModelPath);
        var option = folder is not null ? "--images" : "--dataset";
        return DetectionPredictions.Run(modelPath, ImageDataset.ReadForPrediction(folder ?? data!, option), parse.GetValue(output)!, baseModelPath, parse.GetValue(draw));
    }

    private static HashSet<string> SavedSignaturesOrNone(string modelPath)
    {
        try
        {
            return SavedSignatures(modelPath);
        }
        catch (InvalidDataException)
        {
            return new HashSet<string>();
        }
    }

    internal static int Run(string modelPath, string dataset, TextFileFormat format, string? textCol, string? text2Col, string output, string? baseModelPath)
    {
        var console = Terminal.Out;
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"The model file '{modelPath}' (--model) does not exist.", modelPath);
        if (baseModelPath is not null && !File.Exists(baseModelPath) && !Directory.Exists(baseModelPath))
            throw new FileNotFoundException($"The base model '{baseModelPath}' (--base-model) does not exist.", baseModelPath);
        var signatures = Directory.Exists(dataset) ? new HashSet<string>() : SavedSignatures(modelPath);
        if (signatures.Contains("PEFTNERT"))
        {
            if (textCol is not null || text2Col is not null) throw new UsageException("--text-col and --text2-col do not apply to a named-entity recognizer: it reads a CoNLL file or plain text, one sentence a line.");
            return NerPredictions.Run(modelPath, dataset, output, baseModelPath);
        }
        // A folder can only hold images; a file is a delimited text file for text models and a TSV of image paths for image models.
        if (Directory.Exists(dataset) || signatures.Contains("PEFTIMGC"))
        {
            if (textCol is not null || text2Col is not null) throw new UsageException("--text-col and --text2-col apply to text models; this is an image model.");
            return ImagePredictions.Run(modelPath, ImageDataset.ReadForPrediction(dataset, "--dataset"), output, baseModelPath);
        }
        if (textCol is null) throw new UsageException("--text-col is required for a text model.");
        var file = DelimitedFile.Open(dataset, "--dataset", format);
        var textIndices = new List<int> { file.ResolveColumn(textCol, "--text-col") };
        if (text2Col is not null) textIndices.Add(file.ResolveColumn(text2Col, "--text2-col"));
        var outputPath = OutputFiles.Check(output, "--output");

        var mlContext = new MLContext(1);
        using var cancellation = Cancellation.Attach(mlContext);
        var model = LoadModel(mlContext, modelPath, baseModelPath, out var inputSchema);
        var transformers = Flatten(model).ToList();
        try
        {
            // The leading MapValueToKey transformers turn the label into a key: the columns they make keys are label columns.
            int leading = transformers.TakeWhile(t => t is ValueToKeyMappingTransformer).Count();
            var keyed = transformers.Take(leading).Aggregate(inputSchema, (schema, t) => t.GetOutputSchema(schema));
            var labels = inputSchema.Where(c => !c.IsHidden && c.Type is not KeyDataViewType && keyed.GetColumnOrNull(c.Name)?.Type is KeyDataViewType)
                .Select(c => c.Name).ToHashSet();
            // The remaining text columns of the saved input schema are the ones the classifier reads, in the order trained.
            var textNames = inputSchema.Where(c => !c.IsHidden && c.Type is TextDataViewType && !labels.Contains(c.Name)).Select(c => c.Name).ToList();
            if (textNames.Count == 0)
                throw new InvalidOperationException($"The model's input schema ({Describe(inputSchema)}) has no text column to score.");
            if (textNames.Count != textIndices.Count)
                throw new ArgumentException(textNames.Count > textIndices.Count
                    ? $"The model reads {textNames.Count} text columns ({string.Join(", ", textNames)}); give the second with --text2-col."
                    : $"The model reads one text column ({textNames[0]}); --text2-col does not apply.");

            // The file is read with just the text columns, named as the model expects. A column of the saved input schema
            // that the file now lacks is the label: ML.NET's chain would then fail in its first step, MapValueToKey of that
            // label, which scoring does not need. So those leading label mappers are skipped and the rest of the chain
            // (classifier, MapKeyToValue of the predicted label) is applied step by step.
            var data = file.Load(mlContext, textNames.Zip(textIndices), maxRows: null);
            bool fileLacksColumns = inputSchema.Any(c => !c.IsHidden && !textNames.Contains(c.Name));
            foreach (var transformer in fileLacksColumns ? transformers.Skip(leading) : transformers)
                data = transformer.Transform(data);

            console.MarkupLine($"Scoring [green]{Markup.Escape(file.Path)}[/]");
            long rows = 0;
            var headerNames = textIndices.Select((index, i) => file.ColumnName(index, textNames[i])).ToList();
            // A similarity model's Score is one number per row; a classifier's a vector of probabilities with PredictedLabel.
            OutputFiles.WriteAtomically(outputPath, temporary => rows = SimilarityPredictions.Applies(data)
                ? SimilarityPredictions.Write(data, textNames, headerNames, temporary)
                : Write(data, textNames, headerNames, temporary));
            console.MarkupLine($"Wrote {rows.ToString(CultureInfo.InvariantCulture)} predictions to [green]{Markup.Escape(outputPath)}[/]");
            return 0;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    /// <summary>Whether the model file holds a PEFT recommender (its version stamp), read without loading it; false for anything that is not a readable model.</summary>
    private static bool IsRecommender(string modelPath)
    {
        if (!File.Exists(modelPath)) return false;
        try
        {
            var signatures = SavedSignatures(modelPath);
            return signatures.Contains("PEFTMFAC") || signatures.Contains("PEFTNCFM");
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>The model signatures in the saved model's version stamps (<c>Model.key</c> entries: PEFTIMGC for an image classifier, PEFTNERT for a named-entity recognizer...), read without loading the model.</summary>
    internal static HashSet<string> SavedSignatures(string modelPath)
    {
        var known = new[] { "PEFTIMGC", "PEFTNERT", "PEFTTXTC", "PEFTMFAC", "PEFTNCFM", "PEFTODET" };
        try
        {
            using var zip = System.IO.Compression.ZipFile.OpenRead(modelPath);
            var found = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith("Model.key", StringComparison.Ordinal) || entry.Length > 4096) continue;
                using var reader = new StreamReader(entry.Open());
                var stamp = reader.ReadToEnd();
                found.UnionWith(known.Where(k => stamp.Contains(k, StringComparison.Ordinal)));
            }
            return found;
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"The model file '{modelPath}' (--model) is not an ML.NET model: {e.Message}", e);
        }
    }

    /// <summary>Loads a saved model (from --model), its PEFT base model from --base-model when given; a file that is not a model is a clear error.</summary>
    internal static ITransformer LoadModel(MLContext mlContext, string modelPath, string? baseModelPath, out DataViewSchema inputSchema)
    {
        try
        {
            return baseModelPath is null
                ? mlContext.Model.Load(modelPath, out inputSchema)
                : mlContext.Model.LoadWithBaseModel(modelPath, baseModelPath, out inputSchema);
        }
        catch (FormatException e)
        {
            // ML.NET reports a file that is not a zip archive this way.
            throw new InvalidDataException($"The model file '{modelPath}' (--model) is not an ML.NET model: {e.Message}.", e);
        }
    }

    /// <summary>The transformers of a loaded model, nested chains opened.</summary>
    internal static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };

    internal static long Write(IDataView scored, IReadOnlyList<string> textNames, IReadOnlyList<string> headerNames, string path)
    {
        var schema = scored.Schema;
        var textColumns = textNames.Select(n => Require(schema, n)).ToList();
        var predicted = Require(schema, TextClassificationCommand.PredictedLabelColumn);
        var score = Require(schema, TextClassificationCommand.ScoreColumn);
        if (score.Type is not VectorDataViewType { ItemType: NumberDataViewType, Size: > 0 } scoreType || scoreType.ItemType != NumberDataViewType.Single)
            throw new InvalidOperationException($"The model's '{score.Name}' column has type {score.Type}; a vector of probabilities was expected.");
        VBuffer<ReadOnlyMemory<char>> slotNames = default;
        if (score.HasSlotNames()) score.GetSlotNames(ref slotNames);
        var classNames = Enumerable.Range(0, scoreType.Size)
            .Select(i => i < slotNames.Length && !slotNames.GetItemOrDefault(i).IsEmpty ? slotNames.GetItemOrDefault(i).ToString() : $"Class{i}")
            .ToList();

        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)) { NewLine = "\n" };
        writer.WriteLine(string.Join('\t', headerNames.Append(TextClassificationCommand.PredictedLabelColumn).Concat(classNames).Select(Clean)));

        using var cursor = scored.GetRowCursor(textColumns.Append(predicted).Append(score));
        var textGetters = textColumns.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToList();
        var predictedGetter = ToStringGetter(cursor, predicted);
        var scoreGetter = cursor.GetGetter<VBuffer<float>>(score);
        ReadOnlyMemory<char> text = default;
        VBuffer<float> probabilities = default;
        var line = new StringBuilder();
        long rows = 0;
        while (cursor.MoveNext())
        {
            line.Clear();
            foreach (var getter in textGetters)
            {
                getter(ref text);
                line.Append(Clean(text.ToString())).Append('\t');
            }
            line.Append(Clean(predictedGetter()));
            scoreGetter(ref probabilities);
            for (int i = 0; i < scoreType.Size; i++)
                line.Append('\t').Append(probabilities.GetItemOrDefault(i).ToString("R", CultureInfo.InvariantCulture));
            writer.WriteLine(line);
            rows++;
        }
        return rows;
    }

    private static DataViewSchema.Column Require(DataViewSchema schema, string name) =>
        schema.GetColumnOrNull(name) ?? throw new InvalidOperationException($"The scored data has no column '{name}'. Its columns are: {Describe(schema)}.");

    private static string Describe(DataViewSchema schema) => string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"{c.Name} ({c.Type})"));

    /// <summary>Tabs and line breaks inside a field would break the TSV layout; they become spaces.</summary>
    private static string Clean(string field) => field.Replace('\t', ' ').Replace('\r', ' ').Replace('\n', ' ');

    /// <summary>Reads the predicted label, whatever type MapKeyToValue restored, as invariant text.</summary>
    private static Func<string> ToStringGetter(DataViewRow row, DataViewSchema.Column column) => column.Type switch
    {
        TextDataViewType => Getter<ReadOnlyMemory<char>>(row, column, v => v.ToString()),
        BooleanDataViewType => Getter<bool>(row, column, v => v ? "true" : "false"),
        KeyDataViewType => Getter<uint>(row, column, v => v.ToString(CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(float) => Getter<float>(row, column, v => v.ToString("R", CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(double) => Getter<double>(row, column, v => v.ToString("R", CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(int) => Getter<int>(row, column, v => v.ToString(CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(long) => Getter<long>(row, column, v => v.ToString(CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(uint) => Getter<uint>(row, column, v => v.ToString(CultureInfo.InvariantCulture)),
        NumberDataViewType when column.Type.RawType == typeof(ulong) => Getter<ulong>(row, column, v => v.ToString(CultureInfo.InvariantCulture)),
        _ => throw new InvalidOperationException($"The predicted label column '{column.Name}' has type {column.Type}, which cannot be written."),
    };

    private static Func<string> Getter<T>(DataViewRow row, DataViewSchema.Column column, Func<T, string> format)
    {
        var getter = row.GetGetter<T>(column);
        return () =>
        {
            T value = default!;
            getter(ref value);
            return format(value);
        };
    }
}
