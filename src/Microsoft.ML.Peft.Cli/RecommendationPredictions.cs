using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Tasks.Recommendation;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli;

/// <summary>What <c>predict</c> writes for a recommender (base or adapted): the user, the item and the predicted rating per row.</summary>
internal static class RecommendationPredictions
{
    /// <summary>Scores every (user, item) row of <paramref name="dataset"/>.</summary>
    /// <param name="knownIdsOnly">Refuse a user or item the model was not trained on (which the model scores with its
    /// global and known terms only) with an <see cref="InvalidDataException"/>, instead of scoring it.</param>
    public static int Run(string modelPath, string dataset, TextFileFormat format, string? userCol, string? itemCol, string? textCol, string output, string? baseModelPath,
        bool knownIdsOnly = false)
    {
        if (textCol is not null) throw new UsageException("--text-col and --text2-col apply to text models; a recommender reads --user-col and --item-col.");
        if (userCol is null || itemCol is null) throw new UsageException("A recommender scores (user, item) rows: give both --user-col and --item-col.");
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"The model file '{modelPath}' (--model) does not exist.", modelPath);
        if (baseModelPath is not null && !File.Exists(baseModelPath)) throw new FileNotFoundException($"The base model file '{baseModelPath}' (--base-model) does not exist.", baseModelPath);
        var file = DelimitedFile.Open(dataset, "--dataset", format);
        var outputPath = OutputFiles.Check(output, "--output");
        var console = Terminal.Out;
        var mlContext = new MLContext(1);
        using var cancellation = Cancellation.Attach(mlContext);
        var loaded = PredictCommand.LoadModel(mlContext, modelPath, baseModelPath, out _);
        var transformers = PredictCommand.Flatten(loaded).ToList();
        try
        {
            var model = transformers.OfType<PeftRecommenderTransformer>().LastOrDefault()
                ?? throw new InvalidDataException($"The model file '{modelPath}' (--model) holds no recommender; --user-col and --item-col apply to models written by recommendation or recommendation-adapt.");
            var names = new[] { model.MatrixColumnIndexColumnName, model.MatrixRowIndexColumnName };
            int user = file.ResolveColumn(userCol, "--user-col"), item = file.ResolveColumn(itemCol, "--item-col");
            if (user == item) throw new ArgumentException("--user-col and --item-col name the same column.");
            var input = file.Load(mlContext, new[] { (names[0], user, DataKind.String), (names[1], item, DataKind.String) }, maxRows: null);
            if (knownIdsOnly) CheckKnown(model, input, names);
            var data = model.Transform(input);
            console.MarkupLine($"Scoring [green]{Markup.Escape(file.Path)}[/]");
            long rows = 0;
            OutputFiles.WriteAtomically(outputPath, temporary => rows = SimilarityPredictions.Write(data, names,
                new[] { file.ColumnName(user, "user"), file.ColumnName(item, "item") }, temporary, model.ScoreColumnName));
            console.MarkupLine($"Wrote {rows.ToString(CultureInfo.InvariantCulture)} predictions to [green]{Markup.Escape(outputPath)}[/]");
            return 0;
        }
        finally
        {
            foreach (var disposable in transformers.OfType<IDisposable>()) disposable.Dispose();
        }
    }

    /// <summary>Fails, naming the id, when a row's user or item is not one the model was trained on.</summary>
    private static void CheckKnown(PeftRecommenderTransformer model, IDataView input, string[] names)
    {
        var users = new HashSet<string>(model.UserIds, StringComparer.Ordinal);
        var items = new HashSet<string>(model.ItemIds, StringComparer.Ordinal);
        var columns = names.Select(n => input.Schema[n]).ToArray();
        using var cursor = input.GetRowCursor(columns);
        var getUser = cursor.GetGetter<ReadOnlyMemory<char>>(columns[0]);
        var getItem = cursor.GetGetter<ReadOnlyMemory<char>>(columns[1]);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            getUser(ref value);
            var userId = value.ToString();
            if (!users.Contains(userId))
                throw new InvalidDataException($"The model does not know user '{userId}': it was not in the training ratings ({model.UserCount:N0} users are), so the model has no factors for it.");
            getItem(ref value);
            var itemId = value.ToString();
            if (!items.Contains(itemId))
                throw new InvalidDataException($"The model does not know item '{itemId}': it was not in the training ratings ({model.ItemCount:N0} items are), so the model has no factors for it.");
        }
    }
}
