using System.Text.Json.Nodes;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.ML.Data;
using Microsoft.ML.Peft.Cli.CodeGeneration;
using Microsoft.ML.Transforms.Image;
using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// The CLI's generated consumption code (<c>--generate-code</c>) without building a project: each task's columns become the
/// expected C# properties, and the generated Program.cs compiles (in memory, against the assemblies the tests load).
/// </summary>
[TestFixture]
public class CodeGenerationTests
{
    private static readonly TextDataViewType Text = TextDataViewType.Instance;
    private static readonly NumberDataViewType Single = NumberDataViewType.Single;

    [Test]
    public void TextClassificationPairReadsBothSentencesKeepsTheLabelAndPrintsScoresByClass()
    {
        // As the CLI's text-classification on pairs saves it: MapValueToKey(Label) -> classifier -> MapKeyToValue(PredictedLabel).
        var input = Schema(("Label", Text, null), ("Sentence1", Text, null), ("Sentence2", Text, null));
        var output = Schema(("Label", new KeyDataViewType(typeof(uint), 2), KeyValues("negative", "positive")), ("Sentence1", Text, null), ("Sentence2", Text, null),
            ("Score", new VectorDataViewType(Single, 2), SlotNames("negative", "positive")), ("PredictedLabel", Text, null));
        var model = ConsumptionModel.FromSchemas(input, output, Set("Label", "Sentence1", "Sentence2"), Set("Label"));

        Assert.That(model.Inputs.Select(c => (c.ColumnName, c.CSharpType, c.IsLabel)),
            Is.EqualTo(new[] { ("Label", "string", true), ("Sentence1", "string", false), ("Sentence2", "string", false) }));
        Assert.That(model.Outputs.Select(c => (c.ColumnName, c.CSharpType)), Is.EqualTo(new[] { ("PredictedLabel", "string"), ("Score", "float[]") }),
            "the label (now a key) is not an output; PredictedLabel comes first");
        var program = Project(model, "text-classification").ProgramFile();
        Assert.That(program, Does.Contain("""
                [ColumnName("Label")]
                public string Label { get; set; } = "";
            """));
        Assert.That(program, Does.Contain("""
                [ColumnName("Score")]
                [VectorType(2)]
                public float[] Score { get; set; } = [];
            """));
        Assert.That(program, Does.Contain("private static readonly string[] InputNames = [\"Sentence1\", \"Sentence2\"];"), "the label is not asked for");
        Assert.That(program, Does.Contain("if (string.Equals(name, \"Sentence1\", StringComparison.OrdinalIgnoreCase)) input.Sentence1 = args[i];"));
        Assert.That(program, Does.Contain("else if (string.Equals(name, \"Sentence2\", StringComparison.OrdinalIgnoreCase)) input.Sentence2 = args[i];"));
        Assert.That(program, Does.Contain("PrintScores(\"Score\", output.Score, schema);"));
        Assert.That(program, Does.Contain("ITransformer model = mlContext.Model.Load(ModelPath, out _);"));
        AssertCompiles(program);
    }

    [Test]
    public void NamedEntityRecognitionReadsWordsAndPrintsTagNames()
    {
        // The CLI saves the tagger alone, on the schema with the label already keyed: the tags are not needed to predict.
        var tags = new KeyDataViewType(typeof(uint), 3);
        var input = Schema(("Sentence", new VectorDataViewType(Text), null), ("Label", new VectorDataViewType(tags), KeyValues("B-PER", "I-PER", "O")));
        var output = Schema(("Sentence", new VectorDataViewType(Text), null), ("Label", new VectorDataViewType(tags), KeyValues("B-PER", "I-PER", "O")),
            ("PredictedLabel", new VectorDataViewType(tags), KeyValues("B-PER", "I-PER", "O")));
        var model = ConsumptionModel.FromSchemas(input, output, Set("Sentence"), Set());

        Assert.That(model.Inputs.Select(c => (c.ColumnName, c.CSharpType)), Is.EqualTo(new[] { ("Sentence", "string[]") }));
        Assert.That(model.Outputs.Single().CSharpType, Is.EqualTo("uint[]"));
        Assert.That(model.Outputs.Single().HasTextKeyValues, Is.True);
        var program = Project(model, "ner").ProgramFile();
        Assert.That(program, Does.Contain("""
                [ColumnName("Sentence")]
                public string[] Sentence { get; set; } = [];
            """), "a vector of any length has no VectorType size");
        Assert.That(program, Does.Contain("input.Sentence = args[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);"));
        Assert.That(program, Does.Contain("Console.WriteLine($\"PredictedLabel: {string.Join(' ', output.PredictedLabel.Select(k => KeyName(KeyValues(schema, \"PredictedLabel\"), k)))}\");"));
        AssertCompiles(program);
    }

