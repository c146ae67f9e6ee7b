using System.Globalization;
using NUnit.Framework;
using PuppeteerSharp;

namespace Microsoft.ML.Peft.Tests;

/// <summary>
/// Debian's headless chromium (/usr/bin/chromium) driven through PuppeteerSharp for the web app's tests. PuppeteerSharp is
/// only pointed at that executable: it never downloads a browser. A page opened here records console errors and uncaught
/// exceptions (<see cref="UiPage.Errors"/>), which the tests fail on.
/// </summary>
internal sealed class UiBrowser : IAsyncDisposable
{
    public const int Width = 1280;
    public const int Height = 900;

    private readonly IBrowser browser;

    private UiBrowser(IBrowser browser) => this.browser = browser;

    /// <summary>Launches chromium (call <see cref="HeadlessChromium.Require"/> first).</summary>
    public static async Task<UiBrowser> LaunchAsync()
    {
        var browser = await Puppeteer.LaunchAsync(new LaunchOptions
        {
            ExecutablePath = HeadlessChromium.Executable,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1"],
            DefaultViewport = new ViewPortOptions { Width = Width, Height = Height, DeviceScaleFactor = 1 },
            Timeout = 90_000,
        });
        return new UiBrowser(browser);
    }

    /// <summary>A page in a browser context of its own (no cookies shared with other tests).</summary>
    public async Task<UiPage> NewPageAsync()
    {
        var context = await browser.CreateBrowserContextAsync();
        var page = await context.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = Width, Height = Height, DeviceScaleFactor = 1 });
        page.DefaultTimeout = 30_000;
        page.DefaultNavigationTimeout = 60_000;
        return new UiPage(context, page);
    }

    public async ValueTask DisposeAsync()
    {
        await browser.CloseAsync();
        browser.Dispose();
    }
}

/// <summary>One page of the app in the browser, with the console errors it logged and helpers over the element contract.</summary>
internal sealed class UiPage : IAsyncDisposable
{
    private readonly IBrowserContext context;
    private readonly List<string> errors = new();

    public UiPage(IBrowserContext context, IPage page)
    {
        this.context = context;
        Page = page;
        page.Console += (_, e) =>
        {
            if (e.Message.Type == ConsoleType.Error)
                lock (errors) errors.Add($"console error: {e.Message.Text} ({e.Message.Location?.URL}:{e.Message.Location?.LineNumber})");
        };
        page.PageError += (_, e) =>
        {
            lock (errors) errors.Add($"uncaught exception: {e.Message}");
        };
    }

    public IPage Page { get; }

