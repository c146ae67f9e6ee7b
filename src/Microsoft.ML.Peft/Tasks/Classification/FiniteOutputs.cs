namespace Microsoft.ML.Peft.Tasks.Classification;

/// <summary>
/// Scores that are not numbers are refused rather than returned: inputs are always finite (token ids, decoded pixels, ids),
/// so a NaN or infinite score means weights that make the network overflow, such as those of a damaged model file whose
/// values are finite but absurd. Scoring then throws <see cref="InvalidDataException"/>.
/// </summary>
internal static class FiniteOutputs
{
    public static IReadOnlyList<object> Check(IReadOnlyList<object> outputs)
    {
        foreach (var output in outputs)
        {
            bool finite = output switch
            {
                float f => float.IsFinite(f),
                double d => double.IsFinite(d),
                float[] values => Array.TrueForAll(values, float.IsFinite),
                _ => true,
            };
            if (!finite)
                throw new InvalidDataException("The model produced a score that is not a finite number: its weights make the network overflow " +
                    "(a damaged model file, or a training that diverged). Retrain, or load an undamaged copy of the model.");
        }
        return outputs;
    }
}