    [Test]
    public void SentenceSimilarityAndRecommendationPrintOneScore()
    {
        var similarity = ConsumptionModel.FromSchemas(
            Schema(("Label", Single, null), ("Sentence1", Text, null), ("Sentence2", Text, null)),
            Schema(("Label", Single, null), ("Sentence1", Text, null), ("Sentence2", Text, null), ("Score", Single, null)),
            Set("Sentence1", "Sentence2"), Set());
        Assert.That(similarity.Inputs.Select(c => c.ColumnName), Is.EqualTo(new[] { "Sentence1", "Sentence2" }), "the score label is not needed to predict");
        Assert.That(similarity.Outputs.Select(c => (c.ColumnName, c.CSharpType)), Is.EqualTo(new[] { ("Score", "float") }));
        var program = Project(similarity, "sentence-similarity").ProgramFile();
        Assert.That(program, Does.Contain("Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $\"Score: {output.Score}\"));"));
        AssertCompiles(program);

        var recommender = ConsumptionModel.FromSchemas(
            Schema(("User", Text, null), ("Item", Text, null), ("Label", Single, null)),
            Schema(("User", Text, null), ("Item", Text, null), ("Label", Single, null), ("Score", Single, null)),
            Set("User", "Item"), Set());
        var withBase = new ConsumptionProject
        {
            Name = "Recommender", Command = "recommendation-adapt", Model = recommender, TargetFramework = "net10.0", Packages = Project(recommender, "x").Packages,
            BaseModel = new BaseModelFile("/data/base.zip", "base-model.zip", "The base recommender, copied beside the program."),
        };
        program = withBase.ProgramFile();
        Assert.That(program, Does.Contain("public static readonly string BaseModelPath = Path.Combine(AppContext.BaseDirectory, \"base-model.zip\");"));
        Assert.That(program, Does.Contain("ITransformer model = mlContext.Model.LoadWithBaseModel(ModelPath, BaseModelPath, out _);"));
        Assert.That(withBase.ProjectFile(), Does.Contain("<None Include=\"base-model.zip\" CopyToOutputDirectory=\"PreserveNewest\" />"));
        AssertCompiles(program);
    }

    [Test]
    public void ImagesAreMLImagesWithTheirSize()
    {
        var input = Schema(("Image", new ImageDataViewType(224, 224), null), ("Label", Text, null));
        var output = Schema(("Image", new ImageDataViewType(224, 224), null), ("Label", new KeyDataViewType(typeof(uint), 2), KeyValues("cat", "dog")),
            ("Score", new VectorDataViewType(Single, 2), SlotNames("cat", "dog")), ("PredictedLabel", Text, null));
        var model = ConsumptionModel.FromSchemas(input, output, Set("Image", "Label"), Set("Label"));
        var program = Project(model, "image-classification").ProgramFile();
        Assert.That(program, Does.Contain("""
                [ColumnName("Image")]
                [ImageType(224, 224)]
                public MLImage? Image { get; set; }
            """));
        Assert.That(program, Does.Contain("using Microsoft.ML.Transforms.Image;"));
        Assert.That(program, Does.Contain("input.Image = MLImage.CreateFromFile(args[i]);"));
        AssertCompiles(program);
    }

