package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// relayProc is a sandbox's running relay: one this provider started (cmd set; done closes when
// it exits), or one another provider on the same folder started, known from its run file.
type relayProc struct {
	pid      int
	marker   string
	endpoint sandbox.Endpoint
	cmd      *exec.Cmd
	done     chan struct{}
}

func (r *relayProc) running() bool {
	if r.cmd != nil {
		select {
		case <-r.done:
			return false
		default:
			return true
		}
	}
	return processAlive(r.pid, r.marker)
}

// stop asks the relay to stop (it interrupts a running turn and flushes), waits up to 10 s,
// then kills its process group.
func (r *relayProc) stop() {
	_ = signalPID(r.pid, termSignal)
	deadline := time.Now().Add(10 * time.Second)
	for r.running() && time.Now().Before(deadline) {
		if r.cmd != nil {
			select {
			case <-r.done:
			case <-time.After(time.Until(deadline)):
			}
			continue
		}
		time.Sleep(25 * time.Millisecond)
	}
	r.kill()
}

// kill kills the relay's process group, and waits for it when it is this provider's child.
func (r *relayProc) kill() {
	killGroup(r.pid)
	if r.cmd != nil {
		<-r.done
	}
}

// runInfo is the run file: how to reach a sandbox's relay, for any provider on the folder.
type runInfo struct {
	PID   int    `json:"pid"`
	URL   string `json:"url"`
	Token string `json:"token"`
}

// refresh brings what the provider knows of a sandbox's relay up to date: a relay it started
// may have died, and one another provider started may be running.
func (p *Provider) refresh(b *box) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.relay != nil {
		if b.relay.running() {
			return
		}
		b.relay = nil
		if b.state == sandbox.StateStarted {
			b.state = sandbox.StateStopped
		}
	}
	if b.state == sandbox.StateStarting || b.state == sandbox.StateCreating || b.state == sandbox.StateStopping {
		return // an operation of this provider is under way and knows better
	}
	data, err := os.ReadFile(filepath.Join(b.dir, runFile))
	if err != nil {
		return
	}
	var ri runInfo
	if json.Unmarshal(data, &ri) != nil || ri.PID <= 0 {
		return
	}
	if !processAlive(ri.PID, markerEnv(b.id)) {
		return
	}
	b.relay = &relayProc{pid: ri.PID, marker: markerEnv(b.id), endpoint: sandbox.Endpoint{URL: ri.URL, Token: ri.Token}}
	b.state = sandbox.StateStarted
}

