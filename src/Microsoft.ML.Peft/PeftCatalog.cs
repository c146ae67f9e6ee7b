using Microsoft.ML.Data;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft;

/// <summary>Entry points of Microsoft.ML.Peft as extension methods on ML.NET's catalogs.</summary>
public static class PeftCatalog
{
    /// <summary>Fine-tunes a pretrained encoder with a PEFT method (LoRA by default) to classify text or text pairs.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="options">Columns, base model, adapter and training settings.</param>
    public static PeftTextClassificationTrainer PeftTextClassification(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        PeftTextClassificationTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new PeftTextClassificationTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>
    /// Fine-tunes a pretrained ResNet (by default the ImageNet ResNet-18 of <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c>)
    /// with a PEFT method (LoRA on its convolutions by default) to classify images given as bytes, <c>MLImage</c> or paths.
    /// </summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="options">Columns, base model, method, image size, augmentation and training settings.</param>
    public static Tasks.ImageClassification.PeftImageClassificationTrainer PeftImageClassification(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        Tasks.ImageClassification.PeftImageClassificationTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.ImageClassification.PeftImageClassificationTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>
    /// Fine-tunes a pretrained ResNet (by default the package's ImageNet ResNet-18) into an anchor-free object detector (a
    /// feature pyramid and FCOS's head) with a PEFT method on the backbone (LoRA on its convolutions by default); columns as
    /// Microsoft.ML.TorchSharp's <c>ObjectDetection</c>.
    /// </summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="options">Columns, base model, method, image size, augmentation, thresholds and training settings.</param>
    public static Tasks.ObjectDetection.PeftObjectDetectionTrainer PeftObjectDetection(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        Tasks.ObjectDetection.PeftObjectDetectionTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.ObjectDetection.PeftObjectDetectionTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>Object detection with the default ResNet-18 and LoRA; same arguments as Microsoft.ML.TorchSharp's <c>ObjectDetection</c>.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="labelColumnName">The label column: a vector of keys, one per box.</param>
    /// <param name="predictedLabelColumnName">The output column of predicted keys, one per detection.</param>
    /// <param name="boundingBoxColumnName">The boxes: a vector of Single, xmin, ymin, xmax, ymax per box in pixels of the original image.</param>
    /// <param name="imageColumnName">The image column: bytes, <c>MLImage</c> or a path.</param>
    /// <param name="predictedBoundingBoxColumnName">The output column of predicted boxes, four values per detection.</param>
    /// <param name="scoreColumnName">The output column of the detections' scores.</param>
    /// <param name="maxEpoch">Passes over the data.</param>
    public static Tasks.ObjectDetection.PeftObjectDetectionTrainer PeftObjectDetection(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label",
        string predictedLabelColumnName = "PredictedLabel",
        string boundingBoxColumnName = "BoundingBoxes",
        string imageColumnName = "Image",
        string predictedBoundingBoxColumnName = "PredictedBoundingBoxes",
        string scoreColumnName = "Score",
        int maxEpoch = 20) =>
        catalog.PeftObjectDetection(new Tasks.ObjectDetection.PeftObjectDetectionTrainer.Options
        {
            LabelColumnName = labelColumnName,
            PredictedLabelColumnName = predictedLabelColumnName,
            BoundingBoxColumnName = boundingBoxColumnName,
            ImageColumnName = imageColumnName,
            PredictedBoundingBoxColumnName = predictedBoundingBoxColumnName,
            ScoreColumnName = scoreColumnName,
            MaxEpoch = maxEpoch,
        });

    /// <summary>
    /// COCO-style detection metrics (mAP@0.5, mAP@0.75, mAP@[0.5:0.95], per class) of scored data: the ground truth and a
    /// detector's output in the layout of <see cref="Tasks.ObjectDetection.PeftObjectDetectionTrainer"/> (and ML.NET's
    /// object detection). Class names come from the label's key values.
    /// </summary>
    /// <param name="catalog">The multiclass classification catalog.</param>
    /// <param name="data">Scored rows.</param>
    /// <param name="labelColumnName">The ground-truth keys, one per box.</param>
    /// <param name="boundingBoxColumnName">The ground-truth boxes, four values per box.</param>
    /// <param name="predictedLabelColumnName">The predicted keys, one per detection, of the label's key type.</param>
    /// <param name="predictedBoundingBoxColumnName">The predicted boxes, four values per detection, in the same pixels as the ground truth.</param>
    /// <param name="scoreColumnName">The detections' scores.</param>
    /// <returns>The detection metrics.</returns>
    public static ObjectDetectionMetrics EvaluateObjectDetection(
        this MulticlassClassificationCatalog catalog,
        IDataView data,
        string labelColumnName = "Label",
        string boundingBoxColumnName = "BoundingBoxes",
        string predictedLabelColumnName = "PredictedLabel",
        string predictedBoundingBoxColumnName = "PredictedBoundingBoxes",
        string scoreColumnName = "Score")
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return Tasks.ObjectDetection.ObjectDetectionScoredEvaluator.Evaluate(data, labelColumnName, boundingBoxColumnName, predictedLabelColumnName,
            predictedBoundingBoxColumnName, scoreColumnName);
    }

    /// <summary>
    /// Fine-tunes a pretrained encoder with a PEFT method (LoRA by default) and a token head to tag each word of a sentence
    /// with BIO tags (named-entity recognition); columns as Microsoft.ML.TorchSharp's <c>NamedEntityRecognition</c>.
    /// </summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="options">Columns, base model, method, windows and training settings.</param>
    public static Tasks.NamedEntityRecognition.PeftNamedEntityRecognitionTrainer PeftNamedEntityRecognition(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        Tasks.NamedEntityRecognition.PeftNamedEntityRecognitionTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.NamedEntityRecognition.PeftNamedEntityRecognitionTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>Named-entity recognition with the default encoder and LoRA; same arguments as Microsoft.ML.TorchSharp's <c>NamedEntityRecognition</c>.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="labelColumnName">The label column: a vector of key-typed tags, one per word.</param>
    /// <param name="outputColumnName">The output column of predicted tags.</param>
    /// <param name="sentence1ColumnName">The sentence column: text or a vector of words.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Optional validation data.</param>
    public static Tasks.NamedEntityRecognition.PeftNamedEntityRecognitionTrainer PeftNamedEntityRecognition(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label",
        string outputColumnName = "PredictedLabel",
        string sentence1ColumnName = "Sentence",
        int batchSize = 32,
        int maxEpochs = 10,
        IDataView? validationSet = null) =>
        catalog.PeftNamedEntityRecognition(new Tasks.NamedEntityRecognition.PeftNamedEntityRecognitionTrainer.Options
        {
            LabelColumnName = labelColumnName,
            PredictionColumnName = outputColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            BatchSize = batchSize,
            MaxEpoch = maxEpochs,
            ValidationSet = validationSet,
        });

    /// <summary>Fine-tunes the default encoder (all-MiniLM-L6-v2) with LoRA to classify text; same arguments as Microsoft.ML.TorchSharp's <c>TextClassification</c>.</summary>
    /// <param name="catalog">The multiclass classification trainers' catalog.</param>
    /// <param name="labelColumnName">The key-typed label column.</param>
    /// <param name="sentence1ColumnName">The text column.</param>
    /// <param name="sentence2ColumnName">An optional second text column.</param>
    /// <param name="scoreColumnName">The output column of class probabilities.</param>
    /// <param name="predictedLabelColumnName">The output column of the predicted key.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Optional validation data.</param>
    public static PeftTextClassificationTrainer PeftTextClassification(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label",
        string sentence1ColumnName = "Sentence1",
        string? sentence2ColumnName = null,
        string scoreColumnName = "Score",
        string predictedLabelColumnName = "PredictedLabel",
        int batchSize = 32,
        int maxEpochs = 10,
        IDataView? validationSet = null) =>
        catalog.PeftTextClassification(new PeftTextClassificationTrainer.Options
        {
            LabelColumnName = labelColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            Sentence2ColumnName = sentence2ColumnName,
            ScoreColumnName = scoreColumnName,
            PredictedLabelColumnName = predictedLabelColumnName,
            BatchSize = batchSize,
            MaxEpoch = maxEpochs,
            ValidationSet = validationSet,
        });

    /// <summary>
    /// Entity-level precision, recall and F1 of named-entity tags (CoNLL conlleval conventions: an entity counts when its
    /// type and span both match), per entity type and micro-averaged, with the token accuracy.
    /// </summary>
    /// <param name="catalog">The multiclass classification catalog.</param>
    /// <param name="data">Rows (sentences) with the gold and the predicted tags.</param>
    /// <param name="labelColumnName">The gold tags: a vector of keys whose key values are the tag names (O, B-X, I-X), as <c>MapValueToKey</c> makes from a text vector.</param>
    /// <param name="predictedLabelColumnName">The predicted tags, of the same kind; tags are matched by name, so its key order may differ from the label's.</param>
    /// <returns>The entity metrics.</returns>
    public static Tasks.NamedEntityRecognition.EntityMetrics EvaluateEntities(
        this MulticlassClassificationCatalog catalog,
        IDataView data,
        string labelColumnName = "Label",
        string predictedLabelColumnName = "PredictedLabel")
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return Tasks.NamedEntityRecognition.EntityEvaluator.Evaluate(data, labelColumnName, predictedLabelColumnName);
    }

    /// <summary>
    /// Fine-tunes a pretrained encoder with a PEFT method (LoRA by default) to score the similarity of two sentences, as a
    /// cross-encoder or a bi-encoder (<see cref="Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer.Options.Architecture"/>).
    /// The label is a Single score; predictions are in its units and may fall outside the training range.
    /// </summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="options">Columns, base model, architecture, method and training settings.</param>
    public static Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer PeftSentenceSimilarity(
        this RegressionCatalog.RegressionTrainers catalog,
        Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>Fine-tunes the default encoder (all-MiniLM-L6-v2) with LoRA to score sentence pairs; same arguments as Microsoft.ML.TorchSharp's <c>SentenceSimilarity</c>.</summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="labelColumnName">The Single label column.</param>
    /// <param name="scoreColumnName">The output column of the score.</param>
    /// <param name="sentence1ColumnName">The first sentence's column.</param>
    /// <param name="sentence2ColumnName">The second sentence's column.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Optional validation data.</param>
    public static Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer PeftSentenceSimilarity(
        this RegressionCatalog.RegressionTrainers catalog,
        string labelColumnName = "Label",
        string scoreColumnName = "Score",
        string sentence1ColumnName = "Sentence1",
        string sentence2ColumnName = "Sentence2",
        int batchSize = 32,
        int maxEpochs = 10,
        IDataView? validationSet = null) =>
        catalog.PeftSentenceSimilarity(new Tasks.SentenceSimilarity.PeftSentenceSimilarityTrainer.Options
        {
            LabelColumnName = labelColumnName,
            ScoreColumnName = scoreColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            Sentence2ColumnName = sentence2ColumnName,
            BatchSize = batchSize,
            MaxEpoch = maxEpochs,
            ValidationSet = validationSet,
        });

    /// <summary>
    /// Trains a biased matrix-factorisation recommender (global mean, user and item biases, user and item factors of rank
    /// <c>ApproximationRank</c>) on explicit ratings, with options named as ML.NET's <c>MatrixFactorizationTrainer.Options</c>.
    /// It hangs off the regression catalog because ML.NET's <c>mlContext.Recommendation()</c> catalog lives in
    /// Microsoft.ML.Recommender (not in Microsoft.ML), and an extension of the same name here would make calls ambiguous
    /// in applications that reference both; its <c>Score</c> is a regression score, evaluated with
    /// <c>mlContext.Regression.Evaluate</c> (RMSE, MAE), as ML.NET's recommendation evaluator does.
    /// </summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="options">The user and item key columns, the rating column, rank, regularisation and training settings.</param>
    public static Tasks.Recommendation.PeftMatrixFactorizationTrainer PeftMatrixFactorization(
        this RegressionCatalog.RegressionTrainers catalog,
        Tasks.Recommendation.PeftMatrixFactorizationTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.Recommendation.PeftMatrixFactorizationTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>Matrix factorisation with the default recipe; same arguments as ML.NET's <c>Recommendation().Trainers.MatrixFactorization</c>.</summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="labelColumnName">The Single rating column.</param>
    /// <param name="matrixColumnIndexColumnName">The user id column (key, text or integer).</param>
    /// <param name="matrixRowIndexColumnName">The item id column (key, text or integer).</param>
    /// <param name="approximationRank">Rank of the factors.</param>
    /// <param name="learningRate">Adam's learning rate.</param>
    /// <param name="numberOfIterations">Passes over the ratings.</param>
    public static Tasks.Recommendation.PeftMatrixFactorizationTrainer PeftMatrixFactorization(
        this RegressionCatalog.RegressionTrainers catalog,
        string labelColumnName,
        string matrixColumnIndexColumnName,
        string matrixRowIndexColumnName,
        int approximationRank = 64,
        double learningRate = 0.001,
        int numberOfIterations = 30) =>
        catalog.PeftMatrixFactorization(new Tasks.Recommendation.PeftMatrixFactorizationTrainer.Options
        {
            LabelColumnName = labelColumnName,
            MatrixColumnIndexColumnName = matrixColumnIndexColumnName,
            MatrixRowIndexColumnName = matrixRowIndexColumnName,
            ApproximationRank = approximationRank,
            LearningRate = learningRate,
            NumberOfIterations = numberOfIterations,
        });

    /// <summary>
    /// Adapts a trained matrix-factorisation model to new ratings with its tables frozen: a small adapter (low-rank factor
    /// offsets and re-fitted biases by default) trained on the new ratings only, with rows of its own for users and items
    /// the base never saw. Several adaptations of one base share its tables.
    /// </summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="baseModel">The trained base (from <c>PeftMatrixFactorization</c>, or loaded from its file).</param>
    /// <param name="options">The adaptation method and its training settings; null for the defaults.</param>
    public static Tasks.Recommendation.PeftMatrixFactorizationAdaptationTrainer PeftMatrixFactorizationAdaptation(
        this RegressionCatalog.RegressionTrainers catalog,
        Tasks.Recommendation.PeftMatrixFactorizationTransformer baseModel,
        Tasks.Recommendation.PeftMatrixFactorizationAdaptationTrainer.Options? options = null)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.Recommendation.PeftMatrixFactorizationAdaptationTrainer(CatalogUtils.GetEnvironment(catalog), baseModel, options ?? new());
    }

    /// <summary>
    /// Neural collaborative filtering (NeuMF: a generalised-matrix-factorisation branch and an MLP branch over user and item
    /// embeddings, fused by a linear layer, with a global mean and biases) on explicit ratings or implicit feedback
    /// (<c>Feedback</c>), with options named as ML.NET's <c>MatrixFactorizationTrainer.Options</c>. Explicit scores are
    /// evaluated with <c>mlContext.Regression.Evaluate</c>, implicit ones with <see cref="EvaluateRecommendations"/>.
    /// </summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="options">The user, item and rating columns, the embedding and layer sizes, the feedback kind and training settings.</param>
    public static Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTrainer PeftNeuralCollaborativeFiltering(
        this RegressionCatalog.RegressionTrainers catalog,
        Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTrainer.Options options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>
    /// Adapts a trained neural collaborative-filtering model (explicit ratings) to new ratings with its network frozen: a
    /// small adapter (by default low-rank offsets of the four embedding tables, LoRA on the MLP's layers and on
    /// <c>predict</c>, re-fitted biases and global mean) trained on the new ratings only, with rows of its own for users
    /// and items the base never saw. Several adaptations of one base share its network.
    /// </summary>
    /// <param name="catalog">The regression trainers' catalog.</param>
    /// <param name="baseModel">The trained base (from <c>PeftNeuralCollaborativeFiltering</c>, or loaded from its file).</param>
    /// <param name="options">The adaptation method and its training settings; null for the defaults.</param>
    public static Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer PeftNeuralCollaborativeFilteringAdaptation(
        this RegressionCatalog.RegressionTrainers catalog,
        Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTransformer baseModel,
        Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer.Options? options = null)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return new Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringAdaptationTrainer(CatalogUtils.GetEnvironment(catalog), baseModel, options ?? new());
    }

    /// <summary>
    /// Hit rate and NDCG at K of a recommender under the leave-last-out protocol: each row of <paramref name="testSet"/> is a
    /// held-out interaction whose item is ranked, by <paramref name="model"/>'s score for its user, among
    /// <c>NegativeCount</c> (99) items drawn with <c>Seed</c> from those the user never interacted with in either set (or
    /// all of them). <paramref name="model"/> is any transformer (a whole pipeline) that scores rows of the user and item
    /// columns alone; higher scores rank first. Split the data with <see cref="LeaveLastOutSplit"/>.
    /// </summary>
    /// <param name="catalog">The regression catalog.</param>
    /// <param name="model">The trained model or pipeline.</param>
    /// <param name="trainSet">The interactions the model was trained on (they are never drawn as negatives).</param>
    /// <param name="testSet">The held-out interactions, with the same user and item columns.</param>
    /// <param name="options">The user and item columns, the score column, K and the negatives.</param>
    public static Tasks.Recommendation.Ranking.RecommendationRankingMetrics EvaluateRecommendations(this RegressionCatalog catalog,
        ITransformer model, IDataView trainSet, IDataView testSet, Tasks.Recommendation.Ranking.RecommendationRankingOptions options)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return Tasks.Recommendation.Ranking.RecommendationRankingEvaluator.Evaluate(CatalogUtils.GetEnvironment(catalog), model, trainSet, testSet, options);
    }

    /// <summary>
    /// Splits interactions leave-last-out: each user's latest interaction (greatest <paramref name="timestampColumnName"/>;
    /// of equal timestamps, the last row) is the test set, the rest the training set; a user with a single interaction
    /// stays in the training set. Both sets are views of <paramref name="data"/> with its columns.
    /// </summary>
    /// <param name="catalog">The data operations catalog.</param>
    /// <param name="data">The interactions.</param>
    /// <param name="userColumnName">The user column (key, text or integer).</param>
    /// <param name="timestampColumnName">The time of each interaction: a number, DateTime or DateTimeOffset column.</param>
    public static DataOperationsCatalog.TrainTestData LeaveLastOutSplit(this DataOperationsCatalog catalog, IDataView data, string userColumnName, string timestampColumnName)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        var (train, test) = Tasks.Recommendation.Ranking.LeaveLastOutSplit.Split(data, userColumnName, timestampColumnName);
        return new DataOperationsCatalog.TrainTestData(train, test);
    }

    /// <summary>
    /// Pearson and Spearman correlation (ties by average rank) of predicted similarity scores and labels, the metrics of
    /// STS benchmarks. Rows with a missing (NaN) label or score are skipped and counted.
    /// </summary>
    /// <param name="catalog">The regression catalog.</param>
    /// <param name="data">Scored data.</param>
    /// <param name="labelColumnName">The label column (Single or Double).</param>
    /// <param name="scoreColumnName">The score column (Single or Double).</param>
    public static Tasks.SentenceSimilarity.SentenceSimilarityMetrics EvaluateSentenceSimilarity(this RegressionCatalog catalog, IDataView data,
        string labelColumnName = "Label", string scoreColumnName = "Score")
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        return Tasks.SentenceSimilarity.SentenceSimilarityMetrics.Evaluate(data, labelColumnName, scoreColumnName);
    }
}

