namespace Microsoft.ML.Peft;
internal static class Smoke
{
    internal static string Probe() => typeof(Microsoft.ML.ModelSaveContext).FullName + TorchSharp.torch.ones(2).sum().item<float>();
}
