namespace Microsoft.ML.Peft.Backbones;

/// <summary>Identity of the base model a fine-tuned model was trained on; saved instead of its weights.</summary>
internal sealed class BaseModelReference
{
    public BaseModelKind Kind { get; set; }
    public string Name { get; set; } = "";
    public string? Path { get; set; }
    public string? VocabPath { get; set; }
    public string Sha256 { get; set; } = "";
    public long Size { get; set; }
    public bool LowerCase { get; set; } = true;
    /// <summary>The encoder layers used (<see cref="BaseModelSource.WithLayers"/>); null: all. Absent from files saved before it existed.</summary>
    public int? Layers { get; set; }

    public static BaseModelReference From(LoadedBaseModel model) => new()
    {
        Kind = model.Source.Kind,
        Name = model.Source.Name,
        Path = model.Source.Path,
        VocabPath = model.Source.VocabPath,
        Sha256 = model.Sha256,
        Size = model.File.LongLength,
        LowerCase = model.Source.LowerCase,
        Layers = model.Source.Layers,
    };

    /// <summary>Checks what loading relies on; the message names the model file.</summary>
    public void Validate(string source)
    {
        // JSON null reaches properties declared non-null: a damaged file can hold it.
        if (Name is null || Sha256 is null) throw new InvalidDataException($"{source}: the saved base model has no name or no hash.");
        if (!Enum.IsDefined(Kind)) throw new InvalidDataException($"{source}: base-model kind {(int)Kind} is not known.");
        if (Sha256.Length != 64 || !Sha256.All(Uri.IsHexDigit)) throw new InvalidDataException($"{source}: the saved base-model hash is not a SHA-256 hex string.");
        if (Size <= 0 || Size > Array.MaxLength) throw new InvalidDataException($"{source}: the saved base-model size {Size} is not valid.");
        if (Layers is int layers && (layers < 1 || layers > 256)) throw new InvalidDataException($"{source}: the saved base-model layer count {layers} is not valid.");
        if (Name.Length > 1024 || (Path?.Length ?? 0) > 4096) throw new InvalidDataException($"{source}: the saved base-model name or path is too long.");
    }

    public override string ToString() => $"{Name} ({Size:N0} bytes{(Layers is int n ? $", first {n} layers" : "")})";
}
