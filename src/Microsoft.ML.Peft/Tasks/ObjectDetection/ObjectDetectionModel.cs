using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Format;
using Microsoft.ML.Peft.Inputs.Images;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.ImageClassification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>
/// An image kept for detection: decoded, shrunk for the cache (<see cref="Image"/>), and the size of the original, in
/// whose pixels boxes are given and returned.
/// </summary>
internal sealed record CachedImage(DecodedImage Image, int OriginalWidth, int OriginalHeight)
{
    /// <summary>
    /// Decodes with <paramref name="decode"/> (at full size) and shrinks the image so that its longer side is at most
    /// <paramref name="maxLongerSide"/>: letterboxing fits the longer side to the canvas, so more pixels are never used.
    /// </summary>
    public static CachedImage Read(Func<DecodedImage> decode, int maxLongerSide)
    {
        var full = decode();
        int longer = Math.Max(full.Width, full.Height), shorter = Math.Min(full.Width, full.Height);
        if (longer <= maxLongerSide) return new CachedImage(full, full.Width, full.Height);
        int shorterSide = Math.Max(1, (int)Math.Floor((double)shorter * maxLongerSide / longer));
        return new CachedImage(ImageDecoder.Shrink(full.Rgb, full.Width, full.Height, full.Source, shorterSide), full.Width, full.Height);
    }

    /// <summary>Original-image x over cached-image x.</summary>
    public float ScaleX => (float)OriginalWidth / Image.Width;

    /// <summary>Original-image y over cached-image y.</summary>
    public float ScaleY => (float)OriginalHeight / Image.Height;

    /// <summary>A box of the original image in the cached image's pixels.</summary>
    public DetectionBox ToCached(in DetectionBox box) => box with { XMin = box.XMin / ScaleX, XMax = box.XMax / ScaleX, YMin = box.YMin / ScaleY, YMax = box.YMax / ScaleY };

    /// <summary>A box of the cached image in the original image's pixels, clipped to it.</summary>
    public DetectionBox ToOriginal(in DetectionBox box) =>
        BoxGeometry.Clip(box with { XMin = box.XMin * ScaleX, XMax = box.XMax * ScaleX, YMin = box.YMin * ScaleY, YMax = box.YMax * ScaleY }, OriginalWidth, OriginalHeight);
}

/// <summary>
/// A fine-tuned detector: the ResNet with its method applied, the feature pyramid and FCOS head (trained in full), the
/// settings and the base model. Scoring needs no lock.
/// </summary>
internal sealed class ObjectDetectionModel : IImageTaskModel
{
    public ObjectDetectionModel(ObjectDetectionSettings settings, LoadedImageBaseModel baseModel, PeftMethodOptions method, bool embedBaseModel, Device device, Generator? generator)
    {
        settings.Validate("object detection settings");
        Settings = settings;
        BaseModel = baseModel;
        BaseModelFile = embedBaseModel ? baseModel.File : null;
        Device = device;
        var backbone = baseModel.CreateBackbone();
        try
        {
            Adapted = new AdaptedBackbone(backbone, method, generator);
            Network = new DetectionNetwork(backbone, settings.ClassCount, settings.Channels, settings.TowerDepth, generator);
            Network.to(device);
        }
        catch
        {
            backbone.Module.Dispose();
            throw;
        }
    }

    public ObjectDetectionSettings Settings { get; }
    public LoadedImageBaseModel BaseModel { get; }
    public AdaptedBackbone Adapted { get; }
    public DetectionNetwork Network { get; }
    public byte[]? BaseModelFile { get; }
    public Device Device { get; }

    /// <summary>The method's parameters, then the pyramid's and head's, under their saved keys.</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters() => Adapted.Parameters().Concat(Network.HeadParameters()).ToList();

    /// <summary>What a saved model's adapter entry fills.</summary>
    public IReadOnlyList<NamedParameter> LoadedParameters() => TrainableParameters().Concat(Adapted.FrozenState()).ToList();

    /// <summary>The tensors saved for the model (the caller disposes them).</summary>
    public IReadOnlyList<NamedTensor> SavedState() =>
        Adapted.SavedState().Concat(Network.HeadParameters().Select(p => new NamedTensor(p.Key, p.Parameter.detach()))).ToList();

    public long TrainableParameterCount => TrainableParameters().Sum(p => p.Parameter.numel());

    public long TotalParameterCount => Network.parameters().Sum(p => p.numel());

    /// <summary>Optimizer groups: the method's, then the pyramid and head at the trainer's rate.</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups() =>
        Adapted.Method.ParameterGroups(Adapted.Method.Parameters(Adapted.Backbone))
            .Append(new ParameterGroup(Network.HeadParameters().Select(p => p.Parameter).ToList(), 1.0)).ToList();

