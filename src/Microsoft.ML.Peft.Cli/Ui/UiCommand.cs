using System.CommandLine;
using System.Net;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Microsoft.ML.Peft.Cli.Ui;

// Inside this namespace Microsoft.ML.Command (a namespace) would hide System.CommandLine.Command.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>ui</c>: Model Builder's guided flow in a local web app (scenario, data, training, evaluation, try it, consume),
/// served by ASP.NET Core on the loopback address at a URL that carries a random access token.
/// </summary>
internal static class UiCommand
{
    public static Command Create()
    {
        var port = new Option<int>("--port") { Description = "The port to listen on (0: any free port).", DefaultValueFactory = _ => 5000 };
        var host = new Option<string>("--host") { Description = "The address to listen on. Anything but a loopback address makes the app reachable from other machines (the token still guards it).", DefaultValueFactory = _ => "127.0.0.1" };
        var workDir = new Option<string>("--work-dir") { Description = "The folder of the runs (data, models, reports); created if missing.", DefaultValueFactory = _ => "mlnet-peft-ui" };
        var maxUpload = new Option<int>("--max-upload-mb") { Description = "The largest upload accepted, in MB (a file, or a folder of images in all).", DefaultValueFactory = _ => 1024 };
        var command = new Command("ui", "Start the web app: Model Builder's guided flow (scenario, data, training, evaluation, try it, consume) in the browser.")
        {
            port, host, workDir, maxUpload,
        };
        command.SetAction(parse => Run(new UiSettings(parse.GetValue(port), parse.GetValue(host)!, parse.GetValue(workDir)!, parse.GetValue(maxUpload))));
        return command;
    }

    private static int Run(UiSettings s)
    {
        if (s.Port is < 0 or > 65535) throw new UsageException($"--port must be between 0 and 65535; it is {s.Port}.");
        if (s.MaxUploadMegabytes < 1) throw new UsageException($"--max-upload-mb must be at least 1; it is {s.MaxUploadMegabytes}.");
        if (!IPAddress.TryParse(s.Host, out var address) && s.Host != "localhost")
            throw new UsageException($"--host '{s.Host}' is not an IP address (for example 127.0.0.1, or 0.0.0.0 for every interface).");
        var workDir = Path.GetFullPath(s.WorkDirectory);
        try
        {
            Directory.CreateDirectory(workDir);
            var probe = Path.Combine(workDir, $".write-test-{Guid.NewGuid():N}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"The work folder '{s.WorkDirectory}' (--work-dir) cannot be written: {e.Message}", e);
        }

        var token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
        long maxBytes = (long)s.MaxUploadMegabytes * 1024 * 1024;
        var store = new RunStore(workDir);
        using var queue = new TrainingQueue(store);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = workDir, Args = Array.Empty<string>() });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole().SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(o =>
        {
            o.Limits.MaxRequestBodySize = maxBytes + 1024 * 1024;
            if (s.Host == "localhost") o.ListenLocalhost(s.Port);
            else o.Listen(address!, s.Port);
        });
        builder.Services.Configure<FormOptions>(o =>
        {
            o.MultipartBodyLengthLimit = maxBytes;
            o.ValueCountLimit = 200_000;
        });
        var app = builder.Build();
        var api = new UiApi(store, queue, new Predictor(), token, maxBytes, s.MaxUploadMegabytes);
        api.Map(app);

        app.StartAsync(Cancellation.Token).GetAwaiter().GetResult();
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? Array.Empty<string>();
        var bound = new Uri(addresses.First());
        var shown = bound.Host is "[::]" or "0.0.0.0" or "+" or "*" ? "127.0.0.1" : bound.Host;
        Console.WriteLine($"mlnet-peft ui: open http://{shown}:{bound.Port}/?token={token}");
        Console.WriteLine($"Runs are kept in {workDir}. Press Ctrl+C to stop.");
        if (!IPAddress.IsLoopback(address ?? IPAddress.Loopback))
            Console.WriteLine($"warning: listening on {s.Host}: other machines can reach the app (they need the token).");
        try
        {
            Task.Delay(Timeout.Infinite, Cancellation.Token).ContinueWith(_ => { }, TaskScheduler.Default).GetAwaiter().GetResult();
        }
        finally
        {
            Console.WriteLine("Stopping: the training in progress, if any, is stopped and marked interrupted.");
            queue.Stop(TimeSpan.FromSeconds(15));
            using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5))) app.StopAsync(stop.Token).GetAwaiter().GetResult();
            ((IDisposable)app).Dispose();
        }
        return 0;
    }

    private sealed record UiSettings(int Port, string Host, string WorkDirectory, int MaxUploadMegabytes);
}