    /// <summary>Console errors and uncaught exceptions so far.</summary>
    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (errors) return errors.ToList();
        }
    }

    /// <summary>
    /// Forgets the errors logged so far that <paramref name="expected"/> accepts (the console error chromium logs for a
    /// request that a test made fail on purpose); returns how many.
    /// </summary>
    public int Forget(Func<string, bool> expected)
    {
        lock (errors) return errors.RemoveAll(e => expected(e));
    }

    /// <summary>Fails the test when the page logged a console error or threw an uncaught exception.</summary>
    public void AssertNoErrors(string when)
    {
        var found = Errors;
        Assert.That(found, Is.Empty, $"the page logged errors {when}:\n{string.Join("\n", found)}");
    }

    /// <summary>Waits until <paramref name="selector"/> is visible.</summary>
    public Task<IElementHandle> VisibleAsync(string selector, int timeoutMs = 30_000) =>
        Page.WaitForSelectorAsync(selector, new WaitForSelectorOptions { Visible = true, Timeout = timeoutMs });

    /// <summary>Waits until the JavaScript <paramref name="expression"/> is truthy; fails the test naming <paramref name="what"/> otherwise.</summary>
    public async Task WaitAsync(string expression, string what, int timeoutMs = 30_000)
    {
        try
        {
            await Page.WaitForExpressionAsync(expression, new WaitForFunctionOptions { Timeout = timeoutMs, PollingInterval = 200 });
        }
        catch (WaitTaskTimeoutException)
        {
            Assert.Fail($"timed out after {timeoutMs / 1000} s waiting for {what} ({expression}).\nErrors on the page: {string.Join("\n", Errors)}");
        }
    }

    /// <summary>The trimmed text of <paramref name="selector"/> ("" when absent).</summary>
    public Task<string> TextAsync(string selector) =>
        Page.EvaluateFunctionAsync<string>("s => { const e = document.querySelector(s); return e ? e.textContent.trim() : ''; }", selector);

    /// <summary>The value of the input or select <paramref name="selector"/>.</summary>
    public Task<string> ValueAsync(string selector) =>
        Page.EvaluateFunctionAsync<string>("s => document.querySelector(s).value", selector);

    /// <summary>How many elements match <paramref name="selector"/>.</summary>
    public Task<int> CountAsync(string selector) =>
        Page.EvaluateFunctionAsync<int>("s => document.querySelectorAll(s).length", selector);

    /// <summary>Replaces the value of a text or number input the way a user does: select all, then type.</summary>
    public async Task ReplaceTextAsync(string selector, string text)
    {
        await Page.FocusAsync(selector);
        await Page.Keyboard.DownAsync("Control");
        await Page.Keyboard.PressAsync("a");
        await Page.Keyboard.UpAsync("Control");
        await Page.Keyboard.PressAsync("Backspace");
        await Page.Keyboard.TypeAsync(text);
        // A change event, as leaving the field would fire.
        await Page.EvaluateFunctionAsync("s => document.querySelector(s).dispatchEvent(new Event('change', { bubbles: true }))", selector);
    }

    /// <summary>
    /// The form controls (input, select, textarea) without an accessible name: no label (for= or wrapping) with text, no
    /// aria-label and no aria-labelledby that names elements with text. Hidden inputs are not controls.
    /// </summary>
    public async Task<string[]> UnlabelledControlsAsync() => await Page.EvaluateExpressionAsync<string[]>(@"
        Array.from(document.querySelectorAll('input, select, textarea'))
          .filter(e => e.type !== 'hidden')
          .filter(e => {
            const text = t => (t || '').trim().length > 0;
            if (text(e.getAttribute('aria-label'))) return false;
            const by = e.getAttribute('aria-labelledby');
            if (by && by.split(/\s+/).some(id => { const l = document.getElementById(id); return l && text(l.textContent); })) return false;
            return !Array.from(e.labels || []).some(l => text(l.textContent) || text(l.getAttribute('aria-label')));
          })
          .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.name ? '[name=' + e.name + ']' : '') + (e.type ? '[type=' + e.type + ']' : ''))");

    /// <summary>Buttons and links without a name (no text, no aria-label, no title).</summary>
    public async Task<string[]> UnnamedButtonsAsync() => await Page.EvaluateExpressionAsync<string[]>(@"
        Array.from(document.querySelectorAll('button, a[href], [role=button]'))
          .filter(e => !(e.textContent || '').trim() && !(e.getAttribute('aria-label') || '').trim() && !(e.getAttribute('title') || '').trim()
                       && !(e.getAttribute('aria-labelledby') || '').trim())
          .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''))");

    /// <summary>Fails the test when a control of the page has no accessible name.</summary>
    public async Task AssertControlsNamedAsync(string step)
    {
        var unlabelled = await UnlabelledControlsAsync();
        Assert.That(unlabelled, Is.Empty, $"controls without a label on the {step} step");
        var unnamed = await UnnamedButtonsAsync();
        Assert.That(unnamed, Is.Empty, $"buttons or links without a name on the {step} step");
    }

    /// <summary>The focused element: <c>input[name=N][value=V]</c> for a radio, else <c>#id</c>, or its tag without an id.</summary>
    public Task<string> FocusedAsync() => Page.EvaluateExpressionAsync<string>(
        "(() => { const e = document.activeElement; if (!e) return ''; if (e.type === 'radio') return 'input[name=' + e.name + '][value=' + e.value + ']'; return e.id ? '#' + e.id : e.tagName.toLowerCase(); })()");

    /// <summary>Presses Tab until <paramref name="isTarget"/> accepts the focused element (at most <paramref name="max"/> presses); fails the test otherwise.</summary>
    public async Task TabToAsync(Func<string, bool> isTarget, string what, int max = 60)
    {
        var seen = new List<string>();
        for (int i = 0; i < max; i++)
        {
            await Page.Keyboard.PressAsync("Tab");
            var focused = await FocusedAsync();
            if (isTarget(focused)) return;
            seen.Add(focused);
        }
        Assert.Fail($"{what} was not reached with {max} presses of Tab; the focus went through: {string.Join(", ", seen)}");
    }

    /// <summary>A full-page PNG screenshot of the step, in the screenshots folder, attached to the test.</summary>
    public async Task ScreenshotAsync(string fileName)
    {
        var path = Path.Combine(ScreenshotFolder, fileName);
        await Page.ScreenshotAsync(path, new ScreenshotOptions { FullPage = true, Type = ScreenshotType.Png });
        TestContext.AddTestAttachment(path, fileName);
    }

    /// <summary>Where the screenshots go: PEFT_UI_SCREENSHOTS, or ui-screenshots in the test run's work folder.</summary>
    public static string ScreenshotFolder
    {
        get
        {
            var folder = Environment.GetEnvironmentVariable("PEFT_UI_SCREENSHOTS") is { Length: > 0 } set
                ? Path.GetFullPath(set)
                : Path.Combine(TestContext.CurrentContext.WorkDirectory, "ui-screenshots");
            Directory.CreateDirectory(folder);
            return folder;
        }
    }

    /// <summary>Parses a number the page printed (invariant culture).</summary>
    public static double Number(string text) => double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);

    public async ValueTask DisposeAsync()
    {
        await Page.CloseAsync();
        await context.CloseAsync();
    }
}
