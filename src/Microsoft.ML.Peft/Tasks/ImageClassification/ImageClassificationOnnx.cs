using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Peft.Backbones.ResNet;
using Microsoft.ML.Peft.Export;
using Microsoft.ML.Peft.Inputs.Images;
using Onnx;
using static Microsoft.ML.Peft.Export.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.ImageClassification;

public sealed partial class PeftImageClassificationTransformer : IOnnxExportable
{
    /// <summary>
    /// The values the exported ONNX model's <c>image</c> input takes for one encoded image (PNG, JPEG...): decoded to RGB,
    /// resized and centre-cropped to <see cref="ImageSize"/> and normalised exactly as this transformer does before its
    /// network, as <c>[3, ImageSize, ImageSize]</c> floats, channel-major. Stack them into <c>[batch, 3, ImageSize,
    /// ImageSize]</c> for ONNX Runtime or ML.NET's <c>ApplyOnnxModel</c>. The ONNX model's metadata describe the same steps.
    /// </summary>
    /// <param name="encodedImage">The bytes of an image file.</param>
    /// <exception cref="InvalidDataException">The bytes are not an image that can be read.</exception>
    public float[] PreprocessImage(ReadOnlySpan<byte> encodedImage)
    {
        var image = ImageDecoder.Decode(encodedImage, "passed to PreprocessImage", model.Preprocessor.ResizeSize);
        var values = new float[model.Preprocessor.ValuesPerImage];
        model.Preprocessor.Evaluate(image, values);
        return values;
    }

    ModelProto IOnnxExportable.ToOnnx(PeftOnnxExportOptions options)
    {
        if (options.Quantization != PeftOnnxQuantization.None)
            throw new NotSupportedException(
                $"{nameof(PeftOnnxExportOptions)}.{nameof(PeftOnnxExportOptions.Quantization)} = {options.Quantization} is not available for image classifiers: " +
                $"int8 export quantises the Linear layers of text encoders, and a ResNet is convolutions; export this model with {nameof(PeftOnnxQuantization)}.{nameof(PeftOnnxQuantization.None)} (float32).");
        return ImageClassificationOnnx.Build(model);
    }
}

/// <summary>
/// The ONNX form of a fine-tuned image classifier: input <c>image</c> float32 [batch, 3, height, width] (normalised as
/// the metadata say; the global average pool lets other heights and widths run: of at least 32, or multiples of 32 for
/// the CNTK-padded base models), the
/// ResNet with the adapter merged, the head, outputs <c>logits</c> and <c>probabilities</c> (softmax) [batch, classes]
/// with the classes in key order.
/// </summary>
internal static class ImageClassificationOnnx
{
    /// <summary>The graph input's name.</summary>
    public const string ImageInput = "image";

    /// <summary>The class probabilities' output name.</summary>
    public const string ProbabilitiesOutput = "probabilities";

    /// <summary>The logits' output name.</summary>
    public const string LogitsOutput = "logits";

    public static ModelProto Build(ImageClassificationModel model)
    {
        if (model.Adapted.Backbone is not ResNetBackbone resnet)
            throw new NotSupportedException($"ONNX export of image classifiers covers ResNet backbones; this model's backbone is a {model.Adapted.Backbone.GetType().Name}.");
        var graph = new OnnxGraphBuilder("peft_image_classification");
        int classes = model.Settings.ClassCount;
        var image = graph.Input(ImageInput, TensorProto.Types.DataType.Float, "batch", 3L, "height", "width");
        var features = ResNetOnnxWriter.Write(graph, resnet.Model, image);
        string logits;
        using (var scope = NewDisposeScope())
        {
            var head = model.Network.Head.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            // Gemm with transB: features [batch, F] times weight^T [F, classes] plus bias, as the head's Linear layer.
            logits = graph.Node("Gemm", new[] { features, graph.Initializer("classifier.weight", head["weight"]), graph.Initializer("classifier.bias", head["bias"]) },
                Attr("transB", 1L));
        }
        var probabilities = graph.Node("Softmax", new[] { logits }, Attr("axis", 1L));
        graph.Output(logits, LogitsOutput, TensorProto.Types.DataType.Float, "batch", (long)classes);
        graph.Output(probabilities, ProbabilitiesOutput, TensorProto.Types.DataType.Float, "batch", (long)classes);
        return graph.Build(Metadata(model));
    }

    /// <summary>What a user needs to feed the model and read its outputs, as the model's metadata properties.</summary>
    public static IEnumerable<KeyValuePair<string, string>> Metadata(ImageClassificationModel model)
    {
        var settings = model.Settings;
        var preprocessor = model.Preprocessor;
        var norm = preprocessor.Normalization;
        string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);
        string order = norm.Bgr ? "BGR" : "RGB";
        int s = settings.ImageSize, resize = preprocessor.ResizeSize;
        var entries = new Dictionary<string, string>
        {
            ["task"] = ImageClassificationSettings.TaskName,
            ["labels"] = JsonSerializer.Serialize(model.Label.ClassNames),
            ["inputs"] = $"{ImageInput}: float32 [batch, 3, height, width], normalised as 'preprocessing' says; trained at height = width = {s}; " +
                (settings.Backbone.Padding == ResNetConfig.SymmetricPadding
                    ? "other sizes of at least 32 run too"
                    : "other heights and widths that are multiples of 32 run too (the base model pads its strided convolutions as CNTK does, which needs even sizes at every stage)"),
            ["outputs"] = $"{LogitsOutput}: float32 [batch, {settings.ClassCount}]; {ProbabilitiesOutput}: softmax of the logits; classes in the order of 'labels' (the label's key order)",
            ["image_size"] = s.ToString(CultureInfo.InvariantCulture),
            ["resize_shorter_side"] = resize.ToString(CultureInfo.InvariantCulture),
            ["channel_order"] = order,
            ["pixel_scale"] = F(norm.Scale),
            ["mean"] = $"[{string.Join(", ", norm.Mean.Select(F))}]",
            ["std"] = $"[{string.Join(", ", norm.Std.Select(F))}]",
            ["preprocessing"] =
                $"Decode to 8-bit RGB (EXIF orientation applied, alpha composited over white). Resize (antialiased bilinear, as PIL and torchvision's Resize({resize}, antialias=True)) so that the " +
                $"shorter side is {resize}, the longer one int({resize} * long / short); crop the centred {s} x {s} square (torchvision's CenterCrop({s})). " +
                $"Lay out channel-major [3, {s}, {s}] in {order} order, each value (byte * {F(norm.Scale)} - mean[c]) / std[c] with mean and std in that channel order. " +
                "PeftImageClassificationTransformer.PreprocessImage gives these values for an image file's bytes.",
            ["peft_method"] = model.Adapted.Method.Options.PeftType,
            ["peft_method_options"] = model.Adapted.Method.SavedOptions.ToJson(),
            ["adapter_name"] = model.Adapted.ActiveAdapter,
            ["base_model"] = model.BaseModel.Source.Name,
            ["base_model_sha256"] = model.BaseModel.Sha256,
            ["base_model_architecture"] = settings.Backbone.ToString(),
            ["batch_norm_trained"] = settings.TrainBatchNorm ? "true" : "false",
        };
        return entries;
    }
}
