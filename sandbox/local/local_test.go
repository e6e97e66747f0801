package local_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/sandbox/sandboxtest"
)

// botEnv makes the test binary act as a bot that owns one local sandbox (see TestMain).
const botEnv = "NIGHTONA_TEST_LOCAL_BOT"

func TestMain(m *testing.M) {
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	if dir := os.Getenv(botEnv); dir != "" {
		os.Exit(actAsBot(dir, os.Getenv("NIGHTONA_TEST_RELAY_BIN")))
	}
	testenv.Main(m)
}

func newProvider(t *testing.T, dir string) *local.Provider {
	t.Helper()
	p, err := local.New(local.Config{
		Dir:         dir,
		RelayBinary: testenv.RelayBinary(t),
		Claude:      os.Args[0],
		Env:         []string{fakeagent.EnvVar + "=1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Provider { return newProvider(t, t.TempDir()) })
}

func TestWorkspaceAndHome(t *testing.T) {
	tmpl := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmpl, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmpl, "src", "app.txt"), []byte("from the template\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Template: tmpl, Env: []string{fakeagent.EnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	a, err := p.Create(ctx, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Create(ctx, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Workspace == b.Workspace {
		t.Fatal("two sandboxes share a workspace")
	}
	got, err := os.ReadFile(filepath.Join(a.Workspace, "src", "app.txt"))
	if err != nil || string(got) != "from the template\n" {
		t.Fatalf("template file in workspace: %q %v", got, err)
	}
	// Each sandbox has a HOME of its own, beside (not inside) the workspace.
	if _, err := os.Stat(filepath.Join(filepath.Dir(a.Workspace), "home")); err != nil {
		t.Fatalf("sandbox home: %v", err)
	}
	if a.Relay.URL == b.Relay.URL || a.Relay.Token == b.Relay.Token {
		t.Fatal("two sandboxes share a relay port or token")
	}
}

func TestStarterTemplate(t *testing.T) {
	p := newProvider(t, t.TempDir())
	sb, err := p.Create(context.Background(), sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"index.html", "server.js", "package.json"} {
		if _, err := os.Stat(filepath.Join(sb.Workspace, f)); err != nil {
			t.Errorf("starter template lacks %s: %v", f, err)
		}
	}
}

func TestRelayDeathIsNoticed(t *testing.T) {
	p := newProvider(t, t.TempDir())
	ctx := context.Background()
	sb, err := p.Create(ctx, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	pid := relayPID(t, sb)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the provider to see the relay die", func() bool {
		got, err := p.Get(ctx, sb.ID)
		return err == nil && got.State == sandbox.StateStopped && got.Relay == nil
	})
	again, err := p.Start(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, again.Relay)
}

func TestBrokenRelayReportsWhy(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "relay")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'cannot start: no workspace' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: bad})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Create(context.Background(), sandbox.Spec{})
	if !errors.Is(err, sandbox.ErrStartTimeout) || !strings.Contains(err.Error(), "cannot start: no workspace") {
		t.Fatalf("create with a failing relay: %v, want ErrStartTimeout with the relay's last words", err)
	}
	if _, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: "/no/such/relay"}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("missing relay binary: %v, want ErrUnavailable", err)
	}
}

