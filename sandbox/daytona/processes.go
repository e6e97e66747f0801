package daytona

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// target is a started sandbox's toolbox and file layout, for the Processes methods.
func (p *Provider) target(ctx context.Context, id string) (*toolbox, layout, error) {
	s, err := p.getSandbox(ctx, id)
	if err != nil {
		return nil, layout{}, err
	}
	if st, _ := mapState(s); st != sandbox.StateStarted {
		return nil, layout{}, fmt.Errorf("sandbox %s is %s, not started", id, s.State)
	}
	b := p.box(id)
	tb, err := p.toolboxFor(ctx, b, s, id)
	if err != nil {
		return nil, layout{}, err
	}
	home, err := p.homeOf(ctx, b, tb, false)
	if err != nil {
		return nil, layout{}, err
	}
	return tb, p.layout(home), nil
}

// inWorkspace resolves a path relative to the workspace, refusing one that leaves it.
func inWorkspace(l layout, rel string) (string, error) {
	clean := path.Clean("/" + rel)
	if rel == "" || path.IsAbs(rel) || clean == "/" || strings.Contains(rel, "\x00") {
		return "", fmt.Errorf("%q is not a file path relative to the workspace", rel)
	}
	if path.Clean(rel) != strings.TrimPrefix(clean, "/") {
		return "", fmt.Errorf("%q leaves the workspace", rel)
	}
	return l.ws + clean, nil
}

// Upload implements sandbox.Processes.
func (p *Provider) Upload(ctx context.Context, id, rel string, data []byte, mode fs.FileMode) error {
	tb, l, err := p.target(ctx, id)
	if err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	full, err := inWorkspace(l, rel)
	if err != nil {
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	if dir := path.Dir(full); dir != l.ws {
		if err := tb.mkdir(ctx, dir); err != nil {
			return fmt.Errorf("upload %s: %w", rel, err)
		}
	}
	if err := tb.upload(ctx, full, data); err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	if mode != 0 {
		if err := tb.chmod(ctx, full, uint32(mode.Perm())); err != nil {
			return fmt.Errorf("upload %s: %w", rel, err)
		}
	}
	return nil
}

// Exec implements sandbox.Processes. The command must not leave a process running in the
// background: the toolbox waits for all output to close (use StartProcess). A command that
// outlasts timeout (default 10 minutes) is killed and reported as an error.
func (p *Provider) Exec(ctx context.Context, id, command string, timeout time.Duration) (sandbox.ExecResult, error) {
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	tb, l, err := p.target(ctx, id)
	if err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	res, err := tb.execute(ctx, "exec", "cd "+shellQuote(l.ws)+" || exit 1\n"+command, l.ws, timeout)
	if err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	return sandbox.ExecResult{ExitCode: res.ExitCode, Output: res.Result}, nil
}

// StartProcess implements sandbox.Processes. It runs in a toolbox session named after the
// process; starting a process under a name already running replaces it.
func (p *Provider) StartProcess(ctx context.Context, id, name, command string) error {
	tb, l, err := p.target(ctx, id)
	if err != nil {
		return fmt.Errorf("start process %s: %w", name, err)
	}
	// Through sh -c, not straight into the session's shell: the command may be any script
	// (comments, its own exit) without disturbing the session.
	cmd := "cd " + shellQuote(l.ws) + " && exec sh -c " + shellQuote(command)
	if _, err := tb.startSession(ctx, "nightona-proc-"+sessionName(name), cmd); err != nil {
		return fmt.Errorf("start process %s: %w", name, err)
	}
	return nil
}

// sessionName keeps what is safe in a URL path segment and a session id.
func sessionName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "process"
	}
	return string(b)
}

// Preview implements sandbox.Previews. The URL's token changes with every start of the
// sandbox: ask again after a start.
func (p *Provider) Preview(ctx context.Context, id string, port int) (string, http.Header, error) {
	s, err := p.getSandbox(ctx, id)
	if err != nil {
		return "", nil, fmt.Errorf("preview of sandbox %s: %w", id, err)
	}
	pv, err := p.api.preview(ctx, id, port)
	if err != nil {
		return "", nil, fmt.Errorf("preview of sandbox %s: %w", id, err)
	}
	return pv.URL, previewHeader(s.Public, pv.Token), nil
}

// maxSignedTTL is the longest a signed preview URL lives on Daytona.
const maxSignedTTL = 24 * time.Hour

// SignedPreview implements sandbox.Previews. ttl is capped at 24 hours (Daytona's limit); the
// expiry returned is the real one. Default 1 hour.
func (p *Provider) SignedPreview(ctx context.Context, id string, port int, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	ttl = min(ttl, maxSignedTTL)
	secs := int((ttl + time.Second - 1) / time.Second)
	asked := time.Now()
	u, err := p.api.signedPreview(ctx, id, port, secs)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signed preview of sandbox %s: %w", id, err)
	}
	return u, asked.Add(time.Duration(secs) * time.Second), nil
}
