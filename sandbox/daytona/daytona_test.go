package daytona_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/daytona"
	"github.com/nightona/nightona/sandbox/daytona/daytonatest"
	"github.com/nightona/nightona/sandbox/sandboxtest"
)

// devServerEnv makes the test binary serve HTTP on $PORT: the app's dev server in tests.
const devServerEnv = "NIGHTONA_TEST_DEV_SERVER"

func TestMain(m *testing.M) {
	// The dev server first: it inherits the sandbox's environment, fake agent switch included.
	if os.Getenv(devServerEnv) != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from the app")
		}))
		os.Exit(1)
	}
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	testenv.Main(m)
}

func newProvider(t *testing.T, srv *daytonatest.Server, edit func(*daytona.Config)) (*daytona.Provider, *testenv.Buffer) {
	t.Helper()
	l := &testenv.Buffer{}
	cfg := daytona.Config{
		APIURL: srv.APIURL, APIKey: srv.APIKey,
		RelayBinary:  testenv.RelayBinary(t),
		Claude:       os.Args[0],
		Env:          map[string]string{fakeagent.EnvVar: "1"},
		PollInterval: 20 * time.Millisecond, RetryMinWait: 10 * time.Millisecond, RetryMaxWait: 200 * time.Millisecond,
		StartTimeout: 60 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := daytona.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, l
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func create(t *testing.T, p *daytona.Provider, spec sandbox.Spec) *sandbox.Sandbox {
	t.Helper()
	sb, err := p.Create(ctx(t), spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), sb.ID) })
	return sb
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Provider {
		p, _ := newProvider(t, daytonatest.New(t, daytonatest.Config{}), nil)
		return p
	})
}

func status(t *testing.T, url string, header http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRelayThroughPreview(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, logs := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{Labels: map[string]string{"nightona.session": "s1"}, Env: map[string]string{"FOO": "bar"}})
	ep := sb.Relay
	if ep == nil || ep.Token == "" || ep.Header.Get(daytona.PreviewTokenHeader) == "" {
		t.Fatalf("relay endpoint %+v: want a token and the preview header", ep)
	}
	sandboxtest.RelayAnswers(t, ep)
	if got := status(t, ep.URL+"/healthz", ep.Header); got != http.StatusOK {
		t.Fatalf("healthz with the preview token: %d", got)
	}
	if got := status(t, ep.URL+"/healthz", nil); got == http.StatusOK {
		t.Fatal("the preview proxy let a request without the preview token through")
	}

	infos := srv.Sandboxes()
	if len(infos) != 1 {
		t.Fatalf("sandboxes %+v", infos)
	}
	info := infos[0]
	if info.Env["FOO"] != "bar" || info.Env[fakeagent.EnvVar] != "1" || info.Labels["nightona.relay-port"] == "" {
		t.Fatalf("sandbox env %v labels %v", info.Env, info.Labels)
	}
	st, err := os.Stat(filepath.Join(info.Home, ".nightona", "token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st, err)
	}
	// The relay token is nowhere but in the sandbox's token file.
	secrets := []string{ep.Token, ep.Header.Get(daytona.PreviewTokenHeader), srv.APIKey}
	for _, s := range secrets {
		for k, v := range info.Labels {
			if strings.Contains(v, s) {
				t.Errorf("label %s carries a secret", k)
			}
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the provider's log carries a secret")
		}
	}
	for _, v := range info.Env {
		if strings.Contains(v, ep.Token) {
			t.Error("the sandbox's env carries the relay token")
		}
	}
	script, err := os.ReadFile(filepath.Join(info.Home, ".nightona", "run-relay.sh"))
	if err != nil || strings.Contains(string(script), ep.Token) {
		t.Fatalf("start script %q %v: must exist and not hold the token", script, err)
	}
}

func TestStopStartNewPreviewToken(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{})
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	again, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, again.Relay)
	if again.Relay.Header.Get(daytona.PreviewTokenHeader) == sb.Relay.Header.Get(daytona.PreviewTokenHeader) {
		t.Fatal("the preview token did not change with the start")
	}
	if status(t, again.Relay.URL+"/healthz", sb.Relay.Header) == http.StatusOK {
		t.Fatal("the old preview token still works")
	}
}

