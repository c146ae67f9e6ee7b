using System.Diagnostics;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Runs the independent Python references (test/Reference/*.py) with Debian's /usr/bin/python3. A test that needs one
/// calls <see cref="Require"/> first: without the interpreter or its modules the test is skipped, unless
/// PEFT_REQUIRE_TORCH_REFERENCE=1 (set by .ci/run), which makes it fail instead.
/// </summary>
internal static class PythonReference
{
    public const string Python = "/usr/bin/python3";
    public const string RequireVariable = "PEFT_REQUIRE_TORCH_REFERENCE";

    /// <summary>The folder of the reference scripts: test/Reference.</summary>
    public static string ScriptFolder => Path.Combine(TestData.RepositoryRoot, "test", "Reference");

    /// <summary>
    /// Skips the test (Assert.Ignore) when <see cref="Python"/> is missing or cannot import <paramref name="modules"/>;
    /// fails it instead when PEFT_REQUIRE_TORCH_REFERENCE=1. <paramref name="install"/> names the Debian packages to install.
    /// </summary>
    public static void Require(string install, params string[] modules)
    {
        string? problem = null;
        if (!File.Exists(Python)) problem = $"{Python} does not exist";
        else
        {
            var (exit, _, stderr) = Run(TimeSpan.FromMinutes(2), "-c", "import " + string.Join(", ", modules));
            if (exit != 0) problem = $"{Python} cannot import {string.Join(", ", modules)}: {stderr.Trim()}";
        }
        if (problem is null) return;
        var message = $"{problem}. Install Debian's packages: sudo apt-get install -y {install}.";
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1") Assert.Fail($"{RequireVariable}=1: {message}");
        Assert.Ignore(message);
    }

    /// <summary>Runs <see cref="Python"/> with the arguments; fails the test when it runs longer than <paramref name="timeout"/>.</summary>
    public static (int ExitCode, string StdOut, string StdErr) Run(TimeSpan timeout, params string[] arguments)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"python3 {string.Join(' ', arguments)} did not finish within {timeout.TotalMinutes:G} minutes.");
        }
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
