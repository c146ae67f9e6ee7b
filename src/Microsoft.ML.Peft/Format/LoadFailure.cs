using System.Reflection;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// What a failed <c>LoadPeft</c> rethrows. ML.NET creates each transformer's loader through reflection and wraps what it
/// throws (a <see cref="TargetInvocationException"/>, inside a chain an <see cref="InvalidOperationException"/> "Error
/// during class instantiation" around that); its own checks of the zip's framing (<c>Model.key</c> headers, version
/// stamps, string tables, loader assembly names) throw <see cref="FormatException"/>, <see cref="EndOfStreamException"/>,
/// <see cref="FileLoadException"/>, an <see cref="InvalidOperationException"/> from its <c>Contracts</c>, or whatever
/// <see cref="Assembly.Load(string)"/> throws for a damaged assembly name. The wrappers are
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

    /// <summary>Whether <paramref name="e"/> is ML.NET's (or the stream reader's) refusal of a damaged model zip.</summary>
    public static bool IsFramingDamage(Exception e) =>
        e is FormatException or EndOfStreamException or FileLoadException
        || (e is InvalidOperationException && e.TargetSite?.DeclaringType?.FullName == "Microsoft.ML.Runtime.Contracts")
        // A loader assembly name that is not a name at all (a damaged header): Assembly.Load refuses to parse it.
        || (e is ArgumentException or BadImageFormatException && FromAssemblyLoad(e));

    private static bool FromAssemblyLoad(Exception e) =>
        new System.Diagnostics.StackTrace(e).GetFrames().Any(f => f.GetMethod() is { Name: "Load" } m && m.DeclaringType == typeof(Assembly));
}
