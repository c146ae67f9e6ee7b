using System.Runtime.CompilerServices;

// ML.NET's model-format API is internal; the build compiles against publicized copies and the runtime honours these.
[assembly: IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: IgnoresAccessChecksTo("Microsoft.ML.Data")]
[assembly: InternalsVisibleTo("Microsoft.ML.Peft.Tests")]
[assembly: InternalsVisibleTo("Peft.Perf")]
[assembly: InternalsVisibleTo("Peft.Bench")]

namespace System.Runtime.CompilerServices
{
    /// <summary>Tells the .NET runtime to skip access checks from this assembly into the named one.</summary>
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute : Attribute
    {
        /// <summary>Creates the attribute for the named assembly.</summary>
        public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

        /// <summary>The assembly whose access checks are skipped.</summary>
        public string AssemblyName { get; }
    }
}
