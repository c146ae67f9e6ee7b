using System.Reflection;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// What a failed <c>LoadPeft</c> rethrows. ML.NET creates each transformer's loader through reflection and wraps what it
/// throws (a <see cref="TargetInvocationException"/>, inside a chain an <see cref="InvalidOperationException"/> "Error
/// during class instantiation" around that); its own checks of the zip's framing (<c>Model.key</c> headers, version
/// stamps, string tables, transformer counts, loader assembly names) throw <see cref="FormatException"/>,
/// <see cref="EndOfStreamException"/>, <see cref="OverflowException"/>, an <see cref="InvalidOperationException"/> from its
/// <c>Contracts</c>, or whatever <see cref="Assembly.Load(string)"/> throws for a damaged assembly name. The wrappers are
/// removed, and framing damage becomes the <see cref="InvalidDataException"/> that every other damaged file gives.
/// </summary>
internal static class LoadFailure
{
    /// <summary>The exception inside ML.NET's reflection wrappers.</summary>
    public static Exception Unwrap(Exception e)
    {
        while (e.InnerException is { } inner && (e is TargetInvocationException || (e is InvalidOperationException && inner is TargetInvocationException)))
            e = inner;
        return e;
    }

    /// <summary>
    /// Whether <paramref name="e"/> is ML.NET's (or the runtime's) refusal of a damaged model zip: a decoding check of
    /// ML.NET's (a <see cref="FormatException"/> thrown by ML.NET's code, also when a loader here asked it, as in
    /// <c>CheckAtModel</c>), or one of the exceptions its framing code throws, raised without passing through this
    /// library's loaders (they throw <see cref="InvalidDataException"/> themselves; anything else from them is a bug to be
    /// seen, not hidden).
    /// </summary>
    public static bool IsFramingDamage(Exception e)
    {
        if (e is FormatException && e.TargetSite?.DeclaringType?.Assembly is { } thrower && thrower != typeof(LoadFailure).Assembly
            && thrower.GetName().Name!.StartsWith("Microsoft.ML", StringComparison.Ordinal)) return true;
        return e is FormatException or EndOfStreamException or FileLoadException or BadImageFormatException or OverflowException
                or InvalidOperationException or ArgumentException
            && !new System.Diagnostics.StackTrace(e).GetFrames().Any(f => f.GetMethod()?.DeclaringType is { } type
                && type.Assembly == typeof(LoadFailure).Assembly && type != typeof(PeftModelOperations));
    }
}
