// Package sandboxtest is the conformance suite every sandbox.Provider passes: run it from the
// provider's tests with a provider whose relays can run.
package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// Run runs the suite against the provider newProvider makes (one per subtest). The provider
// must also be a sandbox.Waiter, sandbox.Processes and sandbox.Previews; the tests of
// sandbox.Archiver run when it is one.
func Run(t *testing.T, newProvider func(t *testing.T) sandbox.Provider) {
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, newProvider(t)) })
	t.Run("ListByLabel", func(t *testing.T) { testList(t, newProvider(t)) })
	t.Run("SetLabels", func(t *testing.T) { testSetLabels(t, newProvider(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newProvider(t)) })
	t.Run("FilesAndProcesses", func(t *testing.T) { testProcesses(t, newProvider(t)) })
	t.Run("Preview", func(t *testing.T) { testPreview(t, newProvider(t)) })
	t.Run("Settings", func(t *testing.T) { testSettings(t, newProvider(t)) })
	t.Run("Archive", func(t *testing.T) {
		p := newProvider(t)
		if _, ok := p.(sandbox.Archiver); !ok {
			t.Skipf("%s does not archive", p.Name())
		}
		testArchive(t, p)
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// RelayAnswers checks that the endpoint's relay speaks the protocol with the token and refuses
// a connection without it, and returns its hello.
func RelayAnswers(t *testing.T, ep *sandbox.Endpoint) relay.Hello {
	t.Helper()
	if ep == nil {
		t.Fatal("no relay endpoint")
	}
	u := strings.Replace(ep.URL, "http", "ws", 1) + relay.StreamPath
	hdr := http.Header{}
	for k, v := range ep.Header {
		hdr[k] = v
	}
	if _, resp, err := websocket.DefaultDialer.Dial(u, hdr); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("relay without a token: err %v resp %v, want 401", err, resp)
	}
	hdr.Set("Authorization", "Bearer "+ep.Token)
	ws, _, err := websocket.DefaultDialer.Dial(u, hdr)
	if err != nil {
		t.Fatalf("relay with its token: %v", err)
	}
	defer ws.Close()
	var hello relay.Hello
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != relay.TypeHello || hello.Protocol != relay.ProtocolVersion {
		t.Fatalf("hello %+v err %v", hello, err)
	}
	return hello
}

// testSettings checks that the relay runs Claude Code with the spec's permission mode and
// model, also after a restart.
func testSettings(t *testing.T, p sandbox.Provider) {
	const mode, model = "plan", "claude-sonnet-4-5"
	sb, err := p.Create(ctx(t), sandbox.Spec{Labels: map[string]string{"nightona.thread": "web:settings"}, PermissionMode: mode, Model: model})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), sb.ID) })
	if h := RelayAnswers(t, sb.Relay); h.Agent.Mode != mode || h.Agent.Model != model {
		t.Fatalf("relay runs with mode %q and model %q, want %q and %q", h.Agent.Mode, h.Agent.Model, mode, model)
	}
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatalf("stop: %v", err)
	}
	started, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if h := RelayAnswers(t, started.Relay); h.Agent.Mode != mode || h.Agent.Model != model {
		t.Fatalf("after a restart the relay runs with mode %q and model %q, want %q and %q", h.Agent.Mode, h.Agent.Model, mode, model)
	}
}

func relayGone(t *testing.T, ep *sandbox.Endpoint) {
	t.Helper()
	c := relay.NewClient(relay.Endpoint{URL: ep.URL, Token: ep.Token, Header: ep.Header}, relay.ClientConfig{ReconnectTimeout: 300 * time.Millisecond})
	err := c.Run(ctx(t), relay.Cursor{}, relay.Handlers{OnEvent: func(relay.Event) error { return nil }})
	if !errors.Is(err, relay.ErrUnreachable) {
		t.Fatalf("relay of a stopped sandbox: %v, want unreachable", err)
	}
}

