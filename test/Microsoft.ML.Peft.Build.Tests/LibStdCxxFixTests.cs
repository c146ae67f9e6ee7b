using System.Runtime.InteropServices;
using System.Text;
using Peft.BuildTools;

namespace Microsoft.ML.Peft.Build.Tests;

public class LibStdCxxFixTests : TempFolderTest
{
    private const ushort Weak = 0x2;

    private string CopyOfLibrary()
    {
        var copy = Path.Combine(Temp, "libLibTorchSharp.so");
        File.Copy(Packages.LibTorchSharp, copy);
        return copy;
    }

    private string FakeHost(string content)
    {
        var host = Path.Combine(Temp, "libstdc++.so.6");
        File.WriteAllText(host, content, Encoding.ASCII);
        return host;
    }

    private static ushort Flags(byte[] elf) => BitConverter.ToUInt16(elf, LibStdCxxFix.FindVersionFlagsOffset(elf));

    /// <summary>The System V ELF hash, which a Vernaux entry stores (vna_hash) for the version it names.</summary>
    private static uint ElfHash(string name)
    {
        uint h = 0;
        foreach (var c in Encoding.ASCII.GetBytes(name))
        {
            h = (h << 4) + c;
            uint g = h & 0xf0000000;
            if (g != 0) h ^= g >> 24;
            h &= ~g;
        }
        return h;
    }

    [Test]
    public void FindVersionFlagsOffset_FindsTheGlibcxx3432Entry()
    {
        var elf = File.ReadAllBytes(Packages.LibTorchSharp);
        int offset = LibStdCxxFix.FindVersionFlagsOffset(elf);
        Assert.That(offset, Is.GreaterThan(0));
        // Vernaux: vna_hash (4 bytes) precedes vna_flags; as shipped the requirement is not weak.
        Assert.That(BitConverter.ToUInt32(elf, offset - 4), Is.EqualTo(ElfHash("GLIBCXX_3.4.32")));
        Assert.That(BitConverter.ToUInt16(elf, offset) & Weak, Is.Zero);
    }

    [Test]
    public void MarkWeak_SetsOnlyTheWeakBit_IsIdempotent_AndLeavesThePackageAlone()
    {
        var cacheHash = Packages.Sha256(Packages.LibTorchSharp);
        var lib = CopyOfLibrary();
        var original = File.ReadAllBytes(lib);
        int offset = LibStdCxxFix.FindVersionFlagsOffset(original);

        Assert.That(LibStdCxxFix.MarkWeak(lib), Is.EqualTo("patched"));
        var patched = File.ReadAllBytes(lib);
        Assert.That(Flags(patched), Is.EqualTo(Flags(original) | Weak));
        Assert.That(patched, Has.Length.EqualTo(original.Length));
        var changed = Enumerable.Range(0, original.Length).Where(i => original[i] != patched[i]).ToArray();
        Assert.That(changed, Is.EqualTo(new[] { offset }));

        Assert.That(LibStdCxxFix.MarkWeak(lib), Is.EqualTo("already weak"));
        Assert.That(File.ReadAllBytes(lib), Is.EqualTo(patched));
        Assert.That(Directory.GetFiles(Temp), Is.EqualTo(new[] { lib }), "no temporary file left behind");

        Assert.That(Packages.Sha256(Packages.LibTorchSharp), Is.EqualTo(cacheHash));
    }

    [DllImport("libc", EntryPoint = "link", SetLastError = true)]
    private static extern int HardLink(string existing, string created);

    [Test]
    [Platform("Linux")]
    public void MarkWeak_DoesNotWriteThroughAHardLink()
    {
        var lib = CopyOfLibrary();
        var link = Path.Combine(Temp, "link.so");
        Assert.That(HardLink(lib, link), Is.Zero, $"link() failed: errno {Marshal.GetLastPInvokeError()}");
        var before = Packages.Sha256(lib);

        Assert.That(LibStdCxxFix.MarkWeak(link), Is.EqualTo("patched"));
        Assert.That(Packages.Sha256(lib), Is.EqualTo(before));
        Assert.That(Packages.Sha256(link), Is.Not.EqualTo(before));
    }

    [Test]
    [Platform("Linux")]
    public void Run_LeavesTheLibraryAlone_WhenTheHostProvidesTheVersion()
    {
        var lib = CopyOfLibrary();
        var before = Packages.Sha256(lib);
        var host = FakeHost("GLIBCXX_3.4.31\0GLIBCXX_3.4.32\0GLIBCXX_3.4.33\0");

        Assert.That(LibStdCxxFix.Run(lib, host), Is.Zero);
        Assert.That(Packages.Sha256(lib), Is.EqualTo(before));
    }

    [Test]
    [Platform("Linux")]
    public void Run_Patches_WhenTheHostLacksTheVersion()
    {
        var lib = CopyOfLibrary();
        // "GLIBCXX_3.4.3" is a prefix of the wanted name: it must not count.
        var host = FakeHost("GLIBCXX_3.4.3\0GLIBCXX_3.4.30\0GLIBCXX_3.4.320\0");

        Assert.That(LibStdCxxFix.Run(lib, host), Is.Zero);
        Assert.That(Flags(File.ReadAllBytes(lib)) & Weak, Is.EqualTo(Weak));
    }

    [Test]
    public void NonElfFile_IsRejected()
    {
        var file = FakeHost("this is not an ELF file, just some text long enough to pass a length check.");
        var before = Packages.Sha256(file);

        Assert.Throws<InvalidDataException>(() => LibStdCxxFix.FindVersionFlagsOffset(File.ReadAllBytes(file)));
        Assert.Throws<InvalidDataException>(() => LibStdCxxFix.MarkWeak(file));
        Assert.That(Packages.Sha256(file), Is.EqualTo(before));
    }

    [Test]
    public void TruncatedElfFile_IsRejected()
    {
        var elf = File.ReadAllBytes(Packages.LibTorchSharp);
        // The header is intact; the section headers it points to are cut off.
        Assert.Throws<InvalidDataException>(() => LibStdCxxFix.FindVersionFlagsOffset(elf[..4096]));
    }

    [Test]
    [Platform("Linux")]
    public void OutputCopy_IsPatchedByTheBuild_OnlyWhenTheHostLacksTheVersion()
    {
        var output = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.That(output, Does.Exist);
        var host = LibStdCxxFix.FindHostLibStdCxx();
        bool hostHasVersion = host is not null && LibStdCxxFix.HostHasVersion(host);

        var flags = Flags(File.ReadAllBytes(output));
        Assert.That((flags & Weak) != 0, Is.EqualTo(!hostHasVersion),
            $"host libstdc++ '{host}' {(hostHasVersion ? "has" : "lacks")} {LibStdCxxFix.Version}");
        if (hostHasVersion)
        {
            Assert.That(Packages.Sha256(output), Is.EqualTo(Packages.Sha256(Packages.LibTorchSharp)));
        }
    }
}
