// Package local runs sandboxes on this machine: a folder per sandbox with a workspace made from
// a template and a HOME of its own (Claude Code keeps its state in $HOME/.claude), and the relay
// as a child process on a free loopback port with a fresh token.
//
// It is the embedded default: no account, no network. It isolates nothing: Claude Code runs
// with the bot's user's rights. Every process of a sandbox carries a marker in its environment
// by which the provider finds and stops what it left running.
//
// By default relays are attached to the bot: the kernel kills them if the bot dies, and a new
// provider kills what a killed bot left behind. Detached relays (Config.Detached) run in a
// session of their own and outlive the bot, and any provider on the same folder can reach, stop
// or delete them: that is what lets several bot replicas on one machine carry each other's
// sessions on, and a restarted bot pick up a turn where it was.
package local

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nightona/nightona/sandbox"
)

//go:embed all:template
var starter embed.FS

// Starter is the small web app new workspaces start from when no template is configured: a
// page, a dev server on $PORT and a README. Other providers copy it too.
func Starter() fs.FS {
	sub, err := fs.Sub(starter, "template")
	if err != nil {
		panic(err) // the folder is embedded above
	}
	return sub
}

// Config configures the provider. Zero fields take their defaults.
type Config struct {
	// Dir holds the sandboxes, one folder each. Required.
	Dir string
	// RelayBinary is the nightona-relay executable. Required.
	RelayBinary string
	// Claude is the Claude Code CLI the relay runs. Default "claude" from PATH.
	Claude string
	// Template is a folder copied into every new workspace. Default: a small starter web app.
	Template string
	// Env is added to every sandbox's environment, as KEY=VALUE.
	Env []string
	// PermissionMode is Claude Code's permission mode when a Spec names none. Default acceptEdits.
	PermissionMode string
	// DevCommand is the app's dev server command, run by the relay in the workspace with PORT
	// set to a free port of this machine. Empty: no dev server, no preview.
	DevCommand string
	// StartTimeout bounds how long a relay may take to answer. Default 20 s.
	StartTimeout time.Duration
	// Detached runs relays so that they outlive the bot (see the package comment).
	Detached bool
	// Logger receives the provider's logs; nil discards them.
	Logger *slog.Logger
}

// Provider runs local sandboxes. Use New; call Close to stop every relay it started.
type Provider struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	boxes map[string]*box
}

var _ sandbox.Provider = (*Provider)(nil)

// box is one sandbox. ops serialises lifecycle operations on it; mu guards the fields below.
type box struct {
	id  string
	dir string
	ops sync.Mutex

	mu    sync.Mutex
	meta  meta
	state sandbox.State
	relay *relayProc // nil while no relay runs, as far as this provider knows
}

