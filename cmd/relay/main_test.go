package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/procfs"
	"github.com/nightona/nightona/internal/testenv"
)

func TestRunNeedsToken(t *testing.T) {
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "NIGHTONA_RELAY_TOKEN") {
		t.Fatalf("relay without a token: %v", err)
	}
}

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-agent", "/bin/false"},
			func(k string) string { return map[string]string{"NIGHTONA_RELAY_TOKEN": "tok"}[k] }, pw, io.Discard)
	}()
	buf := make([]byte, 128)
	n, err := pr.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(buf[:n]))
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		t.Fatalf("first stdout line %q, want 'listening <addr>'", line)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + addr + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a token: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not stop")
	}
}

func TestAgentEnvDropsToken(t *testing.T) {
	env := agentEnv([]string{"PATH=/bin", "NIGHTONA_RELAY_TOKEN=secret", "HOME=/h"})
	if strings.Contains(strings.Join(env, " "), "secret") || len(env) != 2 {
		t.Fatalf("agent env %v still carries the relay token", env)
	}
}

// TestDevServerOfAKilledRelayIsEnded: a relay killed outright leaves its dev server running,
// holding the port (the kernel kills only the relay's own child, not what that started). The
// relay started next in its place ends it and runs its own.
func TestDevServerOfAKilledRelayIsEnded(t *testing.T) {
	if !procfs.Supported() {
		t.Skip("needs /proc")
	}
	bin := testenv.RelayBinary(t)
	dir := t.TempDir()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // whatever a failure left
		for _, p := range procfs.Marked("NIGHTONA_DEV_SERVER=" + strconv.Itoa(port)) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	})
	// As npm run dev does, the shell stays and the server is its child; the server writes its
	// pid, then answers with it.
	dev := `node -e "require('fs').writeFileSync('dev.pid', String(process.pid)); require('http').createServer((q, s) => s.end(String(process.pid))).listen(process.env.PORT, '127.0.0.1')"; echo exited`
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-dir", dir, "-agent", "/bin/false", "-dev-command", dev, "-dev-port", strconv.Itoa(port))
		cmd.Env = append(os.Environ(), "NIGHTONA_RELAY_TOKEN=tok")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	served := func(what string, want func(pid string) bool) string {
		t.Helper()
		var got string
		testenv.WaitFor(t, 20*time.Second, what, func() bool {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got = string(b)
			return want(got)
		})
		return got
	}

	first := start()
	oldPID := served("the first dev server", func(pid string) bool { return pid != "" })
	_ = first.Process.Signal(syscall.SIGKILL)
	_ = first.Wait()
	old, _ := strconv.Atoi(oldPID)
	if p, ok := procfs.Stat(old); !ok || !p.Live() {
		t.Fatal("the dev server died with its relay: this test shows nothing here")
	}

	start()
	newPID := served("a new dev server", func(pid string) bool { return pid != "" && pid != oldPID })
	if p, ok := procfs.Stat(old); ok && p.Live() {
		t.Fatalf("the dead relay's dev server (pid %s) still runs beside the new one (pid %s)", oldPID, newPID)
	}
}
