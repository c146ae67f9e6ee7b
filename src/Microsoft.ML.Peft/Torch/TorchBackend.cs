using System.Runtime.InteropServices;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Peft.Torch;

/// <summary>Checks that TorchSharp's native backend can be loaded, with a message that says what to do when not.</summary>
internal static class TorchBackend
{
    /// <summary>The libtorch package an application adds for this operating system.</summary>
    public static string CpuPackageName =>
        OperatingSystem.IsWindows() ? "libtorch-cpu-win-x64"
        : OperatingSystem.IsMacOS() ? "libtorch-cpu-osx-arm64"
        : RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "libtorch-cpu-linux-arm64" : "libtorch-cpu-linux-x64";

    /// <summary>Loads libtorch (once) or throws an <see cref="InvalidOperationException"/> naming the package to add.</summary>
    public static void EnsureAvailable()
    {
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException or EntryPointNotFoundException or InvalidOperationException)
        {
            var detail = Flatten(e);
            var hint = detail.Contains("GLIBCXX", StringComparison.Ordinal)
                ? " The host's libstdc++ is older than the one TorchSharp 0.107 was built with (GLIBCXX_3.4.32): build the application with the Microsoft.ML.Peft build targets (they patch libLibTorchSharp.so in the output folder) or install a newer libstdc++."
                : "";
            throw new InvalidOperationException(
                $"TorchSharp's native libtorch backend could not be loaded. Add a libtorch package to the application, for example " +
                $"'dotnet add package {CpuPackageName} --version 2.10.0' (CPU) or 'TorchSharp-cpu'; for CUDA add the libtorch-cuda package of your platform.{hint} Detail: {detail}", e);
        }
    }

    /// <summary>Parses a device name (<c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>) and checks that it is usable.</summary>
    public static torch.Device ParseDevice(string? name)
    {
        var text = string.IsNullOrWhiteSpace(name) ? "cpu" : name.Trim().ToLowerInvariant();
        if (!(text == "cpu" || text == "cuda" || text.StartsWith("cuda:", StringComparison.Ordinal)))
            throw new ArgumentException($"Device '{name}' is not supported: use 'cpu', 'cuda' or 'cuda:N'.", "Device");
        EnsureAvailable();
        if (text.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
            throw new ArgumentException($"Device '{name}' was requested but CUDA is not available: reference a libtorch-cuda package and run on a machine with an NVIDIA GPU, or use 'cpu'.", "Device");
        return new torch.Device(text);
    }

    /// <summary>
    /// The device a loaded model runs on: the load option's (default <c>cpu</c>); when it asks for CUDA and CUDA is not
    /// available, the CPU, with a message on <paramref name="ch"/>.
    /// </summary>
    public static torch.Device LoadDevice(string? requested, IChannel ch)
    {
        var text = string.IsNullOrWhiteSpace(requested) ? "cpu" : requested.Trim().ToLowerInvariant();
        EnsureAvailable();
        if (text.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
        {
            ch.Warning($"Device '{requested}' was asked for, but CUDA is not available here: the model runs on the CPU.");
            return torch.CPU;
        }
        return ParseDevice(text);
    }

    private static string Flatten(Exception e)
    {
        var parts = new List<string>();
        for (var current = e; current is not null; current = current.InnerException) parts.Add(current.Message);
        return string.Join(" -> ", parts);
    }
}
