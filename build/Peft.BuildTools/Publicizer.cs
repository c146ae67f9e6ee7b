using Mono.Cecil;

namespace Peft.BuildTools;

/// <summary>Makes internal types, fields and non-virtual methods of an assembly public (compile-time reference only).</summary>
public static class Publicizer
{
    public static int Run(string input, string output)
    {
        // Up to date when made from this very input by this very tool. A timestamp comparison is not enough:
        // package files keep the dates of their archive, so switching to an older package version would
        // leave a newer, stale output in place.
        var stampFile = output + ".stamp";
        var source = new FileInfo(input);
        var stamp = $"{source.FullName}|{source.Length}|{source.LastWriteTimeUtc.Ticks}|{typeof(Publicizer).Module.ModuleVersionId}";
        if (File.Exists(output) && File.Exists(stampFile) && File.ReadAllText(stampFile) == stamp)
        {
            return 0;
        }
        var resolver = new DefaultAssemblyResolver();
        resolver.AddSearchDirectory(Path.GetDirectoryName(Path.GetFullPath(input))!);
        using var assembly = AssemblyDefinition.ReadAssembly(input, new ReaderParameters { AssemblyResolver = resolver });
        foreach (var type in assembly.MainModule.GetTypes())
        {
            if (type.IsNested) type.IsNestedPublic = true; else type.IsPublic = true;
            foreach (var field in type.Fields)
            {
                // Leave compiler-generated backing fields alone: they clash with the property names.
                if (field.Name.Contains('<')) continue;
                field.IsPublic = true;
            }
            foreach (var method in type.Methods)
            {
                // Overriding access must match the base declaration, so virtual members keep theirs.
                if (method.IsVirtual) continue;
                method.IsPublic = true;
            }
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
        var temp = output + ".tmp";
        assembly.Write(temp);
        File.Move(temp, output, overwrite: true);
        File.WriteAllText(stampFile, stamp);
        return 0;
    }
}
