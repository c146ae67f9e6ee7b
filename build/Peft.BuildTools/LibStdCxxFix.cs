using System.Text;

namespace Peft.BuildTools;

/// <summary>
/// Sets VER_FLG_WEAK on the GLIBCXX_3.4.32 entry of a shared library's .gnu.version_r section,
/// when the host libstdc++ lacks that version. The only symbol bound to it in libLibTorchSharp.so
/// (std::ios_base_library_init) has no relocation, so a weak requirement is safe.
/// </summary>
public static class LibStdCxxFix
{
    public const string Version = "GLIBCXX_3.4.32";
    private const ushort VerFlagWeak = 0x2;
    private const uint ShtGnuVerNeed = 0x6ffffffe;

    public static string? FindHostLibStdCxx()
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        };
        return candidates.FirstOrDefault(File.Exists);
    }

    /// <summary>True when the file contains the version string (libstdc++ lists every version it defines).</summary>
    public static bool HostHasVersion(string hostLibrary)
    {
        var needle = Encoding.ASCII.GetBytes(Version + "\0");
        return File.ReadAllBytes(hostLibrary).AsSpan().IndexOf(needle) >= 0;
    }

    public static int Run(string library, string? hostLibrary)
    {
        if (!OperatingSystem.IsLinux())
        {
            return 0;
        }
        if (!File.Exists(library))
        {
            Console.Error.WriteLine($"fix-libstdcxx: '{library}' does not exist.");
            return 1;
        }
        if (hostLibrary is not null && HostHasVersion(hostLibrary))
        {
            Console.WriteLine($"fix-libstdcxx: host libstdc++ provides {Version}; '{library}' left as it is.");
            return 0;
        }
        var result = MarkWeak(library);
        Console.WriteLine($"fix-libstdcxx: {library}: {result}");
        return 0;
    }

    /// <summary>Patches the file in place. Returns what happened: "patched", "already weak" or "no requirement".</summary>
    public static string MarkWeak(string library)
    {
        var bytes = File.ReadAllBytes(library);
        var offset = FindVersionFlagsOffset(bytes);
        if (offset < 0) return "no requirement";
        var flags = BitConverter.ToUInt16(bytes, offset);
        if ((flags & VerFlagWeak) != 0) return "already weak";
        flags |= VerFlagWeak;
        BitConverter.GetBytes(flags).CopyTo(bytes, offset);
        // Write through a temporary file so a hard link into a package cache is never modified.
        var temp = library + ".patching";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, library, overwrite: true);
        return "patched";
    }

    /// <summary>Offset of vna_flags of the Vernaux entry naming <see cref="Version"/>, or -1.</summary>
    public static int FindVersionFlagsOffset(byte[] elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only little-endian 64-bit ELF files are supported");
        try
        {
            return FindVersionFlagsOffsetUnchecked(elf);
        }
        catch (Exception e) when (e is ArgumentException or OverflowException)
        {
            throw new InvalidDataException("truncated or malformed ELF file", e);
        }
    }

    private static int FindVersionFlagsOffsetUnchecked(byte[] elf)
    {
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)(shoff + (long)i * shentsize));
            uint type = BitConverter.ToUInt32(elf, sh + 4);
            if (type != ShtGnuVerNeed) continue;
            long offset = BitConverter.ToInt64(elf, sh + 0x18);
            uint link = BitConverter.ToUInt32(elf, sh + 0x28);
            int strtab = checked((int)(shoff + (long)link * shentsize));
            long strOffset = BitConverter.ToInt64(elf, strtab + 0x18);
            int pos = checked((int)offset);
            while (true)
            {
                int cnt = BitConverter.ToUInt16(elf, pos + 2);
                uint aux = BitConverter.ToUInt32(elf, pos + 8);
                uint next = BitConverter.ToUInt32(elf, pos + 12);
                int a = checked((int)(pos + aux));
                for (int j = 0; j < cnt; j++)
                {
                    uint name = BitConverter.ToUInt32(elf, a + 8);
                    if (ReadString(elf, checked((int)(strOffset + name))) == Version) return a + 4;
                    uint anext = BitConverter.ToUInt32(elf, a + 12);
                    if (anext == 0) break;
                    a = checked((int)(a + anext));
                }
                if (next == 0) break;
                pos = checked((int)(pos + next));
            }
        }
        return -1;
    }

    private static string ReadString(byte[] data, int offset)
    {
        int end = Array.IndexOf(data, (byte)0, offset);
        return Encoding.ASCII.GetString(data, offset, end - offset);
    }
}
