namespace Microsoft.ML.Peft.Cli;

/// <summary>Exit codes of mlnet-peft: scripts can tell a wrong command line from bad data.</summary>
internal static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Success = 0;

    /// <summary>The data, a model or a file is missing or not valid (the message names it).</summary>
    public const int DataError = 1;

    /// <summary>The command line is wrong: an unknown or missing option, a value out of range, an output path that cannot be written.</summary>
    public const int UsageError = 2;

    /// <summary>An unexpected failure (a bug): the stack trace is printed.</summary>
    public const int InternalError = 70;

    /// <summary>Cancelled with Ctrl+C (or SIGTERM): nothing was left half-written.</summary>
    public const int Cancelled = 130;
}

/// <summary>A wrong command line (exit code <see cref="ExitCodes.UsageError"/>), as opposed to bad data.</summary>
internal sealed class UsageException : ArgumentException
{
    public UsageException(string message) : base(message) { }
}

/// <summary>Writing output files safely: paths checked before the work starts, files written to a temporary name and moved into place.</summary>
internal static class OutputFiles
{
    /// <summary>Checks that <paramref name="path"/> can be written (its folder created, a file written there) and returns its full path.</summary>
    public static string Check(string path, string option)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new UsageException($"The output '{path}' ({option}) is a directory; give a file name.");
        var folder = Path.GetDirectoryName(full)!;
        try
        {
            Directory.CreateDirectory(folder);
            var probe = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.probe");
            File.WriteAllBytes(probe, Array.Empty<byte>());
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"The output '{path}' ({option}) cannot be written: {e.Message}");
        }
        return full;
    }

    /// <summary>Writes through <paramref name="write"/> to a temporary file beside <paramref name="path"/>, then moves it into place; nothing is left behind on failure or cancellation.</summary>
    public static void WriteAtomically(string path, Action<string> write)
    {
        var temporary = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            write(temporary);
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temporary)) File.Delete(temporary);
        }
    }
}
