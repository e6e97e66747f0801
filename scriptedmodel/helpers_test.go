package scriptedmodel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nightona/nightona/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Fixture names: requests the real CLI sent, captured against a mock.
const (
	fix332Step0 = "api-request-2.1.332-write-step0.json"
	fix332Step1 = "api-request-2.1.332-write-step1.json"
	fix197Step0 = "api-request-2.1.197-write-step0.json"
	// fixturePrompt is the prompt every fixture was captured with.
	fixturePrompt = "scenario:write make a file"
	fixtureCwd    = "/sandbox/work/p-write-default"
)

type fixture struct {
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

func loadFixture(t *testing.T, name string) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return f
}

// body returns a fixture's request body with the prompt replaced and the given messages
// appended, which is how the CLI's history grows across tool round trips.
func (f fixture) body(t *testing.T, prompt string, extra ...map[string]any) []byte {
	t.Helper()
	quoted, _ := json.Marshal(prompt)
	raw := bytes.ReplaceAll(f.Body, []byte(`"`+fixturePrompt+`"`), quoted)
	if len(extra) == 0 {
		return raw
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	msgs := b["messages"].([]any)
	for _, m := range extra {
		msgs = append(msgs, m)
	}
	b["messages"] = msgs
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// toolTurn is an assistant tool call and the CLI's answer to it, as two messages.
func toolTurn(id, name string, input map[string]any, result string, isError bool) []map[string]any {
	return []map[string]any{
		{"role": "assistant", "content": []any{
			map[string]any{"type": "text", "text": "calling " + name},
			map[string]any{"type": "tool_use", "id": id, "name": name, "input": input},
		}},
		{"role": "user", "content": []any{
			map[string]any{"type": "tool_result", "tool_use_id": id, "content": result, "is_error": isError},
		}},
	}
}

func withStream(t *testing.T, body []byte, stream bool) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	b["stream"] = stream
	out, _ := json.Marshal(b)
	return out
}

// post sends a Messages API request the way the CLI does.
func post(t *testing.T, ctx context.Context, url string, body []byte, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/messages?beta=true", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", "test")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// logRecorder is a slog.Handler that keeps records so tests can assert on what the model
// logged, and prints them when the test fails.
type logRecorder struct {
	mu      *sync.Mutex
	records *[]map[string]any
	attrs   []slog.Attr
}

func newLogRecorder(t *testing.T) (*slog.Logger, *logRecorder) {
	h := &logRecorder{mu: new(sync.Mutex), records: new([]map[string]any)}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range h.all() {
				t.Logf("model log: %v", r)
			}
		}
	})
	return slog.New(h), h
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := map[string]any{"msg": r.Message, "level": r.Level.String()}
	for _, a := range h.attrs {
		rec[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	*h.records = append(*h.records, rec)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: h.mu, records: h.records, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

func (h *logRecorder) all() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), *h.records...)
}

