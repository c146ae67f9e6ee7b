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

/// <summary>What a bi-encoder's training minimises.</summary>
public enum SimilarityLoss
{
    /// <summary>
    /// sentence-transformers' <c>CosineSimilarityLoss</c>: the mean squared error between the cosine and the label mapped
    /// linearly from the training range [min, max] to [0, 1].
    /// </summary>
    CosineMse,

    /// <summary>
    /// CoSENT (Su, 2022; sentence-transformers' <c>CoSENTLoss</c>): for every two pairs of a batch whose labels differ, a
    /// penalty when the pair with the larger label does not have the larger cosine,
    /// <c>log(1 + sum exp(20 (cos_j - cos_i)))</c> over label_i &gt; label_j. It trains the order of the cosines, which is
    /// what Spearman correlation measures; the score is still <c>min + cosine * (max - min)</c>.
    /// </summary>
    CoSent,
}
