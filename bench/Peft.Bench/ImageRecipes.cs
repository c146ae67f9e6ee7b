using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Methods.BitFit;
using Microsoft.ML.Peft.Methods.Full;
using Microsoft.ML.Peft.Methods.IA3;
using Microsoft.ML.Peft.Methods.LinearProbe;
using Microsoft.ML.Peft.Methods.Lora;
using Microsoft.ML.Peft.Tasks.ImageClassification;

namespace Peft.Bench;

/// <summary>
/// One PEFT recipe of the image benchmark: the method and the trainer settings it runs with (chosen on the validation
/// images, never on the test set).
/// </summary>
internal sealed record ImageRecipe(string Name, string Description, Func<PeftMethodOptions> Method, int ImageSize, int Epochs,
    float LearningRate, bool TrainBatchNorm, float MinCropScale)
{
    /// <summary>The recipes, by --methods name.</summary>
    public static readonly IReadOnlyList<ImageRecipe> All = new[]
    {
        new ImageRecipe("probe", "head only on the frozen ResNet-18 (linear probe)", () => new LinearProbeOptions(),
            ImageSize: 64, Epochs: 5, LearningRate: 2e-3f, TrainBatchNorm: false, MinCropScale: 0.6f),
        new ImageRecipe("lora", "LoRA r=8 on every convolution + batch-norm affine", () => new LoraOptions
            {
                Rank = 8, Alpha = 16, Dropout = 0, TargetModules = new[] { PeftImageClassificationTrainer.Options.AllConvolutions },
            },
            ImageSize: 64, Epochs: 8, LearningRate: 2e-3f, TrainBatchNorm: true, MinCropScale: 0.6f),
        new ImageRecipe("ia3", "IA3 on every convolution's output channels + batch-norm affine", () => new IA3Options
            {
                TargetModules = new[] { PeftImageClassificationTrainer.Options.AllConvolutions }, FeedforwardModules = Array.Empty<string>(),
            },
            ImageSize: 64, Epochs: 5, LearningRate: 2e-3f, TrainBatchNorm: true, MinCropScale: 0.6f),
        new ImageRecipe("bitfit", "BitFit: batch-norm shifts (the ResNet's biases) + head", () => new BitFitOptions(),
            ImageSize: 64, Epochs: 5, LearningRate: 2e-3f, TrainBatchNorm: false, MinCropScale: 0.6f),
        new ImageRecipe("full", "full fine-tuning, the reference", () => new FullFineTuningOptions(),
            ImageSize: 64, Epochs: 3, LearningRate: 5e-4f, TrainBatchNorm: false, MinCropScale: 0.6f),
    };

    public static IEnumerable<string> Names => All.Select(r => r.Name);

    public static ImageRecipe Get(string name) => All.Single(r => r.Name == name);

    /// <summary>The trainer's options for this recipe.</summary>
    public PeftImageClassificationTrainer.Options Options(string imageFolder, int seed) => new()
    {
        ImageColumnName = nameof(ImageRow.ImagePath),
        ImageFolder = imageFolder,
        LabelColumnName = nameof(ImageRow.Label),
        Method = Method(),
        ImageSize = ImageSize,
        MaxEpoch = Epochs,
        LearningRate = LearningRate,
        TrainBatchNorm = TrainBatchNorm,
        Augmentation = new ImageAugmentation { MinCropScale = MinCropScale },
        Seed = seed,
    };
}
