// Package testenv gives tests the real components they run against: the Claude Code CLI, a
// redis-server of their own, and a freshly built relay binary.
//
// Packages that use it call testenv.Main from TestMain so that what it starts is stopped when
// the package's tests end.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	mu       sync.Mutex
	cleanups []func()
)

// Main runs the package's tests and then stops everything this package started for them.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	mu.Unlock()
	os.Exit(code)
}

func atExit(f func()) {
	mu.Lock()
	cleanups = append(cleanups, f)
	mu.Unlock()
}

// Root returns the module's root folder.
func Root(tb testing.TB) string {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working folder")
		}
		dir = parent
	}
}

// Claude returns the path of the real Claude Code CLI: $NIGHTONA_CLAUDE, the copy `make tools`
// installs into .nightona/tools, or `claude` on PATH. A missing CLI fails the test: these tests
// exist to run it.
func Claude(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("NIGHTONA_CLAUDE"); p != "" {
		return p
	}
	if p := filepath.Join(Root(tb), ".nightona", "tools", "bin", "claude"); isExecutable(p) {
		return p
	}
	if p, err := exec.LookPath("claude"); err == nil {
		return p
	}
	tb.Fatal("the Claude Code CLI is not installed: run `make tools` (or `make test`, which does it)")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// RelayBinary builds cmd/relay once per test process and returns the binary's path.
func RelayBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, "./cmd/relay", "nightona-relay")
}

// BotBinary builds cmd/bot once per test process and returns the binary's path.
func BotBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, "./cmd/bot", "nightona")
}

// Binary builds the command package pkg (relative to the module root) once per test process,
// statically, and returns the binary's path.
func Binary(tb testing.TB, pkg, name string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "nightona-bin-")
	if err != nil {
		tb.Fatal(err)
	}
	atExit(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	built[pkg] = path
	return path
}

// Redis is a redis-server started for the tests.
type Redis struct {
	Addr string
	Dir  string
	bin  string
	cmd  *exec.Cmd
	port int
	// persist keeps the data across Stop and Start (an append-only file, synced on every
	// write), as a production Redis does.
	persist bool
}

var (
	redisOnce sync.Once
	shared    *Redis
	sharedErr error
)

// RedisURL returns the URL of a real Redis for the test: $NIGHTONA_TEST_REDIS_URL when set, else
// a redis-server this package starts once per test process on a free port. Tests keep apart by
// key prefix (see Prefix), not by server.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv("NIGHTONA_TEST_REDIS_URL"); u != "" {
		return u
	}
	redisOnce.Do(func() {
		shared, sharedErr = startRedis(false)
		if sharedErr == nil {
			atExit(shared.stop)
		}
	})
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return "redis://" + shared.Addr + "/0"
}

// StartRedis starts a redis-server of the test's own, stopped when the test ends. Use it when the
// test stops and restarts the server.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	r, err := startRedis(false)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.stop)
	return r
}

// StartPersistentRedis is StartRedis with the data kept across Stop and Start.
func StartPersistentRedis(tb testing.TB) *Redis {
	tb.Helper()
	r, err := startRedis(true)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.stop)
	return r
}

func startRedis(persist bool) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("testenv: redis-server is not installed (apt-get install redis-server, or set NIGHTONA_TEST_REDIS_URL)")
	}
	dir, err := os.MkdirTemp("", "nightona-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, bin: bin, port: port, persist: persist}
	if err := r.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// Start starts (or restarts) the server on its port.
func (r *Redis) Start() error {
	aof := []string{"--appendonly", "no"}
	if r.persist {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	cmd := exec.Command(r.bin, append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--dir", r.Dir}, aof...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start redis-server: %w", err)
	}
	r.cmd = cmd
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("testenv: redis-server did not become ready in 10s")
	}
}

// Stop stops the server (SIGKILL: nothing is kept anyway).
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *Redis) stop() {
	r.Stop()
	os.RemoveAll(r.Dir)
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Prefix returns a key prefix unique to this test, so tests can share one server.
func Prefix(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + ":"
}

// FreePort asks the kernel for a free TCP port on loopback.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor polls cond every 20ms until it holds or the timeout passes, then fails the test with msg.
func WaitFor(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("timed out after %v waiting for %s", timeout, msg)
		case <-t.C:
		}
	}
}