    /// <summary>The image normalised and letterboxed to the canvas, with the transform back to the cached image's pixels.</summary>
    public (ChwImage Canvas, LetterboxTransform Transform) Letterbox(CachedImage image)
    {
        var (canvas, _, transform) = BoxAugmentation.Letterbox(ChwImage.FromDecoded(image.Image, Settings.Normalization), Array.Empty<DetectionBox>(), Settings.ImageSize);
        return (canvas, transform);
    }

    /// <summary>A batch tensor [n, 3, size, size] on the model's device.</summary>
    public Tensor ToTensor(IReadOnlyList<ChwImage> canvases)
    {
        int size = Settings.ImageSize, per = 3 * size * size;
        var pixels = new float[canvases.Count * per];
        for (int i = 0; i < canvases.Count; i++)
        {
            if (canvases[i].Height != size || canvases[i].Width != size || canvases[i].Channels != 3)
                throw new InvalidOperationException($"A canvas is {canvases[i].Channels}x{canvases[i].Height}x{canvases[i].Width}, not 3x{size}x{size}.");
            canvases[i].Data.CopyTo(pixels, i * per);
        }
        return tensor(pixels, new long[] { canvases.Count, 3, size, size }).to(Device);
    }

    /// <summary>
    /// Detections of each image in its original pixels, best first (inference mode; the network must be in evaluation
    /// mode), <see cref="ObjectDetectionSettings.BatchSize"/> images at a time.
    /// </summary>
    public DetectionBox[][] Predict(IReadOnlyList<CachedImage> images, float? scoreThreshold = null)
    {
        var result = new DetectionBox[images.Count][];
        float threshold = scoreThreshold ?? Settings.ScoreThreshold;
        for (int start = 0; start < images.Count; start += Settings.BatchSize)
        {
            int count = Math.Min(Settings.BatchSize, images.Count - start);
            var canvases = new ChwImage[count];
            var transforms = new LetterboxTransform[count];
            Parallel.For(0, count, i => (canvases[i], transforms[i]) = Letterbox(images[start + i]));
            IReadOnlyList<IReadOnlyList<DetectionBox>> decoded;
            using (var scope = NewDisposeScope())
            using (inference_mode())
            {
                using var batch = ToTensor(canvases);
                using var outputs = Network.forward(batch);
                decoded = DetectionDecoder.Decode(outputs, threshold, Settings.IouThreshold, Settings.MaxDetections);
            }
            for (int i = 0; i < count; i++)
            {
                var image = images[start + i];
                result[start + i] = decoded[i].Select(b => image.ToOriginal(transforms[i].ToImage(b))).ToArray();
            }
        }
        return result;
    }

    /// <summary>The model's entries for saving.</summary>
    public ModelEntries ToEntries() => ImageTaskModels.ToEntries(this, ObjectDetectionSettings.TaskName, Settings.ToJson());

    /// <summary>The shared base weights this model uses, or null when it owns its base weights.</summary>
    public SharedBaseWeights? SharedBase { get; private set; }

    /// <summary>Shares the frozen base weights with other loaded models of the same base.</summary>
    public void ShareBaseWeights() => SharedBase = SharedBaseWeights.Share(Adapted, BaseModel.Sha256, Device);

    public void Dispose() => Network.Dispose();
}

/// <summary>Rebuilds a saved detector: settings, the base model (found again and hash-checked), the method, and the saved tensors.</summary>
internal static class ObjectDetectionLoader
{
    public const string Source = "The PEFT object detection model";

    public static ObjectDetectionModel Load(ModelEntries entries, PeftLoadOptions? options, IChannel ch)
    {
        var metadata = ModelMetadata.Parse(entries.MetadataBytes, Source);
        if (metadata.Task != ObjectDetectionSettings.TaskName)
            throw new InvalidDataException($"{Source} holds a '{metadata.Task}' model, not {ObjectDetectionSettings.TaskName}.");
        var settings = metadata.Settings<ObjectDetectionSettings>(Source);
        settings.Validate(Source);
        var method = MethodRegistry.FromJson(metadata.Method, Source);
        if (metadata.BaseModelEmbedded && entries.BaseModelBytes is null)
            throw new InvalidDataException($"{Source} says it embeds its base model, but has no '{ModelEntries.BaseModel}' entry.");
        var baseModel = ImageClassificationLoader.ResolveBaseModel(metadata, settings.BaseModelKind, metadata.BaseModelEmbedded ? entries.BaseModelBytes : null, options?.BaseModelPath, Source);
        if (baseModel.Config.ToJson() != settings.Backbone.ToJson())
            throw new InvalidDataException($"{Source}: the base model {baseModel.Source} is a {baseModel.Config}, the saved model expects {settings.Backbone} ({settings.Backbone.ToJson()}).");
        var device = TorchBackend.LoadDevice(options?.Device, ch);
        using var generator = new Generator(0);
        return ImageTaskModels.Restore(() => new ObjectDetectionModel(settings, baseModel, method, metadata.BaseModelEmbedded, device, generator), metadata, entries, options, Source);
    }
}