// TestAnotherReplicaFindsTheRelay: a provider that did not start the relay finds it from the
// sandbox alone, and restarts it when it died.
func TestAnotherReplicaFindsTheRelay(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	a, _ := newProvider(t, srv, nil)
	b, _ := newProvider(t, srv, nil)
	sb := create(t, a, sandbox.Spec{})
	got, err := b.Get(ctx(t), sb.ID)
	if err != nil || got.Relay == nil || got.Relay.Token != sb.Relay.Token || got.Relay.URL != sb.Relay.URL {
		t.Fatalf("replica b: %+v %v", got, err)
	}
	sandboxtest.RelayAnswers(t, got.Relay)
	if same, err := b.Start(ctx(t), sb.ID); err != nil || same.Relay.Token != sb.Relay.Token {
		t.Fatalf("starting a running sandbox on replica b: %+v %v", same, err)
	}

	// Kill the relay: Get stops reporting it and Start brings up a new one.
	res, err := b.Exec(ctx(t), sb.ID, `kill -9 "$(cat "$HOME/.nightona/relay.pid")"`, 10*time.Second)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kill the relay: %+v %v", res, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the dead relay to be noticed", func() bool {
		got, err := a.Get(ctx(t), sb.ID)
		return err == nil && got.State == sandbox.StateStarted && got.Relay == nil
	})
	fresh, err := a.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, fresh.Relay)
	if fresh.Relay.Token == sb.Relay.Token {
		t.Fatal("a restarted relay kept its token")
	}
	if got, err := b.Get(ctx(t), sb.ID); err != nil || got.Relay == nil || got.Relay.Token != fresh.Relay.Token {
		t.Fatalf("replica b after the restart: %+v %v", got, err)
	}
}

func TestArchiveThenStart(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{})
	if err := p.Archive(ctx(t), sb.ID); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("archive of a started sandbox: %v", err)
	}
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Archive(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := p.WaitState(ctx(t), sb.ID, sandbox.StateArchived, 30*time.Second); err != nil || got.Relay != nil {
		t.Fatalf("wait archived: %+v %v", got, err)
	}
	started, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, started.Relay)
}

func TestQuota(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{Quota: 1})
	p, _ := newProvider(t, srv, nil)
	create(t, p, sandbox.Spec{})
	_, err := p.Create(ctx(t), sandbox.Spec{})
	if !errors.Is(err, sandbox.ErrQuota) {
		t.Fatalf("second create: %v, want ErrQuota", err)
	}
	if strings.Contains(err.Error(), srv.APIKey) {
		t.Fatal("the API key is in the error")
	}
	t.Log(err)
}

func TestSnapshotMissing(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{Snapshots: []string{"nightona"}})
	p, _ := newProvider(t, srv, func(c *daytona.Config) { c.Snapshot = "nightona" })
	sb := create(t, p, sandbox.Spec{})
	if infos := srv.Sandboxes(); len(infos) != 1 || infos[0].Snapshot != "nightona" || infos[0].ID != sb.ID {
		t.Fatalf("sandboxes %+v", infos)
	}
	_, err := p.Create(ctx(t), sandbox.Spec{Snapshot: "nope"})
	if !errors.Is(err, sandbox.ErrSnapshotMissing) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("create from a missing snapshot: %v, want ErrSnapshotMissing naming it", err)
	}
	t.Log(err)
}

func TestErrorState(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{})
	srv.SetState(sb.ID, "error", "the runner ran out of disk")
	got, err := p.Get(ctx(t), sb.ID)
	if err != nil || got.State != sandbox.StateError || got.Reason != "the runner ran out of disk" || got.Relay != nil {
		t.Fatalf("get: %+v %v", got, err)
	}
	_, err = p.Start(ctx(t), sb.ID)
	if !errors.Is(err, sandbox.ErrFailed) || !strings.Contains(err.Error(), "the runner ran out of disk") {
		t.Fatalf("start: %v, want ErrFailed with the reason", err)
	}
	if _, err := p.WaitState(ctx(t), sb.ID, sandbox.StateStarted, 5*time.Second); !errors.Is(err, sandbox.ErrFailed) {
		t.Fatalf("wait: %v, want ErrFailed", err)
	}
}

