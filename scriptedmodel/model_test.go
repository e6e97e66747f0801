package scriptedmodel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
)

// wantBlock describes an expected content block. Text must match exactly unless
// TextContains is set.
type wantBlock struct {
	Type         string
	Text         string
	TextContains []string
	Name         string
	Input        map[string]any
}

func TestScenarioAnswers(t *testing.T) {
	f332, f332s1, f197 := loadFixture(t, fix332Step0), loadFixture(t, fix332Step1), loadFixture(t, fix197Step0)
	hello := fixtureCwd + "/hello.txt"
	writeHello := map[string]any{"file_path": hello, "content": "Hello, world!\n"}
	noTools := func(b []byte) []byte {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		delete(m, "tools")
		out, _ := json.Marshal(m)
		return out
	}
	cases := []struct {
		name   string
		body   func(t *testing.T) []byte
		stop   string
		blocks []wantBlock
	}{
		{"text", func(t *testing.T) []byte { return f332.body(t, "scenario:text hello there") }, "end_turn",
			[]wantBlock{{Type: "text", Text: "Hello from the scripted model. You said: scenario:text hello there"}}},
		{"keyword mid-prompt and upper case", func(t *testing.T) []byte { return f332.body(t, "please run Scenario:TEXT now") }, "end_turn",
			[]wantBlock{{Type: "text", Text: "Hello from the scripted model. You said: please run Scenario:TEXT now"}}},
		{"write step0 (2.1.332)", func(t *testing.T) []byte { return f332.body(t, fixturePrompt) }, "tool_use",
			[]wantBlock{{Type: "text", Text: "I'll create hello.txt for you."}, {Type: "tool_use", Name: "Write", Input: writeHello}}},
		{"write step0 (2.1.197, cwd in system prompt)", func(t *testing.T) []byte { return f197.body(t, fixturePrompt) }, "tool_use",
			[]wantBlock{{Type: "text", Text: "I'll create hello.txt for you."}, {Type: "tool_use", Name: "Write", Input: writeHello}}},
		{"write step1 after a denied Write", func(t *testing.T) []byte { return f332s1.body(t, fixturePrompt) }, "end_turn",
			[]wantBlock{{Type: "text", Text: "The Write tool failed: Claude requested permissions to write to " + hello + ", but you haven't granted it yet."}}},
		{"write step1 after success", func(t *testing.T) []byte {
			return f332.body(t, fixturePrompt, toolTurn("toolu_1", "Write", writeHello, "File created successfully at: "+hello, false)...)
		}, "end_turn", []wantBlock{{Type: "text", Text: `Done: I created hello.txt containing "Hello, world!".`}}},
		{"edit step0 reads first", func(t *testing.T) []byte { return f332.body(t, "scenario:edit") }, "tool_use",
			[]wantBlock{{Type: "text", TextContains: []string{"read hello.txt"}}, {Type: "tool_use", Name: "Read", Input: map[string]any{"file_path": hello}}}},
		{"edit step1 edits a file that exists", func(t *testing.T) []byte {
			return f332.body(t, "scenario:edit", toolTurn("toolu_r", "Read", map[string]any{"file_path": hello}, "1\tHello, world!\n2\t", false)...)
		}, "tool_use", []wantBlock{{Type: "text", TextContains: []string{"Nightona"}}, {Type: "tool_use", Name: "Edit",
			Input: map[string]any{"file_path": hello, "old_string": "world", "new_string": "Nightona", "replace_all": false}}}},
		{"edit step1 writes a missing file", func(t *testing.T) []byte {
			return f332.body(t, "scenario:edit", toolTurn("toolu_r", "Read", map[string]any{"file_path": hello},
				"File does not exist. Note: your current working directory is "+fixtureCwd+".", true)...)
		}, "tool_use", []wantBlock{{Type: "text", TextContains: []string{"does not exist"}}, {Type: "tool_use", Name: "Write",
			Input: map[string]any{"file_path": hello, "content": "Hello, Nightona!\n"}}}},
		{"edit step2 reports success", func(t *testing.T) []byte {
			turns := toolTurn("toolu_r", "Read", map[string]any{"file_path": hello}, "1\tHello, world!", false)
			turns = append(turns, toolTurn("toolu_e", "Edit", map[string]any{"file_path": hello}, "The file has been updated.", false)...)
			return f332.body(t, "scenario:edit", turns...)
		}, "end_turn", []wantBlock{{Type: "text", Text: `Done: hello.txt now says "Hello, Nightona!".`}}},
		{"edit step2 quotes the Edit error", func(t *testing.T) []byte {
			turns := toolTurn("toolu_r", "Read", map[string]any{"file_path": hello}, "1\tHello, Nightona!", false)
			turns = append(turns, toolTurn("toolu_e", "Edit", map[string]any{"file_path": hello}, "String to replace not found in file.", true)...)
			return f332.body(t, "scenario:edit", turns...)
		}, "end_turn", []wantBlock{{Type: "text", Text: "The Edit tool failed: String to replace not found in file."}}},
		{"bash step0", func(t *testing.T) []byte { return f332.body(t, "scenario:bash run it") }, "tool_use",
			[]wantBlock{{Type: "text", Text: "Let me run a command."}, {Type: "tool_use", Name: "Bash",
				Input: map[string]any{"command": "sh -c 'echo hello-from-bash > bash.txt' && cat bash.txt", "description": "Write and print bash.txt"}}}},
		{"bash step1 quotes the denial", func(t *testing.T) []byte {
			return f332.body(t, "scenario:bash run it", toolTurn("toolu_b", "Bash", map[string]any{"command": "x"}, "This Bash command requires approval", true)...)
		}, "end_turn", []wantBlock{{Type: "text", Text: "The Bash tool failed: This Bash command requires approval"}}},
		{"bashro step0", func(t *testing.T) []byte { return f197.body(t, "scenario:bashro") }, "tool_use",
			[]wantBlock{{Type: "text", Text: "Let me run a command."}, {Type: "tool_use", Name: "Bash",
				Input: map[string]any{"command": "echo hello-from-bash && pwd", "description": "Print a greeting and the working directory"}}}},
		{"bashro step1 quotes the output", func(t *testing.T) []byte {
			return f332.body(t, "scenario:bashro", toolTurn("toolu_b", "Bash", map[string]any{"command": "x"}, "hello-from-bash\n"+fixtureCwd, false)...)
		}, "end_turn", []wantBlock{{Type: "text", Text: "The command printed: hello-from-bash\n" + fixtureCwd}}},
		{"multi step0 writes", func(t *testing.T) []byte { return f332.body(t, "scenario:multi") }, "tool_use",
			[]wantBlock{{Type: "text", TextContains: []string{"hello.txt"}}, {Type: "tool_use", Name: "Write", Input: writeHello}}},
		{"multi step1 counts lines", func(t *testing.T) []byte {
			return f332.body(t, "scenario:multi", toolTurn("toolu_w", "Write", writeHello, "File created", false)...)
		}, "tool_use", []wantBlock{{Type: "text", TextContains: []string{"count"}}, {Type: "tool_use", Name: "Bash",
			Input: map[string]any{"command": "wc -l hello.txt", "description": "Count the lines of hello.txt"}}}},
		{"multi step2 reports", func(t *testing.T) []byte {
			turns := toolTurn("toolu_w", "Write", writeHello, "File created", false)
			turns = append(turns, toolTurn("toolu_b", "Bash", map[string]any{"command": "wc -l hello.txt"}, "1 hello.txt", false)...)
			return f332.body(t, "scenario:multi", turns...)
		}, "end_turn", []wantBlock{{Type: "text", Text: "Both tools ran. wc -l said: 1 hello.txt"}}},
		{"slow", func(t *testing.T) []byte { return f332.body(t, "scenario:slow:5:1 tell a story") }, "end_turn",
			[]wantBlock{{Type: "text", Text: "word1 word2 word3 word4 word5"}}},
		{"no keyword: offline help", func(t *testing.T) []byte { return f332.body(t, "what can you do?") }, "end_turn",
			[]wantBlock{{Type: "text", TextContains: append([]string{"offline scripted model", "ANTHROPIC_API_KEY", `You said: "what can you do?"`}, keywords()...)}}},
		{"unknown keyword: offline help naming it", func(t *testing.T) []byte { return f332.body(t, "scenario:bogus") }, "end_turn",
			[]wantBlock{{Type: "text", TextContains: []string{"I don't know scenario:bogus", "scenario:write"}}}},
		{"tool not offered: text instead of tool_use", func(t *testing.T) []byte { return noTools(f332.body(t, fixturePrompt)) }, "end_turn",
			[]wantBlock{{Type: "text", TextContains: []string{"needs the Write tool"}}}},
	}
	srv, _, _ := newServer(t, Config{DeltaDelay: -1})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := tc.body(t)
			for _, stream := range []bool{true, false} {
				resp := post(t, t.Context(), srv.URL, withStream(t, body, stream), nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("stream=%v: status %d: %s", stream, resp.StatusCode, readAll(t, resp.Body))
				}
				if id := resp.Header.Get("request-id"); !strings.HasPrefix(id, "req_scripted") {
					t.Errorf("request-id = %q", id)
				}
				var got gotMessage
				if stream {
					if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
						t.Fatalf("Content-Type = %q", ct)
					}
					var events []sseEvent
					if err := readSSE(resp.Body, func(ev sseEvent) bool { events = append(events, ev); return true }); err != nil {
						t.Fatal(err)
					}
					got = assembleSSE(t, events)
					checkDeltas(t, got)
				} else {
					got = decodeMessage(t, readAll(t, resp.Body))
				}
				resp.Body.Close()
				checkMessage(t, stream, got, tc.stop, tc.blocks)
			}
		})
	}
}

