using System.Collections.Concurrent;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>Temporary files and folders that helpers create for tests which may not delete them: removed once every test has run.</summary>
[SetUpFixture]
public sealed class TestTemp
{
    private static readonly ConcurrentBag<string> Paths = new();

    /// <summary>Deletes <paramref name="path"/> (a file or a folder) after the test run; returns it.</summary>
    internal static string Track(string path)
    {
        Paths.Add(path);
        return path;
    }

    /// <summary>Deletes what was tracked and still exists.</summary>
    [OneTimeTearDown]
    public void DeleteTracked()
    {
        while (Paths.TryTake(out var path))
        {
            try
            {
                if (File.Exists(path)) File.Delete(path);
                else if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            }
            catch (IOException)
            {
                // Still open (a model a finished test left loaded): the operating system's temporary folder keeps it.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }
}
