// Package browsertest drives a headless Chromium for the tests of the web pages, through the
// DevTools protocol (chromedp: Go only, no driver binary, no browser download).
//
// A missing Chromium fails the test with what to install: CI must run these tests. A developer
// who cannot install it may set NIGHTONA_SKIP_BROWSER=1 to skip them instead.
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Environment variables.
const (
	// SkipEnv, set to 1, skips the browser tests (they fail without Chromium otherwise).
	SkipEnv = "NIGHTONA_SKIP_BROWSER"
	// ChromiumEnv names the browser binary; default: chromium (Debian's package) on PATH.
	ChromiumEnv = "NIGHTONA_CHROMIUM"
	// ArtifactsEnv names a folder for screenshots; default: the test's temporary folder.
	ArtifactsEnv = "NIGHTONA_TEST_ARTIFACTS"
)

// Browser is a headless Chromium started for a test, stopped when the test ends.
type Browser struct {
	tb    testing.TB
	alloc context.Context
}

// Options are what a browser starts with.
type Options struct {
	// Hosts map host names to 127.0.0.1, so that a page can be reached under a name that is
	// not loopback's (as a reviewer's browser reaches the bot).
	Hosts []string
}

// Start starts a browser, or fails (or skips, with SkipEnv) the test when there is none.
func Start(tb testing.TB, o Options) *Browser {
	tb.Helper()
	if os.Getenv(SkipEnv) == "1" {
		tb.Skipf("%s=1: browser tests skipped", SkipEnv)
	}
	bin := Chromium()
	if bin == "" {
		tb.Fatalf("headless Chromium is needed for the web pages' tests and was not found: install Debian's chromium package (scripts/test-deps.sh does), set %s to its binary, or set %s=1 to skip these tests", ChromiumEnv, SkipEnv)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.WindowSize(1360, 860),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Frames of other sites stay in the page's process, so that the page's frame tree
		// shows whether they loaded (the preview is another site).
		chromedp.Flag("disable-site-isolation-trials", true),
		chromedp.Flag("disable-features", "IsolateOrigins,site-per-process"),
		chromedp.UserDataDir(tb.TempDir()),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	if len(o.Hosts) > 0 {
		var rules []string
		for _, h := range o.Hosts {
			rules = append(rules, "MAP "+h+" 127.0.0.1")
		}
		opts = append(opts, chromedp.Flag("host-resolver-rules", strings.Join(rules, ", ")))
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	tb.Cleanup(cancel)
	return &Browser{tb: tb, alloc: alloc}
}

// Chromium returns the browser binary to use, or "".
func Chromium() string {
	if p := os.Getenv(ChromiumEnv); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Tab opens a tab, closed when the test ends. Its context fails the test's actions after
// timeout.
func (b *Browser) Tab(timeout time.Duration) context.Context {
	b.tb.Helper()
	ctx, cancel := chromedp.NewContext(b.alloc)
	b.tb.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, or the tab
		b.tb.Fatalf("start chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	b.tb.Cleanup(cancelT)
	b.watchErrors(ctx)
	return ctx
}

// watchErrors fails the test, when it ends, if a page's script threw or logged an error: the
// pages catch what one odd event does to them and go on, which must not hide a bug here.
func (b *Browser) watchErrors(ctx context.Context) {
	var mu sync.Mutex
	var errs []string
	add := func(s string) {
		mu.Lock()
		errs = append(errs, s)
		mu.Unlock()
	}
	thrown := chromedp.Events(ctx, runtime.ExceptionThrown)
	logged := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	go func() {
		for ev, err := range thrown {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			add(fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
		}
	}()
	go func() {
		for ev, err := range logged {
			if err != nil {
				return
			}
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				continue
			}
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			add("console.error: " + strings.Join(parts, " "))
		}
	}()
	b.tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			b.tb.Errorf("the pages' scripts failed:\n%s", strings.Join(errs, "\n"))
		}
	})
}

// Do runs actions, failing the test on an error.
func Do(tb testing.TB, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// Eval evaluates a JavaScript expression in the page and returns its value as T.
func Eval[T any](tb testing.TB, ctx context.Context, expr string) T {
	tb.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// WaitJS polls a JavaScript expression every 25 ms until it is true, or fails the test with
// what after timeout, showing the page's text.
func WaitJS(tb testing.TB, ctx context.Context, timeout time.Duration, what, expr string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText.slice(0, 3000) : ''"))
			tb.Fatalf("timed out after %v waiting for %s (%s; last error %v); the page says:\n%s", timeout, what, expr, err, text)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Click clicks the element sel (a CSS selector) names, scrolled into view, as a user would;
// it fails the test when there is none.
func Click(tb testing.TB, ctx context.Context, sel string) {
	tb.Helper()
	q := strconv.Quote(sel)
	Eval[bool](tb, ctx, `(() => { const e = document.querySelector(`+q+`); if (!e) throw new Error('nothing matches ' + `+q+`); e.scrollIntoView({block: 'center'}); e.click(); return true; })()`)
}

// Navigate loads url and returns the HTTP status of the document.
func Navigate(tb testing.TB, ctx context.Context, url string) int64 {
	tb.Helper()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		tb.Fatalf("navigate to %s: %v", url, err)
	}
	if resp == nil {
		tb.Fatalf("navigate to %s: no response", url)
	}
	return resp.Status
}

// Frames returns the URLs of the page's frames below the top one, and the URLs that failed
// to load in them.
func Frames(tb testing.TB, ctx context.Context) (loaded, failed []string) {
	tb.Helper()
	tree, err := chromedp.Run(ctx, chromedp.Action[*page.FrameTree](func(ctx context.Context, t *chromedp.Target) (*page.FrameTree, error) {
		res, err := cdp.Call(ctx, t, page.GetFrameTree, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		return res.FrameTree, nil
	}))
	if err != nil {
		tb.Fatalf("frame tree: %v", err)
	}
	var walk func(*page.FrameTree)
	walk = func(ft *page.FrameTree) {
		for _, c := range ft.ChildFrames {
			if c.Frame.UnreachableURL != "" {
				failed = append(failed, c.Frame.UnreachableURL)
			} else {
				loaded = append(loaded, c.Frame.URL)
			}
			walk(c)
		}
	}
	walk(tree)
	return loaded, failed
}

// Viewport sets the tab's size; mobile emulates a phone (touch, mobile meta viewport).
func Viewport(tb testing.TB, ctx context.Context, width, height int64, mobile bool) {
	tb.Helper()
	var opts []chromedp.EmulateViewportOption
	if mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(2))
	}
	Do(tb, ctx, "set the viewport", chromedp.EmulateViewport(width, height, opts...))
}

// NoHorizontalScroll fails the test when the page is wider than its viewport.
func NoHorizontalScroll(tb testing.TB, ctx context.Context, what string) {
	tb.Helper()
	raw := Eval[string](tb, ctx, `JSON.stringify({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, view: window.innerWidth,
		wide: [...document.querySelectorAll('body *')].filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > window.innerWidth + 1 && getComputedStyle(e).position !== 'fixed' && !e.closest('[hidden]'); }).slice(0, 5).map((e) => e.tagName + '.' + e.className)})`)
	var m struct {
		Doc, Body, View int
		Wide            []string
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		tb.Fatal(err)
	}
	if m.Doc > m.View || m.Body > m.View {
		tb.Errorf("%s scrolls sideways: %d px of content in a %d px viewport (wide: %v)", what, max(m.Doc, m.Body), m.View, m.Wide)
	}
}

// Screenshot saves a screenshot of the tab's viewport as name.png in the artifacts folder and
// logs where.
func Screenshot(tb testing.TB, ctx context.Context, name string) {
	tb.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(ArtifactsDir(tb), safeName.ReplaceAllString(name, "_")+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Errorf("save screenshot: %v", err)
		return
	}
	tb.Logf("screenshot %s: %s", name, path)
}

var safeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ArtifactsDir returns the folder screenshots go to: $NIGHTONA_TEST_ARTIFACTS/<test name>, or
// a folder of the test's own.
func ArtifactsDir(tb testing.TB) string {
	tb.Helper()
	if dir, ok := artifacts.Load(tb); ok {
		return dir.(string)
	}
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		dir = tb.TempDir()
	} else {
		dir = filepath.Join(dir, safeName.ReplaceAllString(tb.Name(), "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatalf("artifacts folder: %v", err)
		}
	}
	artifacts.Store(tb, dir)
	tb.Cleanup(func() { artifacts.Delete(tb) })
	return dir
}

var artifacts sync.Map // testing.TB → its folder

// Since formats a duration for the test's log of measured figures.
func Since(start time.Time) string {
	return fmt.Sprintf("%d ms", time.Since(start).Milliseconds())
}
