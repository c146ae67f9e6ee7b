using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.Classification;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

/// <summary>The task's network: the image backbone (named <c>resnet</c>) and a classification head (<c>classifier</c>) on its pooled features.</summary>
internal sealed class ImageClassificationNetwork : nn.Module<Tensor, Tensor>
{
    private readonly IImageBackbone backbone;
    private readonly ClassificationHead head;

    public ImageClassificationNetwork(IImageBackbone backbone, ClassificationHead head) : base("image_classification")
    {
        this.backbone = backbone;
        this.head = head;
        register_module(backbone.Name, backbone.Module);
        register_module("classifier", head);
    }

    public ClassificationHead Head => head;

    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        return head.forward(backbone.Forward(images)).MoveToOuterDisposeScope();
    }
}

/// <summary>Writes a training view of image <paramref name="index"/> of a batch into <paramref name="destination"/>; false leaves it to evaluation preprocessing.</summary>
internal delegate bool Augmenter(DecodedImage image, int index, Span<float> destination);

/// <summary>
/// A fine-tuned image classifier: the ResNet with its method applied (and, optionally, trained batch-normalisation
/// affine parameters), the head, the preprocessing and the saved settings. Scoring needs no lock.
/// </summary>
internal sealed class ImageClassificationModel : IImageTaskModel
{
    public ImageClassificationModel(ImageClassificationSettings settings, LoadedImageBaseModel baseModel, PeftMethodOptions method,
        bool embedBaseModel, Device device, Generator? generator, float headDropout = 0)
    {
        settings.Validate("image classification settings");
        // CNTK's "same" padding pads one pixel less after a stride-2 convolution than its shortcut needs on odd sizes: the
        // residual sum's shapes differ unless every stride-2 stage (five of them) halves an even size.
        if (baseModel.Config.Padding == Backbones.ResNet.ResNetConfig.SameBeginPadding && settings.ImageSize % 32 != 0)
            throw new ArgumentOutOfRangeException("ImageSize", settings.ImageSize,
                $"ImageSize must be a multiple of 32 for the base model {baseModel.Source.Name} (its convolutions use CNTK's padding, which needs even sizes at every stride-2 stage); {settings.ImageSize} is not. Use {Math.Max(32, settings.ImageSize / 32 * 32)} or {(settings.ImageSize / 32 + 1) * 32}.");
        Settings = settings;
        BaseModel = baseModel;
        BaseModelFile = embedBaseModel ? baseModel.File : null;
        Device = device;
        Preprocessor = new ImagePreprocessor(settings.ImageSize, settings.Normalization);
        var backbone = baseModel.CreateBackbone();
        try
        {
            Adapted = new AdaptedBackbone(backbone, method, generator);
            Network = new ImageClassificationNetwork(backbone, new ClassificationHead(backbone.FeatureSize, settings.ClassCount, headDropout, generator));
            if (settings.TrainBatchNorm)
                foreach (var p in BatchNormParameters()) p.Parameter.requires_grad = true;
            Network.to(device);
        }
        catch
        {
            backbone.Module.Dispose();
            throw;
        }
    }

    public ImageClassificationSettings Settings { get; }
    public LoadedImageBaseModel BaseModel { get; }
    public AdaptedBackbone Adapted { get; }
    public ImageClassificationNetwork Network { get; }
    public ImagePreprocessor Preprocessor { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }
    public LabelInfo Label => Settings.Label;
    private IImageBackbone Backbone => (IImageBackbone)Adapted.Backbone;

    /// <summary>The batch-normalisation affine parameters that <see cref="ImageClassificationSettings.TrainBatchNorm"/> trains and the method does not already own.</summary>
    private IEnumerable<NamedParameter> BatchNormParameters()
    {
        if (!Settings.TrainBatchNorm) yield break;
        var owned = new HashSet<IntPtr>(Adapted.Method.Parameters(Adapted.Backbone).Select(p => p.Parameter.Handle));
        foreach (var (name, norm) in Backbone.BatchNorms())
        {
            if (!owned.Contains(norm.Weight.Handle)) yield return new NamedParameter($"{name}.weight", norm.Weight);
            if (!owned.Contains(norm.Bias.Handle)) yield return new NamedParameter($"{name}.bias", norm.Bias);
        }
    }

