using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// The one model format of every task, versioned once by <see cref="Version"/>. Inside ML.NET's model zip a PEFT
/// transformer writes: the format version, then the name and SHA-256 of each entry, then the entries (metadata JSON,
/// vocabulary, adapter safetensors, optionally the base model). Loading checks every entry's length and hash before
/// anything is parsed. Version 1 (text classification only: one hash, of the adapter) still loads.
/// </summary>
internal static class ModelFile
{
    /// <summary>The format written: 2. It is also the major part of the ML.NET version stamp.</summary>
    public const int Version = 2;

    /// <summary>
    /// ML.NET's version stamp. Readers back to version 1 may open the file (so an old library says "format version 2,
    /// upgrade" instead of a generic error); <see cref="Load"/> decides from the format version what it can read.
    /// </summary>
    public static VersionInfo VersionInfo(string modelSignature, string loaderSignature, Type type) => new(
        modelSignature: modelSignature,
        verWrittenCur: 0x00010001 + (Version - 1) * 0x00010000,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: loaderSignature,
        loaderAssemblyName: type.Assembly.FullName);

    public static void Save(ModelSaveContext ctx, ModelEntries entries)
    {
        var list = new List<(string Name, byte[] Bytes)>
        {
            (ModelEntries.Metadata, entries.MetadataBytes),
            (ModelEntries.Vocab, entries.VocabBytes),
            (ModelEntries.Adapter, entries.AdapterBytes),
        };
        if (entries.BaseModelBytes is not null) list.Add((ModelEntries.BaseModel, entries.BaseModelBytes));
        ctx.Writer.Write(Version);
        ctx.Writer.Write(list.Count);
        foreach (var (name, bytes) in list)
        {
            ctx.Writer.Write(name);
            ctx.Writer.Write(ModelEntries.Hash(bytes));
        }
        foreach (var (name, bytes) in list) ctx.SaveBinaryStream(name, w => ModelEntries.Write(w, bytes));
    }

    /// <summary>ML.NET's check of the transformer's header (signature and version stamp); a damaged one is an <see cref="InvalidDataException"/>.</summary>
    public static void CheckAtModel(ModelLoadContext ctx, VersionInfo versionInfo)
    {
        try
        {
            ctx.CheckAtModel(versionInfo);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"The {versionInfo.ModelSignature} model's header is damaged or is not of this kind: {e.Message}", e);
        }
    }

    /// <summary>Reads and verifies the entries; returns the format version they were written in.</summary>
    public static (int Version, ModelEntries Entries) Load(ModelLoadContext ctx, string source)
    {
        try
        {
            return LoadCore(ctx, source);
        }
        catch (Exception e) when (e is EndOfStreamException or FormatException)
        {
            // A header cut short, a string whose length prefix is damaged, or ML.NET's own framing of an entry.
            throw new InvalidDataException($"{source}: the header or an entry of the model file is truncated or damaged ({e.Message}).", e);
        }
    }

    private static (int Version, ModelEntries Entries) LoadCore(ModelLoadContext ctx, string source)
    {
        int version = ctx.Reader.ReadInt32();
        if (version < 1 || version > Version)
            throw new InvalidDataException($"{source} has format version {version}; this library reads versions 1 to {Version}. Upgrade Microsoft.ML.Peft.");
        var hashes = new Dictionary<string, string>();
        if (version == 1)
        {
            hashes[ModelEntries.Adapter] = ctx.Reader.ReadString();
        }
        else
        {
            int count = ctx.Reader.ReadInt32();
            if (count < 3 || count > ModelEntries.Limits.Count) throw new InvalidDataException($"{source}: the header lists {count} entries.");
            for (int i = 0; i < count; i++)
            {
                var name = ctx.Reader.ReadString();
                if (!ModelEntries.Limits.ContainsKey(name) || hashes.ContainsKey(name)) throw new InvalidDataException($"{source}: the header lists an unknown or repeated entry '{name}'.");
                hashes[name] = ctx.Reader.ReadString();
            }
        }

        byte[]? Entry(string name, bool required)
        {
            byte[]? bytes = null;
            bool found = version == 1 && name == ModelEntries.Metadata
                ? ctx.TryLoadBinaryStream(name, r => bytes = System.Text.Encoding.UTF8.GetBytes(r.ReadString()))
                : ctx.TryLoadBinaryStream(name, r => bytes = ModelEntries.Read(r, name, source));
            if (!found)
            {
                if (required || hashes.ContainsKey(name)) throw new InvalidDataException($"{source} has no '{name}' entry: the file is incomplete.");
                return null;
            }
            if (hashes.TryGetValue(name, out var expected) && !string.Equals(ModelEntries.Hash(bytes!), expected, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{source}: the '{name}' entry is damaged: its SHA-256 differs from the one saved with it.");
            return bytes;
        }

        var entries = new ModelEntries
        {
            MetadataBytes = Entry(ModelEntries.Metadata, true)!,
            VocabBytes = Entry(ModelEntries.Vocab, true)!,
            AdapterBytes = Entry(ModelEntries.Adapter, true)!,
            BaseModelBytes = version == 1 || hashes.ContainsKey(ModelEntries.BaseModel) ? Entry(ModelEntries.BaseModel, false) : null,
        };
        return (version, entries);
    }
}
