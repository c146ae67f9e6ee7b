using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Peft.Format;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// An ML.NET model zip as a list of named entries that can be changed and written back. The PEFT entries
/// (<see cref="ModelEntries"/>: a length prefix, then the bytes) can be replaced together with the SHA-256 that the
/// transformer's <c>Model.key</c> records for them, so that a mutation gets past the hash check into the parsers; the
/// embedded base model's hash and size in the metadata are updated with it.
/// </summary>
internal sealed class ModelZip
{
    public List<(string Name, byte[] Bytes)> Entries { get; }

    private ModelZip(List<(string, byte[])> entries) => Entries = entries;

    public static ModelZip Read(byte[] zip)
    {
        using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        var entries = new List<(string, byte[])>();
        foreach (var entry in archive.Entries)
        {
            using var stream = entry.Open();
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            entries.Add((entry.FullName, memory.ToArray()));
        }
        return new ModelZip(entries);
    }

    public ModelZip Clone() => new(Entries.Select(e => (e.Name, e.Bytes.ToArray())).ToList());

    public byte[] Write()
    {
        using var memory = new MemoryStream();
        using (var archive = new ZipArchive(memory, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, bytes) in Entries)
            {
                using var stream = archive.CreateEntry(name, CompressionLevel.Fastest).Open();
                stream.Write(bytes);
            }
        }
        return memory.ToArray();
    }

    /// <summary>The PEFT entries present (by their last path segment), in a fixed order.</summary>
    public List<string> PeftEntries() => Entries.Select(e => e.Name).Where(n => ModelEntries.Limits.ContainsKey(n.Split('/')[^1])).ToList();

    public int IndexOf(string fullName) => Entries.FindIndex(e => e.Name == fullName);

    /// <summary>The bytes of a PEFT entry without its length prefix.</summary>
    public byte[] Payload(string fullName) => Entries[IndexOf(fullName)].Bytes[8..];

    /// <summary>Replaces a PEFT entry's bytes (with a correct length prefix) and, when <paramref name="fixHash"/>, the hash recorded for it.</summary>
    public void SetPayload(string fullName, byte[] payload, bool fixHash = true)
    {
        int index = IndexOf(fullName);
        var old = Entries[index].Bytes[8..];
        Entries[index] = (fullName, BitConverter.GetBytes((long)payload.Length).Concat(payload).ToArray());
        if (!fixHash) return;
        ReplaceInDirectory(fullName, Encoding.ASCII.GetBytes(ModelEntries.Hash(old)), Encoding.ASCII.GetBytes(ModelEntries.Hash(payload)));
        if (fullName.EndsWith("/" + ModelEntries.BaseModel, StringComparison.Ordinal)) UpdateBaseReference(fullName, old, payload);
    }

    /// <summary>Replaces the raw bytes of an entry (length prefix included): no hash is fixed.</summary>
    public void SetRaw(string fullName, byte[] bytes) => Entries[IndexOf(fullName)] = (fullName, bytes);

    /// <summary>Replaces <paramref name="from"/> by <paramref name="to"/> (same length) in the entries of <paramref name="fullName"/>'s directory.</summary>
    private void ReplaceInDirectory(string fullName, byte[] from, byte[] to)
    {
        var directory = fullName[..(fullName.LastIndexOf('/') + 1)];
        for (int i = 0; i < Entries.Count; i++)
        {
            var (name, bytes) = Entries[i];
            if (!name.StartsWith(directory, StringComparison.Ordinal) || name[directory.Length..].Contains('/')) continue;
            int at = bytes.AsSpan().IndexOf(from);
            if (at < 0) continue;
            var copy = bytes.ToArray();
            to.CopyTo(copy, at);
            Entries[i] = (name, copy);
        }
    }

    /// <summary>Writes the embedded base model's new SHA-256 and size into the metadata wherever it recorded the old ones.</summary>
    private void UpdateBaseReference(string baseEntry, byte[] old, byte[] payload)
    {
        var metadataName = baseEntry[..(baseEntry.LastIndexOf('/') + 1)] + ModelEntries.Metadata;
        if (IndexOf(metadataName) < 0) return;
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(Payload(metadataName));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException)
        {
            return;
        }
        var oldHash = Convert.ToHexString(SHA256.HashData(old));
        var newHash = Convert.ToHexString(SHA256.HashData(payload));
        bool changed = false;
        void Walk(JsonNode? node)
        {
            if (node is JsonArray array)
            {
                foreach (var item in array) Walk(item);
                return;
            }
            if (node is not JsonObject obj) return;
            foreach (var (key, value) in obj.ToList())
            {
                if (value is JsonValue v && v.TryGetValue<string>(out var text) && string.Equals(text, oldHash, StringComparison.OrdinalIgnoreCase))
                {
                    obj[key] = text == oldHash ? newHash : newHash.ToLowerInvariant();
                    changed = true;
                }
                else if (value is JsonValue n && n.TryGetValue<long>(out var size) && size == old.LongLength && key.Equals("size", StringComparison.OrdinalIgnoreCase))
                {
                    obj[key] = payload.LongLength;
                    changed = true;
                }
                else Walk(value);
            }
        }
        try
        {
            Walk(root);
        }
        catch (InvalidOperationException)
        {
            // JsonNode reads lazily: a mutated payload that is not UTF-8 throws here, not at Parse; it stays as it is.
            return;
        }
        if (changed) SetPayload(metadataName, Encoding.UTF8.GetBytes(root!.ToJsonString()));
    }
}
