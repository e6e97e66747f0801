// Package session is Nightona's core: a chat thread maps to one session, which owns a sandbox,
// talks to Claude Code through the sandbox's relay, and records everything that happens in an
// event log that chat adapters and the web companion follow.
//
// The Manager drives sessions; a Store keeps them (Redis in production and on the embedded
// default, see package redisstore).
package session

import (
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"
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
	// StateAt is when the session entered its state.
	StateAt time.Time `json:"state_at"`
	// Fence is the fencing token of the newest lease on the session.
	Fence int64 `json:"fence,omitempty"`
	// InboxDone is the id of the last inbox entry the session has taken.
	InboxDone string `json:"inbox_done,omitempty"`
	// PermissionMode is Claude Code's permission mode for this session ("" = the default).
	PermissionMode string `json:"permission_mode,omitempty"`
	// Model is the model Claude Code uses in this session ("" = the bot's default).
	Model string `json:"model,omitempty"`
	Usage Usage  `json:"usage"`
}

// Usage adds up what a session's turns cost.
type Usage struct {
	Turns        int64   `json:"turns"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	DurationMS   int64   `json:"duration_ms"`
}

// KeyUsage is what one user or channel used.
type KeyUsage struct {
	Key   string `json:"key"`
	Usage Usage  `json:"usage"`
}

// ByCost orders a UsageBy answer most expensive first (then by key), keeping at most max
// entries (all when max <= 0).
func ByCost(by map[string]Usage, max int) []KeyUsage {
	out := make([]KeyUsage, 0, len(by))
	for k, u := range by {
		out = append(out, KeyUsage{Key: k, Usage: u})
	}
	slices.SortFunc(out, func(a, b KeyUsage) int {
		return cmp.Or(cmp.Compare(b.Usage.CostUSD, a.Usage.CostUSD), cmp.Compare(b.Usage.Turns, a.Usage.Turns), strings.Compare(a.Key, b.Key))
	})
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

// Event is one entry of a session's log. Seq numbers start at 1 and have no gaps.
type Event struct {
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
	// From is the relay event this one is, for events that came from a relay.
	From *Cursor `json:"from,omitempty"`
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

// Prompt is the data of a prompt event, and an entry of a session's inbox.
type Prompt struct {
	ID   string `json:"id"`
	User string `json:"user"`
	Text string `json:"text"`
	// Ahead is how many prompts were waiting before this one when it was submitted.
	Ahead int `json:"ahead,omitempty"`
}

// Status is the data of a status event.
type Status struct {
	Stage   string `json:"stage"`
	Message string `json:"message"`
	URL     string `json:"url,omitempty"`
	// PromptID names the prompt a status is about (a cancelled one).
	PromptID string `json:"prompt_id,omitempty"`
}

// Status stages.
const (
	StageSandboxStarting = "sandbox_starting"
	StageSandboxWaking   = "sandbox_waking"
	StageSandboxReady    = "sandbox_ready"
	StageSandboxStopped  = "sandbox_stopped"
	StagePreviewReady    = "preview_ready"
	StagePreviewCrashed  = "preview_crashed"
	StagePromptCancelled = "prompt_cancelled"
	StageClosed          = "closed"
	StageStoreRecovered  = "store_recovered"
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
	CodeStoreDown     = "store_down"
)

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
	// ErrIllegalTransition: the session cannot move from its state to the one asked for.
	ErrIllegalTransition = errors.New("illegal state transition")
	// ErrLeaseLost: another replica drives the session now; this one may no longer write.
	ErrLeaseLost = errors.New("session lease lost")
	// ErrStoreDown: the session store (Redis) does not answer.
	ErrStoreDown = errors.New("session store unreachable")
	// ErrBadSetting: a permission mode or model that is not one.
	ErrBadSetting = errors.New("bad setting")
)

// ptr returns a pointer to v, for Update fields.
func ptr[T any](v T) *T { return &v }

// ChannelOf returns the channel a thread key belongs to: the key without its last part
// ("slack:T1:C2:1712.0001" → "slack:T1:C2"); a key of two parts ("web:th_1") is its own
// platform's channel ("web").
func ChannelOf(thread string) string {
	i := strings.LastIndexByte(thread, ':')
	if i <= 0 {
		return thread
	}
	return thread[:i]
}
