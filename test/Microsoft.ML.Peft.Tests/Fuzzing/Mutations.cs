using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peft.Tests.Fuzzing;

/// <summary>Byte-level, JSON-level and safetensors-level mutations, all drawn from a given <see cref="Random"/>.</summary>
internal static class Mutations
{
    /// <summary>Flips 1 to 8 random bits.</summary>
    public static byte[] FlipBits(Random random, byte[] bytes)
    {
        var copy = bytes.ToArray();
        if (copy.Length == 0) return copy;
        int flips = random.Next(1, 9);
        for (int i = 0; i < flips; i++) copy[random.Next(copy.Length)] ^= (byte)(1 << random.Next(8));
        return copy;
    }

    /// <summary>Overwrites a run of 1 to 64 bytes with zeros, 0xFF or random bytes.</summary>
    public static byte[] OverwriteRun(Random random, byte[] bytes)
    {
        var copy = bytes.ToArray();
        if (copy.Length == 0) return copy;
        int at = random.Next(copy.Length), length = Math.Min(random.Next(1, 65), copy.Length - at);
        int kind = random.Next(3);
        for (int i = at; i < at + length; i++) copy[i] = kind switch { 0 => (byte)0, 1 => (byte)0xFF, _ => (byte)random.Next(256) };
        return copy;
    }

    /// <summary>Cuts the bytes at a random point (possibly to nothing).</summary>
    public static byte[] Truncate(Random random, byte[] bytes) => bytes[..random.Next(bytes.Length + 1)];

    /// <summary>Inserts 1 to 32 random bytes at a random point.</summary>
    public static byte[] Insert(Random random, byte[] bytes)
    {
        var extra = new byte[random.Next(1, 33)];
        random.NextBytes(extra);
        int at = random.Next(bytes.Length + 1);
        return bytes[..at].Concat(extra).Concat(bytes[at..]).ToArray();
    }

    /// <summary>Overwrites one aligned 4-byte word with a little-endian value read as a length, count or dimension would be.</summary>
    public static byte[] AbsurdWord(Random random, byte[] bytes)
    {
        var copy = bytes.ToArray();
        if (copy.Length < 4) return copy;
        int at = random.Next(copy.Length / 4) * 4;
        int[] values = { -1, int.MinValue, int.MaxValue, 0, 1, 1 << 20, 1 << 30, 65_536, 7 };
        BitConverter.GetBytes(values[random.Next(values.Length)]).CopyTo(copy, at);
        return copy;
    }

    /// <summary>One of the byte mutations, and its name.</summary>
    public static (string Name, byte[] Bytes) AnyBytes(Random random, byte[] bytes) => random.Next(5) switch
    {
        0 => ("bit flips", FlipBits(random, bytes)),
        1 => ("byte run", OverwriteRun(random, bytes)),
        2 => ("truncation", Truncate(random, bytes)),
        3 => ("insertion", Insert(random, bytes)),
        _ => ("absurd word", AbsurdWord(random, bytes)),
    };

    /// <summary>Values that a damaged or hostile file could hold where a size, name, flag or list is expected.</summary>
    public static JsonNode? AbsurdValue(Random random) => random.Next(26) switch
    {
        0 => int.MaxValue,
        1 => int.MinValue,
        2 => -1,
        3 => 0,
        4 => long.MaxValue,
        5 => 1e308,
        6 => -1e308,
        7 => 2147483648L,
        8 => 1_000_000,
        9 => 65_536,
        10 => 0.5,
        11 => true,
        12 => null,
        13 => "",
        14 => "NaN",
        15 => "Infinity",
        16 => "NOT_A_METHOD",
        17 => new string('x', 20_000),
        18 => new JsonArray(),
        19 => new JsonObject(),
        20 => new JsonArray(Enumerable.Range(0, 2_000).Select(i => (JsonNode?)JsonValue.Create(i)).ToArray()),
        21 => Nested(random.Next(5, 60)),
        22 => 99_999_999_999L,
        23 => 16_384,
        24 => "../../../../etc/passwd",
        _ => 3.4e38,
    };

