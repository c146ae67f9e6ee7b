// Build-time tool of Microsoft.ML.Peft. Two commands:
//   publicize <input.dll> <output.dll>
//       Writes a copy of a reference assembly whose types, fields and non-virtual methods are public,
//       so the library can compile against ML.NET's internal model-format API. Only used at compile time.
//   fix-libstdcxx <libLibTorchSharp.so> [host libstdc++.so.6]
//       Marks the GLIBCXX_3.4.32 version requirement of libLibTorchSharp.so as weak (VER_FLG_WEAK) when the
//       host's libstdc++ lacks that version, so the library loads on Debian 12 / Ubuntu 22.04.
//       Idempotent; does nothing when the host already has the version.
using Peft.BuildTools;

return args switch
{
    ["publicize", var input, var output] => Publicizer.Run(input, output),
    ["fix-libstdcxx", var lib] => LibStdCxxFix.Run(lib, LibStdCxxFix.FindHostLibStdCxx()),
    ["fix-libstdcxx", var lib, var host] => LibStdCxxFix.Run(lib, host),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: Peft.BuildTools publicize <in.dll> <out.dll> | fix-libstdcxx <libLibTorchSharp.so> [host-libstdc++.so.6]");
    return 2;
}