    [Test]
    public void KeysNumbersBytesAndFixedSizeVectorsMapToTheirCSharpTypes()
    {
        var input = Schema(("Category", new KeyDataViewType(typeof(uint), 10), null), ("Features", new VectorDataViewType(Single, 4), null),
            ("Bytes", new VectorDataViewType(NumberDataViewType.Byte), null), ("Flag", BooleanDataViewType.Instance, null), ("Count", NumberDataViewType.Int64, null));
        var output = Schema(("Category", new KeyDataViewType(typeof(uint), 10), null), ("Value", NumberDataViewType.Double, null),
            ("Cluster", new KeyDataViewType(typeof(uint), 2), KeyValues("small", "large")), ("Values", new VectorDataViewType(NumberDataViewType.Double, 3), null),
            ("Words", new VectorDataViewType(Text), null));
        var model = ConsumptionModel.FromSchemas(input, output, Set("Category", "Features", "Bytes", "Flag", "Count"), Set());
        Assert.That(model.Inputs.Select(c => c.CSharpType), Is.EqualTo(new[] { "uint", "float[]", "byte[]", "bool", "long" }));
        Assert.That(model.Outputs.Select(c => c.CSharpType), Is.EqualTo(new[] { "double", "uint", "double[]", "string[]" }));
        var program = Project(model, "custom").ProgramFile();
        Assert.That(program, Does.Contain("""
                [ColumnName("Category")]
                [KeyType(10)]
                public uint Category { get; set; }
            """));
        Assert.That(program, Does.Contain("""
                [ColumnName("Features")]
                [VectorType(4)]
                public float[] Features { get; set; } = [];
            """));
        Assert.That(program, Does.Contain("input.Category = uint.Parse(args[i], CultureInfo.InvariantCulture);"));
        Assert.That(program, Does.Contain("input.Features = args[i].Split(',').Select(v => float.Parse(v.Trim(), CultureInfo.InvariantCulture)).ToArray();"));
        Assert.That(program, Does.Contain("input.Bytes = File.ReadAllBytes(args[i]);"));
        Assert.That(program, Does.Contain("input.Flag = bool.Parse(args[i]);"));
        Assert.That(program, Does.Contain("input.Count = long.Parse(args[i], CultureInfo.InvariantCulture);"));
        Assert.That(program, Does.Contain("Console.WriteLine($\"Cluster: {KeyName(KeyValues(schema, \"Cluster\"), output.Cluster)}\");"));
        Assert.That(program, Does.Contain("Console.WriteLine($\"Values: {string.Join(\", \", output.Values.Select(x => x.ToString(CultureInfo.InvariantCulture)))}\");"));
        Assert.That(program, Does.Contain("Console.WriteLine($\"Words: {string.Join(\", \", output.Words.Select(x => x.ToString()))}\");"));
        AssertCompiles(program);
    }

    [Test]
    public void ColumnNamesBecomeValidDistinctPropertiesAndUnmappableTypesAreNamed()
    {
        var input = Schema(("my text", Text, null), ("my_text", Text, null), ("class", Text, null), ("1st \"quoted\"", Text, null));
        var output = Schema(("my text", Text, null), ("my_text", Text, null), ("class", Text, null), ("1st \"quoted\"", Text, null), ("Score", Single, null));
        var model = ConsumptionModel.FromSchemas(input, output, Set("my text", "my_text", "class", "1st \"quoted\""), Set());
        Assert.That(model.Inputs.Select(c => c.Property), Is.EqualTo(new[] { "my_text", "my_text_2", "@class", "_1st__quoted_" }));
        var program = Project(model, "custom").ProgramFile();
        Assert.That(program, Does.Contain("[ColumnName(\"1st \\\"quoted\\\"\")]"));
        AssertCompiles(program);

        Assert.That(CSharpTypes.Literal("a\"b\\c\nd\u0001"), Is.EqualTo("\"a\\\"b\\\\c\\nd\\u0001\""));
        var rowId = Schema(("Id", RowIdDataViewType.Instance, null), ("Text", Text, null));
        var e = Assert.Throws<NotSupportedException>(() => ConsumptionModel.FromSchemas(rowId, Schema(("Id", RowIdDataViewType.Instance, null), ("Text", Text, null), ("Score", Single, null)), Set("Id", "Text"), Set()));
        Assert.That(e!.Message, Does.Contain("'Id'"));
        Assert.Throws<InvalidOperationException>(() => ConsumptionModel.FromSchemas(input, input, Set("my text"), Set()), "a model that adds no column");
    }

