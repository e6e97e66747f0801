package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/relay"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	if os.Getenv(bareEnv) != "" {
		bareForwarder()
		return
	}
	testenv.Main(m)
}

const token = "test-token-0123456789"

// fakeAgent runs this test binary as the stand-in agent.
func fakeAgent() relay.AgentConfig {
	return relay.AgentConfig{
		Command: os.Args[0],
		Env:     append(os.Environ(), fakeagent.EnvVar+"=1"),
	}
}

type harness struct {
	srv    *relay.Server
	ts     *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func startRelay(t testing.TB, cfg relay.Config) *harness {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = token
	}
	srv, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{srv: srv, ts: ts, cancel: cancel, done: make(chan struct{})}
	go func() { _ = srv.Run(ctx); close(h.done) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
		ts.Close()
	})
	return h
}

func (h *harness) endpoint() relay.Endpoint { return relay.Endpoint{URL: h.ts.URL, Token: token} }

// collector runs a client and keeps every event it handles.
type collector struct {
	mu       sync.Mutex
	events   []relay.Event
	connects []relay.Connected
	client   *relay.Client
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	err      error
}

// stop ends the client's Run and returns what it returned.
func (c *collector) stop() error {
	c.stopOnce.Do(func() {
		c.cancel()
		c.err = <-c.done
	})
	return c.err
}

func collect(t *testing.T, ep relay.Endpoint, from relay.Cursor, cfg relay.ClientConfig) *collector {
	t.Helper()
	c := &collector{client: relay.NewClient(ep, cfg), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		c.done <- c.client.Run(ctx, from, relay.Handlers{
			OnConnect: func(info relay.Connected) {
				c.mu.Lock()
				c.connects = append(c.connects, info)
				c.mu.Unlock()
			},
			OnEvent: func(ev relay.Event) error {
				c.mu.Lock()
				c.events = append(c.events, ev)
				c.mu.Unlock()
				return nil
			},
		})
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *collector) snapshot() []relay.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]relay.Event(nil), c.events...)
}

// results counts events that are agent "result" lines.
func results(evs []relay.Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == relay.KindAgent && lineType(ev.Data) == "result" {
			n++
		}
	}
	return n
}

func lineType(data json.RawMessage) string {
	var h struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(data, &h)
	return h.Type
}

func notices(evs []relay.Event) []relay.RelayNotice {
	var out []relay.RelayNotice
	for _, ev := range evs {
		if ev.Kind == relay.KindRelay {
			var n relay.RelayNotice
			_ = json.Unmarshal(ev.Data, &n)
			out = append(out, n)
		}
	}
	return out
}

func assertContiguous(t *testing.T, evs []relay.Event) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: the stream has a gap or a duplicate", i, ev.Seq)
		}
	}
}

func TestTokenRequired(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent()})
	url := "ws" + strings.TrimPrefix(h.ts.URL, "http") + relay.StreamPath
	for name, hdr := range map[string]http.Header{
		"none":   {},
		"wrong":  {"Authorization": {"Bearer not-the-token"}},
		"scheme": {"Authorization": {"Basic " + token}},
		"prefix": {"Authorization": {"Bearer " + token[:len(token)-1]}},
	} {
		_, resp, err := websocket.DefaultDialer.Dial(url, hdr)
		if err == nil {
			t.Fatalf("%s: connected without the right token", name)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: got %v, want 401", name, resp)
		}
	}
	c := relay.NewClient(relay.Endpoint{URL: h.ts.URL, Token: "wrong"}, relay.ClientConfig{ReconnectTimeout: time.Second})
	err := c.Run(context.Background(), relay.Cursor{}, relay.Handlers{OnEvent: func(relay.Event) error { return nil }})
	if !errors.Is(err, relay.ErrUnauthorized) {
		t.Fatalf("client with a wrong token: %v, want ErrUnauthorized", err)
	}
	if _, err := relay.NewServer(relay.Config{}); err == nil {
		t.Fatal("a relay without a token was created")
	}
}

func TestBrowserOriginChecked(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent(), AllowedOrigins: []string{"https://ok.example"}})
	url := "ws" + strings.TrimPrefix(h.ts.URL, "http") + relay.StreamPath
	hdr := http.Header{"Authorization": {"Bearer " + token}, "Origin": {"https://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial(url, hdr); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v resp %v, want 403", err, resp)
	}
	hdr.Set("Origin", "https://ok.example")
	ws, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	ws.Close()
}