// startRelay starts the relay process and waits until it answers. With prestart the relay
// starts Claude Code at once (a new sandbox: its first prompt then finds the CLI loaded).
// Called with b.ops held.
func (p *Provider) startRelay(ctx context.Context, b *box, prestart bool) error {
	b.mu.Lock()
	b.state = sandbox.StateStarting
	mode, model := b.meta.PermissionMode, b.meta.Model
	extra := b.meta.Env
	b.mu.Unlock()
	if mode == "" {
		mode = p.cfg.PermissionMode
	}
	// What an earlier relay of this sandbox left (a dev server holding its port, say) goes
	// first: the new relay starts on a clean slate.
	killLeftovers(markerEnv(b.id))
	token := randomHex(32)
	args := []string{
		"-addr", "127.0.0.1:0",
		"-dir", filepath.Join(b.dir, workspace),
		"-agent", p.cfg.Claude,
		"-permission-mode", mode,
	}
	if model != "" {
		args = append(args, "-model", model)
	}
	if prestart {
		args = append(args, "-prestart")
	}
	if p.cfg.DevCommand != "" {
		port, err := p.devPort(b)
		if err != nil {
			return p.failStart(b, err)
		}
		args = append(args, "-dev-command", p.cfg.DevCommand, "-dev-port", strconv.Itoa(port))
	}
	cmd := exec.Command(p.cfg.RelayBinary, args...)
	cmd.Dir = b.dir
	cmd.Env = append(p.env(b, extra), "NIGHTONA_RELAY_TOKEN="+token)
	setProcAttrs(cmd, p.cfg.Detached)

	logPath := filepath.Join(b.dir, logFile)
	if st, err := os.Stat(logPath); err == nil && st.Size() > maxLogSize {
		_ = os.Truncate(logPath, 0)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return p.failStart(b, fmt.Errorf("open relay log: %w", err))
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return p.failStart(b, err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return p.failStart(b, fmt.Errorf("%w: run relay: %v", sandbox.ErrUnavailable, err))
	}
	r := &relayProc{pid: cmd.Process.Pid, marker: markerEnv(b.id), cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		addrc <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		_, _ = io.Copy(logf, br)
	}()
	go func() {
		err := cmd.Wait()
		killGroup(r.pid) // whatever the relay's tools left running in its group
		// What left its group (the dev server) is found by the sandbox's marker, unless
		// another provider on the folder has started a new relay for the sandbox meanwhile:
		// the marker is that relay's too, and the run file names it.
		if pid, rerr := RelayPID(b.dir); rerr != nil || pid == r.pid {
			killLeftovers(markerEnv(b.id))
			_ = os.Remove(filepath.Join(b.dir, runFile))
		}
		logf.Close()
		b.mu.Lock()
		if b.relay == r {
			b.relay = nil
			if b.state != sandbox.StateStopping {
				b.state = sandbox.StateStopped
				p.log.Warn("relay exited", "sandbox_id", b.id, "err", err)
			}
		}
		b.mu.Unlock()
		close(r.done)
	}()

	timeout := time.NewTimer(p.cfg.StartTimeout)
	defer timeout.Stop()
	var addr string
	select {
	case addr = <-addrc:
	case <-r.done:
	case <-timeout.C:
	case <-ctx.Done():
	}
	if addr == "" {
		r.stop()
		return p.failStart(b, p.startError(ctx, b, "the relay did not report its address"))
	}
	r.endpoint = sandbox.Endpoint{URL: "http://" + addr, Token: token}
	b.mu.Lock()
	b.relay = r
	b.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	defer cancel()
	if err := p.healthy(hctx, b); err != nil {
		p.stopRelay(b)
		return p.failStart(b, p.startError(ctx, b, err.Error()))
	}
	info, _ := json.Marshal(runInfo{PID: r.pid, URL: r.endpoint.URL, Token: token})
	if err := os.WriteFile(filepath.Join(b.dir, runFile), info, 0o600); err != nil {
		p.stopRelay(b)
		return p.failStart(b, fmt.Errorf("record the relay: %w", err))
	}
	b.mu.Lock()
	b.state = sandbox.StateStarted
	b.mu.Unlock()
	p.log.Info("relay started", "sandbox_id", b.id, "addr", addr, "pid", r.pid, "detached", p.cfg.Detached)
	return nil
}

func (p *Provider) startError(ctx context.Context, b *box, why string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	tail := lastLines(filepath.Join(b.dir, logFile), 5)
	if tail != "" {
		why += ": " + tail
	}
	return fmt.Errorf("%w: %s", sandbox.ErrStartTimeout, why)
}

func (p *Provider) failStart(b *box, err error) error {
	b.mu.Lock()
	b.state = sandbox.StateError
	b.mu.Unlock()
	p.log.Error("relay did not start", "sandbox_id", b.id, "err", err)
	return err
}

// healthy polls the relay's /healthz until it answers 200 or ctx ends.
func (p *Provider) healthy(ctx context.Context, b *box) error {
	b.mu.Lock()
	r := b.relay
	b.mu.Unlock()
	if r == nil {
		return errors.New("relay not running")
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.endpoint.URL+"/healthz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !r.running() {
			return errors.New("relay exited")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay health check: %w", ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// stopRelay stops the sandbox's relay, whoever started it, and everything of the sandbox
// that still runs. Called with b.ops held.
func (p *Provider) stopRelay(b *box) {
	b.mu.Lock()
	r := b.relay
	if r != nil {
		b.state = sandbox.StateStopping
	}
	b.mu.Unlock()
	if r != nil {
		r.stop()
	}
	killLeftovers(markerEnv(b.id))
	_ = os.Remove(filepath.Join(b.dir, runFile))
	b.mu.Lock()
	if b.relay == r {
		b.relay = nil
	}
	b.state = sandbox.StateStopped
	b.mu.Unlock()
}

// RelayPID returns the process id of the relay of the sandbox in folder dir, as its run file
// records it, for tools and tests that need to look at or signal the process.
func RelayPID(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, runFile))
	if err != nil {
		return 0, fmt.Errorf("relay of %s: %w", dir, err)
	}
	var ri runInfo
	if err := json.Unmarshal(data, &ri); err != nil {
		return 0, fmt.Errorf("relay of %s: %w", dir, err)
	}
	return ri.PID, nil
}
