using System.Diagnostics;
using System.Reflection;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>An application without a libtorch package gets a message naming the package to add.</summary>
[TestFixture]
public class NoBackendTests
{
    [Test]
    public void MissingLibTorchPackageIsNamed()
    {
        var app = typeof(NoBackendTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "NoBackendApp").Value!;
        Assert.That(File.Exists(app), $"{app} was not built");
        // TorchSharp falls back to copying libtorch out of the NuGet cache; an empty cache and home stand for a
        // machine that never restored libtorch, whatever this one has.
        var consolidated = Path.Combine(Path.GetDirectoryName(app)!, "cpu");
        if (Directory.Exists(consolidated)) Directory.Delete(consolidated, recursive: true);
        var empty = Directory.CreateTempSubdirectory("peft-no-nuget-").FullName;
        var start = new ProcessStartInfo("dotnet", $"\"{app}\"") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["NUGET_PACKAGES"] = empty;
        start.Environment["HOME"] = empty;
        start.Environment["DOTNET_CLI_HOME"] = empty;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        TestContext.Out.WriteLine(output);
        Directory.Delete(empty, recursive: true);
        Assert.That(process.ExitCode, Is.EqualTo(3), output);
        // The package this platform needs, as the library names it (libtorch-cpu-linux-x64 here, another on Windows or macOS).
        Assert.That(output, Does.Contain(Microsoft.ML.Peft.Torch.TorchBackend.CpuPackageName).And.Contain("dotnet add package"));
    }
}