func TestPromptStreamsNumberedEvents(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent()})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Text that would break a naive line protocol: newlines, quotes, braces.
	tricky := "echo line one\n\"quoted\" {\"type\":\"x\"}\nend"
	if err := c.client.Prompt(ctx, "p1", tricky, ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "a result", func() bool { return results(c.snapshot()) == 1 })
	evs := c.snapshot()
	assertContiguous(t, evs)
	ns := notices(evs)
	if len(ns) == 0 || ns[0].Event != relay.EventAgentStarted || ns[0].PID == 0 {
		t.Fatalf("first notice %+v, want agent_started with a pid", ns)
	}
	var got struct {
		Type    string `json:"type"`
		Message struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"message"`
	}
	for _, ev := range evs {
		if lineType(ev.Data) == "assistant" {
			_ = json.Unmarshal(ev.Data, &got)
		}
	}
	want := strings.TrimPrefix(tricky, "echo ")
	if len(got.Message.Content) == 0 || got.Message.Content[0].Text != want {
		t.Fatalf("agent received %+v, want the prompt text intact %q", got, want)
	}

	// The same prompt id again is acknowledged, as a duplicate, and not run twice.
	if dup, err := c.client.PromptOnce(ctx, "p1", tricky, ""); err != nil || !dup {
		t.Fatalf("resent prompt: duplicate %v, err %v", dup, err)
	}
	if err := c.client.Prompt(ctx, "p2", "echo second", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "second result", func() bool { return results(c.snapshot()) == 2 })
	time.Sleep(100 * time.Millisecond) // would a duplicate turn show up?
	if n := results(c.snapshot()); n != 2 {
		t.Fatalf("%d results, want 2: a resent prompt id ran again", n)
	}
	assertContiguous(t, c.snapshot())
}

func TestResumeAfterDrop(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent()})
	first := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := first.client.Prompt(ctx, "", "lines:50", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "first turn", func() bool { return results(first.snapshot()) == 1 })
	first.stop()
	seen := first.snapshot()
	cur := relay.Cursor{RelayID: h.srv.ID(), Seq: seen[len(seen)-1].Seq}

	// While nobody listens, a second turn runs.
	if _, err := h.srv.Prompt("", "lines:30", ""); err != nil {
		t.Fatal(err)
	}
	second := collect(t, h.endpoint(), cur, relay.ClientConfig{})
	testenv.WaitFor(t, 10*time.Second, "second turn", func() bool { return results(second.snapshot()) == 1 })
	all := append(seen, second.snapshot()...)
	assertContiguous(t, all)
	second.mu.Lock()
	info := second.connects[0]
	second.mu.Unlock()
	if info.NewRelay || info.Missed {
		t.Fatalf("resume reported %+v, want same relay and nothing missed", info)
	}
}

func TestResumeTooOldIsReported(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent(), BufferEvents: 20})
	if _, err := h.srv.Prompt("", "lines:100", ""); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	testenv.WaitFor(t, 10*time.Second, "the turn", func() bool { return results(c.snapshot()) == 1 })
	c.stop()

	late := collect(t, h.endpoint(), relay.Cursor{RelayID: h.srv.ID(), Seq: 3}, relay.ClientConfig{})
	testenv.WaitFor(t, 5*time.Second, "the replay", func() bool { return len(late.snapshot()) == 20 })
	late.mu.Lock()
	info := late.connects[0]
	late.mu.Unlock()
	if !info.Missed || info.Hello.FirstSeq <= 4 {
		t.Fatalf("connect info %+v: a cursor older than the buffer must be reported as missed", info)
	}
}

func TestGarbageAndCrashAreReported(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent()})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.client.Prompt(ctx, "", "garbage", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "garbage turn", func() bool { return results(c.snapshot()) == 1 })
	var sawGarbage bool
	for _, n := range notices(c.snapshot()) {
		if n.Event == relay.EventAgentOutput && n.Line == "this is not json" {
			sawGarbage = true
		}
	}
	if !sawGarbage {
		t.Fatal("a non-JSON stdout line was not reported as agent_output")
	}

	if err := c.client.Prompt(ctx, "", "crash", ""); err != nil {
		t.Fatal(err)
	}
	var exit relay.RelayNotice
	testenv.WaitFor(t, 10*time.Second, "agent_exited", func() bool {
		for _, n := range notices(c.snapshot()) {
			if n.Event == relay.EventAgentExited {
				exit = n
				return true
			}
		}
		return false
	})
	if exit.Code == nil || *exit.Code != 3 || exit.PendingTurns != 1 || !strings.Contains(exit.Stderr, "boom") {
		t.Fatalf("exit notice %+v, want code 3, one pending turn and the stderr tail", exit)
	}

	// The relay restarts the crashed agent by itself, resuming the same Claude session, and
	// says so in the stream.
	var session string
	for _, ev := range c.snapshot() {
		var h struct {
			SessionID string `json:"session_id"`
		}
		if ev.Kind == relay.KindAgent && json.Unmarshal(ev.Data, &h) == nil && h.SessionID != "" {
			session = h.SessionID
		}
	}
	var restarted relay.RelayNotice
	testenv.WaitFor(t, 10*time.Second, "an automatic restart", func() bool {
		for _, n := range notices(c.snapshot()) {
			if n.Event == relay.EventAgentStarted && n.Restart {
				restarted = n
				return true
			}
		}
		return false
	})
	if restarted.Resume != session || session == "" {
		t.Fatalf("restart resumed %q, want the session %q", restarted.Resume, session)
	}
	if err := c.client.Prompt(ctx, "", "echo back again", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "turn after crash", func() bool { return results(c.snapshot()) == 2 })
	if n := len(noticesOf(c.snapshot(), relay.EventAgentStarted)); n != 2 {
		t.Fatalf("%d agent starts, want the first and the restart", n)
	}
	assertContiguous(t, c.snapshot())
}

func TestMissingAgentIsAnError(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: relay.AgentConfig{Command: "/nonexistent/claude"}})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.client.Prompt(ctx, "", "echo hi", "")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/claude") {
		t.Fatalf("prompt with a missing CLI: %v, want an error naming it", err)
	}
	testenv.WaitFor(t, 5*time.Second, "agent_error", func() bool {
		for _, n := range notices(c.snapshot()) {
			if n.Event == relay.EventAgentError {
				return true
			}
		}
		return false
	})
}

func TestBadFramesAnswered(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent(), MaxClientFrame: 1024})
	url := "ws" + strings.TrimPrefix(h.ts.URL, "http") + relay.StreamPath
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var hello relay.Hello
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != "hello" || hello.Protocol != relay.ProtocolVersion {
		t.Fatalf("hello %+v err %v", hello, err)
	}
	for _, frame := range []string{`not json`, `{"type":"nope","id":"x"}`, `{"type":"prompt","id":"e","text":"  "}`} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		var reply map[string]any
		if err := ws.ReadJSON(&reply); err != nil {
			t.Fatal(err)
		}
		if reply["type"] != "error" || reply["code"] != relay.CodeBadFrame {
			t.Fatalf("frame %s: reply %v, want a bad_frame error", frame, reply)
		}
	}
	// An oversized frame closes the connection; the agent never saw anything.
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"prompt","text":"`+strings.Repeat("x", 2048)+`"}`))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break
		}
	}
	resp, err := http.Get(h.ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health["agent_running"] != false {
		t.Fatalf("health %v: the agent was started by bad frames", health)
	}
}