func TestRelayThatDoesNotComeUp(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		script string
		want   string
	}{
		"hangs": {"#!/bin/sh\necho 'relay stuck: cannot bind' >&2\nexec sleep 600\n", "cannot bind"},
		"dies":  {"#!/bin/sh\necho 'relay: bad flag -frobnicate' >&2\nexit 2\n", "status 2"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(t.TempDir(), "nightona-relay")
			if err := os.WriteFile(bin, []byte(tc.script), 0o755); err != nil {
				t.Fatal(err)
			}
			srv := daytonatest.New(t, daytonatest.Config{})
			p, _ := newProvider(t, srv, func(c *daytona.Config) { c.RelayBinary = bin; c.StartTimeout = 4 * time.Second })
			start := time.Now()
			_, err := p.Create(ctx(t), sandbox.Spec{})
			if !errors.Is(err, sandbox.ErrStartTimeout) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want ErrStartTimeout with the relay's output", err)
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			// Deleted: gone, or on its way (destroying).
			for _, left := range srv.Sandboxes() {
				if left.State != "destroying" {
					t.Fatalf("the failed sandbox was left behind: %+v", left)
				}
			}
		})
	}
}

func TestLabels(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{Labels: map[string]string{"pool": "warm"}})
	if err := p.SetLabels(ctx(t), sb.ID, map[string]string{"nightona.session": "s9", "nightona.thread": "web:t"}); err != nil {
		t.Fatal(err)
	}
	got, err := p.Get(ctx(t), sb.ID)
	if err != nil || len(got.Labels) != 2 || got.Labels["nightona.session"] != "s9" || got.Relay == nil {
		t.Fatalf("after set labels: %+v %v, want only the new labels and the relay still found", got, err)
	}
	list, err := p.List(ctx(t), map[string]string{"nightona.session": "s9"})
	if err != nil || len(list) != 1 || list[0].ID != sb.ID {
		t.Fatalf("list new label: %+v %v", list, err)
	}
	if list, err := p.List(ctx(t), map[string]string{"pool": "warm"}); err != nil || len(list) != 0 {
		t.Fatalf("list old label: %+v %v", list, err)
	}
}

func TestProcesses(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{})
	c := ctx(t)
	if err := p.Upload(c, sb.ID, "notes/hello.txt", []byte("it's \"quoted\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := p.Exec(c, sb.ID, `cat notes/hello.txt; stat -c %a notes/hello.txt; exit 3`, 10*time.Second)
	if err != nil || res.ExitCode != 3 || res.Output != "it's \"quoted\"\n600\n" {
		t.Fatalf("exec: %+v %v", res, err)
	}
	if err := p.Upload(c, sb.ID, "../escape.txt", []byte("x"), 0); err == nil {
		t.Fatal("an upload left the workspace")
	}
	start := time.Now()
	if err := p.StartProcess(c, sb.ID, "ticker", `echo $$ > ticker.pid; while true; do date >> ticks; sleep 0.1; done`); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("StartProcess took %v: it waited for the process", d)
	}
	testenv.WaitFor(t, 10*time.Second, "the process to run", func() bool {
		res, err := p.Exec(c, sb.ID, `kill -0 "$(cat ticker.pid)" && [ "$(wc -l < ticks)" -ge 3 ] && echo alive`, 10*time.Second)
		return err == nil && strings.TrimSpace(res.Output) == "alive"
	})
	if err := p.Stop(c, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(c, sb.ID, "true", time.Second); err == nil {
		t.Fatal("exec in a stopped sandbox succeeded")
	}
}

func TestDevServerPreview(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, func(c *daytona.Config) {
		c.DevCommand = devServerEnv + "=1 exec " + os.Args[0]
	})
	sb := create(t, p, sandbox.Spec{})
	if sb.PreviewURL == "" || sb.PreviewHeader.Get(daytona.PreviewTokenHeader) == "" {
		t.Fatalf("preview %q %v", sb.PreviewURL, sb.PreviewHeader)
	}
	testenv.WaitFor(t, 20*time.Second, "the dev server through the preview", func() bool {
		return status(t, sb.PreviewURL, sb.PreviewHeader) == http.StatusOK
	})
	port := srv.Sandboxes()[0].Labels["nightona.dev-port"]
	var n int
	fmt.Sscan(port, &n)
	url, hdr, err := p.Preview(ctx(t), sb.ID, n)
	if err != nil || url != sb.PreviewURL || hdr.Get(daytona.PreviewTokenHeader) == "" {
		t.Fatalf("preview: %q %v %v", url, hdr, err)
	}
	signed, expires, err := p.SignedPreview(ctx(t), sb.ID, n, 48*time.Hour)
	if err != nil || time.Until(expires) > 24*time.Hour+time.Minute {
		t.Fatalf("signed preview: %q %v %v", signed, expires, err)
	}
	if got := status(t, signed, nil); got != http.StatusOK {
		t.Fatalf("signed preview without a header: %d", got)
	}
}

