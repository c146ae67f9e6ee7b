using Microsoft.ML.Peft.Format;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>
/// Mutates a valid saved model many times and loads each result with <c>LoadPeft</c>: damage to the zip itself (bits,
/// runs, truncation, entries removed, duplicated, swapped or renamed), to ML.NET's and this library's headers
/// (<c>Model.key</c>: format version, entry count, names, hashes), to the length prefixes of the PEFT entries, and,
/// above all, to the PEFT entries with their hashes recomputed so that the parsers themselves are reached: the metadata
/// JSON (absurd sizes, wrong types, unknown names, removed fields), the adapter's and the embedded base model's
/// safetensors (header length, dtypes, shapes, offsets, names, data) and the vocabulary.
/// </summary>
internal static class ModelZipFuzzer
{
    /// <summary>Seconds each target may fuzz; the environment variable <c>PEFT_FUZZ_SECONDS</c> changes it (longer runs by hand).</summary>
    public static TimeSpan Budget => TimeSpan.FromSeconds(
        double.TryParse(Environment.GetEnvironmentVariable("PEFT_FUZZ_SECONDS"), System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 15);

    /// <summary>The most cases per target, so that a fast machine does not spend its whole budget.</summary>
    public const int MaxCases = 1_500;

    /// <param name="run">The run to record cases in.</param>
    /// <param name="original">The valid model zip.</param>
    /// <param name="use">Scores a loaded model: null when its outputs are sound, else what is wrong (it also disposes the model).</param>
    public static void Fuzz(FuzzRun run, byte[] original, Func<ITransformer, string?> use)
    {
        var model = ModelZip.Read(original);
        var peft = model.PeftEntries();
        if (peft.Count < 3) throw new InvalidOperationException("the model zip holds no PEFT entries");
        var directory = peft[0][..(peft[0].LastIndexOf('/') + 1)];
        var key = directory + "Model.key";
        var file = Path.Combine(Path.GetTempPath(), $"peft-fuzz-{Guid.NewGuid():N}.zip");
        try
        {
            for (int index = 0; run.More; index++)
            {
                var random = run.CaseRandom(index);
                var (mutation, bytes) = Mutate(random, original, model, peft, key);
                File.WriteAllBytes(file, bytes);
                run.Case(index, mutation, () =>
                {
                    var loaded = new MLContext(1).Model.LoadPeft(file, new PeftLoadOptions(), out _);
                    return use(loaded);
                });
            }
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static (string Name, byte[] Zip) Mutate(Random random, byte[] original, ModelZip model, List<string> peft, string key)
    {
        int kind = random.Next(100);
        if (kind < 10)
        {
            var (name, bytes) = Mutations.AnyBytes(random, original);
            return ($"zip {name}", bytes);
        }
        var copy = model.Clone();
        string mutation;
        if (kind < 22) mutation = EntryLevel(random, copy);
        else if (kind < 32)
        {
            var (name, bytes) = Mutations.AnyBytes(random, copy.Entries[copy.IndexOf(key)].Bytes);
            copy.SetRaw(key, bytes);
            mutation = $"PEFT Model.key {name}";
        }
        else if (kind < 40)
        {
            var entry = peft[random.Next(peft.Count)];
            var raw = copy.Entries[copy.IndexOf(entry)].Bytes.ToArray();
            long[] lengths = { -1, long.MaxValue, long.MinValue, raw.Length - 8 + 1, raw.Length - 8 - 1, 0, 1L << 31, (16L << 20) + 1 };
            BitConverter.GetBytes(lengths[random.Next(lengths.Length)]).CopyTo(raw, 0);
            copy.SetRaw(entry, raw);
            mutation = "entry length prefix";
        }
        else if (kind < 46)
        {
            var entry = peft[random.Next(peft.Count)];
            var (name, bytes) = Mutations.AnyBytes(random, copy.Payload(entry));
            copy.SetPayload(entry, bytes, fixHash: false);
            mutation = $"entry {name} (stale hash)";
        }
        else
        {
            // Past the hash check: one to three mutations of the parsed entries, each with its hash recomputed.
            var names = new List<string>();
            int count = random.Next(4) == 0 ? random.Next(2, 4) : 1;
            for (int i = 0; i < count; i++)
            {
                var entry = peft[random.Next(peft.Count)];
                var shortName = entry.Split('/')[^1];
                var payload = copy.Payload(entry);
                var (name, bytes) = shortName switch
                {
                    ModelEntries.Metadata when random.Next(5) > 0 => Mutations.Json(random, payload),
                    ModelEntries.Adapter or ModelEntries.BaseModel when random.Next(5) > 0 => Mutations.Safetensors(random, payload),
                    _ => Mutations.AnyBytes(random, payload),
                };
                copy.SetPayload(entry, bytes);
                names.Add($"{shortName} {name}");
            }
            mutation = string.Join(" + ", names.Select(Shorten));
        }
        return (mutation, copy.Write());
    }

    /// <summary>Mutation names without the JSON path, so that the counts group by kind.</summary>
    private static string Shorten(string name)
    {
        int quote = name.IndexOf('\'');
        return quote < 0 ? name : name[..quote].TrimEnd() + name[(name.LastIndexOf('\'') + 1)..];
    }

    private static string EntryLevel(Random random, ModelZip zip)
    {
        var entries = zip.Entries;
        int a = random.Next(entries.Count), b = random.Next(entries.Count);
        switch (random.Next(5))
        {
            case 0:
                entries.RemoveAt(a);
                return "entry removed";
            case 1:
                entries.Insert(random.Next(entries.Count + 1), (entries[a].Name, entries[b].Bytes.ToArray()));
                return "entry duplicated";
            case 2:
                (entries[a], entries[b]) = ((entries[a].Name, entries[b].Bytes), (entries[b].Name, entries[a].Bytes));
                return "entry contents swapped";
            case 3:
                entries[a] = (entries[b].Name, entries[a].Bytes);
                return "entry renamed";
            default:
                var (name, bytes) = Mutations.AnyBytes(random, entries[a].Bytes);
                entries[a] = (entries[a].Name, bytes);
                return $"entry {name}";
        }
    }
}
