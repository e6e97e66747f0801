package scriptedmodel

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// answer is a planned reply with the ids and numbers a response needs.
type answer struct {
	id          string
	model       string
	reply       *reply
	inputTokens int
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

type messageBody struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"`
	Role         string  `json:"role"`
	Model        string  `json:"model"`
	Content      []any   `json:"content"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Usage        usage   `json:"usage"`
}

type textContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type toolUseContent struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// message renders the answer as one Messages API object. Unfinished, it is the empty shell
// message_start carries: no content, no stop reason, and the single output token the real
// API reports at that point.
func (a *answer) message(finished bool) messageBody {
	msg := messageBody{
		ID: a.id, Type: "message", Role: "assistant", Model: a.model,
		Content: []any{},
		Usage:   usage{InputTokens: a.inputTokens, OutputTokens: 1},
	}
	if !finished {
		return msg
	}
	for _, b := range a.reply.blocks {
		msg.Content = append(msg.Content, b.content(true))
	}
	stop := a.reply.stopReason()
	msg.StopReason = &stop
	msg.Usage.OutputTokens = a.outputTokens()
	return msg
}

// content renders a block whole, or as content_block_start announces it: empty text, and a
// tool_use whose input arrives later in input_json_delta pieces.
func (b *outBlock) content(whole bool) any {
	if b.kind == "tool_use" {
		input := json.RawMessage("{}")
		if whole {
			input = b.input
		}
		return toolUseContent{Type: "tool_use", ID: b.id, Name: b.name, Input: input}
	}
	text := ""
	if whole {
		text = b.text
	}
	return textContent{Type: "text", Text: text}
}

func (a *answer) outputTokens() int {
	n := 0
	for _, b := range a.reply.blocks {
		n += len(b.text) + len(b.input) + len(b.name)
	}
	return estimateTokens(n)
}

// estimateTokens uses the usual four-bytes-a-token rule: the CLI shows these numbers and adds
// them to its cost line, so they should look plausible, not be exact.
func estimateTokens(bytes int) int { return max(1, (bytes+3)/4) }

// SSE payloads. The field order follows what the real API sends, which keeps transcripts easy
// to compare.
type (
	messageStartEvent struct {
		Type    string      `json:"type"`
		Message messageBody `json:"message"`
	}
	blockStartEvent struct {
		Type         string `json:"type"`
		Index        int    `json:"index"`
		ContentBlock any    `json:"content_block"`
	}
	blockDeltaEvent struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
		Delta any    `json:"delta"`
	}
	textDelta struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	jsonDelta struct {
		Type        string `json:"type"`
		PartialJSON string `json:"partial_json"`
	}
	blockStopEvent struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	messageDeltaEvent struct {
		Type  string `json:"type"`
		Delta struct {
			StopReason   string  `json:"stop_reason"`
			StopSequence *string `json:"stop_sequence"`
		} `json:"delta"`
		Usage struct {
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	bareEvent struct {
		Type string `json:"type"`
	}
)

// sse writes server-sent events, flushing each so the client sees deltas as they are made.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s sse) send(typ string, payload any) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", typ, err)
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", typ, data); err != nil {
		return fmt.Errorf("write %s event: %w", typ, err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush %s event: %w", typ, err)
	}
	return nil
}

// stream sends the answer as the event sequence the real API uses. It stops as soon as ctx
// is done, which is how a client disconnect shows up, and reports how many deltas went out.
func (m *Model) stream(ctx context.Context, w http.ResponseWriter, a *answer) (int, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := sse{w: w, rc: http.NewResponseController(w)}

	if err := out.send("message_start", messageStartEvent{"message_start", a.message(false)}); err != nil {
		return 0, err
	}
	if err := out.send("ping", bareEvent{"ping"}); err != nil {
		return 0, err
	}
	sent := 0
	for i := range a.reply.blocks {
		b := &a.reply.blocks[i]
		if err := out.send("content_block_start", blockStartEvent{"content_block_start", i, b.content(false)}); err != nil {
			return sent, err
		}
		pause := b.pause
		if pause == 0 {
			pause = m.deltaDelay
		}
		for j, d := range b.deltas() {
			if j > 0 {
				if err := sleep(ctx, pause); err != nil {
					return sent, err
				}
			}
			if err := ctx.Err(); err != nil {
				return sent, err
			}
			if err := out.send("content_block_delta", blockDeltaEvent{"content_block_delta", i, d}); err != nil {
				return sent, err
			}
			sent++
		}
		if err := out.send("content_block_stop", blockStopEvent{"content_block_stop", i}); err != nil {
			return sent, err
		}
	}
	var md messageDeltaEvent
	md.Type = "message_delta"
	md.Delta.StopReason = a.reply.stopReason()
	md.Usage.OutputTokens = a.outputTokens()
	if err := out.send("message_delta", md); err != nil {
		return sent, err
	}
	return sent, out.send("message_stop", bareEvent{"message_stop"})
}

// deltas cuts a block into the delta payloads a stream carries. A tool_use starts with an
// empty partial_json, as the real API's do.
func (b *outBlock) deltas() []any {
	if b.kind == "tool_use" {
		parts := chunk(string(b.input))
		ds := make([]any, 0, len(parts)+1)
		ds = append(ds, jsonDelta{"input_json_delta", ""})
		for _, p := range parts {
			ds = append(ds, jsonDelta{"input_json_delta", p})
		}
		return ds
	}
	parts := b.chunks
	if parts == nil {
		parts = chunk(b.text)
	}
	ds := make([]any, len(parts))
	for i, p := range parts {
		ds[i] = textDelta{"text_delta", p}
	}
	return ds
}

const (
	minChunkBytes = 12
	// maxDeltas keeps a long answer (the offline help) from taking seconds to stream.
	maxDeltas = 40
)

// chunk splits s into pieces of about a dozen bytes, never inside a UTF-8 sequence: a split
// rune would turn into U+FFFD on the way through JSON.
func chunk(s string) []string {
	if s == "" {
		return []string{""}
	}
	size := max(minChunkBytes, (len(s)+maxDeltas-1)/maxDeltas)
	var parts []string
	for len(s) > 0 {
		n := min(size, len(s))
		for n < len(s) && !utf8.RuneStart(s[n]) {
			n++
		}
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return parts
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