func testLifecycle(t *testing.T, p sandbox.Provider) {
	labels := map[string]string{"nightona.thread": "web:conformance", "nightona.session": "s1"}
	sb, err := p.Create(ctx(t), sandbox.Spec{Labels: labels})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), sb.ID) })
	if sb.ID == "" || sb.State != sandbox.StateStarted || sb.CreatedAt.IsZero() {
		t.Fatalf("created %+v, want an id, started, a creation time", sb)
	}
	if !sandbox.MatchLabels(sb.Labels, labels) {
		t.Fatalf("labels %v, want %v", sb.Labels, labels)
	}
	RelayAnswers(t, sb.Relay)

	got, err := p.Get(ctx(t), sb.ID)
	if err != nil || got.State != sandbox.StateStarted || got.Relay == nil || got.Relay.URL != sb.Relay.URL {
		t.Fatalf("get: %+v %v", got, err)
	}

	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatalf("stop: %v", err)
	}
	got, err = p.Get(ctx(t), sb.ID)
	if err != nil || got.State != sandbox.StateStopped || got.Relay != nil {
		t.Fatalf("after stop: %+v %v, want stopped with no relay", got, err)
	}
	relayGone(t, sb.Relay)

	started, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if started.State != sandbox.StateStarted {
		t.Fatalf("after start: %+v", started)
	}
	RelayAnswers(t, started.Relay)
	if started.Relay.Token == sb.Relay.Token {
		t.Fatal("a restarted relay kept its old token")
	}
	again, err := p.Start(ctx(t), sb.ID)
	if err != nil || again.Relay.URL != started.Relay.URL || again.Relay.Token != started.Relay.Token {
		t.Fatalf("starting a started sandbox changed it: %+v %v", again, err)
	}

	if err := p.Delete(ctx(t), sb.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := p.Get(ctx(t), sb.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	relayGone(t, started.Relay)
	if err := p.Delete(ctx(t), sb.ID); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func testList(t *testing.T, p sandbox.Provider) {
	a, err := p.Create(ctx(t), sandbox.Spec{Labels: map[string]string{"team": "a", "n": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), a.ID) })
	b, err := p.Create(ctx(t), sandbox.Spec{Labels: map[string]string{"team": "b", "n": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), b.ID) })
	got, err := p.List(ctx(t), map[string]string{"team": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("list team=b: %+v, want only %s", got, b.ID)
	}
	all, err := p.List(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range all {
		ids[s.ID] = true
	}
	if !ids[a.ID] || !ids[b.ID] {
		t.Fatalf("list all: %v, want both", ids)
	}
}

func testNotFound(t *testing.T, p sandbox.Provider) {
	for name, err := range map[string]error{
		"get":   func() error { _, err := p.Get(ctx(t), "no-such-sandbox"); return err }(),
		"start": func() error { _, err := p.Start(ctx(t), "no-such-sandbox"); return err }(),
		"stop":  p.Stop(ctx(t), "no-such-sandbox"),
	} {
		if !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("%s of an unknown sandbox: %v, want ErrNotFound", name, err)
		}
	}
	if err := p.Delete(ctx(t), "no-such-sandbox"); err != nil {
		t.Errorf("delete of an unknown sandbox: %v, want nil", err)
	}
}

func create(t *testing.T, p sandbox.Provider, labels map[string]string) *sandbox.Sandbox {
	t.Helper()
	sb, err := p.Create(ctx(t), sandbox.Spec{Labels: labels})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), sb.ID) })
	return sb
}

func testSetLabels(t *testing.T, p sandbox.Provider) {
	sb := create(t, p, map[string]string{"nightona.pool": "1"})
	if err := p.SetLabels(ctx(t), sb.ID, map[string]string{"nightona.session": "s9", "team": "x"}); err != nil {
		t.Fatal(err)
	}
	got, err := p.List(ctx(t), map[string]string{"nightona.session": "s9"})
	if err != nil || len(got) != 1 || got[0].ID != sb.ID || got[0].Labels["nightona.pool"] != "" {
		t.Fatalf("after relabelling: %+v %v", got, err)
	}
	if pooled, _ := p.List(ctx(t), map[string]string{"nightona.pool": "1"}); len(pooled) != 0 {
		t.Fatalf("the old label still lists it: %+v", pooled)
	}
	if err := p.SetLabels(ctx(t), "no-such-sandbox", nil); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("relabelling an unknown sandbox: %v", err)
	}
}

