package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	bt "github.com/nightona/nightona/internal/browsertest"
	"github.com/nightona/nightona/web"
)

const testSecret = "browser-test-secret-0123456789abcdef"

// TestWebPagesInChromium opens the bot's pages in headless Chromium, against the real bot with
// the real CLI, the scripted model and a local sandbox whose dev server gives the preview. The
// browser reaches the bot as nightona.test, a name that is not loopback's, as a reviewer's
// browser would: only links and logins let it in.
func TestWebPagesInChromium(t *testing.T) {
	env := baseEnv(t)
	env["NIGHTONA_SECRET"] = testSecret
	env["NIGHTONA_ADMINS"] = "web:admin"
	b := startBot(t, env)
	port := b.url[strings.LastIndexByte(b.url, ':')+1:]
	remote := "http://nightona.test:" + port
	links := web.NewLinks([]byte(testSecret), remote, time.Hour)

	// A first turn, with a file written, before anyone looks.
	thread := b.newThread()
	f := b.follow(thread, 0)
	b.prompt(thread, "scenario:write make a file")
	f.until("the first result", 60*time.Second, isResult)
	id := b.session(thread)["id"].(string)
	link := links.Session(id)

	browser := bt.Start(t, bt.Options{Hosts: []string{"nightona.test"}})
	tab := browser.Tab(100 * time.Second)

	t.Run("refused links", func(t *testing.T) {
		u, _ := url.Parse(link)
		q := u.Query()
		q.Set("sig", strings.ToUpper(q.Get("sig")))
		u.RawQuery = q.Encode()
		if status := bt.Navigate(t, tab, u.String()); status != http.StatusForbidden {
			t.Errorf("a tampered link: %d, want 403", status)
		}
		bt.WaitJS(t, tab, 5*time.Second, "the tampered-link page", `document.body.innerText.includes('This link is not valid')`)
		bt.Screenshot(t, tab, "link-tampered")

		old := web.NewLinks([]byte(testSecret), remote, -time.Minute).Session(id)
		if status := bt.Navigate(t, tab, old); status != http.StatusGone {
			t.Errorf("an expired link: %d, want 410", status)
		}
		bt.WaitJS(t, tab, 5*time.Second, "the expired-link page", `document.body.innerText.includes('This link has expired')`)
		bt.Screenshot(t, tab, "link-expired")

		if status := bt.Navigate(t, tab, remote+"/s/"+id+"/"); status != http.StatusUnauthorized {
			t.Errorf("the page without its link: %d, want 401", status)
		}
		// The session's data is not reachable by its id either.
		for _, path := range []string{"/s/" + id + "/api/session", "/api/threads/" + thread, "/admin/api/overview"} {
			req, _ := http.NewRequest(http.MethodGet, b.url+path, nil)
			req.Host = "nightona.test:" + port
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s without a link or login: %d, want 401", path, resp.StatusCode)
			}
		}
	})

	t.Run("session page", func(t *testing.T) {
		start := time.Now()
		if status := bt.Navigate(t, tab, link); status != http.StatusOK {
			t.Fatalf("the session link: %d", status)
		}
		if got := bt.Eval[string](t, tab, "location.pathname"); got != "/s/"+id+"/" {
			t.Errorf("the page is at %s: the signature should leave the address bar", got)
		}
		bt.WaitJS(t, tab, 15*time.Second, "the first turn's result", `document.querySelector('#turns .result')`)
		t.Logf("figure: session page load to the rendered first turn: %s", bt.Since(start))

		for what, expr := range map[string]string{
			"the prompt":              `document.querySelector('.user-bubble').textContent === 'scenario:write make a file'`,
			"the Write call's card":   `[...document.querySelectorAll('details.tool .tool-name')].some((e) => e.textContent === 'Write')`,
			"the file's content":      `[...document.querySelectorAll('details.tool pre')].some((e) => e.textContent.includes('Hello, world!'))`,
			"the tool's output":       `[...document.querySelectorAll('details.tool .tool-label')].some((e) => e.textContent === 'Output')`,
			"the result with a cost":  `/Done in .* · \$\d/.test(document.querySelector('#turns .result').textContent)`,
			"Claude's text":           `document.querySelector('#turns .md').textContent.length > 0`,
			"one turn, once":          `document.querySelectorAll('#turns .turn').length === 1 && document.querySelectorAll('#turns .user-bubble').length === 1`,
			"no composer (read-only)": `!document.querySelector('textarea') && !document.querySelector('.perm-actions:not([hidden])')`,
		} {
			bt.WaitJS(t, tab, 5*time.Second, what, expr)
		}

		// The preview: the frame shows the sandbox's dev server.
		preview, _ := b.session(thread)["preview_url"].(string)
		if preview == "" {
			t.Fatal("the session has no preview URL: the dev server did not come up")
		}
		bt.WaitJS(t, tab, 30*time.Second, "the dev server's state", `document.querySelector('#preview-pane').dataset.dev === 'ready'`)
		bt.WaitJS(t, tab, 5*time.Second, "the preview frame", fmt.Sprintf(`document.querySelector('#preview-frame').src === %q`, preview))
		bt.WaitJS(t, tab, 5*time.Second, "open in a new tab", fmt.Sprintf(`document.querySelector('#preview-open').href === %q`, preview))
		var loaded, failed []string
		deadline := time.Now().Add(10 * time.Second)
		for len(loaded) == 0 && len(failed) == 0 && time.Now().Before(deadline) {
			loaded, failed = bt.Frames(t, tab)
			if len(loaded) == 0 || loaded[0] != preview {
				loaded = nil
				time.Sleep(50 * time.Millisecond)
			}
		}
		if len(failed) > 0 || len(loaded) != 1 {
			loaded, failed = bt.Frames(t, tab)
			t.Fatalf("the preview frame: loaded %v, failed %v; want %s", loaded, failed, preview)
		}
		resp, err := http.Get(preview)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the dev server behind the frame: %v %v", resp, err)
		}
		resp.Body.Close()
		bt.Click(t, tab, `#preview-reload`)
		bt.WaitJS(t, tab, 5*time.Second, "the reloaded frame", fmt.Sprintf(`document.querySelector('#preview-frame').src === %q`, preview))
		bt.WaitJS(t, tab, 5*time.Second, "the sandbox state", `document.querySelector('#sandbox-state').textContent === 'Up'`)
		bt.Screenshot(t, tab, "session-desktop")
	})

	t.Run("live turn survives dropped sockets", func(t *testing.T) {
		turns := bt.Eval[int](t, tab, `document.querySelectorAll('#turns .turn').length`)
		sent := time.Now()
		b.prompt(thread, "scenario:slow:50:40 a story to watch")
		bt.WaitJS(t, tab, 10*time.Second, "the new prompt", fmt.Sprintf(`document.querySelectorAll('#turns .turn').length > %d`, turns))
		t.Logf("figure: prompt submitted to its bubble on the session page: %s", bt.Since(sent))
		last := fmt.Sprintf(`document.querySelectorAll('#turns .turn')[%d]`, turns)
		bt.WaitJS(t, tab, 30*time.Second, "streamed text", last+`.querySelector('.md') && `+last+`.querySelector('.md').textContent.length > 0`)
		t.Logf("figure: prompt submitted to the first streamed text on the session page: %s", bt.Since(sent))

		// Drop the socket twice while Claude streams; the page must resume where it was.
		for i := range 2 {
			n := bt.Eval[int](t, tab, `NightonaSession.seqs().length`)
			bt.Eval[bool](t, tab, `(NightonaSession.drop(), true)`)
			bt.WaitJS(t, tab, 10*time.Second, fmt.Sprintf("events after drop %d", i+1), fmt.Sprintf(`NightonaSession.seqs().length > %d`, n+2))
		}
		bt.WaitJS(t, tab, 60*time.Second, "the second result", `document.querySelectorAll('#turns .result').length === 2`)
		bt.WaitJS(t, tab, 5*time.Second, "the connection indicator to clear", `document.querySelector('#conn').hidden`)
		var seqs []int64
		if err := json.Unmarshal([]byte(bt.Eval[string](t, tab, `JSON.stringify(NightonaSession.seqs())`)), &seqs); err != nil {
			t.Fatal(err)
		}
		lastSeq := int64(b.session(thread)["last_seq"].(float64))
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Fatalf("the page received seq %d as its event %d: events lost or repeated across the drops (%d received, log has %d)", s, i+1, len(seqs), lastSeq)
			}
		}
		if int64(len(seqs)) != lastSeq {
			t.Fatalf("the page received %d events; the log has %d", len(seqs), lastSeq)
		}
		text := bt.Eval[string](t, tab, last+`.querySelector('.md').textContent`)
		if !strings.Contains(text, "a story to watch") && len(strings.Fields(text)) < 50 {
			t.Errorf("the streamed story reads %q", text)
		}
		bt.Screenshot(t, tab, "session-after-drops")
	})

	t.Run("phone-sized session page", func(t *testing.T) {
		bt.Viewport(t, tab, 390, 844, true)
		bt.Navigate(t, tab, remote+"/s/"+id+"/") // the pass from the link still holds
		bt.WaitJS(t, tab, 15*time.Second, "the transcript", `document.querySelectorAll('#turns .result').length === 2`)
		bt.NoHorizontalScroll(t, tab, "the session page on a phone")
		bt.Screenshot(t, tab, "session-phone-transcript")
		bt.Click(t, tab, `#tab-preview`)
		bt.WaitJS(t, tab, 5*time.Second, "the preview on the phone", `document.querySelector('#preview-frame').getBoundingClientRect().width > 300`)
		bt.NoHorizontalScroll(t, tab, "the session page's preview on a phone")
		bt.Screenshot(t, tab, "session-phone-preview")
		bt.Viewport(t, tab, 1360, 860, false)
	})

	t.Run("console", func(t *testing.T) {
		local := b.url + "/#" + thread
		bt.Navigate(t, tab, local)
		bt.WaitJS(t, tab, 15*time.Second, "the thread in the console", `document.querySelectorAll('#turns .result').length === 2`)
		bt.Click(t, tab, `#preview-btn`)
		preview, _ := b.session(thread)["preview_url"].(string)
		bt.WaitJS(t, tab, 10*time.Second, "the console's preview frame", fmt.Sprintf(`document.querySelector('#preview-frame').src === %q && !document.querySelector('#preview-pane').hidden`, preview))
		// Approve a Bash call from the console.
		bt.Eval[bool](t, tab, setPrompt("scenario:bash run it"))
		bt.Click(t, tab, `#send-btn`)
		bt.WaitJS(t, tab, 30*time.Second, "the permission request", `document.querySelector('.perm-card .perm-actions:not([hidden]) .btn-primary')`)
		bt.Screenshot(t, tab, "console-permission")
		bt.Click(t, tab, `.perm-card .perm-actions .btn-primary`)
		bt.WaitJS(t, tab, 30*time.Second, "the approved turn's result", `document.querySelectorAll('#turns .result').length === 3`)
		bt.WaitJS(t, tab, 5*time.Second, "the approval shown", `/Approved by web:local/.test(document.querySelector('.perm-card .perm-status').textContent)`)
		bt.Screenshot(t, tab, "console-desktop")

		// A second thread, and Stop on it.
		bt.Click(t, tab, `#new-thread`)
		bt.WaitJS(t, tab, 5*time.Second, "the new thread", fmt.Sprintf(`location.hash !== %q`, "#"+thread))
		bt.Eval[bool](t, tab, setPrompt("scenario:slow:400:50 a long story"))
		bt.Click(t, tab, `#send-btn`)
		bt.WaitJS(t, tab, 60*time.Second, "the Stop button", `!document.querySelector('#stop-btn').hidden && document.querySelector('#turns .md')`)
		bt.Click(t, tab, `#stop-btn`)
		bt.WaitJS(t, tab, 30*time.Second, "the interrupted result", `/Interrupted/.test(document.querySelector('#turns .result') ? document.querySelector('#turns .result').textContent : '')`)
		bt.WaitJS(t, tab, 5*time.Second, "both threads in the list", `document.querySelectorAll('#thread-list .thread-item').length === 2`)

		bt.Viewport(t, tab, 390, 844, true)
		bt.Navigate(t, tab, b.url+"/?phone#"+thread) // a new load, not a jump within the page
		bt.WaitJS(t, tab, 15*time.Second, "the thread on a phone", `document.querySelectorAll('#turns .result').length === 3`)
		bt.NoHorizontalScroll(t, tab, "the console on a phone")
		bt.Screenshot(t, tab, "console-phone")
		bt.Viewport(t, tab, 1360, 860, false)
	})

	t.Run("dashboard", func(t *testing.T) {
		if status := bt.Navigate(t, tab, remote+"/admin"); status != http.StatusUnauthorized {
			t.Errorf("the dashboard without a login: %d, want 401", status)
		}
		login := links.DashboardLogin("web:admin")
		start := time.Now()
		if status := bt.Navigate(t, tab, login); status != http.StatusOK {
			t.Fatalf("the login link: %d", status)
		}
		row := fmt.Sprintf(`document.querySelector('tr[data-id=%q]')`, id)
		bt.WaitJS(t, tab, 10*time.Second, "the session's row", row)
		t.Logf("figure: dashboard login to the listed sessions: %s", bt.Since(start))
		bt.WaitJS(t, tab, 5*time.Second, "who is logged in", `document.querySelector('#who').textContent === 'as web:admin'`)
		bt.WaitJS(t, tab, 5*time.Second, "the row's details", row+`.textContent.includes('web:local') && /\$0\.\d+/.test(`+row+`.textContent) && `+row+`.dataset.state === 'idle'`)
		bt.WaitJS(t, tab, 5*time.Second, "Redis in the health view", `[...document.querySelectorAll('.check.is-ok .check-name')].some((e) => e.textContent === 'Redis')`)
		bt.WaitJS(t, tab, 5*time.Second, "usage per user", `[...document.querySelectorAll('#usage-users td')].some((e) => e.textContent === 'web:local')`)
		bt.WaitJS(t, tab, 5*time.Second, "usage per channel", `[...document.querySelectorAll('#usage-channels td')].some((e) => e.textContent === 'web')`)
		bt.Screenshot(t, tab, "dashboard-desktop")

		bt.Click(t, tab, fmt.Sprintf(`tr[data-id=%q] button[data-action=stop]`, id))
		bt.WaitJS(t, tab, 30*time.Second, "the stopped row", row+`.dataset.state === 'stopped'`)
		if state := b.session(thread)["state"]; state != "stopped" {
			t.Fatalf("the session after Stop on the dashboard: %v", state)
		}
		bt.Screenshot(t, tab, "dashboard-stopped")

		bt.Viewport(t, tab, 390, 844, true)
		bt.Navigate(t, tab, remote+"/admin")
		bt.WaitJS(t, tab, 10*time.Second, "the dashboard on a phone", row)
		bt.NoHorizontalScroll(t, tab, "the dashboard on a phone")
		bt.Screenshot(t, tab, "dashboard-phone")
		bt.Viewport(t, tab, 1360, 860, false)

		// The login link worked once; a second browser with it gets nothing.
		other := bt.Start(t, bt.Options{Hosts: []string{"nightona.test"}}).Tab(30 * time.Second)
		if status := bt.Navigate(t, other, login); status != http.StatusGone {
			t.Errorf("the login link used twice: %d, want 410", status)
		}
		bt.WaitJS(t, other, 5*time.Second, "the used-link page", `document.body.innerText.includes('already used')`)
		if status := bt.Navigate(t, other, remote+"/admin"); status != http.StatusUnauthorized {
			t.Errorf("the dashboard after a refused login: %d, want 401", status)
		}
	})
}

// setPrompt is JavaScript that types text into the console's composer.
func setPrompt(text string) string {
	return fmt.Sprintf(`(() => { const ta = document.querySelector('#prompt'); ta.value = %s; ta.dispatchEvent(new Event('input')); return true; })()`, strconv.Quote(text))
}
