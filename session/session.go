// Package session is Nightona's core: a chat thread maps to one session, which owns a sandbox,
// talks to Claude Code through the sandbox's relay, and records everything that happens in an
// event log that chat adapters and the web companion follow.
//
// The Manager drives sessions; a Store keeps them (Redis in production and on the embedded
// default, see package redisstore).
package session

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// State is where a session is in its life.
type State string

// States.
//
//	new       the record exists; no sandbox yet
//	starting  a sandbox is being created or woken
//	idle      the sandbox is up and no turn is running
//	running   Claude Code is working on a turn
//	stopped   the sandbox is stopped (idle timeout, shutdown, or its relay died); the next
//	          prompt wakes it
//	failed    the sandbox could not be started; the next prompt tries again
//	closed    destroyed; the thread starts afresh
const (
	StateNew      State = "new"
	StateStarting State = "starting"
	StateIdle     State = "idle"
	StateRunning  State = "running"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
	StateClosed   State = "closed"
)

// Session is the record of one thread's session.
type Session struct {
	ID     string `json:"id"`
	Thread string `json:"thread"`
	// Owner is the user who started the session, as "<platform>:<user id>".
	Owner string `json:"owner"`
	State State  `json:"state"`
	// Provider and SandboxID name the session's sandbox, once it has one.
	Provider  string `json:"provider,omitempty"`
	SandboxID string `json:"sandbox_id,omitempty"`
	// ClaudeSessionID is Claude Code's own session id; the conversation continues under it.
	ClaudeSessionID string `json:"claude_session_id,omitempty"`
	// PreviewURL is where the app can be seen while its dev server answers ("" otherwise).
	PreviewURL string `json:"preview_url,omitempty"`
	// RelayID and RelaySeq are how far the session's log has read the relay's stream.
	RelayID  string `json:"relay_id,omitempty"`
	RelaySeq int64  `json:"relay_seq,omitempty"`
	// LastSeq is the seq of the newest event in the log.
	LastSeq   int64     `json:"last_seq"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Usage     Usage     `json:"usage"`
}

// Usage adds up what a session's turns cost.
type Usage struct {
	Turns        int64   `json:"turns"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	DurationMS   int64   `json:"duration_ms"`
}

// Event is one entry of a session's log. Seq numbers start at 1 and have no gaps.
type Event struct {
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// Event kinds and the shape of their data.
const (
	// KindPrompt: a user's prompt. Data: Prompt.
	KindPrompt = "prompt"
	// KindStatus: progress the user should see (sandbox starting, ready...). Data: Status.
	KindStatus = "status"
	// KindAgent: one message Claude Code printed (stream-json), unchanged.
	KindAgent = "agent"
	// KindNotice: something the relay reported (agent started, exited...). Data: relay's notice.
	KindNotice = "notice"
	// KindError: something went wrong; it ends the running turn. Data: Failure.
	KindError = "error"
	// KindDecision: someone answered a permission request. Data: Decision.
	KindDecision = "decision"
)

// Decision is the data of a decision event.
type Decision struct {
	RequestID string `json:"request_id"`
	Behavior  string `json:"behavior"` // allow or deny
	User      string `json:"user"`
	Message   string `json:"message,omitempty"`
}

// Prompt is the data of a prompt event.
type Prompt struct {
	ID   string `json:"id"`
	User string `json:"user"`
	Text string `json:"text"`
}

// Status is the data of a status event.
type Status struct {
	Stage   string `json:"stage"`
	Message string `json:"message"`
	URL     string `json:"url,omitempty"`
}

// Status stages.
const (
	StageSandboxStarting = "sandbox_starting"
	StageSandboxWaking   = "sandbox_waking"
	StageSandboxReady    = "sandbox_ready"
	StageSandboxStopped  = "sandbox_stopped"
	StagePreviewReady    = "preview_ready"
	StagePreviewCrashed  = "preview_crashed"
)

// Failure is the data of an error event: a code for programs and a message for people that
// says what happened and what to do.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Failure codes.
const (
	CodeSandboxFailed = "sandbox_failed"
	CodeRelayLost     = "relay_lost"
	CodeAgentFailed   = "agent_failed"
	CodeAgentExited   = "agent_exited"
	CodeShutdown      = "shutdown"
)

// Store keeps sessions and their event logs. Implementations are safe for concurrent use.
type Store interface {
	// CreateForThread stores s as the thread's session unless the thread already has one, and
	// returns the thread's session and whether it was created now.
	CreateForThread(ctx context.Context, s *Session) (*Session, bool, error)
	// ByThread returns the thread's session, or ErrNotFound.
	ByThread(ctx context.Context, thread string) (*Session, error)
	// Get returns the session, or ErrNotFound.
	Get(ctx context.Context, id string) (*Session, error)
	// List returns every session.
	List(ctx context.Context) ([]*Session, error)
	// Update applies the non-nil fields of u to the session (ErrNotFound if it does not exist).
	Update(ctx context.Context, id string, u Update) error
	// Append adds an event to the session's log and returns its seq. With a cursor, the event
	// comes from a relay and is appended only if the log has not already taken that cursor's
	// event (then it returns 0, nil): the same relay event is never logged twice.
	Append(ctx context.Context, id string, kind string, data []byte, from *Cursor) (int64, error)
	// Read returns up to max events after seq after, waiting up to block for one if there is
	// none yet (0: do not wait).
	Read(ctx context.Context, id string, after int64, max int, block time.Duration) ([]Event, error)
	// AddUsage adds a turn's usage to the session's.
	AddUsage(ctx context.Context, id string, u Usage) error
	// Delete removes the session, its log and its thread mapping.
	Delete(ctx context.Context, id string) error
	// Ping checks the store answers.
	Ping(ctx context.Context) error
}

// Cursor names a relay event: the relay process and its seq there.
type Cursor struct {
	RelayID string
	Seq     int64
}

// Update lists the fields to change; nil means unchanged.
type Update struct {
	State           *State
	Provider        *string
	SandboxID       *string
	ClaudeSessionID *string
	PreviewURL      *string
}

// Errors.
var (
	ErrNotFound = errors.New("session not found")
	// ErrPromptTooLarge: the prompt is over the configured limit.
	ErrPromptTooLarge = errors.New("prompt too large")
	// ErrEmptyPrompt: the prompt has no text.
	ErrEmptyPrompt = errors.New("prompt is empty")
	// ErrUnavailable: sessions cannot run now (Claude Code missing, shutting down...).
	ErrUnavailable = errors.New("sessions unavailable")
	// ErrForbidden: the user may not do this (only the session's owner or an admin may).
	ErrForbidden = errors.New("not allowed")
	// ErrNoSuchRequest: the permission request was already answered, withdrawn or timed out.
	ErrNoSuchRequest = errors.New("no such permission request")
)

// ptr returns a pointer to v, for Update fields.
func ptr[T any](v T) *T { return &v }
