package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nightona/nightona/sandbox"
)

var (
	_ sandbox.Processes = (*Provider)(nil)
	_ sandbox.Previews  = (*Provider)(nil)
	_ sandbox.Waiter    = (*Provider)(nil)
)

// started returns the sandbox if it is started: files and processes of a stopped sandbox are
// out of reach on every platform, so here too.
func (p *Provider) started(id string) (*box, error) {
	b, err := p.box(id)
	if err != nil {
		return nil, err
	}
	p.refresh(b)
	b.mu.Lock()
	st := b.state
	b.mu.Unlock()
	if st != sandbox.StateStarted {
		return nil, fmt.Errorf("sandbox %s is %s, not started", id, st)
	}
	return b, nil
}

// inWorkspace resolves a path relative to the workspace and refuses one that leaves it.
func inWorkspace(b *box, path string) (string, error) {
	if filepath.IsAbs(path) {
		return "", fmt.Errorf("path %q: must be relative to the workspace", path)
	}
	ws := filepath.Join(b.dir, workspace)
	full := filepath.Join(ws, filepath.Clean(path))
	if full != ws && !strings.HasPrefix(full, ws+string(filepath.Separator)) {
		return "", fmt.Errorf("path %q: leaves the workspace", path)
	}
	return full, nil
}

// Upload implements sandbox.Processes.
func (p *Provider) Upload(_ context.Context, id, path string, data []byte, mode fs.FileMode) error {
	b, err := p.started(id)
	if err != nil {
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	full, err := inWorkspace(b, path)
	if err != nil {
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	return os.Chmod(full, mode) // WriteFile keeps an existing file's mode
}

func (p *Provider) command(b *box, command string) *exec.Cmd {
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = filepath.Join(b.dir, workspace)
	b.mu.Lock()
	extra := b.meta.Env
	b.mu.Unlock()
	cmd.Env = p.env(b, extra)
	return cmd
}

// Exec implements sandbox.Processes.
func (p *Provider) Exec(ctx context.Context, id, command string, timeout time.Duration) (sandbox.ExecResult, error) {
	b, err := p.started(id)
	if err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := p.command(b, command)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setGroup(cmd)
	if err := cmd.Start(); err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	stop := context.AfterFunc(ctx, func() { killGroup(cmd.Process.Pid) })
	defer stop()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return sandbox.ExecResult{ExitCode: -1, Output: out.String()}, fmt.Errorf("exec in sandbox %s: timed out after %v", id, timeout)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	return sandbox.ExecResult{ExitCode: code, Output: out.String()}, nil
}

// StartProcess implements sandbox.Processes. The process carries the sandbox's marker, so it
// is stopped with the sandbox; its output goes to processes/<name>.log in the sandbox folder.
func (p *Provider) StartProcess(_ context.Context, id, name, command string) error {
	b, err := p.started(id)
	if err != nil {
		return fmt.Errorf("start process %s in sandbox %s: %w", name, id, err)
	}
	if name == "" || strings.ContainsAny(name, `/\ `) {
		return fmt.Errorf("start process in sandbox %s: bad name %q", id, name)
	}
	logDir := filepath.Join(b.dir, "processes")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start process %s in sandbox %s: %w", name, id, err)
	}
	cmd := p.command(b, command)
	cmd.Stdout, cmd.Stderr = logf, logf
	setGroup(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start process %s in sandbox %s: %w", name, id, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	return nil
}

// Preview implements sandbox.Previews: a local port is open to this machine as it is.
func (p *Provider) Preview(_ context.Context, id string, port int) (string, http.Header, error) {
	if _, err := p.box(id); err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("http://localhost:%d/", port), nil, nil
}

// SignedPreview implements sandbox.Previews. Local previews need no signature; the URL is the
// plain one and its expiry only nominal.
func (p *Provider) SignedPreview(ctx context.Context, id string, port int, ttl time.Duration) (string, time.Time, error) {
	u, _, err := p.Preview(ctx, id, port)
	return u, time.Now().Add(ttl), err
}