func (h *logRecorder) find(msg string) []map[string]any {
	var out []map[string]any
	for _, r := range h.all() {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// newServer starts the model behind a real HTTP server for the test.
func newServer(t *testing.T, cfg Config) (*httptest.Server, *Model, *logRecorder) {
	t.Helper()
	logger, rec := newLogRecorder(t)
	if cfg.Logger == nil {
		cfg.Logger = logger
	}
	m := New(cfg)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return srv, m, rec
}

type sseEvent struct {
	name string
	data map[string]any
}

// readSSE calls each for every event until the stream ends or each returns false.
func readSSE(r io.Reader, each func(sseEvent) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var ev sseEvent
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name == "" && data.Len() == 0 {
				continue
			}
			if err := json.Unmarshal([]byte(data.String()), &ev.data); err != nil {
				return fmt.Errorf("event %q: data is not JSON: %v", ev.name, err)
			}
			if !each(ev) {
				return nil
			}
			ev, data = sseEvent{}, strings.Builder{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: "))
		default:
			return fmt.Errorf("unexpected SSE line %q", line)
		}
	}
	return sc.Err()
}

// gotBlock is a content block put back together from a response.
type gotBlock struct {
	Type  string
	Text  string
	ID    string
	Name  string
	Input map[string]any
	// Deltas counts content_block_delta events; FirstPartial is the first partial_json.
	Deltas       int
	FirstPartial *string
}

type gotMessage struct {
	ID, Model, StopReason string
	Blocks                []gotBlock
	InputTokens           float64
	OutputTokens          float64
	Events                []string
}

// assembleSSE checks that events follow the streaming protocol (message_start, per block
// start/delta.../stop with matching indexes, message_delta, message_stop, every data.type
// equal to its event name) and rebuilds the message from them.
func assembleSSE(t *testing.T, events []sseEvent) gotMessage {
	t.Helper()
	var msg gotMessage
	var partial []strings.Builder
	open := -1
	for i, ev := range events {
		msg.Events = append(msg.Events, ev.name)
		if ev.data["type"] != ev.name {
			t.Fatalf("event %d: name %q but data.type %v", i, ev.name, ev.data["type"])
		}
		switch ev.name {
		case "ping":
		case "message_start":
			if i != 0 {
				t.Fatalf("message_start at position %d", i)
			}
			m := ev.data["message"].(map[string]any)
			msg.ID, _ = m["id"].(string)
			msg.Model, _ = m["model"].(string)
			msg.InputTokens = m["usage"].(map[string]any)["input_tokens"].(float64)
			if m["stop_reason"] != nil || len(m["content"].([]any)) != 0 || m["role"] != "assistant" || m["type"] != "message" {
				t.Fatalf("message_start message = %v", m)
			}
		case "content_block_start":
			idx := int(ev.data["index"].(float64))
			if open != -1 || idx != len(msg.Blocks) {
				t.Fatalf("content_block_start index %d with block %d open and %d done", idx, open, len(msg.Blocks))
			}
			cb := ev.data["content_block"].(map[string]any)
			b := gotBlock{Type: cb["type"].(string)}
			b.ID, _ = cb["id"].(string)
			b.Name, _ = cb["name"].(string)
			if b.Type == "text" && cb["text"] != "" {
				t.Fatalf("text block starts with text %v", cb["text"])
			}
			msg.Blocks = append(msg.Blocks, b)
			partial = append(partial, strings.Builder{})
			open = idx
		case "content_block_delta":
			idx := int(ev.data["index"].(float64))
			if idx != open {
				t.Fatalf("delta for block %d while %d is open", idx, open)
			}
			b := &msg.Blocks[idx]
			b.Deltas++
			d := ev.data["delta"].(map[string]any)
			switch d["type"] {
			case "text_delta":
				b.Text += d["text"].(string)
			case "input_json_delta":
				p := d["partial_json"].(string)
				if b.FirstPartial == nil {
					b.FirstPartial = &p
				}
				partial[idx].WriteString(p)
			default:
				t.Fatalf("unknown delta type %v", d["type"])
			}
		case "content_block_stop":
			if idx := int(ev.data["index"].(float64)); idx != open {
				t.Fatalf("stop for block %d while %d is open", idx, open)
			}
			if b := &msg.Blocks[open]; b.Type == "tool_use" {
				if err := json.Unmarshal([]byte(partial[open].String()), &b.Input); err != nil {
					t.Fatalf("tool input %q does not parse: %v", partial[open].String(), err)
				}
			}
			open = -1
		case "message_delta":
			if open != -1 {
				t.Fatalf("message_delta while block %d is open", open)
			}
			msg.StopReason, _ = ev.data["delta"].(map[string]any)["stop_reason"].(string)
			msg.OutputTokens, _ = ev.data["usage"].(map[string]any)["output_tokens"].(float64)
		case "message_stop":
			if i != len(events)-1 || msg.StopReason == "" {
				t.Fatalf("message_stop at %d of %d, stop reason %q", i, len(events), msg.StopReason)
			}
		default:
			t.Fatalf("unknown event %q", ev.name)
		}
	}
	if len(events) == 0 || events[len(events)-1].name != "message_stop" {
		t.Fatalf("stream did not end with message_stop: %v", msg.Events)
	}
	return msg
}

// decodeMessage rebuilds a message from a plain JSON answer.
func decodeMessage(t *testing.T, data []byte) gotMessage {
	t.Helper()
	var m struct {
		ID, Type, Role, Model string
		StopReason            *string `json:"stop_reason"`
		StopSequence          *string `json:"stop_sequence"`
		Content               []struct {
			Type, Text, ID, Name string
			Input                map[string]any
		}
		Usage map[string]float64
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode message %s: %v", data, err)
	}
	if m.Type != "message" || m.Role != "assistant" || m.StopReason == nil || m.StopSequence != nil {
		t.Fatalf("message envelope = %s", data)
	}
	msg := gotMessage{ID: m.ID, Model: m.Model, StopReason: *m.StopReason,
		InputTokens: m.Usage["input_tokens"], OutputTokens: m.Usage["output_tokens"]}
	for _, c := range m.Content {
		msg.Blocks = append(msg.Blocks, gotBlock{Type: c.Type, Text: c.Text, ID: c.ID, Name: c.Name, Input: c.Input})
	}
	return msg
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
