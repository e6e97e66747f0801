// Package transcript folds a session's event log into what a chat thread shows: for each turn
// the prompt, Claude's text, every tool call with its state and outcome, permission requests
// and their decisions, status and errors, and the result with its cost. Chat adapters render a
// Transcript in their platform's idiom; none of them reads Claude Code's stream-json itself.
package transcript

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/session"
)

// Transcript is the folded state of a session's log. Apply events to it in order.
type Transcript struct {
	Turns []*Turn
	// Status is the latest progress line (sandbox starting, ready...), for a status indicator.
	Status string
	// PreviewURL is the app's preview, once its dev server answers ("" otherwise).
	PreviewURL string
	// LastSeq is the seq of the last event applied.
	LastSeq int64

	blocks map[string]*Item // streamed text, by message id and block index
	tools  map[string]*Item // tool calls, by tool_use id
	perms  map[string]*Item // permission requests, by request id
	cost   float64          // the CLI process's running total at its last result
	curMsg string           // the message being streamed
}

// Turn is one prompt and what followed it.
type Turn struct {
	Prompt *Prompt
	Items  []*Item
	Result *Result
	// Done is set when the turn ended: a result, an error, or a cancelled prompt.
	Done bool
}

// Prompt is what a user asked.
type Prompt struct {
	ID, User, Text string
	Cancelled      bool
}

// Result is how a turn ended.
type Result struct {
	// Outcome is "done", "interrupted" or "failed".
	Outcome    string
	DurationMS int64
	NumTurns   int64
	CostUSD    float64
	Text       string
}

// Kinds of item.
const (
	KindText       = "text"       // Claude's words (Text, markdown)
	KindTool       = "tool"       // a tool call (Tool)
	KindPermission = "permission" // a permission request (Permission)
	KindStatus     = "status"     // progress (Text)
	KindNotice     = "notice"     // something worth a line: a retry, the CLI restarting (Text)
	KindError      = "error"      // a failure that ended the turn (Text)
)

// Item is one thing in a turn, in the order it happened.
type Item struct {
	Kind string
	// Text is the markdown of a text item, or the message of a status, notice or error.
	Text string
	// Streaming is true while a text item is still being written.
	Streaming  bool
	Tool       *Tool
	Permission *Permission
}

// Tool states.
const (
	ToolRunning = "running"
	ToolDone    = "done"
	ToolFailed  = "failed"
	ToolDenied  = "denied"
	ToolStopped = "stopped"
)

// Tool is one tool call.
type Tool struct {
	ID   string
	Name string
	// Summary is the call in one line: the file for Write/Edit/Read, the command for Bash.
	Summary string
	Input   json.RawMessage
	State   string
	// Output is what the tool answered (trimmed by renderers).
	Output string
	// Diff is a short diff for edits and writes ("-" and "+" lines).
	Diff string
}

// Permission states.
const (
	PermPending   = "pending"
	PermAllowed   = "allowed"
	PermDenied    = "denied"
	PermTimedOut  = "timed_out"
	PermWithdrawn = "withdrawn"
)

// Permission is a request of Claude to use a tool, and what became of it.
type Permission struct {
	RequestID string
	Tool      string
	Summary   string
	State     string
	DecidedBy string
	Message   string
}

// New returns an empty transcript.
func New() *Transcript {
	return &Transcript{blocks: map[string]*Item{}, tools: map[string]*Item{}, perms: map[string]*Item{}}
}

// current is the turn events go to: the oldest one not done (a queued prompt's turn waits
// behind the running one), or a new one when there is none.
func (t *Transcript) current() *Turn {
	for _, tr := range t.Turns {
		if !tr.Done {
			return tr
		}
	}
	tr := &Turn{}
	t.Turns = append(t.Turns, tr)
	return tr
}

func (t *Transcript) add(it *Item) *Item {
	tr := t.current()
	tr.Items = append(tr.Items, it)
	return it
}