func TestPublicSandbox(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	p, _ := newProvider(t, srv, nil)
	sb := create(t, p, sandbox.Spec{Public: true})
	if sb.Relay.Header != nil {
		t.Fatalf("public sandbox's relay header %v, want none", sb.Relay.Header)
	}
	sandboxtest.RelayAnswers(t, sb.Relay)
}

// TestStaleEndpointBehindRedirect: Daytona's proxy answers a stale preview token with a
// redirect to a login page that answers 200. A replica whose cached endpoint went stale (the
// other replica stopped and started the sandbox) must not take that page for its relay.
func TestStaleEndpointBehindRedirect(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{PreviewAuthRedirect: true})
	a, _ := newProvider(t, srv, nil)
	b, _ := newProvider(t, srv, nil)
	sb := create(t, a, sandbox.Spec{})
	if got, err := b.Get(ctx(t), sb.ID); err != nil || got.Relay == nil {
		t.Fatalf("replica b: %+v %v", got, err)
	}
	if err := a.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx(t), sb.ID); err != nil || got.State != sandbox.StateStopped || got.Relay != nil {
		t.Fatalf("replica b, stopped: %+v %v", got, err)
	}
	fresh, err := a.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx(t), sb.ID)
	if err != nil || got.Relay == nil || got.Relay.Token != fresh.Relay.Token ||
		got.Relay.Header.Get(daytona.PreviewTokenHeader) != fresh.Relay.Header.Get(daytona.PreviewTokenHeader) {
		t.Fatalf("replica b after the restart: %+v %v, want the new endpoint", got, err)
	}
	sandboxtest.RelayAnswers(t, got.Relay)
	// Kill the relay: behind redirects too, Get must see it gone.
	if res, err := a.Exec(ctx(t), sb.ID, `kill -9 "$(cat "$HOME/.nightona/relay.pid")"`, 10*time.Second); err != nil || res.ExitCode != 0 {
		t.Fatalf("kill the relay: %+v %v", res, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the dead relay to be noticed", func() bool {
		got, err := b.Get(ctx(t), sb.ID)
		return err == nil && got.Relay == nil
	})
}

// TestTemplateFillsNewWorkspaces: a new sandbox's workspace starts from the template, as a git
// repository with it committed; a restart leaves Claude's changes alone.
func TestTemplateFillsNewWorkspaces(t *testing.T) {
	t.Parallel()
	srv := daytonatest.New(t, daytonatest.Config{})
	tmpl := fstest.MapFS{
		"package.json":    {Data: []byte(`{"name":"app"}`)},
		"src/app/main.js": {Data: []byte("console.log('hi')\n")},
	}
	p, _ := newProvider(t, srv, func(c *daytona.Config) { c.Template = tmpl })
	sb := create(t, p, sandbox.Spec{})
	var ws string
	for _, info := range srv.Sandboxes() {
		if info.ID == sb.ID {
			ws = info.WorkDir
		}
	}
	for name, f := range tmpl {
		got, err := os.ReadFile(filepath.Join(ws, name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Fatalf("%s in the workspace: %q %v", name, got, err)
		}
	}
	if _, err := exec.LookPath("git"); err == nil {
		out, err := exec.Command("git", "-C", ws, "log", "--format=%s").Output()
		if err != nil || strings.TrimSpace(string(out)) != "Template" {
			t.Fatalf("git log of the workspace: %q %v", out, err)
		}
	}
	// A restart does not put the template back over Claude's work.
	if err := os.WriteFile(filepath.Join(ws, "package.json"), []byte(`{"name":"changed"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(ctx(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(ws, "package.json")); string(got) != `{"name":"changed"}` {
		t.Fatalf("package.json after a restart: %s", got)
	}
}
