using NUnit.Framework;

namespace Microsoft.ML.Peft.Tests;

/// <summary><see cref="PeftRuntime"/>: libtorch's process settings, and the command line's options that set them.</summary>
[TestFixture]
[NonParallelizable]
public class RuntimeSettingsTests
{
    [Test]
    public void ThreadsAreSetForTheProcessWithinTheirRange()
    {
        int before = PeftRuntime.Threads;
        try
        {
            PeftRuntime.SetThreads(1);
            Assert.That(PeftRuntime.Threads, Is.EqualTo(1));
            Assert.That(TorchSharp.torch.get_num_threads(), Is.EqualTo(1), "libtorch's own count");
            PeftRuntime.SetThreads(2);
            Assert.That(PeftRuntime.Threads, Is.EqualTo(2));
        }
        finally
        {
            PeftRuntime.SetThreads(before);
        }
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => PeftRuntime.SetThreads(0))!;
        Assert.That(zero.ParamName, Is.EqualTo("count"));
        Assert.That(zero.Message, Does.Contain("between 1 and"));
        Assert.Throws<ArgumentOutOfRangeException>(() => PeftRuntime.SetThreads(4 * Environment.ProcessorCount + 1));
        Assert.That(PeftRuntime.Threads, Is.EqualTo(before));
    }

    [Test]
    public void TheWaitPolicyCannotChangeOnceLibTorchIsLoaded()
    {
        _ = PeftRuntime.Threads;   // loads libtorch
        Assert.That(PeftRuntime.LibTorchLoaded(), Is.True);
        var current = PeftRuntime.WaitPolicy;
        Assert.That(current, Is.EqualTo(PeftRuntime.ParsePolicy(Environment.GetEnvironmentVariable("OMP_WAIT_POLICY"))));
        var other = current == OpenMPWaitPolicy.Passive ? OpenMPWaitPolicy.Active : OpenMPWaitPolicy.Passive;
        var e = Assert.Throws<InvalidOperationException>(() => PeftRuntime.SetOpenMPWaitPolicy(other))!;
        Assert.That(e.Message, Does.Contain("before libtorch is loaded").And.Contain("OMP_WAIT_POLICY=" + other.ToString().ToUpperInvariant()));
        Assert.That(PeftRuntime.WaitPolicy, Is.EqualTo(current), "nothing changed");
        if (current is { } same) Assert.DoesNotThrow(() => PeftRuntime.SetOpenMPWaitPolicy(same), "asking for the policy in force is not an error");
    }

    [Test]
    public void PoliciesParseAsOpenMPReadsThem()
    {
        Assert.That(PeftRuntime.ParsePolicy("passive"), Is.EqualTo(OpenMPWaitPolicy.Passive));
        Assert.That(PeftRuntime.ParsePolicy(" ACTIVE "), Is.EqualTo(OpenMPWaitPolicy.Active));
        Assert.That(PeftRuntime.ParsePolicy("lazy"), Is.Null);
        Assert.That(PeftRuntime.ParsePolicy(null), Is.Null);
    }

    [Test]
    public void TheCommandLineSetsThreadsAndWaitPolicyBeforeLibTorchLoads()
    {
        var dir = Directory.CreateTempSubdirectory("mlnet-peft-threads-").FullName;
        try
        {
            var ratings = Path.Combine(dir, "ratings.tsv");
            File.WriteAllLines(ratings, new[] { "1\t10\t4", "2\t10\t3", "1\t11\t5", "2\t11\t2", "3\t10\t4", "3\t12\t1", "4\t12\t2", "4\t11\t5" });
            string[] Train(params string[] before) => before.Concat(new[] { "recommendation", "--dataset", ratings, "--user-col", "0", "--item-col", "1", "--label-col", "2",
                "--test-dataset", ratings, "--iterations", "1", "--output", Path.Combine(dir, "model.zip") }).ToArray();

            // Whatever the test runner's environment says, the option decides (the policy is set before libtorch loads).
            foreach (var (threads, policy) in new[] { ("1", "passive"), ("2", "active") })
            {
                var run = CliProcess.Run(dir, Train("--verbose", "--threads", threads, "--omp-wait-policy", policy));
                Assert.That(run.ExitCode, Is.EqualTo(0), run.ToString());
                Assert.That(run.StdErr, Does.Contain($"libtorch: {threads} threads, OpenMP wait policy {policy}."));
            }

            // The options work after the command too (they are on every command).
            var after = CliProcess.Run(dir, Train().Concat(new[] { "--verbose", "--threads", "2" }).ToArray());
            Assert.That(after.ExitCode, Is.EqualTo(0), after.ToString());
            Assert.That(after.StdErr, Does.Contain("libtorch: 2 threads"));

            var zero = CliProcess.Run(dir, Train("--threads", "0"));
            Assert.That(zero.ExitCode, Is.EqualTo(2), zero.ToString());
            Assert.That(zero.StdErr, Does.Contain("--threads must be between 1 and"));
            var lazy = CliProcess.Run(dir, Train("--omp-wait-policy", "lazy"));
            Assert.That(lazy.ExitCode, Is.EqualTo(2), lazy.ToString());
            Assert.That(lazy.StdErr, Does.Contain("lazy").And.Contain("passive"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