func keywords() []string {
	var ks []string
	for _, s := range Scenarios() {
		ks = append(ks, s.Keyword)
	}
	return ks
}

// checkDeltas asserts the streaming granularity the CLI sees from the real API: text in
// several deltas, tool input as an empty partial_json followed by several pieces.
func checkDeltas(t *testing.T, got gotMessage) {
	t.Helper()
	for i, b := range got.Blocks {
		switch b.Type {
		case "text":
			if len(b.Text) > minChunkBytes && b.Deltas < 2 {
				t.Errorf("block %d: %d-byte text sent in %d delta(s)", i, len(b.Text), b.Deltas)
			}
		case "tool_use":
			if b.FirstPartial == nil || *b.FirstPartial != "" {
				t.Errorf("block %d: first partial_json = %v, want empty", i, b.FirstPartial)
			}
			if b.Deltas < 3 {
				t.Errorf("block %d: tool input in %d deltas, want several", i, b.Deltas)
			}
		}
	}
}

func checkMessage(t *testing.T, stream bool, got gotMessage, stop string, want []wantBlock) {
	t.Helper()
	if !strings.HasPrefix(got.ID, "msg_scripted") || got.Model != "claude-opus-5-5" && got.Model != "claude-opus-4-8" {
		t.Errorf("stream=%v: id %q model %q", stream, got.ID, got.Model)
	}
	if got.StopReason != stop {
		t.Errorf("stream=%v: stop_reason %q, want %q", stream, got.StopReason, stop)
	}
	if got.InputTokens < 1000 || got.OutputTokens < 1 {
		t.Errorf("stream=%v: usage input %v output %v, want realistic numbers", stream, got.InputTokens, got.OutputTokens)
	}
	if len(got.Blocks) != len(want) {
		t.Fatalf("stream=%v: %d blocks %+v, want %d", stream, len(got.Blocks), got.Blocks, len(want))
	}
	ids := map[string]bool{}
	for i, w := range want {
		g := got.Blocks[i]
		if g.Type != w.Type {
			t.Errorf("stream=%v block %d: type %q, want %q", stream, i, g.Type, w.Type)
			continue
		}
		if w.Type == "tool_use" {
			if !strings.HasPrefix(g.ID, "toolu_scripted") || ids[g.ID] {
				t.Errorf("stream=%v block %d: tool id %q not a fresh toolu_scripted id", stream, i, g.ID)
			}
			ids[g.ID] = true
			if g.Name != w.Name || !reflect.DeepEqual(g.Input, w.Input) {
				t.Errorf("stream=%v block %d: %s %v, want %s %v", stream, i, g.Name, g.Input, w.Name, w.Input)
			}
			continue
		}
		if w.TextContains == nil && g.Text != w.Text {
			t.Errorf("stream=%v block %d: text %q, want %q", stream, i, g.Text, w.Text)
		}
		for _, s := range w.TextContains {
			if !strings.Contains(g.Text, s) {
				t.Errorf("stream=%v block %d: text %q lacks %q", stream, i, g.Text, s)
			}
		}
	}
}

