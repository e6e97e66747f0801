// Package sandbox says what Nightona needs from a place that runs Claude Code: a sandbox with a
// workspace, the relay running in it, a way to reach that relay, files and processes in the
// workspace, and preview URLs of its ports. Providers live in subpackages, one per platform:
// local (folders and child processes on this machine) and daytona (Daytona's cloud sandboxes).
// Package sandboxtest is the conformance suite every provider passes.
package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"time"
)

// State is a sandbox's lifecycle state as the provider sees it.
type State string

// States. Not every provider passes through every state.
const (
	StateCreating  State = "creating"
	StateStarting  State = "starting"
	StateStarted   State = "started"
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"
	StateArchiving State = "archiving"
	StateArchived  State = "archived"
	StateError     State = "error"
)

// Spec describes a sandbox to create. Zero fields take the provider's defaults.
type Spec struct {
	// Labels are kept with the sandbox and can be listed by; sessions put their thread key and
	// session id here.
	Labels map[string]string
	// Env is added to the environment of the relay and of Claude Code.
	Env map[string]string
	// PermissionMode is Claude Code's permission mode in this sandbox.
	PermissionMode string
	// Model is the model Claude Code starts with ("" = its default).
	Model string
	// Snapshot names the image or template the sandbox is made from.
	Snapshot string
	// Public makes the sandbox's preview URLs reachable without a token.
	Public bool
	// AutoStop, AutoArchive and AutoDelete are the platform's own timers (negative: off).
	AutoStop, AutoArchive, AutoDelete time.Duration
	// Resources the sandbox gets.
	Resources Resources
}

// Resources are a sandbox's CPU, memory and disk (zero: the provider's default).
type Resources struct {
	CPU      int
	MemoryGB int
	DiskGB   int
}

// Endpoint is how to reach a sandbox's relay.
type Endpoint struct {
	URL    string
	Token  string
	Header http.Header
}

// Sandbox is what a provider reports of one sandbox.
type Sandbox struct {
	ID        string
	State     State
	Labels    map[string]string
	CreatedAt time.Time
	// Relay is set while the sandbox is started and its relay answers.
	Relay *Endpoint
	// Workspace is the workspace folder, where the provider can tell (local sandboxes).
	Workspace string
	// PreviewURL is where the app's dev server can be seen, when the sandbox runs one. It
	// answers only once the relay reports the dev server ready.
	PreviewURL string
	// PreviewHeader is what a request to PreviewURL must carry when the preview is private.
	PreviewHeader http.Header
	// Reason says why the sandbox is in StateError, in words for people.
	Reason string
}

// Provider runs sandboxes: what sessions need. Implementations are safe for concurrent use.
// Errors wrap the sentinel errors below where one applies.
type Provider interface {
	// Name names the provider in logs and status pages ("local", "daytona").
	Name() string
	// Create makes a sandbox, starts it and its relay, and returns once the relay answers.
	Create(ctx context.Context, spec Spec) (*Sandbox, error)
	// Get reports a sandbox. ErrNotFound if there is none with that id.
	Get(ctx context.Context, id string) (*Sandbox, error)
	// Start starts a stopped or archived sandbox, or restarts its relay if that died, and
	// returns once the relay answers. The endpoint may differ from the last one (new port,
	// new token).
	Start(ctx context.Context, id string) (*Sandbox, error)
	// Stop stops the sandbox and its relay; the workspace is kept.
	Stop(ctx context.Context, id string) error
	// Delete stops the sandbox and removes it with its workspace. Deleting a sandbox that does
	// not exist is not an error.
	Delete(ctx context.Context, id string) error
	// List returns the sandboxes carrying all the given labels.
	List(ctx context.Context, labels map[string]string) ([]*Sandbox, error)
	// SetLabels replaces the sandbox's labels (a pooled sandbox gets its session's).
	SetLabels(ctx context.Context, id string, labels map[string]string) error
}

// Archiver is a provider that can archive a stopped sandbox: it keeps the workspace at a lower
// cost and takes longer to start again.
type Archiver interface {
	Archive(ctx context.Context, id string) error
}

// Waiter is a provider that can wait for a sandbox to reach a state.
type Waiter interface {
	// WaitState returns once the sandbox is in state, with ErrStartTimeout after timeout, or
	// with ErrFailed when it went to the error state instead.
	WaitState(ctx context.Context, id string, state State, timeout time.Duration) (*Sandbox, error)
}

// Processes is a provider that gives access to a started sandbox's files and processes. Paths
// are relative to the workspace.
type Processes interface {
	// Upload writes a file.
	Upload(ctx context.Context, id, path string, data []byte, mode fs.FileMode) error
	// Exec runs a command with sh -c in the workspace and waits for it.
	Exec(ctx context.Context, id, command string, timeout time.Duration) (ExecResult, error)
	// StartProcess runs a long-lived command with sh -c in the workspace, under a name, and
	// returns once it has started; it runs until the sandbox stops.
	StartProcess(ctx context.Context, id, name, command string) error
}

// ExecResult is what a command did.
type ExecResult struct {
	ExitCode int
	Output   string
}

// Previews is a provider that gives URLs for the sandbox's ports.
type Previews interface {
	// Preview returns the URL of a port and what a request must carry to reach it (nil for a
	// public sandbox).
	Preview(ctx context.Context, id string, port int) (url string, header http.Header, err error)
	// SignedPreview returns a URL of a port anyone can open until it expires.
	SignedPreview(ctx context.Context, id string, port int, ttl time.Duration) (url string, expires time.Time, err error)
}

// Wrapper is a provider that adds to another (a warm pool): its optional capabilities are
// the wrapped provider's.
type Wrapper interface {
	Unwrap() Provider
}

// As returns p, or the first provider it wraps, that has capability T (Previews, Archiver...).
func As[T any](p Provider) (T, bool) {
	for p != nil {
		if c, ok := p.(T); ok {
			return c, true
		}
		w, ok := p.(Wrapper)
		if !ok {
			break
		}
		p = w.Unwrap()
	}
	var zero T
	return zero, false
}

// Sentinel errors.
var (
	ErrNotFound = errors.New("sandbox not found")
	// ErrUnavailable means the provider cannot run sandboxes right now (a missing binary, a
	// platform outage); the message says what to do.
	ErrUnavailable = errors.New("sandbox provider unavailable")
	// ErrQuota means the platform refuses more sandboxes (or more resources) for the account.
	ErrQuota = errors.New("sandbox quota exceeded")
	// ErrSnapshotMissing means the image or template the sandbox is made from does not exist.
	ErrSnapshotMissing = errors.New("sandbox snapshot not found")
	// ErrFailed means the sandbox went into an error state.
	ErrFailed = errors.New("sandbox failed")
	// ErrStartTimeout means the sandbox or its relay did not come up in time.
	ErrStartTimeout = errors.New("sandbox did not start in time")
)

// MatchLabels reports whether have carries every label of want.
func MatchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
