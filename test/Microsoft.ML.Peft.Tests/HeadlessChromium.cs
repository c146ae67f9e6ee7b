using System.Diagnostics;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Opens a page in Debian's headless chromium (/usr/bin/chromium): takes a screenshot and collects the messages the page
/// wrote to its console (chromium logs them to stderr as <c>INFO:CONSOLE...</c> lines with <c>--enable-logging=stderr</c>).
/// A test that needs it calls <see cref="Require"/> first: without chromium the test is skipped, unless
/// PEFT_REQUIRE_BROWSER=1 (set by .ci/run, which installs chromium), which makes it fail instead.
/// </summary>
internal static class HeadlessChromium
{
    public const string Executable = "/usr/bin/chromium";
    public const string RequireVariable = "PEFT_REQUIRE_BROWSER";

    private static readonly Regex ConsoleLine = new(@":CONSOLE[(:\]]|Uncaught", RegexOptions.Compiled);

    /// <summary>Skips the test (Assert.Ignore) when chromium is missing; fails it instead when PEFT_REQUIRE_BROWSER=1.</summary>
    public static void Require()
    {
        if (File.Exists(Executable)) return;
        var message = $"{Executable} does not exist. Install Debian's package: sudo apt-get install -y chromium.";
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1") Assert.Fail($"{RequireVariable}=1: {message}");
        Assert.Ignore(message);
    }

    /// <summary>
    /// Loads <paramref name="page"/> in a <paramref name="width"/> x <paramref name="height"/> window at device scale 1,
    /// writes its screenshot to <paramref name="screenshot"/> and returns the console lines (errors, warnings, logs and
    /// uncaught exceptions). Fails the test when chromium fails or takes longer than <paramref name="timeout"/>.
    /// </summary>
    public static IReadOnlyList<string> Screenshot(string page, string screenshot, int width, int height, TimeSpan timeout)
    {
        var profile = Path.Combine(Path.GetDirectoryName(screenshot)!, "chromium-profile-" + Guid.NewGuid().ToString("N"));
        var start = new ProcessStartInfo(Executable) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[]
                 {
                     "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars", "--mute-audio",
                     "--force-device-scale-factor=1", "--enable-logging=stderr", "--v=0", $"--user-data-dir={profile}",
                     $"--window-size={width},{height}", $"--screenshot={screenshot}", new Uri(page).AbsoluteUri,
                 })
            start.ArgumentList.Add(argument);
        try
        {
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"chromium did not take the screenshot of {page} within {timeout.TotalSeconds:0} s.");
            }
            process.WaitForExit();
            var log = stderr.Result;
            Assert.That(process.ExitCode, Is.Zero, $"chromium failed on {page}:\n{log}\n{stdout.Result}");
            Assert.That(File.Exists(screenshot), $"chromium wrote no screenshot of {page}:\n{log}");
            return log.Split('\n').Where(line => ConsoleLine.IsMatch(line)).Select(line => line.Trim()).ToList();
        }
        finally
        {
            if (Directory.Exists(profile)) Directory.Delete(profile, recursive: true);
        }
    }
}