func TestErrorAnswers(t *testing.T) {
	f := loadFixture(t, fix332Step0)
	srv, _, _ := newServer(t, Config{DeltaDelay: -1, RetryAfter: 1500 * time.Millisecond})
	cases := []struct {
		name, prompt       string
		url, method        string
		header             map[string]string
		rawBody            string
		status             int
		errType, errSubstr string
		extraHeader        map[string]string
	}{
		{name: "scenario:error", prompt: "scenario:error", status: 400, errType: "invalid_request_error", errSubstr: "scripted invalid request"},
		{name: "scenario:ratelimit", prompt: "scenario:ratelimit", status: 429, errType: "rate_limit_error", errSubstr: "rate limit",
			extraHeader: map[string]string{"retry-after": "2", "anthropic-ratelimit-requests-remaining": "0"}},
		{name: "scenario:overloaded", prompt: "scenario:overloaded", status: 529, errType: "overloaded_error", errSubstr: "Overloaded"},
		{name: "no key", prompt: "scenario:text", header: map[string]string{"x-api-key": ""}, status: 401, errType: "authentication_error"},
		{name: "empty bearer", prompt: "scenario:text", header: map[string]string{"x-api-key": "", "Authorization": "Bearer "}, status: 401, errType: "authentication_error"},
		{name: "bearer accepted", prompt: "scenario:text", header: map[string]string{"x-api-key": "", "Authorization": "Bearer sk-x"}, status: 200},
		{name: "malformed JSON", rawBody: `{"model":`, status: 400, errType: "invalid_request_error", errSubstr: "decode request"},
		{name: "no messages", rawBody: `{"model":"m","messages":[]}`, status: 400, errType: "invalid_request_error", errSubstr: "messages"},
		{name: "no model", rawBody: `{"messages":[{"role":"user","content":"hi"}]}`, status: 400, errType: "invalid_request_error", errSubstr: "model"},
		{name: "bad content", rawBody: `{"model":"m","messages":[{"role":"user","content":7}]}`, status: 400, errType: "invalid_request_error", errSubstr: "messages.0.content"},
		{name: "unknown route", url: "/v1/complete", method: "POST", rawBody: "{}", status: 404, errType: "not_found_error"},
		{name: "GET on messages", url: "/v1/messages", method: "GET", status: 405, errType: "invalid_request_error"},
		{name: "HEAD /", url: "/", method: "HEAD", status: 200},
		{name: "GET /", url: "/", method: "GET", status: 200},
		{name: "HEAD /api/hello", url: "/api/hello", method: "HEAD", status: 200},
		{name: "count_tokens", url: "/v1/messages/count_tokens", method: "POST", rawBody: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, status: 200},
		{name: "count_tokens malformed", url: "/v1/messages/count_tokens", method: "POST", rawBody: `{`, status: 400, errType: "invalid_request_error"},
		{name: "count_tokens no key", url: "/v1/messages/count_tokens", method: "POST", header: map[string]string{"x-api-key": ""}, rawBody: `{}`, status: 401, errType: "authentication_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := []byte(tc.rawBody)
			if tc.prompt != "" {
				body = f.body(t, tc.prompt)
			}
			var resp *http.Response
			if tc.url == "" {
				resp = post(t, t.Context(), srv.URL, body, tc.header)
			} else {
				req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.url, strings.NewReader(tc.rawBody))
				req.Header.Set("x-api-key", "test")
				for k, v := range tc.header {
					req.Header.Set(k, v)
				}
				var err error
				if resp, err = http.DefaultClient.Do(req); err != nil {
					t.Fatal(err)
				}
			}
			defer resp.Body.Close()
			data := readAll(t, resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, data)
			}
			if id := resp.Header.Get("request-id"); !strings.HasPrefix(id, "req_scripted") {
				t.Errorf("request-id = %q", id)
			}
			for k, v := range tc.extraHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.name == "count_tokens" {
				var ct struct {
					InputTokens int `json:"input_tokens"`
				}
				if err := json.Unmarshal(data, &ct); err != nil || ct.InputTokens < 1 {
					t.Errorf("count_tokens = %s (%v)", data, err)
				}
			}
			if tc.errType == "" {
				return
			}
			var e apiError
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("error body %s: %v", data, err)
			}
			if e.Type != "error" || e.Error.Type != tc.errType || !strings.Contains(e.Error.Message, tc.errSubstr) || e.Error.Message == "" {
				t.Errorf("error body = %s, want type %s mentioning %q", data, tc.errType, tc.errSubstr)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	srv, m, _ := newServer(t, Config{DeltaDelay: -1})
	// The limit is a field so the test need not send 32 MiB.
	m.maxBody = 1024
	cases := []struct {
		name   string
		size   int
		status int
	}{
		{"under the limit", 900, http.StatusOK},
		{"over the limit", 2048, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pad := strings.Repeat("x", tc.size-len(`{"model":"m","messages":[{"role":"user","content":"scenario:text "}]}`))
			body := `{"model":"m","messages":[{"role":"user","content":"scenario:text ` + pad + `"}]}`
			resp := post(t, t.Context(), srv.URL, []byte(body), nil)
			defer resp.Body.Close()
			data := readAll(t, resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tc.status, data)
			}
			if tc.status != http.StatusOK && !strings.Contains(string(data), `"request_too_large"`) {
				t.Errorf("body = %s", data)
			}
		})
	}
}

