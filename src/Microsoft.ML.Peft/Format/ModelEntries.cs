using System.Security.Cryptography;

namespace Microsoft.ML.Peft.Format;

/// <summary>The byte entries of a saved model, each covered by a SHA-256 written in the model's header.</summary>
internal sealed class ModelEntries
{
    public const string Metadata = "Metadata.json";
    public const string Vocab = "Vocab";
    public const string Adapter = "Adapter.safetensors";
    public const string BaseModel = "BaseModel";

    /// <summary>The largest entry read; a length claimed beyond it is refused before reading.</summary>
    public static readonly IReadOnlyDictionary<string, long> Limits = new Dictionary<string, long>
    {
        [Metadata] = 16L << 20,
        [Vocab] = 64L << 20,
        [Adapter] = Array.MaxLength,
        [BaseModel] = Array.MaxLength,
    };

    public required byte[] MetadataBytes { get; init; }
    public required byte[] VocabBytes { get; init; }
    public required byte[] AdapterBytes { get; init; }
    public byte[]? BaseModelBytes { get; init; }

    public static string Hash(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>Writes a length-prefixed entry.</summary>
    public static void Write(BinaryWriter writer, byte[] bytes)
    {
        writer.Write(bytes.LongLength);
        writer.Write(bytes);
    }

    /// <summary>
    /// Reads a length-prefixed entry against what the stream really holds: the claimed length is checked against
    /// <see cref="Limits"/>, then bytes are read in chunks (memory grows with the data that is there, not with the claim).
    /// </summary>
    public static byte[] Read(BinaryReader reader, string entry, string source)
    {
        long length = reader.ReadInt64();
        var limit = Limits[entry];
        if (length < 0 || length > limit)
            throw new InvalidDataException($"{source}: the '{entry}' entry claims {length:N0} bytes; at most {limit:N0} are allowed.");
        using var buffer = new MemoryStream((int)Math.Min(length, 1 << 20));
        var chunk = new byte[1 << 16];
        long remaining = length;
        while (remaining > 0)
        {
            int read = reader.BaseStream.Read(chunk, 0, (int)Math.Min(chunk.Length, remaining));
            if (read <= 0)
                throw new InvalidDataException($"{source}: the '{entry}' entry claims {length:N0} bytes but holds {length - remaining:N0}: the file is truncated or damaged.");
            buffer.Write(chunk, 0, read);
            remaining -= read;
        }
        return buffer.ToArray();
    }
}