/// <summary>Loading PEFT models: from another base-model location, or onto another device.</summary>
public static class PeftModelOperations
{
    /// <summary>
    /// Loads the PEFT matrix-factorisation model (base or adaptation) of a file saved with <c>mlContext.Model.Save</c>,
    /// alone or at the end of a chain: what <c>PeftMatrixFactorizationAdaptation</c> takes as its base. A file that is not
    /// an ML.NET model, or holds another kind of model, is a clear error naming it.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="modelPath">The model file.</param>
    public static Tasks.Recommendation.PeftMatrixFactorizationTransformer LoadMatrixFactorization(this ModelOperationsCatalog catalog, string modelPath)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (string.IsNullOrWhiteSpace(modelPath)) throw new ArgumentException("The model path is empty.", nameof(modelPath));
        return Tasks.Recommendation.PeftMatrixFactorizationTransformer.LoadFile(CatalogUtils.GetEnvironment(catalog), Path.GetFullPath(modelPath), $"The model file '{modelPath}'", asBase: false);
    }

    /// <summary>
    /// Loads the PEFT neural collaborative-filtering model (base or adaptation) of a file saved with
    /// <c>mlContext.Model.Save</c>, alone or at the end of a chain: what <c>PeftNeuralCollaborativeFilteringAdaptation</c>
    /// takes as its base. A file that is not an ML.NET model, or holds another kind of model, is a clear error naming it.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="modelPath">The model file.</param>
    public static Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTransformer LoadNeuralCollaborativeFiltering(this ModelOperationsCatalog catalog, string modelPath)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (string.IsNullOrWhiteSpace(modelPath)) throw new ArgumentException("The model path is empty.", nameof(modelPath));
        return Tasks.Recommendation.Neural.PeftNeuralCollaborativeFilteringTransformer.LoadFile(CatalogUtils.GetEnvironment(catalog), Path.GetFullPath(modelPath), $"The model file '{modelPath}'", asBase: false);
    }

    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c>, taking the PEFT base model from <paramref name="baseModelPath"/>
    /// (an ONNX file or a Hugging Face directory) instead of its stored location. Its size and SHA-256 must match the saved ones.
    /// </summary>
    public static ITransformer LoadWithBaseModel(this ModelOperationsCatalog catalog, string modelPath, string baseModelPath, out DataViewSchema inputSchema)
    {
        if (string.IsNullOrWhiteSpace(baseModelPath)) throw new ArgumentException("The base model path is empty.", nameof(baseModelPath));
        return catalog.LoadPeft(modelPath, new PeftLoadOptions { BaseModelPath = baseModelPath }, out inputSchema);
    }

    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c> with PEFT load options (base-model location, device). ML.NET
    /// creates loaders through reflection and wraps their exceptions; this method rethrows the loader's own exception.
    /// A damaged or unsupported file throws <see cref="InvalidDataException"/> (ML.NET's own framing errors of the zip
    /// included), a base model that is not where the file says <see cref="FileNotFoundException"/>.
    /// </summary>
    public static ITransformer LoadPeft(this ModelOperationsCatalog catalog, string modelPath, PeftLoadOptions options, out DataViewSchema inputSchema)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (options is null) throw new ArgumentNullException(nameof(options));
        var resolved = new PeftLoadOptions
        {
            BaseModelPath = options.BaseModelPath is null ? null : Path.GetFullPath(options.BaseModelPath),
            Device = options.Device,
            ShareBaseModel = options.ShareBaseModel,
        };
        var previous = PeftLoadOptions.Current.Value;
        PeftLoadOptions.Current.Value = resolved;
        try
        {
            return catalog.Load(modelPath, out inputSchema);
        }
        catch (Exception e) when (LoadFailure.Unwrap(e) is var inner && (inner != e || LoadFailure.IsFramingDamage(inner)))
        {
            if (LoadFailure.IsFramingDamage(inner))
                throw new InvalidDataException($"The model file '{modelPath}' is damaged or is not an ML.NET model: {inner.Message}", inner);
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner).Throw();
            throw;
        }
        finally
        {
            PeftLoadOptions.Current.Value = previous;
        }
    }
}