func TestFlakyCountsPerConversation(t *testing.T) {
	f := loadFixture(t, fix332Step0)
	srv, _, _ := newServer(t, Config{DeltaDelay: -1})
	body := withStream(t, f.body(t, "scenario:flaky:2 try"), false)
	steps := []struct {
		session string
		status  int
	}{
		{"s1", 529}, {"s1", 529}, {"s2", 529}, {"s1", 200}, {"s1", 200}, {"s2", 529}, {"s2", 200},
	}
	for i, s := range steps {
		resp := post(t, t.Context(), srv.URL, body, map[string]string{"x-claude-code-session-id": s.session})
		data := readAll(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != s.status {
			t.Fatalf("request %d (%s): status %d, want %d: %s", i, s.session, resp.StatusCode, s.status, data)
		}
		if s.status == 200 && !strings.Contains(string(data), "Recovered after 2") {
			t.Errorf("request %d: %s", i, data)
		}
	}
}

// TestSlowStreamStopsOnDisconnect stops a 10 s script mid-stream and checks that the handler
// returns at once. Over TCP a dead peer also makes writes fail, so the second case uses a
// writer that never fails: only watching the request context can stop that one.
func TestSlowStreamStopsOnDisconnect(t *testing.T) {
	f := loadFixture(t, fix332Step0)
	body := f.body(t, "scenario:slow:200:50")
	cases := []struct {
		name string
		// start begins the request and returns once two deltas went out, with a function that
		// drops the client and a channel that receives when ServeHTTP returns.
		start func(t *testing.T, m *Model) (drop func(), returned <-chan time.Time)
	}{
		{"client closes the connection", func(t *testing.T, m *Model) (func(), <-chan time.Time) {
			returned := make(chan time.Time, 1)
			url := newHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				m.ServeHTTP(w, r)
				returned <- time.Now()
			}))
			ctx, cancel := context.WithCancel(t.Context())
			resp := post(t, ctx, url, body, nil)
			t.Cleanup(func() { resp.Body.Close() })
			deltas := 0
			_ = readSSE(resp.Body, func(ev sseEvent) bool {
				if ev.name == "content_block_delta" {
					deltas++
				}
				return deltas < 2
			})
			if deltas != 2 {
				t.Fatalf("got %d deltas before the stream ended", deltas)
			}
			return cancel, returned
		}},
		{"request context cancelled, writer never fails", func(t *testing.T, m *Model) (func(), <-chan time.Time) {
			returned := make(chan time.Time, 1)
			ctx, cancel := context.WithCancel(t.Context())
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/messages", bytes.NewReader(body))
			req.Header.Set("x-api-key", "test")
			w := &syncRecorder{header: http.Header{}}
			go func() {
				m.ServeHTTP(w, req)
				returned <- time.Now()
			}()
			testenv.WaitFor(t, 5*time.Second, "two deltas", func() bool { return w.count("event: content_block_delta") >= 2 })
			return cancel, returned
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logger, rec := newLogRecorder(t)
			m := New(Config{Logger: logger})
			drop, returned := tc.start(t, m)
			dropped := time.Now()
			drop()
			select {
			case at := <-returned:
				if d := at.Sub(dropped); d > time.Second {
					t.Errorf("handler returned %v after the disconnect", d)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler still streaming 5 s after the client went away (script is 10 s)")
			}
			aborted := rec.find("scriptedmodel: stream aborted")
			if len(aborted) != 1 {
				t.Fatalf("logged %d aborts, want 1", len(aborted))
			}
			if n, _ := aborted[0]["deltas_sent"].(int64); n < 2 || n > 20 {
				t.Errorf("deltas_sent = %v, want a handful", aborted[0]["deltas_sent"])
			}
		})
	}
}

