using System.Runtime.InteropServices;
using Microsoft.ML.Peft.Torch;
using TorchSharp;

namespace Microsoft.ML.Peft;

/// <summary>How libtorch's OpenMP threads wait for work between parallel regions.</summary>
public enum OpenMPWaitPolicy
{
    /// <summary>
    /// Threads spin for a while before they sleep (libgomp's default when <c>OMP_WAIT_POLICY</c> is not set): the
    /// fastest when the process has the cores to itself.
    /// </summary>
    Active,

    /// <summary>
    /// Threads sleep as soon as they are idle: much faster when another process (a second model, a web server, a test
    /// runner) needs the same cores, a little slower when nothing else runs.
    /// </summary>
    Passive,
}

/// <summary>
/// Process-wide settings of libtorch, the native library PEFT trains and scores with. They belong to the application
/// (its <c>Main</c> or its host's start-up), not to a trainer: libtorch has one thread pool per process, shared by every
/// model in it.
/// </summary>
public static class PeftRuntime
{
    private const string WaitPolicyVariable = "OMP_WAIT_POLICY";

    /// <summary>The number of threads libtorch uses inside one operation (its intra-op pool) in this process.</summary>
    public static int Threads
    {
        get
        {
            TorchBackend.EnsureAvailable();
            return torch.get_num_threads();
        }
    }

    /// <summary>
    /// Sets the number of threads libtorch uses inside one operation, for the whole process (libtorch's default is one per
    /// core). Fewer threads leave cores to other work: two processes on two cores each do better with one thread each.
    /// </summary>
    /// <param name="count">At least 1; at most 4 times <see cref="Environment.ProcessorCount"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is out of range.</exception>
    public static void SetThreads(int count)
    {
        int limit = 4 * Environment.ProcessorCount;
        if (count < 1 || count > limit)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"The libtorch thread count must be between 1 and {limit} (4 x the {Environment.ProcessorCount} processors).");
        TorchBackend.EnsureAvailable();
        torch.set_num_threads(count);
    }

    /// <summary>
    /// The OpenMP wait policy libtorch's threads use, as set in this process's environment (<c>OMP_WAIT_POLICY</c>);
    /// null when it is not set (libgomp then spins before sleeping, as <see cref="OpenMPWaitPolicy.Active"/> does).
    /// </summary>
    public static OpenMPWaitPolicy? WaitPolicy => ParsePolicy(NativeGetEnv(WaitPolicyVariable));

    /// <summary>
    /// Sets the OpenMP wait policy of libtorch's threads. OpenMP reads it once, when libtorch is loaded, so call this at
    /// the start of the application, before any PEFT trainer or model is created; or set <c>OMP_WAIT_POLICY</c> in the
    /// environment of the process instead (the only way for a process that has already loaded libtorch).
    /// </summary>
    /// <param name="policy">The policy.</param>
    /// <exception cref="InvalidOperationException">libtorch is already loaded with another policy, so the call would have no effect.</exception>
    public static void SetOpenMPWaitPolicy(OpenMPWaitPolicy policy)
    {
        if (WaitPolicy == policy) return;
        if (LibTorchLoaded())
            throw new InvalidOperationException(
                $"The OpenMP wait policy must be set before libtorch is loaded (before the first PEFT trainer, model or TorchSharp call); " +
                $"it is now {(WaitPolicy?.ToString() ?? "not set (active)")}. Call PeftRuntime.SetOpenMPWaitPolicy first thing in the application, " +
                $"or start the process with {WaitPolicyVariable}={policy.ToString().ToUpperInvariant()} in its environment.");
        var value = policy.ToString().ToUpperInvariant();
        // OpenMP reads the native environment; Environment.SetEnvironmentVariable changes only .NET's copy on Unix.
        if (!OperatingSystem.IsWindows() && setenv(WaitPolicyVariable, value, 1) != 0)
            throw new InvalidOperationException($"Setting {WaitPolicyVariable} failed (errno {Marshal.GetLastPInvokeError()}).");
        Environment.SetEnvironmentVariable(WaitPolicyVariable, value);
    }

    /// <summary>Parses a wait policy as OpenMP does (case-insensitive <c>active</c> or <c>passive</c>); null otherwise.</summary>
    internal static OpenMPWaitPolicy? ParsePolicy(string? value) => value?.Trim().ToUpperInvariant() switch
    {
        "ACTIVE" => OpenMPWaitPolicy.Active,
        "PASSIVE" => OpenMPWaitPolicy.Passive,
        _ => null,
    };

    /// <summary>Whether libtorch's CPU library is mapped into this process (Linux: /proc/self/maps; elsewhere: assumed loaded once TorchSharp is).</summary>
    internal static bool LibTorchLoaded()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                foreach (var line in File.ReadLines("/proc/self/maps"))
                    if (line.Contains("libtorch_cpu", StringComparison.Ordinal) || line.Contains("libgomp", StringComparison.Ordinal)) return true;
                return false;
            }
            catch (IOException)
            {
            }
        }
        return AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name == "TorchSharp");
    }

    private static string? NativeGetEnv(string name)
    {
        if (OperatingSystem.IsWindows()) return Environment.GetEnvironmentVariable(name);
        var pointer = getenv(name);
        return pointer == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(pointer);
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [DllImport("libc")]
    private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);
}