/// <summary>Exchanging adapters with Hugging Face PEFT's file format.</summary>
public static class PeftAdapterInterop
{
    /// <summary>
    /// Writes a fitted PEFT text classifier as a Hugging Face PEFT adapter directory: <c>adapter_config.json</c>
    /// (<c>peft_type</c>, <c>task_type</c> <c>SEQ_CLS</c>, the method's fields under PEFT's names, <c>modules_to_save</c>
    /// <c>["classifier"]</c>, <c>base_model_name_or_path</c>, and a <c>microsoft_ml_peft</c> block with what PEFT has no field
    /// for: mean pooling, class names, sequence length, lower-casing, the base model's SHA-256), <c>adapter_model.safetensors</c>
    /// (the adapter in its saved form and the head, under PEFT's keys) and a <c>README.md</c> saying how to score it in Python.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">A <see cref="PeftTextClassificationTransformer"/>, or a chain holding exactly one.</param>
    /// <param name="directory">The directory to write (created when missing; PEFT's files in it are replaced).</param>
    public static void ExportPeftAdapter(this ModelOperationsCatalog catalog, ITransformer model, string directory)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        if (model is null) throw new ArgumentNullException(nameof(model));
        var found = Flatten(model).OfType<PeftTextClassificationTransformer>().ToList();
        if (found.Count != 1)
            throw new ArgumentException(found.Count == 0
                ? "The model holds no PEFT text classifier to export."
                : $"The model holds {found.Count} PEFT text classifiers; pass the one to export.", nameof(model));
        HuggingFacePeftFormat.Export(found[0].Model, directory);
    }

    /// <summary>
    /// Reads a Hugging Face PEFT adapter directory (written by <see cref="ExportPeftAdapter"/> or by Python PEFT for
    /// sequence classification) and returns a text classifier that scores with it and saves with <c>mlContext.Model.Save</c>.
    /// The base model must be the one the adapter was trained on (checked by SHA-256 when the adapter records it, else by
    /// name); the method comes from <c>peft_type</c>; every tensor is checked against the model (names, shapes, values); the
    /// class count is the classifier's row count, the class names those recorded (else "0", "1", ...). Scoring pools the
    /// encoder's last hidden states by their mean over the attention mask. Bad or unsupported files throw
    /// <see cref="InvalidDataException"/> (or <see cref="FileNotFoundException"/>) naming the field or tensor at fault.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="directory">The directory holding <c>adapter_config.json</c> and <c>adapter_model.safetensors</c>.</param>
    /// <param name="options">Base model, columns and device; default: MiniLM and the default column names.</param>
    public static PeftTextClassificationTransformer ImportPeftAdapter(this ModelOperationsCatalog catalog, string directory, PeftAdapterImportOptions? options = null)
    {
        if (catalog is null) throw new ArgumentNullException(nameof(catalog));
        Torch.TorchBackend.EnsureAvailable();
        var env = CatalogUtils.GetEnvironment(catalog);
        var host = env.Register(nameof(ImportPeftAdapter));
        using var ch = host.Start("Importing a PEFT adapter");
        var model = HuggingFacePeftFormat.Import(directory, options ?? new PeftAdapterImportOptions(), ch);
        return new PeftTextClassificationTransformer(env, model, Array.Empty<Training.EpochMetrics>());
    }

    /// <summary>The transformers of <paramref name="model"/>, chains unrolled.</summary>
    internal static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { model };
}

/// <summary>Cancelling work in progress.</summary>
public static class PeftCancellation
{
    /// <summary>
    /// Asks ML.NET to stop the work in progress on <paramref name="mlContext"/> (ML.NET keeps this operation internal).
    /// PEFT training checks it every step and throws <see cref="OperationCanceledException"/>; nothing is saved.
    /// </summary>
    public static void CancelExecution(this MLContext mlContext)
    {
        if (mlContext is null) throw new ArgumentNullException(nameof(mlContext));
        if (CatalogUtils.GetEnvironment(mlContext.Model) is not ICancelable cancelable)
            throw new NotSupportedException("This version of ML.NET offers no cancellation.");
        cancelable.CancelExecution();
    }
}