    /// <summary>The method's parameters, the batch-normalisation ones when trained, and the head's, under their saved keys.</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters() =>
        Adapted.Parameters().Concat(BatchNormParameters()).Concat(HeadParameters()).ToList();

    /// <summary>What a saved model's adapter entry fills.</summary>
    public IReadOnlyList<NamedParameter> LoadedParameters() => TrainableParameters().Concat(Adapted.FrozenState()).ToList();

    private IEnumerable<NamedParameter> HeadParameters() =>
        Network.Head.named_parameters().Select(p => new NamedParameter("classifier." + p.name, p.parameter));

    /// <summary>The tensors saved for the model (the caller disposes them).</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Adapted.SavedState()
            .Concat(BatchNormParameters().Concat(HeadParameters()).Select(p => new NamedTensor(p.Key, p.Parameter.detach())))
            .ToList();

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.Parameter.numel());

    public long TotalParameterCount => Network.parameters().Sum(p => p.numel());

    /// <summary>Optimizer groups: the method's, then batch normalisation and the head at the trainer's rate.</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups() =>
        Adapted.Method.ParameterGroups(Adapted.Method.Parameters(Adapted.Backbone))
            .Append(new ParameterGroup(BatchNormParameters().Concat(HeadParameters()).Select(p => p.Parameter).ToList(), 1.0)).ToList();

    /// <summary>A batch tensor [n, 3, size, size] on the model's device from preprocessed pixel rows.</summary>
    public Tensor ToTensor(float[] pixels, int count) =>
        tensor(pixels, new long[] { count, 3, Settings.ImageSize, Settings.ImageSize }).to(Device);

    /// <summary>Logits of images, preprocessed for evaluation (training or evaluation mode as the network is).</summary>
    public Tensor Logits(IReadOnlyList<DecodedImage> images, Augmenter? augment = null)
    {
        int per = Preprocessor.ValuesPerImage;
        var pixels = new float[images.Count * per];
        Parallel.For(0, images.Count, i =>
        {
            var span = pixels.AsSpan(i * per, per);
            if (augment is null || !augment(images[i], i, span)) Preprocessor.Evaluate(images[i], span);
        });
        using var batch = ToTensor(pixels, images.Count);
        return Network.forward(batch);
    }

    /// <summary>Class probabilities of each image (inference mode; the network must be in evaluation mode), <see cref="ImageClassificationSettings.BatchSize"/> at a time.</summary>
    public float[][] Predict(IReadOnlyList<DecodedImage> images)
    {
        var result = new float[images.Count][];
        int classes = Settings.ClassCount;
        for (int start = 0; start < images.Count; start += Settings.BatchSize)
        {
            int count = Math.Min(Settings.BatchSize, images.Count - start);
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var chunk = images.Skip(start).Take(count).ToList();
            var flat = nn.functional.softmax(Logits(chunk), 1).cpu().data<float>().ToArray();
            for (int r = 0; r < count; r++) result[start + r] = flat.AsSpan(r * classes, classes).ToArray();
        }
        return result;
    }

    /// <summary>The model's entries for saving.</summary>
    public ModelEntries ToEntries() => ImageTaskModels.ToEntries(this, ImageClassificationSettings.TaskName, Settings.ToJson());

    /// <summary>The shared base weights this model uses, or null when it owns its base weights.</summary>
    public SharedBaseWeights? SharedBase { get; private set; }

    /// <summary>Shares the frozen base weights with other loaded models of the same base.</summary>
    public void ShareBaseWeights() => SharedBase = SharedBaseWeights.Share(Adapted, BaseModel.Sha256, Device);

    public void Dispose() => Network.Dispose();
}
