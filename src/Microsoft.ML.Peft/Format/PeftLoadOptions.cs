namespace Microsoft.ML.Peft.Format;

/// <summary>Where a saved PEFT model finds its base model and where it runs; see <c>mlContext.Model.LoadPeft</c>.</summary>
public sealed class PeftLoadOptions
{
    /// <summary>The base model (ONNX file or Hugging Face directory) to use instead of the stored location; its size and SHA-256 must match the saved ones.</summary>
    public string? BaseModelPath { get; set; }

    /// <summary>Torch device to run on: <c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>. A model trained on any device loads on any other.
    /// When CUDA is asked for but unavailable, the model loads on the CPU and says so on the ML.NET channel.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>
    /// Share the base model's frozen weights with the other models loaded in this process from the same base model file
    /// (same SHA-256) on the same device: each further adapter then costs little more than its own tensors. A shared
    /// model scores with its adapter applied beside the frozen weights instead of merged into them (a little slower for
    /// LoRA-type methods). Default true; false gives the model its own copy with the adapter merged in.
    /// </summary>
    public bool ShareBaseModel { get; set; } = true;

    /// <summary>The options of the load in progress on this asynchronous flow (ML.NET creates loaders by reflection, so they travel this way).</summary>
    internal static readonly AsyncLocal<PeftLoadOptions?> Current = new();
}