// Pending returns the permission requests still waiting for an answer.
func (t *Transcript) Pending() []*Permission {
	var out []*Permission
	for _, tr := range t.Turns {
		for _, it := range tr.Items {
			if it.Kind == KindPermission && it.Permission.State == PermPending {
				out = append(out, it.Permission)
			}
		}
	}
	return out
}

// Running reports whether a turn is under way.
func (t *Transcript) Running() bool {
	for _, tr := range t.Turns {
		if !tr.Done && tr.Prompt != nil {
			return true
		}
	}
	return false
}

// Apply folds one event in. Events must come in seq order; older ones are ignored.
func (t *Transcript) Apply(ev session.Event) {
	if ev.Seq <= t.LastSeq {
		return
	}
	t.LastSeq = ev.Seq
	switch ev.Kind {
	case session.KindPrompt:
		var p session.Prompt
		if json.Unmarshal(ev.Data, &p) == nil {
			// What came between turns (a status after a turn ended: the preview is up, the
			// sandbox stopped) sits in a turn of its own with no prompt; a prompt closes it,
			// or the new turn's events would land there.
			for _, tr := range t.Turns {
				if tr.Prompt == nil && !tr.Done {
					tr.Done = true
				}
			}
			t.Turns = append(t.Turns, &Turn{Prompt: &Prompt{ID: p.ID, User: p.User, Text: p.Text}})
		}
	case session.KindStatus:
		t.applyStatus(ev.Data)
	case session.KindError:
		var f session.Failure
		_ = json.Unmarshal(ev.Data, &f)
		t.add(&Item{Kind: KindError, Text: f.Message})
		// An error ends the running turn, and the prompts queued behind it are not run.
		for _, tr := range t.Turns {
			if !tr.Done {
				tr.Done = true
				t.stopTools(tr)
			}
		}
	case session.KindDecision:
		var d session.Decision
		if json.Unmarshal(ev.Data, &d) == nil {
			if it := t.perms[d.RequestID]; it != nil {
				it.Permission.DecidedBy = d.User
				if d.Message != "" {
					it.Permission.Message = d.Message
				}
			}
		}
	case session.KindNotice:
		t.applyNotice(ev.Data)
	case session.KindAgent:
		t.applyAgent(ev.Data)
	}
}

func (t *Transcript) applyStatus(data []byte) {
	var s session.Status
	if json.Unmarshal(data, &s) != nil {
		return
	}
	switch s.Stage {
	case session.StagePreviewReady:
		t.PreviewURL = s.URL
	case session.StagePreviewCrashed, session.StageSandboxStopped:
		t.PreviewURL = ""
	case session.StagePromptCancelled:
		for _, tr := range t.Turns {
			if tr.Prompt != nil && tr.Prompt.ID == s.PromptID {
				tr.Prompt.Cancelled, tr.Done = true, true
			}
		}
		return
	}
	t.Status = s.Message
	t.add(&Item{Kind: KindStatus, Text: s.Message})
}

func (t *Transcript) applyNotice(data []byte) {
	var n relay.RelayNotice
	if json.Unmarshal(data, &n) != nil {
		return
	}
	switch n.Event {
	case relay.EventAgentStarted:
		t.cost = 0
		if n.Restart {
			t.add(&Item{Kind: KindNotice, Text: "Claude Code restarted, resuming the conversation."})
		}
	case relay.EventAgentError:
		t.add(&Item{Kind: KindNotice, Text: "Claude Code: " + n.Message})
	case relay.EventPermissionResolved:
		it := t.perms[n.RequestID]
		if it == nil {
			return
		}
		p := it.Permission
		switch {
		case n.Reason == relay.ResolvedTimeout:
			p.State = PermTimedOut
		case n.Reason == relay.ResolvedCancelled || n.Reason == relay.ResolvedAgentExited:
			p.State = PermWithdrawn
		case n.Behavior == "allow":
			p.State = PermAllowed
		default:
			p.State = PermDenied
		}
		if n.Message != "" && p.Message == "" {
			p.Message = n.Message
		}
	case relay.EventModeChanged:
		t.add(&Item{Kind: KindNotice, Text: "Permission mode is now " + n.Mode + "."})
	}
}

