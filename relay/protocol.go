package relay

import (
	"encoding/json"
	"time"
)

// ProtocolVersion is carried in every hello frame. A client refuses a relay that speaks another.
const ProtocolVersion = 1

// StreamPath is the WebSocket endpoint of the relay.
const StreamPath = "/v1/stream"

// Frame types.
const (
	TypeHello     = "hello"
	TypeEvent     = "event"
	TypeAck       = "ack"
	TypeError     = "error"
	TypePrompt    = "prompt"
	TypeInterrupt = "interrupt"
	// TypePermission answers a can_use_tool request of the CLI.
	TypePermission = "permission"
	// TypeSetMode changes Claude Code's permission mode.
	TypeSetMode = "set_permission_mode"
	// TypeSetModel changes the model Claude Code uses.
	TypeSetModel = "set_model"
)

// Event kinds.
const (
	KindAgent = "agent"
	KindRelay = "relay"
)

// Names of relay events (Event.Kind == KindRelay).
const (
	EventAgentStarted = "agent_started"
	EventAgentExited  = "agent_exited"
	EventAgentError   = "agent_error"
	EventAgentOutput  = "agent_output"
	EventLineTooLong  = "line_too_long"
	// EventPermissionResolved ends every can_use_tool request, whichever way it ended.
	EventPermissionResolved = "permission_resolved"
	// EventModeChanged reports a new permission mode.
	EventModeChanged = "permission_mode"
	// EventModelChanged reports a new model.
	EventModelChanged = "model"
	// EventPreview reports the dev server's state.
	EventPreview = "preview"
)

// Why a permission request ended (RelayNotice.Reason).
const (
	ResolvedAnswered    = "answered"
	ResolvedTimeout     = "timeout"
	ResolvedCancelled   = "cancelled"
	ResolvedAgentExited = "agent_exited"
)

// Dev server states (RelayNotice.State).
const (
	PreviewStarting = "starting"
	PreviewReady    = "ready"
	PreviewCrashed  = "crashed"
	PreviewStopped  = "stopped"
)

// Permission modes Claude Code knows.
var PermissionModes = []string{"default", "acceptEdits", "plan", "bypassPermissions"}

// Error codes of error frames.
const (
	CodeBadFrame     = "bad_frame"
	CodeTooLarge     = "too_large"
	CodeAgentFailure = "agent_failure"
	CodeUnknown      = "unknown_request"
)

// Hello is the first frame of every connection.
type Hello struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol"`
	RelayID  string `json:"relay_id"`
	FirstSeq int64  `json:"first_seq"`
	LastSeq  int64  `json:"last_seq"`
	// Missed is set when the client asked to resume after a seq whose successors are no longer
	// all held (or from another relay): the events in [From, To] are lost to it.
	Missed  *SeqRange    `json:"missed,omitempty"`
	Agent   AgentState   `json:"agent"`
	Preview PreviewState `json:"preview"`
}

// SeqRange is an inclusive range of sequence numbers.
type SeqRange struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// AgentState is what the relay knows of its Claude Code process.
type AgentState struct {
	Running      bool   `json:"running"`
	SessionID    string `json:"session_id,omitempty"`
	PendingTurns int    `json:"pending_turns"`
	Mode         string `json:"permission_mode,omitempty"`
	Model        string `json:"model,omitempty"`
	// Permissions are the can_use_tool requests waiting for an answer.
	Permissions []PendingPermission `json:"permissions,omitempty"`
}

// PendingPermission is a can_use_tool request waiting for an answer.
type PendingPermission struct {
	RequestID string          `json:"request_id"`
	ToolName  string          `json:"tool_name"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	Deadline  time.Time       `json:"deadline"`
}

// PreviewState is the dev server's state.
type PreviewState struct {
	Enabled bool   `json:"enabled"`
	State   string `json:"state,omitempty"`
	Port    int    `json:"port,omitempty"`
}

// Event is one numbered message of the stream.
type Event struct {
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// RelayNotice is the data of an event of kind "relay".
type RelayNotice struct {
	Event        string `json:"event"`
	PID          int    `json:"pid,omitempty"`
	Resume       string `json:"resume,omitempty"`
	Code         *int   `json:"code,omitempty"`
	PendingTurns int    `json:"pending_turns,omitempty"`
	Stderr       string `json:"stderr,omitempty"`
	Message      string `json:"message,omitempty"`
	Line         string `json:"line,omitempty"`
	Bytes        int    `json:"bytes,omitempty"`
	// agent_started after a crash
	Restart bool `json:"restart,omitempty"`
	// permission_resolved
	RequestID string `json:"request_id,omitempty"`
	Behavior  string `json:"behavior,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// permission_mode
	Mode string `json:"mode,omitempty"`
	// model
	Model string `json:"model,omitempty"`
	// preview
	State    string `json:"state,omitempty"`
	Port     int    `json:"port,omitempty"`
	Log      string `json:"log,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
}

// clientFrame is any frame a client sends.
type clientFrame struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	Text   string `json:"text,omitempty"`
	Resume string `json:"resume,omitempty"`
	// permission
	RequestID    string          `json:"request_id,omitempty"`
	Behavior     string          `json:"behavior,omitempty"`
	UpdatedInput json.RawMessage `json:"updated_input,omitempty"`
	Message      string          `json:"message,omitempty"`
	// set_permission_mode
	Mode string `json:"mode,omitempty"`
	// set_model
	Model string `json:"model,omitempty"`
}

// Decision answers a permission request.
type Decision struct {
	RequestID string
	// Allow runs the tool (with UpdatedInput when set, else the input Claude asked for); else
	// it is denied with Message.
	Allow        bool
	UpdatedInput json.RawMessage
	Message      string
}

// serverFrame is how the client decodes what the server sends: the union of every frame's fields.
type serverFrame struct {
	Type string `json:"type"`

	// hello
	Protocol int          `json:"protocol"`
	RelayID  string       `json:"relay_id"`
	FirstSeq int64        `json:"first_seq"`
	LastSeq  int64        `json:"last_seq"`
	Missed   *SeqRange    `json:"missed"`
	Agent    AgentState   `json:"agent"`
	Preview  PreviewState `json:"preview"`

	// event
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`

	// ack, error
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

type ackFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// Duplicate is set on the ack of a prompt whose id the relay had already taken.
	Duplicate bool `json:"duplicate,omitempty"`
}

type errorFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}
