using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using Peft.BuildTools;

namespace Microsoft.ML.Peft.Build.Tests;

public class PublicizerTests : TempFolderTest
{
    private const string SaveContext = "Microsoft.ML.ModelSaveContext";
    private const string LoadContext = "Microsoft.ML.ModelLoadContext";
    private const string LoadableClass = "Microsoft.ML.LoadableClassAttribute";

    private sealed record TypeVisibility(TypeAttributes Attributes, List<(string Name, MethodAttributes Attributes)> Methods)
    {
        public bool IsPublic => (Attributes & TypeAttributes.VisibilityMask) is TypeAttributes.Public or TypeAttributes.NestedPublic;
    }

    /// <summary>Visibility of every type and method, read with System.Reflection.Metadata (independently of Mono.Cecil).</summary>
    private static Dictionary<string, TypeVisibility> Read(string assembly)
    {
        using var pe = new PEReader(File.OpenRead(assembly));
        var md = pe.GetMetadataReader();
        var types = new Dictionary<string, TypeVisibility>();
        foreach (var handle in md.TypeDefinitions)
        {
            var type = md.GetTypeDefinition(handle);
            var methods = type.GetMethods().Select(md.GetMethodDefinition)
                .Select(m => (md.GetString(m.Name), m.Attributes)).ToList();
            types.Add(FullName(md, type), new TypeVisibility(type.Attributes, methods));
        }
        return types;
    }

    private static string FullName(MetadataReader md, TypeDefinition type) => type.GetDeclaringType().IsNil
        ? md.GetString(type.Namespace) + "." + md.GetString(type.Name)
        : FullName(md, md.GetTypeDefinition(type.GetDeclaringType())) + "/" + md.GetString(type.Name);

    private static bool IsPublic(MethodAttributes attributes) =>
        (attributes & MethodAttributes.MemberAccessMask) == MethodAttributes.Public;

    private static bool IsVirtual(MethodAttributes attributes) => (attributes & MethodAttributes.Virtual) != 0;

    private static IEnumerable<string> Virtuals(Dictionary<string, TypeVisibility> types) =>
        types.SelectMany(t => t.Value.Methods.Where(m => IsVirtual(m.Attributes)).Select(m => $"{t.Key}::{m.Name} {m.Attributes}"));

    private (string Input, string Output) Copies()
    {
        var input = Path.Combine(Temp, "in", "Microsoft.ML.Core.dll");
        Directory.CreateDirectory(Path.GetDirectoryName(input)!);
        File.Copy(Packages.MicrosoftMLCore, input);
        return (input, Path.Combine(Temp, "out", "Microsoft.ML.Core.dll"));
    }

    [Test]
    public void Publicize_MakesInternalTypesAndNonVirtualMethodsPublic()
    {
        var cacheHash = Packages.Sha256(Packages.MicrosoftMLCore);
        var (input, output) = Copies();
        var inputHash = Packages.Sha256(input);
        var before = Read(input);
        var hidden = before[SaveContext].Methods.Where(m => !IsVirtual(m.Attributes) && !IsPublic(m.Attributes))
            .Select(m => m.Name).ToList();
        Assert.That(hidden, Does.Contain("SetVersionInfo").And.Contain("SaveBinaryStream").And.Contain("CheckAtModel"));
        Assert.That(before[LoadContext].IsPublic, Is.False);
        Assert.That(before[LoadableClass].IsPublic, Is.False);

        Assert.That(Publicizer.Run(input, output), Is.Zero);

        var after = Read(output);
        Assert.That(after.Keys, Is.EquivalentTo(before.Keys));
        Assert.That(after.Where(t => !t.Value.IsPublic).Select(t => t.Key), Is.Empty, "types left non-public");
        Assert.That(after[SaveContext].Methods.Where(m => !IsVirtual(m.Attributes) && !IsPublic(m.Attributes)), Is.Empty);
        Assert.That(after[SaveContext].Methods.Select(m => m.Name), Is.EquivalentTo(before[SaveContext].Methods.Select(m => m.Name)));
        // Virtual methods keep their access: an override must match the base declaration.
        Assert.That(Virtuals(after), Is.EquivalentTo(Virtuals(before)));

        Assert.That(Packages.Sha256(input), Is.EqualTo(inputHash));
        Assert.That(Packages.Sha256(Packages.MicrosoftMLCore), Is.EqualTo(cacheHash));
    }

    [Test]
    public void Publicize_DoesNotRewriteAnUpToDateOutput()
    {
        var (input, output) = Copies();
        Assert.That(Publicizer.Run(input, output), Is.Zero);
        var stamp = new DateTime(2100, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(output, stamp);

        Assert.That(Publicizer.Run(input, output), Is.Zero);
        Assert.That(File.GetLastWriteTimeUtc(output), Is.EqualTo(stamp));
    }

    [Test]
    public void Publicize_RewritesAnOutdatedOutput()
    {
        var (input, output) = Copies();
        Assert.That(Publicizer.Run(input, output), Is.Zero);
        var old = new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(output, old);
        File.SetLastWriteTimeUtc(input, DateTime.UtcNow);

        Assert.That(Publicizer.Run(input, output), Is.Zero);
        Assert.That(File.GetLastWriteTimeUtc(output), Is.GreaterThan(old));
        Assert.That(Read(output)[LoadContext].IsPublic, Is.True);
    }

    [Test]
    public void Publicize_RewritesAnOutput_MadeFromAnotherInput_EvenWhenTheNewInputIsOlder()
    {
        var (input, output) = Copies();
        Assert.That(Publicizer.Run(input, output), Is.Zero);
        // Another package version: different content, and (package files keep their archive dates) an older date.
        var other = Path.Combine(Temp, "other.dll");
        Publicizer.Run(input, other);
        File.Copy(other, input, overwrite: true);
        File.SetLastWriteTimeUtc(input, new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        var stale = new DateTime(2100, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(output, stale);

        Assert.That(Publicizer.Run(input, output), Is.Zero);
        Assert.That(File.GetLastWriteTimeUtc(output), Is.Not.EqualTo(stale));
    }
}