    private static JsonNode Nested(int depth)
    {
        JsonNode node = new JsonArray();
        for (int i = 0; i < depth; i++) node = new JsonArray(node);
        return node;
    }

    /// <summary>
    /// Mutates one node of a JSON document: replaces it with an absurd value, nudges a number (off by one, doubled,
    /// negated), removes it, or duplicates an array element; returns null when the bytes are not a JSON container.
    /// </summary>
    public static (string Name, JsonNode Root)? MutateJson(Random random, JsonNode root)
    {
        var places = new List<(JsonNode Parent, string? Key, int Index)>();
        void Walk(JsonNode? node)
        {
            switch (node)
            {
                case JsonObject obj:
                    foreach (var (key, child) in obj.ToList())
                    {
                        places.Add((obj, key, -1));
                        Walk(child);
                    }
                    break;
                case JsonArray array:
                    for (int i = 0; i < array.Count; i++)
                    {
                        places.Add((array, null, i));
                        Walk(array[i]);
                    }
                    break;
            }
        }
        Walk(root);
        if (places.Count == 0) return null;
        var (parent, name, index) = places[random.Next(places.Count)];
        JsonNode? current = name is not null ? parent[name] : parent[index];
        string where = name ?? $"[{index}]";
        int choice = random.Next(10);
        if (choice < 5)
        {
            Set(parent, name, index, AbsurdValue(random));
            return ($"json value of '{where}'", root);
        }
        if (choice < 8 && current is JsonValue value && value.GetValueKind() == JsonValueKind.Number)
        {
            double number = value.GetValue<double>();
            double nudged = random.Next(4) switch { 0 => number + 1, 1 => number - 1, 2 => number * 2, _ => -number };
            Set(parent, name, index, Math.Abs(nudged) < 9e15 && nudged == Math.Floor(nudged) ? JsonValue.Create((long)nudged) : JsonValue.Create(nudged));
            return ($"json number '{where}' nudged", root);
        }
        if (choice < 9)
        {
            if (name is not null) ((JsonObject)parent).Remove(name);
            else ((JsonArray)parent).RemoveAt(index);
            return ($"json '{where}' removed", root);
        }
        if (parent is JsonArray list)
        {
            list.Insert(index, list[index]?.DeepClone());
            return ("json array element duplicated", root);
        }
        Set(parent, name, index, current is JsonValue v && v.GetValueKind() == JsonValueKind.String ? JsonValue.Create(1) : JsonValue.Create("text"));
        return ($"json type of '{where}' changed", root);
    }

    private static void Set(JsonNode parent, string? name, int index, JsonNode? value)
    {
        if (name is not null) parent[name] = value;
        else parent[index] = value;
    }