func TestSlowClientDroppedAndResumes(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent(), ClientQueue: 8})
	url := "ws" + strings.TrimPrefix(h.ts.URL, "http") + relay.StreamPath
	// A client that never reads: its queue fills and the relay drops it rather than block.
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, err := h.srv.Prompt("", "lines:5000", ""); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	testenv.WaitFor(t, 20*time.Second, "the turn to finish despite a stuck client", func() bool { return results(c.snapshot()) == 1 })
	assertContiguous(t, c.snapshot())
}

func TestCrashLoopStops(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent(), MaxRestarts: 2})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := c.client.Prompt(ctx, "", "crash", ""); err != nil {
			t.Fatal(err)
		}
		want := i + 1
		testenv.WaitFor(t, 10*time.Second, "the crash", func() bool { return len(noticesOf(c.snapshot(), relay.EventAgentExited)) >= want })
	}
	testenv.WaitFor(t, 5*time.Second, "the give-up notice", func() bool {
		for _, n := range noticesOf(c.snapshot(), relay.EventAgentError) {
			if strings.Contains(n.Message, "crashed 2 times") {
				return true
			}
		}
		return false
	})
	// Two automatic restarts, then none: the third crash waits for a prompt.
	restarts := 0
	for _, n := range noticesOf(c.snapshot(), relay.EventAgentStarted) {
		if n.Restart {
			restarts++
		}
	}
	if restarts != 2 {
		t.Fatalf("%d automatic restarts, want 2", restarts)
	}
	if err := c.client.Prompt(ctx, "", "echo alive", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "a prompt to start it again", func() bool { return results(c.snapshot()) >= 1 })
}

func TestPrestart(t *testing.T) {
	h := startRelay(t, relay.Config{Agent: fakeAgent()})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	if err := h.srv.Prestart(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the prestarted agent", func() bool { return len(noticesOf(c.snapshot(), relay.EventAgentStarted)) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A new conversation's first prompt uses the agent that is already there.
	if err := c.client.Prompt(ctx, "", "echo first", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the first turn", func() bool { return results(c.snapshot()) == 1 })
	if n := len(noticesOf(c.snapshot(), relay.EventAgentStarted)); n != 1 {
		t.Fatalf("%d agent starts, want the prestarted one only", n)
	}

	// On another relay, a first prompt that resumes a conversation restarts the agent for it.
	h2 := startRelay(t, relay.Config{Agent: fakeAgent()})
	c2 := collect(t, h2.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	if err := h2.srv.Prestart(); err != nil {
		t.Fatal(err)
	}
	if err := c2.client.Prompt(ctx, "", "echo resumed", "earlier-session"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the resumed turn", func() bool { return results(c2.snapshot()) == 1 })
	starts := noticesOf(c2.snapshot(), relay.EventAgentStarted)
	if len(starts) != 2 || starts[0].Resume != "" || starts[1].Resume != "earlier-session" {
		t.Fatalf("agent starts %+v, want a fresh one then one resuming earlier-session", starts)
	}
	var session string
	for _, ev := range c2.snapshot() {
		if ev.Kind == relay.KindAgent && lineType(ev.Data) == "result" {
			var r struct {
				SessionID string `json:"session_id"`
			}
			_ = json.Unmarshal(ev.Data, &r)
			session = r.SessionID
		}
	}
	if session != "earlier-session" {
		t.Fatalf("the turn ran in session %q", session)
	}
}
