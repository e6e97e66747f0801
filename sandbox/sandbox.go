// Package sandbox says what Nightona needs from a place that runs Claude Code: a sandbox with a
// workspace, the relay running in it, and a way to reach that relay. Providers live in
// subpackages, one per platform: local (folders and child processes on this machine) and
// daytona (Daytona's cloud sandboxes).
package sandbox

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// State is a sandbox's lifecycle state as the provider sees it.
type State string

// States. Not every provider passes through every state.
const (
	StateCreating State = "creating"
	StateStarting State = "starting"
	StateStarted  State = "started"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateArchived State = "archived"
	StateError    State = "error"
)

// Spec describes a sandbox to create.
type Spec struct {
	// Labels are kept with the sandbox and can be listed by; sessions put their thread key and
	// session id here.
	Labels map[string]string
	// Env is added to the environment of the relay and of Claude Code.
	Env map[string]string
	// PermissionMode is Claude Code's permission mode in this sandbox ("" = the provider's
	// default).
	PermissionMode string
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
}

// Provider runs sandboxes. Implementations are safe for concurrent use. Errors wrap the
// sentinel errors below where one applies.
type Provider interface {
	// Name names the provider in logs and status pages ("local", "daytona").
	Name() string
	// Create makes a sandbox, starts it and its relay, and returns once the relay answers.
	Create(ctx context.Context, spec Spec) (*Sandbox, error)
	// Get reports a sandbox. ErrNotFound if there is none with that id.
	Get(ctx context.Context, id string) (*Sandbox, error)
	// Start starts a stopped sandbox, or restarts its relay if that died, and returns once the
	// relay answers. The endpoint may differ from the last one (new port, new token).
	Start(ctx context.Context, id string) (*Sandbox, error)
	// Stop stops the sandbox and its relay; the workspace is kept.
	Stop(ctx context.Context, id string) error
	// Delete stops the sandbox and removes it with its workspace. Deleting a sandbox that does
	// not exist is not an error.
	Delete(ctx context.Context, id string) error
	// List returns the sandboxes carrying all the given labels.
	List(ctx context.Context, labels map[string]string) ([]*Sandbox, error)
}

// Sentinel errors.
var (
	ErrNotFound = errors.New("sandbox not found")
	// ErrUnavailable means the provider cannot run sandboxes right now (a missing binary, a
	// quota, a platform outage); the message says what to do.
	ErrUnavailable = errors.New("sandbox provider unavailable")
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