// agentMsg is what the transcript reads of a stream-json line.
type agentMsg struct {
	Type      string          `json:"type"`
	Subtype   string          `json:"subtype"`
	RequestID string          `json:"request_id"`
	Request   json.RawMessage `json:"request"`
	Event     *struct {
		Type    string `json:"type"`
		Index   int    `json:"index"`
		Message *struct {
			ID string `json:"id"`
		} `json:"message"`
		Delta *struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"delta"`
	} `json:"event"`
	APIMessageID string `json:"api_message_id"`
	Message      *struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Content []struct {
			Type      string          `json:"type"`
			Text      string          `json:"text"`
			ID        string          `json:"id"`
			Name      string          `json:"name"`
			Input     json.RawMessage `json:"input"`
			ToolUseID string          `json:"tool_use_id"`
			Content   json.RawMessage `json:"content"`
			IsError   bool            `json:"is_error"`
		} `json:"content"`
	} `json:"message"`
	ToolUseID string `json:"tool_use_id"`
	// result
	IsError      bool    `json:"is_error"`
	DurationMS   int64   `json:"duration_ms"`
	NumTurns     int64   `json:"num_turns"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	Result       string  `json:"result"`
	SinceLast    map[string]struct {
		CostUSD float64 `json:"costUSD"`
	} `json:"model_usage_since_last_result"`
	// api_retry
	Attempt     int `json:"attempt"`
	MaxRetries  int `json:"max_retries"`
	ErrorStatus int `json:"error_status"`
}

func (t *Transcript) applyAgent(data []byte) {
	var m agentMsg
	if json.Unmarshal(data, &m) != nil {
		return
	}
	switch m.Type {
	case "stream_event":
		t.applyStreamEvent(&m)
	case "assistant":
		t.applyAssistant(&m)
	case "user":
		t.applyToolResults(&m)
	case "result":
		t.applyResult(&m)
	case "system":
		switch m.Subtype {
		case "api_retry":
			what := "The API is busy"
			if m.ErrorStatus == 429 {
				what = "Rate limited by the API"
			}
			t.add(&Item{Kind: KindNotice, Text: fmt.Sprintf("%s (%d); retry %d of %d.", what, m.ErrorStatus, m.Attempt, m.MaxRetries)})
		case "permission_denied":
			if it := t.tools[m.ToolUseID]; it != nil {
				it.Tool.State = ToolDenied
			}
		}
	case "control_request":
		t.applyPermissionRequest(&m)
	}
}

func (t *Transcript) blockKey(msgID string, index int) string {
	return fmt.Sprintf("%s/%d", msgID, index)
}

// applyStreamEvent grows streamed text: message_start names the message (newer CLIs also put
// its id on every event), deltas add to its blocks.
func (t *Transcript) applyStreamEvent(m *agentMsg) {
	e := m.Event
	if e == nil {
		return
	}
	if e.Type == "message_start" && e.Message != nil {
		t.curMsg = e.Message.ID
	}
	msgID := m.APIMessageID
	if msgID == "" {
		msgID = t.curMsg
	}
	if e.Type != "content_block_delta" || e.Delta == nil || e.Delta.Type != "text_delta" || msgID == "" {
		return
	}
	key := t.blockKey(msgID, e.Index)
	it := t.blocks[key]
	if it == nil {
		it = t.add(&Item{Kind: KindText, Streaming: true})
		t.blocks[key] = it
	}
	if it.Streaming {
		it.Text += e.Delta.Text
	}
}

func (t *Transcript) applyAssistant(m *agentMsg) {
	if m.Message == nil {
		return
	}
	// The CLI prints one assistant line per content block; the block's index is its place
	// among the message's blocks, which the deltas were keyed by.
	for _, c := range m.Message.Content {
		switch c.Type {
		case "text":
			if m.Message.Model == "<synthetic>" { // the CLI's own words about an API error
				t.add(&Item{Kind: KindError, Text: c.Text})
				continue
			}
			it := t.streamedBlock(m.Message.ID, c.Text)
			if it == nil {
				it = t.add(&Item{Kind: KindText})
			}
			it.Text, it.Streaming = c.Text, false
		case "tool_use":
			if t.tools[c.ID] != nil {
				continue
			}
			tool := &Tool{ID: c.ID, Name: c.Name, Input: c.Input, State: ToolRunning}
			tool.Summary, tool.Diff = summarize(c.Name, c.Input)
			t.tools[c.ID] = t.add(&Item{Kind: KindTool, Tool: tool})
		}
	}
}

// streamedBlock finds the streamed text item that this final text completes: the first
// still-streaming block of the message whose text it begins with.
func (t *Transcript) streamedBlock(msgID, text string) *Item {
	for i := 0; i < 64; i++ {
		it := t.blocks[t.blockKey(msgID, i)]
		if it != nil && it.Streaming && strings.HasPrefix(text, it.Text) {
			return it
		}
	}
	return nil
}

func (t *Transcript) applyToolResults(m *agentMsg) {
	if m.Message == nil {
		return
	}
	for _, c := range m.Message.Content {
		if c.Type != "tool_result" {
			continue
		}
		it := t.tools[c.ToolUseID]
		if it == nil {
			continue
		}
		it.Tool.Output = contentText(c.Content)
		switch {
		case it.Tool.State == ToolDenied:
		case c.IsError:
			it.Tool.State = ToolFailed
		default:
			it.Tool.State = ToolDone
		}
	}
}

// contentText reads a tool_result's content: a string, or a list of text blocks.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &blocks) != nil {
		return ""
	}
	var parts []string
	for _, b := range blocks {
		if b.Type == "text" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func (t *Transcript) applyResult(m *agentMsg) {
	tr := t.current()
	cost := m.TotalCostUSD - t.cost // the CLI reports its process's running total...
	if m.SinceLast != nil {         // ...and, in newer versions, this result's own
		cost = 0
		for _, u := range m.SinceLast {
			cost += u.CostUSD
		}
	}
	if cost < 0 {
		cost = m.TotalCostUSD
	}
	t.cost = m.TotalCostUSD
	outcome := "done"
	switch {
	case m.Subtype == "error_during_execution":
		outcome = "interrupted"
	case m.IsError || m.Subtype != "success":
		outcome = "failed"
	}
	tr.Result = &Result{Outcome: outcome, DurationMS: m.DurationMS, NumTurns: m.NumTurns, CostUSD: cost, Text: m.Result}
	tr.Done = true
	t.stopTools(tr)
	for _, it := range tr.Items {
		if it.Kind == KindText {
			it.Streaming = false
		}
	}
}

// stopTools marks the calls of a turn that never got their result as stopped.
func (t *Transcript) stopTools(tr *Turn) {
	for _, it := range tr.Items {
		if it.Kind == KindTool && it.Tool.State == ToolRunning {
			it.Tool.State = ToolStopped
		}
	}
}

func (t *Transcript) applyPermissionRequest(m *agentMsg) {
	var r struct {
		Subtype  string          `json:"subtype"`
		ToolName string          `json:"tool_name"`
		Input    json.RawMessage `json:"input"`
	}
	if json.Unmarshal(m.Request, &r) != nil || r.Subtype != "can_use_tool" || t.perms[m.RequestID] != nil {
		return
	}
	summary, _ := summarize(r.ToolName, r.Input)
	t.perms[m.RequestID] = t.add(&Item{Kind: KindPermission, Permission: &Permission{
		RequestID: m.RequestID, Tool: r.ToolName, Summary: summary, State: PermPending,
	}})
}