// meta is what is kept on disk of a sandbox, so a new provider knows it.
type meta struct {
	ID             string            `json:"id"`
	Labels         map[string]string `json:"labels,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	Env            map[string]string `json:"env,omitempty"`
	PermissionMode string            `json:"permission_mode,omitempty"`
	Model          string            `json:"model,omitempty"`
	// DevPort is the port the sandbox's dev server serves on, kept across restarts while free.
	DevPort int `json:"dev_port,omitempty"`
}

const (
	metaFile   = "sandbox.json"
	runFile    = "relay.json"
	logFile    = "relay.log"
	workspace  = "workspace"
	homeDir    = "home"
	maxLogSize = 10 << 20
)

// New checks the configuration, loads the sandboxes already in Dir (as stopped) and kills any
// process a previous provider left running in them.
func New(cfg Config) (*Provider, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local sandboxes: Dir is required")
	}
	if cfg.RelayBinary == "" {
		return nil, errors.New("local sandboxes: RelayBinary is required")
	}
	if cfg.Claude == "" {
		cfg.Claude = "claude"
	}
	if cfg.PermissionMode == "" {
		cfg.PermissionMode = "acceptEdits"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("local sandboxes: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local sandboxes: create %s: %w", dir, err)
	}
	if st, err := os.Stat(cfg.RelayBinary); err != nil || st.IsDir() {
		return nil, fmt.Errorf("%w: relay binary %s not found (run `make build`)", sandbox.ErrUnavailable, cfg.RelayBinary)
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, boxes: map[string]*box{}}
	if err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Provider) load() error {
	entries, err := os.ReadDir(p.cfg.Dir)
	if err != nil {
		return fmt.Errorf("local sandboxes: read %s: %w", p.cfg.Dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(p.cfg.Dir, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, metaFile))
		if err != nil {
			continue // not a sandbox, or one whose creation never finished
		}
		var m meta
		if err := json.Unmarshal(b, &m); err != nil || m.ID != e.Name() {
			p.log.Warn("skipping unreadable sandbox", "dir", dir, "err", err)
			continue
		}
		bx := &box{id: m.ID, dir: dir, meta: m, state: sandbox.StateStopped}
		p.refresh(bx)
		if bx.relay == nil || !p.cfg.Detached {
			// Nothing of this sandbox should run: an attached relay dies with its bot, so what
			// is left is a killed bot's. A live detached relay is another replica's to keep.
			if bx.relay != nil {
				bx.relay.kill()
				bx.relay = nil
				bx.state = sandbox.StateStopped
			}
			if n := killLeftovers(markerEnv(m.ID)); n > 0 {
				p.log.Warn("killed processes left by an earlier run", "sandbox_id", m.ID, "processes", n)
			}
		}
		p.boxes[m.ID] = bx
	}
	return nil
}

// loadOne reads a sandbox another provider on the same folder created after this one started.
func (p *Provider) loadOne(id string) (*box, error) {
	if strings.ContainsAny(id, `/\`) || id == "" || id == "." || id == ".." {
		return nil, fmt.Errorf("sandbox %s: %w", id, sandbox.ErrNotFound)
	}
	dir := filepath.Join(p.cfg.Dir, id)
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, sandbox.ErrNotFound)
	}
	var m meta
	if err := json.Unmarshal(data, &m); err != nil || m.ID != id {
		return nil, fmt.Errorf("sandbox %s: unreadable metadata: %w", id, sandbox.ErrNotFound)
	}
	b := &box{id: id, dir: dir, meta: m, state: sandbox.StateStopped}
	p.refresh(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if existing, ok := p.boxes[id]; ok {
		return existing, nil
	}
	p.boxes[id] = b
	return b, nil
}

// Name implements sandbox.Provider.
func (p *Provider) Name() string { return "local" }

// Create implements sandbox.Provider.
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (*sandbox.Sandbox, error) {
	id := "local-" + randomHex(6)
	dir := filepath.Join(p.cfg.Dir, id)
	b := &box{id: id, dir: dir, state: sandbox.StateCreating, meta: meta{
		ID: id, Labels: copyMap(spec.Labels), CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		Env: copyMap(spec.Env), PermissionMode: spec.PermissionMode,
		Model: spec.Model,
	}}
	if err := p.prepare(b); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	p.mu.Lock()
	p.boxes[id] = b
	p.mu.Unlock()
	p.log.Info("sandbox created", "sandbox_id", id)

	b.ops.Lock()
	defer b.ops.Unlock()
	if err := p.startRelay(ctx, b, true); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	return b.snapshot(), nil
}

// prepare makes the folders, fills the workspace and writes the metadata last, so that a
// half-made sandbox is never loaded.
func (p *Provider) prepare(b *box) error {
	ws := filepath.Join(b.dir, workspace)
	for _, d := range []string{ws, filepath.Join(b.dir, homeDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var src fs.FS
	if p.cfg.Template != "" {
		src = os.DirFS(p.cfg.Template)
	} else {
		src = Starter()
	}
	if err := copyTree(src, ws); err != nil {
		return fmt.Errorf("copy template: %w", err)
	}
	initGit(ws)
	data, err := json.MarshalIndent(b.meta, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.dir, metaFile), data, 0o600)
}

// initGit makes the workspace a git repository with one commit, so that Claude Code sees a
// project and diffs have a base. Without git the workspace is just a folder.
func initGit(dir string) {
	if _, err := exec.LookPath("git"); err != nil {
		return
	}
	env := append(os.Environ(), "GIT_AUTHOR_NAME=Nightona", "GIT_AUTHOR_EMAIL=nightona@localhost",
		"GIT_COMMITTER_NAME=Nightona", "GIT_COMMITTER_EMAIL=nightona@localhost")
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "Template", "--allow-empty"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, env
		if err := cmd.Run(); err != nil {
			return
		}
	}
}

// Get implements sandbox.Provider.
func (p *Provider) Get(_ context.Context, id string) (*sandbox.Sandbox, error) {
	b, err := p.box(id)
	if err != nil {
		return nil, err
	}
	p.refresh(b)
	return b.snapshot(), nil
}

// Start implements sandbox.Provider.
func (p *Provider) Start(ctx context.Context, id string) (*sandbox.Sandbox, error) {
	b, err := p.box(id)
	if err != nil {
		return nil, err
	}
	b.ops.Lock()
	defer b.ops.Unlock()
	p.refresh(b)
	b.mu.Lock()
	running := b.relay != nil
	b.mu.Unlock()
	if running {
		if err := p.healthy(ctx, b); err == nil {
			return b.snapshot(), nil
		}
		p.stopRelay(b) // up but not answering: start it afresh
	}
	if err := p.startRelay(ctx, b, false); err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", id, err)
	}
	return b.snapshot(), nil
}

// Stop implements sandbox.Provider.
func (p *Provider) Stop(_ context.Context, id string) error {
	b, err := p.box(id)
	if err != nil {
		return err
	}
	b.ops.Lock()
	defer b.ops.Unlock()
	p.refresh(b)
	p.stopRelay(b)
	return nil
}

// Delete implements sandbox.Provider.
func (p *Provider) Delete(_ context.Context, id string) error {
	b, err := p.box(id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	b.ops.Lock()
	defer b.ops.Unlock()
	p.refresh(b)
	p.stopRelay(b)
	if err := os.RemoveAll(b.dir); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	}
	p.mu.Lock()
	delete(p.boxes, id)
	p.mu.Unlock()
	p.log.Info("sandbox deleted", "sandbox_id", id)
	return nil
}

// List implements sandbox.Provider. It also finds the sandboxes other providers on the same
// folder have made since this one started.
func (p *Provider) List(_ context.Context, labels map[string]string) ([]*sandbox.Sandbox, error) {
	if entries, err := os.ReadDir(p.cfg.Dir); err == nil {
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			p.mu.Lock()
			_, known := p.boxes[e.Name()]
			p.mu.Unlock()
			if !known {
				_, _ = p.loadOne(e.Name())
			}
		}
	}
	p.mu.Lock()
	boxes := make([]*box, 0, len(p.boxes))
	for _, b := range p.boxes {
		boxes = append(boxes, b)
	}
	p.mu.Unlock()
	var out []*sandbox.Sandbox
	for _, b := range boxes {
		p.refresh(b)
		if s := b.snapshot(); sandbox.MatchLabels(s.Labels, labels) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Close stops every relay this provider started, unless relays are detached: those are meant
// to outlive it. The sandboxes stay on disk.
func (p *Provider) Close() error {
	if p.cfg.Detached {
		return nil
	}
	p.mu.Lock()
	boxes := make([]*box, 0, len(p.boxes))
	for _, b := range p.boxes {
		boxes = append(boxes, b)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.ops.Lock()
			defer b.ops.Unlock()
			p.stopRelay(b)
		}()
	}
	wg.Wait()
	return nil
}

func (p *Provider) box(id string) (*box, error) {
	p.mu.Lock()
	b, ok := p.boxes[id]
	p.mu.Unlock()
	if ok {
		return b, nil
	}
	return p.loadOne(id)
}

func (b *box) snapshot() *sandbox.Sandbox {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &sandbox.Sandbox{
		ID: b.id, State: b.state, Labels: copyMap(b.meta.Labels), CreatedAt: b.meta.CreatedAt,
		Workspace: filepath.Join(b.dir, workspace),
	}
	if b.relay != nil && b.state == sandbox.StateStarted {
		ep := b.relay.endpoint
		s.Relay = &ep
	}
	if b.meta.DevPort != 0 {
		s.PreviewURL = fmt.Sprintf("http://localhost:%d/", b.meta.DevPort)
	}
	return s
}

// devPort returns the sandbox's dev server port: the one it had while that is free, else a new
// free one, kept in its metadata.
func (p *Provider) devPort(b *box) (int, error) {
	b.mu.Lock()
	port := b.meta.DevPort
	b.mu.Unlock()
	if port != 0 && portFree(port) {
		return port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a port for the dev server: %w", err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	b.mu.Lock()
	b.meta.DevPort = port
	m := b.meta
	b.mu.Unlock()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(b.dir, metaFile), data, 0o600); err != nil {
		return 0, fmt.Errorf("record the dev server port: %w", err)
	}
	return port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// env is the environment of what runs in a sandbox: a few variables of the bot's that tools
// need (never its secrets), the sandbox's HOME and marker, the provider's and the sandbox's own
// variables.
func (p *Provider) env(b *box, extra map[string]string) []string {
	var env []string
	for _, k := range []string{"PATH", "LANG", "LC_ALL", "TZ", "TERM", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
		"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "HOME="+filepath.Join(b.dir, homeDir), markerEnv(b.id))
	env = append(env, p.cfg.Env...)
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k])
	}
	return env
}

// markerEnv is the environment variable every process of a sandbox inherits, by which the
// provider finds what a sandbox left running.
func markerEnv(id string) string { return "NIGHTONA_SANDBOX_ID=" + id }

func copyTree(src fs.FS, dst string) error {
	return fs.WalkDir(src, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil // symlinks and devices are not copied out of a template
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := fs.ReadFile(src, path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm()|0o600)
	})
}

func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SetLabels implements sandbox.Provider.
func (p *Provider) SetLabels(_ context.Context, id string, labels map[string]string) error {
	b, err := p.box(id)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.meta.Labels = copyMap(labels)
	m := b.meta
	b.mu.Unlock()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, metaFile), data, 0o600); err != nil {
		return fmt.Errorf("set labels of sandbox %s: %w", id, err)
	}
	return nil
}

// WaitState implements sandbox.Waiter.
func (p *Provider) WaitState(ctx context.Context, id string, state sandbox.State, timeout time.Duration) (*sandbox.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		sb, err := p.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch {
		case sb.State == state:
			return sb, nil
		case sb.State == sandbox.StateError:
			return sb, fmt.Errorf("sandbox %s: %w", id, sandbox.ErrFailed)
		}
		select {
		case <-ctx.Done():
			return sb, fmt.Errorf("wait for sandbox %s to be %s (it is %s): %w", id, state, sb.State, sandbox.ErrStartTimeout)
		case <-time.After(25 * time.Millisecond):
		}
	}
}