func testProcesses(t *testing.T, p sandbox.Provider) {
	pr, ok := p.(sandbox.Processes)
	if !ok {
		t.Fatalf("%s is not a sandbox.Processes", p.Name())
	}
	w, ok := p.(sandbox.Waiter)
	if !ok {
		t.Fatalf("%s is not a sandbox.Waiter", p.Name())
	}
	sb := create(t, p, nil)
	if _, err := w.WaitState(ctx(t), sb.ID, sandbox.StateStarted, 10*time.Second); err != nil {
		t.Fatalf("wait for started: %v", err)
	}
	if err := pr.Upload(ctx(t), sb.ID, "dir/hello.sh", []byte("#!/bin/sh\necho hello from $1\n"), 0o755); err != nil {
		t.Fatalf("upload: %v", err)
	}
	res, err := pr.Exec(ctx(t), sb.ID, "./dir/hello.sh sandbox && echo done", 20*time.Second)
	if err != nil || res.ExitCode != 0 || !strings.Contains(res.Output, "hello from sandbox") || !strings.Contains(res.Output, "done") {
		t.Fatalf("exec: %+v %v", res, err)
	}
	res, err = pr.Exec(ctx(t), sb.ID, "echo oops >&2; exit 7", 20*time.Second)
	if err != nil || res.ExitCode != 7 || !strings.Contains(res.Output, "oops") {
		t.Fatalf("a failing command: %+v %v, want exit 7 and its stderr", res, err)
	}
	// A long-running process keeps going after the call, and stops with the sandbox.
	if err := pr.StartProcess(ctx(t), sb.ID, "ticker", "while true; do date +%s%N > tick.txt; sleep 0.05; done"); err != nil {
		t.Fatalf("start process: %v", err)
	}
	read := func() string {
		r, err := pr.Exec(ctx(t), sb.ID, "cat tick.txt 2>/dev/null", 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(r.Output)
	}
	first := ""
	waitFor(t, 10*time.Second, "the process to write", func() bool { first = read(); return first != "" })
	waitFor(t, 10*time.Second, "the process to go on", func() bool { return read() != first })
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Exec(ctx(t), sb.ID, "true", 5*time.Second); err == nil {
		t.Fatal("exec in a stopped sandbox worked")
	}
	if _, err := p.Start(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	last := read()
	time.Sleep(300 * time.Millisecond)
	if read() != last {
		t.Fatal("a process outlived the stop of its sandbox")
	}
	if err := pr.Upload(ctx(t), sb.ID, "../outside.txt", []byte("x"), 0o644); err == nil {
		t.Fatal("an upload left the workspace")
	}
}

func testPreview(t *testing.T, p sandbox.Provider) {
	pr := p.(sandbox.Processes)
	pv, ok := p.(sandbox.Previews)
	if !ok {
		t.Fatalf("%s is not a sandbox.Previews", p.Name())
	}
	sb := create(t, p, nil)
	port := freePort(t)
	server := fmt.Sprintf(`exec node -e "require('http').createServer((q,s)=>s.end('preview '+q.url)).listen(%d)"`, port)
	if err := pr.StartProcess(ctx(t), sb.ID, "app", server); err != nil {
		t.Fatal(err)
	}
	url, header, err := pv.Preview(ctx(t), sb.ID, port)
	if err != nil {
		t.Fatal(err)
	}
	get := func(u string, h http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, 15*time.Second, "the preview to answer", func() bool {
		code, body := get(strings.TrimRight(url, "/")+"/hello", header)
		return code == 200 && body == "preview /hello"
	})
	if len(header) > 0 {
		if code, _ := get(url, nil); code == 200 {
			t.Fatal("a private preview answered without its header")
		}
	}
	signed, expires, err := pv.SignedPreview(ctx(t), sb.ID, port, time.Minute)
	if err != nil || time.Until(expires) < 50*time.Second || time.Until(expires) > 70*time.Second {
		t.Fatalf("signed preview: %s %v %v", signed, expires, err)
	}
	if code, body := get(strings.TrimRight(signed, "/")+"/x", nil); code != 200 || body != "preview /x" {
		t.Fatalf("signed preview answered %d %q", code, body)
	}
}

func testArchive(t *testing.T, p sandbox.Provider) {
	a := p.(sandbox.Archiver)
	sb := create(t, p, nil)
	if err := a.Archive(ctx(t), sb.ID); err == nil {
		t.Fatal("archived a started sandbox")
	}
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Archive(ctx(t), sb.ID); err != nil {
		t.Fatalf("archive: %v", err)
	}
	if _, err := p.(sandbox.Waiter).WaitState(ctx(t), sb.ID, sandbox.StateArchived, 30*time.Second); err != nil {
		t.Fatalf("wait for archived: %v", err)
	}
	started, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatalf("start an archived sandbox: %v", err)
	}
	RelayAnswers(t, started.Relay)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
