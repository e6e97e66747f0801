package scriptedmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// request is the part of a Messages API request body the model looks at. Everything else the
// CLI sends (thinking, metadata, context_management, ...) is accepted and ignored.
type request struct {
	Model    string          `json:"model"`
	Messages []wireMessage   `json:"messages"`
	System   json.RawMessage `json:"system"`
	Tools    []wireTool      `json:"tools"`
	Stream   bool            `json:"stream"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type wireTool struct {
	Name string `json:"name"`
}

// block is one content block of a message. Only the fields the scenarios read are decoded.
type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	ToolUseID string          `json:"tool_use_id"`
	IsError   bool            `json:"is_error"`
	Content   json.RawMessage `json:"content"`
}

type message struct {
	role   string
	blocks []block
}

// toolResult is what the CLI reported back for the model's last tool call.
type toolResult struct {
	tool    string // name of the tool_use it answers, when the request still carries it
	text    string
	isError bool
}

// conversation is what scenario selection needs to know about a request.
type conversation struct {
	prompt string // the human's latest prompt, system reminders removed
	// earlier are the human's prompts before that one, oldest first.
	earlier []string
	step    int    // assistant messages since that prompt
	cwd     string // from the "Primary working directory:" line; "" when absent
	result  *toolResult
	tools   map[string]bool
}

// decodeRequest parses and validates a body the way the real API would reject it: with a
// message that points at the offending field.
func decodeRequest(body []byte) (*request, []message, error) {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, fmt.Errorf("decode request: %w", err)
	}
	if req.Model == "" {
		return nil, nil, errors.New("model: field required")
	}
	if len(req.Messages) == 0 {
		return nil, nil, errors.New("messages: at least one message is required")
	}
	msgs := make([]message, 0, len(req.Messages))
	for i, wm := range req.Messages {
		blocks, err := decodeContent(wm.Content)
		if err != nil {
			return nil, nil, fmt.Errorf("messages.%d.content: %w", i, err)
		}
		msgs = append(msgs, message{role: wm.Role, blocks: blocks})
	}
	return &req, msgs, nil
}

// decodeContent accepts both shapes the API allows: a bare string (one text block) or a list
// of blocks.
func decodeContent(raw json.RawMessage) ([]block, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []block{{Type: "text", Text: s}}, nil
	}
	var blocks []block
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, errors.New("must be a string or a list of content blocks")
	}
	return blocks, nil
}

// contentText joins the text of a tool_result's content, which may itself be a string or a
// list of blocks (the CLI uses both).
func contentText(raw json.RawMessage) string {
	blocks, err := decodeContent(raw)
	if err != nil {
		return ""
	}
	var parts []string
	for _, b := range blocks {
		if b.Type == "text" && b.Text != "" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// readConversation works out where the conversation stands from the request alone, so that a
// restarted CLI, --resume and --continue all land on the right step without server state.
func readConversation(req *request, msgs []message) conversation {
	conv := conversation{tools: make(map[string]bool, len(req.Tools))}
	for _, t := range req.Tools {
		if t.Name != "" {
			conv.tools[t.Name] = true
		}
	}
	conv.cwd = workingDir(req.System, msgs)

	promptAt := -1
	for i := len(msgs) - 1; i >= 0 && promptAt < 0; i-- {
		if msgs[i].role != "user" {
			continue
		}
		if p := humanText(msgs[i].blocks); p != "" {
			conv.prompt, promptAt = p, i
		}
	}
	for _, m := range msgs[promptAt+1:] {
		if m.role == "assistant" {
			conv.step++
		}
	}
	for _, m := range msgs[:max(promptAt, 0)] {
		if m.role != "user" {
			continue
		}
		if p := humanText(m.blocks); p != "" {
			conv.earlier = append(conv.earlier, p)
		}
	}
	conv.result = lastToolResult(msgs)
	return conv
}

// humanText returns the last text the human typed in a user message. Claude Code sends its
// own context as <system-reminder> blocks and marks interruptions with a bracketed note; both
// sit in user messages but are not prompts, and tool_result blocks are the CLI talking.
func humanText(blocks []block) string {
	for i := len(blocks) - 1; i >= 0; i-- {
		if blocks[i].Type != "text" {
			continue
		}
		t := strings.TrimSpace(stripReminders(blocks[i].Text))
		if t == "" || strings.HasPrefix(t, "[Request interrupted by user") {
			continue
		}
		return t
	}
	return ""
}

const (
	reminderOpen  = "<system-reminder>"
	reminderClose = "</system-reminder>"
)

func stripReminders(s string) string {
	for {
		start := strings.Index(s, reminderOpen)
		if start < 0 {
			return s
		}
		end := strings.Index(s[start:], reminderClose)
		if end < 0 {
			return s[:start]
		}
		s = s[:start] + s[start+end+len(reminderClose):]
	}
}

// lastToolResult finds the result the CLI sent back for the model's last tool call. Only the
// final message counts: an older result belongs to a step the model already answered.
func lastToolResult(msgs []message) *toolResult {
	if len(msgs) == 0 || msgs[len(msgs)-1].role != "user" {
		return nil
	}
	blocks := msgs[len(msgs)-1].blocks
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		if b.Type != "tool_result" {
			continue
		}
		res := &toolResult{text: contentText(b.Content), isError: b.IsError}
		res.tool = toolNameFor(msgs, b.ToolUseID)
		return res
	}
	return nil
}

func toolNameFor(msgs []message, id string) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].role != "assistant" {
			continue
		}
		for _, b := range msgs[i].blocks {
			if b.Type == "tool_use" && id != "" && b.ID == id {
				return b.Name
			}
		}
	}
	return ""
}

const cwdMarker = "Primary working directory:"

// workingDir finds the CLI's working directory. 2.1.332 states it in a role "system" message,
// 2.1.197 in the top-level system prompt; the newest statement wins because the CLI repeats it
// when the environment changes.
func workingDir(system json.RawMessage, msgs []message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		for j := len(msgs[i].blocks) - 1; j >= 0; j-- {
			if d := findCwd(msgs[i].blocks[j].Text); d != "" {
				return d
			}
		}
	}
	sys, err := decodeContent(system)
	if err != nil {
		return ""
	}
	for i := len(sys) - 1; i >= 0; i-- {
		if d := findCwd(sys[i].Text); d != "" {
			return d
		}
	}
	return ""
}

func findCwd(text string) string {
	i := strings.LastIndex(text, cwdMarker)
	if i < 0 {
		return ""
	}
	rest := text[i+len(cwdMarker):]
	if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
		rest = rest[:nl]
	}
	return strings.TrimSpace(rest)
}
