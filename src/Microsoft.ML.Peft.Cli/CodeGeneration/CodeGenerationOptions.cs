using System.CommandLine;
using Spectre.Console;

namespace Microsoft.ML.Peft.Cli.CodeGeneration;

/// <summary><c>--generate-code DIR</c> and <c>--package-source FEED</c>, for every command that trains and saves a model.</summary>
internal sealed class CodeGenerationOptions
{
    private CodeGenerationOptions(Option<string> generateCode, Option<string> packageSource)
    {
        GenerateCode = generateCode;
        PackageSource = packageSource;
    }

    /// <summary><c>--generate-code</c>: the folder of the consumption project.</summary>
    public Option<string> GenerateCode { get; }

    /// <summary><c>--package-source</c>: a NuGet source for Microsoft.ML.Peft, written to the project's nuget.config.</summary>
    public Option<string> PackageSource { get; }

    /// <summary>Both options.</summary>
    public IEnumerable<Option> All => new Option[] { GenerateCode, PackageSource };

    public static CodeGenerationOptions Create() => new(
        new Option<string>(CodeGenerator.Option)
        {
            Description = "Also write a C# console project into this folder (new, empty, or generated before) that loads the saved model and predicts from the command line (as Model Builder's consumption project).",
        },
        new Option<string>(CodeGenerator.SourceOption)
        {
            Description = $"With {CodeGenerator.Option}: a NuGet source (folder or URL) holding the Microsoft.ML.Peft package (dotnet pack src/Microsoft.ML.Peft), written to the project's nuget.config beside your own sources.",
        });

    /// <summary>Adds both options to <paramref name="command"/>.</summary>
    public void AddTo(System.CommandLine.Command command)
    {
        foreach (var option in All) command.Options.Add(option);
    }

    /// <summary>Checks the options before training (<see cref="CodeGenerator.Check"/>); null when no code is asked for.</summary>
    public CodeRequest? Check(ParseResult parse, string command)
    {
        var directory = parse.GetValue(GenerateCode);
        var source = parse.GetValue(PackageSource);
        if (directory is null)
        {
            if (source is not null) throw new UsageException($"{CodeGenerator.SourceOption} applies with {CodeGenerator.Option} only.");
            return null;
        }
        return new CodeRequest(CodeGenerator.Check(directory), CodeGenerator.CheckPackageSource(source), command);
    }
}

/// <summary>A consumption project to write once the model is saved: checked folder, package source, the training command.</summary>
internal sealed record CodeRequest(string Directory, string? PackageSource, string Command)
{
    /// <summary>Writes the project for the saved model and says where on <paramref name="console"/>.</summary>
    public string Write(string modelPath, IAnsiConsole console)
    {
        var project = CodeGenerator.Write(Directory, modelPath, Command, PackageSource);
        console.MarkupLine($"Consumption project written to [green]{Markup.Escape(project)}[/] (dotnet run --project {Markup.Escape(Directory)} -- ...; see its README.md)");
        return project;
    }
}