    /// <summary>Mutates JSON bytes (as UTF-8); bytes that are not a JSON container get a byte mutation instead.</summary>
    public static (string Name, byte[] Bytes) Json(Random random, byte[] utf8)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(utf8);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            root = null;
        }
        try
        {
            if (root is null || MutateJson(random, root) is not { } mutated) return AnyBytes(random, utf8);
            return (mutated.Name, Encoding.UTF8.GetBytes(mutated.Root.ToJsonString()));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // Valid JSON whose strings are not valid UTF-8 parses lazily and fails on use.
            return AnyBytes(random, utf8);
        }
    }

    /// <summary>
    /// Mutates a safetensors file where its parser looks: the header's JSON (names, dtypes, shapes, data offsets) written
    /// back with a consistent header length, the header length itself, or the data after the header.
    /// </summary>
    public static (string Name, byte[] Bytes) Safetensors(Random random, byte[] bytes)
    {
        if (bytes.Length < 8) return AnyBytes(random, bytes);
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        if (headerLength > (ulong)(bytes.Length - 8)) return AnyBytes(random, bytes);
        var header = bytes.AsSpan(8, (int)headerLength).ToArray();
        var data = bytes[(8 + (int)headerLength)..];
        switch (random.Next(8))
        {
            case 0:
            {
                var copy = bytes.ToArray();
                long[] values = { -1, long.MaxValue, (long)headerLength + 1, (long)headerLength - 1, 0, 1L << 40, bytes.Length };
                BitConverter.GetBytes(values[random.Next(values.Length)]).CopyTo(copy, 0);
                return ("safetensors header length", copy);
            }
            case 1:
            {
                var (name, changed) = AnyBytes(random, data);
                return ($"safetensors data {name}", bytes[..(8 + (int)headerLength)].Concat(changed).ToArray());
            }
            case 2:
            {
                var (name, changed) = AnyBytes(random, header);
                return ($"safetensors header bytes {name}", Assemble(changed, data));
            }
            default:
            {
                var (name, changed) = TensorHeader(random, header);
                return ($"safetensors {name}", Assemble(changed, data));
            }
        }
    }

    /// <summary>Mutates one tensor's dtype, shape or offsets, renames it, or mutates any node of the header.</summary>
    private static (string Name, byte[] Header) TensorHeader(Random random, byte[] header)
    {
        try
        {
            return TensorHeaderCore(random, header);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or JsonException)
        {
            // A header whose names are not UTF-8 parses lazily and fails on use.
            return AnyBytes(random, header);
        }
    }

    private static (string Name, byte[] Header) TensorHeaderCore(Random random, byte[] header)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(header)!.AsObject();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            return AnyBytes(random, header);
        }
        var tensors = root.Where(p => p.Key != "__metadata__" && p.Value is JsonObject).Select(p => p.Key).ToList();
        if (tensors.Count == 0) return Json(random, header);
        var key = tensors[random.Next(tensors.Count)];
        var tensor = root[key]!.AsObject();
        string name;
        switch (random.Next(6))
        {
            case 0:
                string[] dtypes = { "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "X99", "" };
                tensor["dtype"] = dtypes[random.Next(dtypes.Length)];
                name = "dtype";
                break;
            case 1:
                var shape = tensor["shape"] as JsonArray;
                if (shape is { Count: > 0 } && random.Next(3) > 0)
                {
                    long[] dims = { 0, -1, 1, 2, int.MaxValue, 1L << 40, long.MaxValue, 3 };
                    shape[random.Next(shape.Count)] = dims[random.Next(dims.Length)];
                }
                else
                {
                    tensor["shape"] = random.Next(3) switch
                    {
                        0 => new JsonArray(),
                        1 => new JsonArray(1 << 20, 1 << 20, 1 << 20),
                        _ => new JsonArray(Enumerable.Range(0, 12).Select(_ => (JsonNode?)JsonValue.Create(1)).ToArray()),
                    };
                }
                name = "shape";
                break;
            case 2:
                var offsets = tensor["data_offsets"] as JsonArray;
                long[] places = { 0, -1, -8, 4, 1L << 40, long.MaxValue, int.MaxValue };
                if (offsets is { Count: 2 } && random.Next(4) > 0) offsets[random.Next(2)] = places[random.Next(places.Length)];
                else tensor["data_offsets"] = new JsonArray(places[random.Next(places.Length)], places[random.Next(places.Length)]);
                name = "data offsets";
                break;
            case 3:
                var other = tensors[random.Next(tensors.Count)];
                var otherValue = root[other]!.DeepClone();
                root[other] = tensor.DeepClone();
                root[key] = otherValue;
                name = "tensor entries swapped";
                break;
            case 4:
                root.Remove(key);
                root[random.Next(2) == 0 ? key + ".evil" : "__metadata__"] = tensor;
                name = "tensor renamed";
                break;
            default:
                var (n, h) = Json(random, header);
                return ($"header {n}", h);
        }
        return (name, Encoding.UTF8.GetBytes(root.ToJsonString()));
    }

    /// <summary>A safetensors file of <paramref name="header"/> (padded with spaces to 8 bytes) and <paramref name="data"/>.</summary>
    public static byte[] Assemble(byte[] header, byte[] data)
    {
        int padded = (header.Length + 7) / 8 * 8;
        var result = new byte[8 + padded + data.Length];
        BitConverter.GetBytes((ulong)padded).CopyTo(result, 0);
        header.CopyTo(result, 8);
        for (int i = 8 + header.Length; i < 8 + padded; i++) result[i] = (byte)' ';
        data.CopyTo(result, 8 + padded);
        return result;
    }
}
