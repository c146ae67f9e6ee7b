using System.Reflection;
using System.Security.Cryptography;

namespace Microsoft.ML.Peft.Build.Tests;

/// <summary>Paths into the NuGet package folder, as recorded by the build of this project.</summary>
internal static class Packages
{
    private static string Metadata(string key) =>
        typeof(Packages).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value
        ?? throw new InvalidOperationException($"no assembly metadata '{key}'");

    private static string Root => Metadata("NuGetPackageRoot");

    public static string LibTorchSharp => Path.Combine(Root, "torchsharp", Metadata("TorchSharpVersion"),
        "runtimes", "linux-x64", "native", "libLibTorchSharp.so");

    public static string MicrosoftMLCore => Path.Combine(Root, "microsoft.ml", Metadata("MicrosoftMLVersion"),
        "lib", "netstandard2.0", "Microsoft.ML.Core.dll");

    public static string Sha256(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}

/// <summary>A fresh temporary folder per test, removed afterwards.</summary>
public abstract class TempFolderTest
{
    protected string Temp { get; private set; } = "";

    [SetUp]
    public void CreateTemp() => Temp = Directory.CreateTempSubdirectory("peft-build-tests-").FullName;

    [TearDown]
    public void DeleteTemp() => Directory.Delete(Temp, recursive: true);
}
