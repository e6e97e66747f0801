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
)

// Error codes of error frames.
const (
	CodeBadFrame     = "bad_frame"
	CodeTooLarge     = "too_large"
	CodeAgentFailure = "agent_failure"
)

// Hello is the first frame of every connection.
type Hello struct {
	Type     string     `json:"type"`
	Protocol int        `json:"protocol"`
	RelayID  string     `json:"relay_id"`
	FirstSeq int64      `json:"first_seq"`
	LastSeq  int64      `json:"last_seq"`
	Agent    AgentState `json:"agent"`
}

// AgentState is what the relay knows of its Claude Code process.
type AgentState struct {
	Running      bool   `json:"running"`
	SessionID    string `json:"session_id,omitempty"`
	PendingTurns int    `json:"pending_turns"`
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
}

// clientFrame is any frame a client sends.
type clientFrame struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	Text   string `json:"text,omitempty"`
	Resume string `json:"resume,omitempty"`
}

// serverFrame is how the client decodes what the server sends: the union of every frame's fields.
type serverFrame struct {
	Type string `json:"type"`

	// hello
	Protocol int        `json:"protocol"`
	RelayID  string     `json:"relay_id"`
	FirstSeq int64      `json:"first_seq"`
	LastSeq  int64      `json:"last_seq"`
	Agent    AgentState `json:"agent"`

	// event
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`

	// ack, error
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type ackFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

type errorFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}