// syncRecorder is a ResponseWriter that accepts everything and can be read while the handler
// writes.
type syncRecorder struct {
	mu     sync.Mutex
	header http.Header
	body   bytes.Buffer
}

func (w *syncRecorder) Header() http.Header { return w.header }
func (w *syncRecorder) WriteHeader(int)     {}
func (w *syncRecorder) Flush()              {}

func (w *syncRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(p)
}

func (w *syncRecorder) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.body.String(), s)
}

func newHandlerServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestServeShutdown(t *testing.T) {
	f := loadFixture(t, fix332Step0)
	cases := []struct {
		name     string
		prompt   string
		grace    time.Duration
		complete bool // the in-flight stream reaches message_stop
		wantErr  bool
	}{
		{"in-flight answer finishes", "scenario:slow:8:40", 5 * time.Second, true, false},
		{"answers past the grace period are cut", "scenario:slow:1000:20", 100 * time.Millisecond, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logger, _ := newLogRecorder(t)
			m := New(Config{Logger: logger})
			m.grace = tc.grace
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(t.Context())
			defer stop()
			served := make(chan error, 1)
			go func() { served <- m.Serve(ctx, ln) }()
			url := "http://" + ln.Addr().String()

			resp := post(t, t.Context(), url, f.body(t, tc.prompt), nil)
			defer resp.Body.Close()
			var events []sseEvent
			err = readSSE(resp.Body, func(ev sseEvent) bool {
				events = append(events, ev)
				if ev.name == "content_block_delta" && len(events) == 4 { // start, ping, block start, delta
					stop()
				}
				return true
			})
			complete := len(events) > 0 && events[len(events)-1].name == "message_stop"
			if complete != tc.complete {
				t.Errorf("stream complete = %v (read error %v, %d events), want %v", complete, err, len(events), tc.complete)
			}
			if complete {
				if got := assembleSSE(t, events); got.Blocks[0].Text != "word1 word2 word3 word4 word5 word6 word7 word8" {
					t.Errorf("text = %q", got.Blocks[0].Text)
				}
			}
			select {
			case err := <-served:
				if (err != nil) != tc.wantErr {
					t.Errorf("Serve returned %v, want error: %v", err, tc.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after its context was cancelled")
			}
			if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
				t.Error("still accepting connections after Serve returned")
			}
		})
	}
}

func TestServeReportsListenerErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = New(Config{}).Serve(t.Context(), ln)
	if err == nil || !strings.Contains(err.Error(), "scriptedmodel: serve") || errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve on a closed listener = %v", err)
	}
}

// TestIdleShutdownIsQuick guards against Serve waiting out its grace period when nothing is
// in flight.
func TestIdleShutdownIsQuick(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- New(Config{}).Serve(ctx, ln) }()
	testenv.WaitFor(t, 5*time.Second, "the server to answer HEAD /", func() bool {
		resp, err := http.Head("http://" + ln.Addr().String() + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("idle shutdown took more than 2 s")
	}
}
