namespace Microsoft.ML.Peft.Tasks.Recommendation;

/// <summary>What the rows a recommender is trained on say about a user and an item.</summary>
public enum RecommendationFeedback
{
    /// <summary>
    /// Each row rates an item (the Single label column, for example 1 to 5 stars); the model learns to predict the rating
    /// with a squared loss, and its score is a predicted rating.
    /// </summary>
    Explicit,

    /// <summary>
    /// Each row is an interaction (a view, a click, a purchase, a rating of any value): the label column is not read and
    /// may be absent. The model learns to score a user's items above items the user has not interacted with (negatives
    /// sampled during training, see <see cref="ImplicitFeedbackLoss"/>), and its score is a relevance for ranking, on no
    /// particular scale and never clamped.
    /// </summary>
    Implicit,
}

/// <summary>The ranking loss of a recommender trained on implicit feedback.</summary>
public enum ImplicitFeedbackLoss
{
    /// <summary>
    /// Binary cross-entropy on the score as a logit: each interaction is a positive (label 1), each of its sampled
    /// negatives a negative (label 0), as in neural collaborative filtering (He et al. 2017).
    /// </summary>
    BinaryCrossEntropy,

    /// <summary>
    /// Bayesian personalised ranking (Rendle et al. 2009): <c>-log σ(score(u, positive) - score(u, negative))</c> for each
    /// interaction and each of its sampled negatives.
    /// </summary>
    Bpr,
}