func TestSandboxesSurviveProviderRestart(t *testing.T) {
	dir := t.TempDir()
	p1 := newProvider(t, dir)
	sb, err := p1.Create(context.Background(), sandbox.Spec{Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(sb.Workspace, "work.txt")
	if err := os.WriteFile(marker, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	p1.Close()
	p2 := newProvider(t, dir)
	got, err := p2.Get(context.Background(), sb.ID)
	if err != nil || got.State != sandbox.StateStopped || got.Labels["k"] != "v" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	started, err := p2.Start(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, started.Relay)
	if b, _ := os.ReadFile(marker); string(b) != "kept" {
		t.Fatal("workspace lost across a provider restart")
	}
}

// TestNothingOutlivesAKilledBot runs a bot in a child process that starts a sandbox whose agent
// starts a background process, kills the bot with SIGKILL, and checks that the relay dies with
// it and that the next provider on the folder kills the background process.
func TestNothingOutlivesAKilledBot(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), botEnv+"="+dir, "NIGHTONA_TEST_RELAY_BIN="+testenv.RelayBinary(t))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var report struct{ Relay, Spawned int }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || json.Unmarshal([]byte(line), &report) != nil || report.Relay == 0 || report.Spawned == 0 {
		t.Fatalf("bot report %q: %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	testenv.WaitFor(t, 5*time.Second, "the relay to die with the bot", func() bool { return !alive(report.Relay) })
	if !alive(report.Spawned) {
		t.Fatal("the agent's background process died too early: the test proves nothing")
	}
	newProvider(t, dir) // a new bot's provider cleans up
	testenv.WaitFor(t, 5*time.Second, "the background process to be killed", func() bool { return !alive(report.Spawned) })
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie waiting for its parent is dead for our purposes.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func relayPID(t *testing.T, sb *sandbox.Sandbox) int {
	t.Helper()
	pid, err := local.RelayPID(filepath.Dir(sb.Workspace))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// actAsBot creates a sandbox in dir, has its agent start a background process, prints
// {"Relay":pid,"Spawned":pid} and waits to be killed.
func actAsBot(dir, relayBin string) int {
	p, err := local.New(local.Config{Dir: dir, RelayBinary: relayBin, Claude: os.Args[0], Env: []string{fakeagent.EnvVar + "=1"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	sb, err := p.Create(ctx, sandbox.Spec{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	relayPid, _ := local.RelayPID(filepath.Dir(sb.Workspace))
	c := relay.NewClient(relay.Endpoint{URL: sb.Relay.URL, Token: sb.Relay.Token}, relay.ClientConfig{})
	spawned := make(chan int, 1)
	go c.Run(ctx, relay.Cursor{}, relay.Handlers{OnEvent: func(ev relay.Event) error {
		var m struct {
			SpawnedPID int `json:"spawned_pid"`
		}
		if json.Unmarshal(ev.Data, &m) == nil && m.SpawnedPID != 0 {
			spawned <- m.SpawnedPID
		}
		return nil
	}})
	if err := c.Prompt(ctx, "", "spawn", ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("{\"Relay\":%d,\"Spawned\":%d}\n", relayPid, <-spawned)
	select {}
}

// TestDevServerDoesNotOutliveItsRelay kills a relay whose dev server started a background
// process outside the relay's process group: the provider still finds it and kills it.
func TestDevServerDoesNotOutliveItsRelay(t *testing.T) {
	p, err := local.New(local.Config{
		Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env:        []string{fakeagent.EnvVar + "=1"},
		DevCommand: `sleep 300 & echo $! > devserver.pid; wait`,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sb, err := p.Create(context.Background(), sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sb.PreviewURL, "http://localhost:") {
		t.Fatalf("preview URL %q", sb.PreviewURL)
	}
	var devPID int
	testenv.WaitFor(t, 10*time.Second, "the dev server to start", func() bool {
		b, err := os.ReadFile(filepath.Join(sb.Workspace, "devserver.pid"))
		devPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && devPID > 0
	})
	if err := syscall.Kill(relayPID(t, sb), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the dev server's child to be killed", func() bool { return !alive(devPID) })
}

// TestDetachedRelaysAreShared runs two providers on one folder, as two bot replicas on one
// machine do: a relay one starts survives it and the other reaches, stops and deletes it.
func TestDetachedRelaysAreShared(t *testing.T) {
	dir := t.TempDir()
	cfg := local.Config{Dir: dir, RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"}, Detached: true}
	p1, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := local.New(cfg) // started before p1 made anything
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sb, err := p1.Create(ctx, sandbox.Spec{Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Delete(context.Background(), sb.ID) })
	p1.Close() // a detached relay outlives its provider
	got, err := p2.Get(ctx, sb.ID)
	if err != nil || got.State != sandbox.StateStarted || got.Relay == nil || got.Relay.Token != sb.Relay.Token {
		t.Fatalf("the other provider sees %+v %v, want the running relay", got, err)
	}
	sandboxtest.RelayAnswers(t, got.Relay)
	if list, _ := p2.List(ctx, map[string]string{"k": "v"}); len(list) != 1 {
		t.Fatalf("the other provider lists %d sandboxes", len(list))
	}
	// A third provider starting now leaves the live relay alone.
	if _, err := local.New(cfg); err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, got.Relay)
	pid := relayPID(t, got)
	if err := p2.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the relay to stop", func() bool { return !alive(pid) })
	if got, _ := p2.Get(ctx, sb.ID); got.State != sandbox.StateStopped {
		t.Fatalf("after stop: %+v", got)
	}
	again, err := p2.Start(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.RelayAnswers(t, again.Relay)
}

// TestAttachedRelaysAreKilledByTheNextProvider: without Detached, a relay left by a provider
// that did not stop it (a killed bot's) is killed when the next provider starts.
func TestAttachedRelaysAreKilledByTheNextProvider(t *testing.T) {
	dir := t.TempDir()
	cfg := local.Config{Dir: dir, RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0], Env: []string{fakeagent.EnvVar + "=1"}}
	p1, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := p1.Create(context.Background(), sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	pid := relayPID(t, sb)
	p2 := newProvider(t, dir)
	testenv.WaitFor(t, 5*time.Second, "the next provider to kill the attached relay", func() bool { return !alive(pid) })
	if got, _ := p2.Get(context.Background(), sb.ID); got.State != sandbox.StateStopped {
		t.Fatalf("state %s", got.State)
	}
}
