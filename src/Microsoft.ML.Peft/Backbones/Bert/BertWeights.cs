using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>Copies named weights into a <see cref="BertModel"/>, checking every name and shape.</summary>
internal static class BertWeights
{
    /// <summary>
    /// Refuses a configuration that needs more weights than <paramref name="weights"/> hold, before a model of that size
    /// is allocated: each size is bounded on its own, but a damaged file could combine large ones (a vocabulary of a
    /// million by a hidden size of 16,384 is 64 GB) while holding a few kilobytes of weights.
    /// </summary>
    public static void CheckSize(BertConfig config, IReadOnlyDictionary<string, NamedArray> weights, string source)
    {
        double hidden = config.HiddenSize;
        double needed = hidden * ((double)config.VocabSize + config.MaxPositionEmbeddings + config.TypeVocabSize)
            + config.NumHiddenLayers * (4 * hidden * hidden + 2 * hidden * config.IntermediateSize);
        double held = weights.Values.Sum(w => (double)w.Data.LongLength);
        if (needed > held)
            throw new InvalidDataException($"{source}: its configuration (vocab_size {config.VocabSize}, hidden_size {config.HiddenSize}, " +
                $"{config.NumHiddenLayers} layers, intermediate_size {config.IntermediateSize}) needs at least {needed:N0} weights, but the file holds {held:N0}.");
    }


    public static void Load(BertModel model, IReadOnlyDictionary<string, NamedArray> weights, string source)
    {
        var missing = new List<string>();
        using (no_grad())
        {
            foreach (var (name, parameter) in model.named_parameters())
            {
                if (!weights.TryGetValue(name, out var array))
                {
                    missing.Add(name);
                    continue;
                }
                if (!array.Shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException(
                        $"{source}: '{name}' has shape [{string.Join(", ", array.Shape)}], the model expects [{string.Join(", ", parameter.shape)}].");
                if (Array.FindIndex(array.Data, v => !float.IsFinite(v)) is var bad and >= 0)
                    throw new InvalidDataException($"{source}: '{name}' holds a value that is not finite ({array.Data[bad]} at index {bad}).");
                // Straight into the parameter's storage: no intermediate tensor (the whole base model once more at load time).
                if (parameter.device_type == TorchSharp.DeviceType.CPU && parameter.dtype == ScalarType.Float32 && parameter.is_contiguous())
                {
                    parameter.bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(array.Data.AsSpan());
                }
                else
                {
                    using var values = tensor(array.Data, array.Shape);
                    parameter.copy_(values);
                }
            }
        }
        if (missing.Count > 0)
            throw new InvalidDataException($"{source}: {missing.Count} weights of the encoder are missing, for example {string.Join(", ", missing.Take(5))}.");
    }
}
