using NUnit.Framework;
namespace Microsoft.ML.Peft.Tests;
public class SmokeTests
{
    [Test]
    public void TorchLoads() => Assert.That(Smoke.Probe(), Does.EndWith("2"));
}
