namespace Microsoft.ML.Peft.Tasks.SentenceSimilarity;

/// <summary>How a sentence-similarity model reads a pair of sentences.</summary>
public enum SimilarityArchitecture
{
    /// <summary>
    /// The pair as one sequence (<c>[CLS] a [SEP] b [SEP]</c>), so attention sees both sentences at once; the mean of
    /// the last hidden states goes through a one-output regression head. Trained with the mean squared error on the label
    /// standardised with the training mean and standard deviation; the output is de-standardised. Every pair needs its
    /// own forward pass.
    /// </summary>
    CrossEncoder,

    /// <summary>
    /// Each sentence encoded alone and mean pooled; the score is the cosine similarity of the two embeddings, trained as
    /// sentence-transformers' <c>CosineSimilarityLoss</c> (mean squared error against the label mapped linearly from the
    /// training range [min, max] to [0, 1]) and reported as <c>min + cosine * (max - min)</c>. Embeddings can be computed
    /// once and compared by dot products (<see cref="PeftSentenceSimilarityTransformer.Embed"/>), which suits search.
    /// </summary>
    BiEncoder,
}
