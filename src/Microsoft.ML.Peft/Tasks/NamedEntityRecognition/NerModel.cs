using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Heads;
using Microsoft.ML.Peft.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peft.Tasks.NamedEntityRecognition;

/// <summary>
/// The task network: the text backbone (named <c>bert</c>) and a token classification head (<c>classifier</c>, as Hugging
/// Face's <c>BertForTokenClassification</c>) over the hidden state of each scored word's first piece, optionally with the
/// word's case shape appended (one-hot), which an uncased vocabulary would otherwise lose.
/// </summary>
internal sealed class NerNetwork : nn.Module<Tensor, Tensor, Tensor, Tensor, Tensor>
{
    private readonly ITextBackbone backbone;
    private readonly ClassificationHead head;
    private readonly bool caseFeatures;

    public NerNetwork(ITextBackbone backbone, ClassificationHead head, bool caseFeatures) : base("token_classification")
    {
        this.backbone = backbone;
        this.head = head;
        this.caseFeatures = caseFeatures;
        register_module(backbone.Name, backbone.Module);
        register_module("classifier", head);
    }

    public ClassificationHead Head => head;

    /// <param name="inputIds">[batch, length]</param>
    /// <param name="attentionMask">[batch, length]</param>
    /// <param name="positions">[words]: flat indices (row * length + position) of the scored words' first pieces.</param>
    /// <param name="shapes">[words]: the case shape of each scored word (ignored without case features).</param>
    /// <returns>Logits [words, tags].</returns>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positions, Tensor shapes)
    {
        using var scope = NewDisposeScope();
        using var types = zeros_like(inputIds);
        var hidden = backbone.Forward(inputIds, attentionMask, types);
        var features = hidden.reshape(-1, hidden.shape[2]).index_select(0, positions);
        if (caseFeatures)
            features = cat(new[] { features, nn.functional.one_hot(shapes, WordWindows.CaseShapeCount).to(features.dtype) }, 1);
        return head.forward(features).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A fine-tuned named-entity recognizer: the base model with its method applied, the token head, the tokenizer and the
/// saved settings. Scoring needs no lock: forward passes in inference mode change no state.
/// </summary>
internal sealed class NerModel : TextTaskModel
{
    public NerModel(NerSettings settings, LoadedBaseModel baseModel, PeftMethodOptions method, bool embedBaseModel, Device device,
        Generator? generator, float headDropout = 0)
        : base(baseModel, method, Checked(settings, baseModel).MaxSequenceLength, embedBaseModel, device, generator)
    {
        Settings = settings;
        long features = Backbone.FeatureSize + (settings.CaseFeatures ? WordWindows.CaseShapeCount : 0);
        SetNetwork(() => new NerNetwork(Backbone, new ClassificationHead(features, settings.Tags.Count, headDropout, generator), settings.CaseFeatures),
            network => network.Head);
    }

    public NerSettings Settings { get; }

    private static NerSettings Checked(NerSettings settings, LoadedBaseModel baseModel)
    {
        settings.Validate(baseModel.Config, "named-entity recognition settings");
        return settings;
    }

    public new NerNetwork Network => (NerNetwork)base.Network;

    protected override string HeadName => "classifier";

    protected override (string Task, JsonObject Settings) TaskMetadata() => (NerSettings.TaskName, Settings.ToJson());

    /// <summary>Tokenizes sentences and cuts them into windows; words cut to fit a window are counted.</summary>
    public (List<WordWindow> Windows, TokenizedSentence[] Sentences) Prepare(IReadOnlyList<IReadOnlyList<string>> sentences)
    {
        var tokenized = new TokenizedSentence[sentences.Count];
        var windows = new List<WordWindow>();
        for (int s = 0; s < sentences.Count; s++)
        {
            tokenized[s] = WordWindows.Tokenize(Encoder, sentences[s]);
            // A window whose words are all tagged in a neighbour with more context (possible around words of many pieces) adds nothing.
            windows.AddRange(WordWindows.Split(s, tokenized[s], Encoder, Settings.WindowOverlap).Where(w => w.Words.Length > 0));
        }
        return (windows, tokenized);
    }

    /// <summary>Logits [scored words, tags] of a batch of windows, words in window order (training or evaluation, as the network's mode is).</summary>
    public Tensor Logits(IReadOnlyList<WordWindow> windows, TokenizedSentence[] sentences)
    {
        var batch = Encoder.Pad(windows.Select(w => w.Row).ToList());
        var (ids, mask, _) = ToTensors(batch);
        var flat = new List<long>();
        var shapes = new List<long>();
        for (int r = 0; r < windows.Count; r++)
        {
            var window = windows[r];
            for (int i = 0; i < window.Words.Length; i++)
            {
                flat.Add((long)r * batch.Length + window.FirstPiecePositions[i]);
                shapes.Add(sentences[window.Sentence].Shapes[window.Words[i]]);
            }
        }
        using var positions = tensor(flat.ToArray()).to(Device);
        using var shapeTensor = tensor(shapes.ToArray()).to(Device);
        return Network.forward(ids, mask, positions, shapeTensor);
    }

    /// <summary>
    /// The tag (0-based index into <see cref="NerSettings.Tags"/>) of every word of every sentence, decoded under the BIO
    /// constraints (no <c>I-X</c> without a preceding <c>B-X</c> or <c>I-X</c>). The network must be in evaluation mode.
    /// </summary>
    public int[][] Predict(IReadOnlyList<IReadOnlyList<string>> sentences, out int cutWords)
    {
        var (windows, tokenized) = Prepare(sentences);
        cutWords = tokenized.Sum(t => t.CutWords);
        int tags = Settings.Tags.Count;
        var logProbabilities = tokenized.Select(t => new float[t.Pieces.Length * tags]).ToArray();
        foreach (var batch in LengthOrderedBatches(windows.Count, i => windows[i].Row.Ids.Length, Settings.BatchSize))
        {
            var chunk = batch.Select(i => windows[i]).ToList();
            using var scope = NewDisposeScope();
            using var mode = inference_mode();
            var values = nn.functional.log_softmax(Logits(chunk, tokenized), 1).cpu().data<float>().ToArray();
            int row = 0;
            foreach (var window in chunk)
            {
                foreach (var word in window.Words)
                {
                    values.AsSpan(row * tags, tags).CopyTo(logProbabilities[window.Sentence].AsSpan(word * tags, tags));
                    row++;
                }
            }
        }
        return tokenized.Select((t, s) => BioTags.Decode(logProbabilities[s], t.Pieces.Length, Settings.Tags)).ToArray();
    }
}
