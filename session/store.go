package session

import (
	"context"
	"time"
)

// Store keeps sessions, their event logs, inboxes, leases and usage. Implementations are safe
// for concurrent use, and return ErrStoreDown (wrapped) when the store does not answer.
//
// Writes that take a fence are refused with ErrLeaseLost unless fence is the session's current
// fencing token: a replica that lost its lease can no longer change what another now drives.
// A fence of 0 writes unfenced (prompts, decisions: anything a replica may do for a user).
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
	Update(ctx context.Context, id string, u Update, fence int64) error
	// Transition moves the session to state to if it is in one of allowed (else
	// ErrIllegalTransition), records the change with its cause, and returns the state it left.
	// Moving to the current state does nothing.
	Transition(ctx context.Context, id string, to State, allowed []State, cause string, fence int64) (State, error)
	// Transitions returns the session's recorded changes of state, newest first.
	Transitions(ctx context.Context, id string) ([]Transition, error)
	// Append adds an event to the session's log and returns its seq. With a cursor, the event
	// comes from a relay and is appended only if the log has not already taken that cursor's
	// event (then it returns 0, nil): the same relay event is never logged twice.
	Append(ctx context.Context, id string, kind string, data []byte, from *Cursor, fence int64) (int64, error)
	// Read returns up to max events after seq after, waiting up to block for one if there is
	// none yet (0: do not wait).
	Read(ctx context.Context, id string, after int64, max int, block time.Duration) ([]Event, error)
	// AddUsage adds a turn's usage to the session's and to the day's counters of the user and
	// the channel.
	AddUsage(ctx context.Context, id string, u Usage, user, channel string, at time.Time) error
	// UsageOn returns the usage counted on the given day (UTC) for a user ("user"), a channel
	// ("channel") or everything ("all", key ignored).
	UsageOn(ctx context.Context, scope, key string, day time.Time) (Usage, error)
	// UsageBy returns the usage counted on the given day (UTC) of every user ("user") or
	// channel ("channel") that used anything, by key.
	UsageBy(ctx context.Context, scope string, day time.Time) (map[string]Usage, error)

	// Heartbeat declares replica alive for ttl. A replica's leases hold while its heartbeat
	// does: one write a period keeps all of them, however many sessions it drives.
	Heartbeat(ctx context.Context, replica string, ttl time.Duration) error
	// AcquireLease takes the session's lease for owner and returns its fencing token, or 0 when
	// a live replica (one whose heartbeat holds) has it. A lease of a dead replica is taken
	// over with a new fence; owner's own lease is returned as it is.
	AcquireLease(ctx context.Context, id, owner string) (int64, error)
	// ReleaseLease gives a held lease up.
	ReleaseLease(ctx context.Context, id, owner string, fence int64) error
	// Leases reports the lease of each of ids.
	Leases(ctx context.Context, ids []string) ([]Lease, error)
	// Active returns the sessions marked active (a sandbox up or coming up).
	Active(ctx context.Context) ([]string, error)
	// SetActive marks the session active or not.
	SetActive(ctx context.Context, id string, active bool) error

	// Enqueue adds a prompt to the session's inbox and, in the same step, its prompt event
	// (data) to the log, so the transcript shows the prompt before anything it causes. It
	// returns the entry's id, how many entries wait before it, and the event's seq.
	Enqueue(ctx context.Context, id string, p Prompt, data []byte) (entry string, ahead int, seq int64, err error)
	// Inbox returns the inbox entries after entry id after ("" for all), oldest first;
	// cancelled ones are marked.
	Inbox(ctx context.Context, id, after string) ([]InboxEntry, error)
	// Cancel marks a waiting prompt cancelled; false if it is not waiting (taken, cancelled
	// already, or unknown).
	Cancel(ctx context.Context, id, promptID string) (bool, error)
	// WatchInbox returns a channel that receives a value whenever a prompt is enqueued for
	// the session, on any replica; call the returned function to stop watching.
	WatchInbox(ctx context.Context, id string) (<-chan struct{}, func())

	// SendControl passes a request (a Stop, a decision) to the replica that drives the
	// session, waking it as an enqueued prompt does; TakeControls takes the waiting requests,
	// oldest first. A request not taken within half a minute is dropped.
	SendControl(ctx context.Context, id string, req []byte) error
	TakeControls(ctx context.Context, id string) ([][]byte, error)
	// AnswerControl answers the request named req; AwaitAnswer waits up to timeout for that
	// answer (nil, nil when none came).
	AnswerControl(ctx context.Context, req string, answer []byte) error
	AwaitAnswer(ctx context.Context, req string, timeout time.Duration) ([]byte, error)

	// Close marks the session closed, frees its thread (the next prompt there starts a new
	// session) and has its records expire after retention.
	Close(ctx context.Context, id string, retention time.Duration) error
	// Delete removes the session, its log and its thread mapping now.
	Delete(ctx context.Context, id string) error
	// Ping checks the store answers.
	Ping(ctx context.Context) error
}

// Lease is who drives a session: Owner "" when nobody; Alive when the owner's heartbeat holds.
type Lease struct {
	Owner string
	Fence int64
	Alive bool
}

// InboxEntry is a prompt in a session's inbox.
type InboxEntry struct {
	ID        string
	Prompt    Prompt
	Cancelled bool
}

// Cursor names a relay event: the relay process and its seq there.
type Cursor struct {
	RelayID string `json:"relay_id"`
	Seq     int64  `json:"seq"`
}

// Update lists the fields to change; nil means unchanged.
type Update struct {
	Provider        *string
	SandboxID       *string
	ClaudeSessionID *string
	PreviewURL      *string
	InboxDone       *string
	PermissionMode  *string
	Model           *string
}
