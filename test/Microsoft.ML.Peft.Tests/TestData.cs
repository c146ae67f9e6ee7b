namespace Microsoft.ML.Peft.Tests;

/// <summary>Locations of the real data sets beside the repository (../shared/data).</summary>
internal static class TestData
{
    public static string RepositoryRoot { get; } = FindRoot();

    public static string SharedData => Path.GetFullPath(Path.Combine(RepositoryRoot, "..", "shared", "data"));

    public static string Sst2Train => Path.Combine(SharedData, "sst2", "train.tsv");

    public static string Sst2Dev => Path.Combine(SharedData, "sst2", "dev.tsv");

    /// <summary>Rows of an SST-2 file (header skipped): sentence and 0/1 label.</summary>
    public static List<(string Sentence, int Label)> ReadSst2(string path, int skip, int take)
    {
        return File.ReadLines(path).Skip(1 + skip).Take(take)
            .Select(line => line.Split('\t'))
            .Select(parts => (parts[0], int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)))
            .ToList();
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Peft.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Repository root (Microsoft.ML.Peft.sln) not found above the test folder.");
    }
}