    [Test]
    public void ColumnsOfAFittedPipelineAreItsRequiredInputsAndNewOutputs()
    {
        // MapValueToKey(Label) -> Concatenate(Features <- Num) -> MapKeyToValue(PredictedLabel <- Label): Unused is read by nothing.
        var mlContext = new MLContext(1);
        var data = mlContext.Data.LoadFromEnumerable(new[] { new PipelineRow { Label = "a", Num = 1, Unused = 2 }, new PipelineRow { Label = "b", Num = 3, Unused = 4 } });
        var pipeline = mlContext.Transforms.Conversion.MapValueToKey("Label")
            .Append(mlContext.Transforms.Concatenate("Features", "Num"))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel", "Label"));
        var model = ConsumptionModel.FromModel(pipeline.Fit(data), data.Schema);
        Assert.That(model.Inputs.Select(c => (c.ColumnName, c.IsLabel)), Is.EqualTo(new[] { ("Label", true), ("Num", false) }));
        Assert.That(model.Outputs.Select(c => (c.ColumnName, c.CSharpType)), Is.EqualTo(new[] { ("PredictedLabel", "string"), ("Features", "float[]") }));
        AssertCompiles(Project(model, "custom").ProgramFile());
    }

    [Test]
    public void SavedBaseModelsAreReadFromTheMetadata()
    {
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"text-classification","base_model":{"Kind":0,"Name":"all-MiniLM-L6-v2","Path":null},"base_model_embedded":false}""")),
            Is.EqualTo(new SavedBaseModel(SavedBaseKind.MiniLMPackage, "all-MiniLM-L6-v2", null)));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"ner","base_model":{"Kind":1,"Name":"model.onnx","Path":"/m/model.onnx"},"base_model_embedded":false}""")),
            Is.EqualTo(new SavedBaseModel(SavedBaseKind.File, "model.onnx", "/m/model.onnx")));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"ner","base_model":{"Kind":2,"Name":"bert","Path":"/m/bert"},"base_model_embedded":true}"""))!.Kind,
            Is.EqualTo(SavedBaseKind.Embedded));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"image-classification","base_model":{"Kind":0,"Name":"ResNet-18","Path":"/app/ResNet18.onnx"},"base_model_embedded":false,"task_settings":{"base_model_kind":0}}"""))!.Kind,
            Is.EqualTo(SavedBaseKind.ResNet18Package));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"image-classification","base_model":{"Kind":0,"Name":"r50","Path":"/m/r50.safetensors"},"base_model_embedded":false,"task_settings":{"base_model_kind":2}}""")),
            Is.EqualTo(new SavedBaseModel(SavedBaseKind.File, "r50", "/m/r50.safetensors")));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"matrix-factorization","adaptation":{"method":"Lora","base_path":"/m/base.zip"}}""")),
            Is.EqualTo(new SavedBaseModel(SavedBaseKind.Recommender, "base.zip", "/m/base.zip")));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"matrix-factorization","adaptation":{"method":"Lora"}}"""))!.Kind, Is.EqualTo(SavedBaseKind.Embedded));
        Assert.That(SavedBaseModel.Parse(Json("""{"task":"matrix-factorization","user_column":"User"}""")), Is.Null, "a recommender trained from scratch has no base");

        // Both formats' real files: version 2 (a length-prefixed entry) and version 1 (a string, Pascal-case keys); both embed their base.
        foreach (var version in new[] { "format-v1", "format-v2" })
        {
            var saved = SavedBaseModel.Read(Path.Combine(TestData.RepositoryRoot, "test", "Microsoft.ML.Peft.Tests", "Assets", version, "tiny-classifier.zip"));
            Assert.That(saved.Select(s => s.Kind), Is.EqualTo(new[] { SavedBaseKind.Embedded }), version);
        }
    }

    [Test]
    public void ProjectFileReferencesThePackagesAndNuGetConfigOnlyWithASource()
    {
        var model = ConsumptionModel.FromSchemas(Schema(("Text", Text, null)), Schema(("Text", Text, null), ("Score", Single, null)), Set("Text"), Set());
        var project = Project(model, "text-classification");
        var csproj = project.ProjectFile();
        Assert.That(csproj, Does.StartWith("<Project Sdk=\"Microsoft.NET.Sdk\">\n  <!-- Generated by mlnet-peft text-classification:").Or.StartWith("<Project Sdk=\"Microsoft.NET.Sdk\">\r\n"));
        Assert.That(csproj, Does.Contain("<PackageReference Include=\"Microsoft.ML.Peft\" Version=\"1.2.3\" />"));
        Assert.That(csproj, Does.Contain("<PackageReference Include=\"libtorch-cpu-linux-x64\" Version=\"2.10.0\" />"));
        Assert.That(csproj, Does.Contain("<TargetFramework>net10.0</TargetFramework>"));
        Assert.That(csproj, Does.Contain("<None Include=\"model.zip\" CopyToOutputDirectory=\"PreserveNewest\" />"));
        Assert.That(project.Files().Keys, Is.EquivalentTo(new[] { "Demo.App.csproj", "Program.cs", "README.md" }));
        var withSource = new ConsumptionProject { Name = "Demo.App", Command = "x", Model = model, TargetFramework = "net10.0", Packages = project.Packages, PackageSource = "/feeds/a&b" };
        Assert.That(withSource.Files()["nuget.config"], Does.Contain("<add key=\"Microsoft.ML.Peft\" value=\"/feeds/a&amp;b\" />"));
        Assert.That(withSource.Files()["nuget.config"], Does.Not.Contain("<clear"), "the user's own sources still apply");
    }

    private sealed class PipelineRow
    {
        public string Label { get; set; } = "";
        public float Num { get; set; }
        public float Unused { get; set; }
    }

    private static ConsumptionProject Project(ConsumptionModel model, string command) => new()
    {
        Name = "Demo.App",
        Command = command,
        Model = model,
        TargetFramework = "net10.0",
        Packages = new[] { new ProjectPackage("Microsoft.ML.Peft", "1.2.3", "the library"), new ProjectPackage("libtorch-cpu-linux-x64", "2.10.0", "libtorch") },
    };

    private static JsonObject Json(string text) => JsonNode.Parse(text)!.AsObject();

    private static HashSet<string> Set(params string[] names) => new(names, StringComparer.Ordinal);

    private static DataViewSchema Schema(params (string Name, DataViewType Type, DataViewSchema.Annotations? Annotations)[] columns)
    {
        var builder = new DataViewSchema.Builder();
        foreach (var (name, type, annotations) in columns) builder.AddColumn(name, type, annotations);
        return builder.ToSchema();
    }

    private static DataViewSchema.Annotations SlotNames(params string[] names)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        // ML.NET's annotation kinds "SlotNames" and "KeyValues": vectors of text.
        builder.Add("SlotNames", new VectorDataViewType(Text, names.Length),
            (ref VBuffer<ReadOnlyMemory<char>> value) => value = new VBuffer<ReadOnlyMemory<char>>(names.Length, names.Select(n => n.AsMemory()).ToArray()));
        return builder.ToAnnotations();
    }

    private static DataViewSchema.Annotations KeyValues(params string[] values)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        builder.Add("KeyValues", new VectorDataViewType(Text, values.Length),
            (ref VBuffer<ReadOnlyMemory<char>> value) => value = new VBuffer<ReadOnlyMemory<char>>(values.Length, values.Select(n => n.AsMemory()).ToArray()));
        return builder.ToAnnotations();
    }

    /// <summary>Compiles a generated Program.cs as its project would (an executable, nullable on, implicit usings) against the loaded assemblies: no error, no warning.</summary>
    private static void AssertCompiles(string program)
    {
        const string implicitUsings = "global using System; global using System.Collections.Generic; global using System.IO; global using System.Linq; global using System.Net.Http; global using System.Threading; global using System.Threading.Tasks;";
        var options = new CSharpParseOptions(LanguageVersion.Latest);
        var references = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create("Generated",
            new[] { CSharpSyntaxTree.ParseText(program, options), CSharpSyntaxTree.ParseText(implicitUsings, options) },
            references,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var stream = new MemoryStream();
        var result = compilation.Emit(stream);
        var problems = result.Diagnostics.Where(d => d.Severity >= DiagnosticSeverity.Warning).ToList();
        Assert.That(problems, Is.Empty, string.Join("\n", problems) + "\n" + program);
    }
}
