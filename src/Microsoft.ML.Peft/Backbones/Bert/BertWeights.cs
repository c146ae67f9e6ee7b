using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Backbones.Bert;

/// <summary>Copies named weights into a <see cref="BertModel"/>, checking every name and shape.</summary>
internal static class BertWeights
{
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
