package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/scriptedmodel"
)

// cliRelay runs a relay with the real Claude Code CLI against the scripted model, in a fresh
// workspace and HOME.
type cliRelay struct {
	*harness
	ws string
}

func startCLIRelay(t *testing.T, mode string, cfg relay.Config) *cliRelay {
	t.Helper()
	model := httptest.NewServer(scriptedmodel.New(scriptedmodel.Config{}))
	t.Cleanup(model.Close)
	dir := t.TempDir()
	ws, home := filepath.Join(dir, "ws"), filepath.Join(dir, "home")
	for _, d := range []string{ws, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Agent = relay.AgentConfig{
		Command: testenv.Claude(t),
		Dir:     ws,
		Env: []string{
			"HOME=" + home, "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8",
			"ANTHROPIC_BASE_URL=" + model.URL, "ANTHROPIC_API_KEY=test",
			"DISABLE_TELEMETRY=1", "DISABLE_AUTOUPDATER=1", "DISABLE_ERROR_REPORTING=1",
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		},
		PermissionMode: mode,
		AllowBypass:    cfg.Agent.AllowBypass,
		Model:          cfg.Agent.Model,
	}
	return &cliRelay{harness: startRelay(t, cfg), ws: ws}
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// agentLines returns the agent events of the given type (and subtype, if set).
func agentLines(evs []relay.Event, typ, subtype string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev.Kind != relay.KindAgent {
			continue
		}
		var m map[string]any
		if json.Unmarshal(ev.Data, &m) != nil || m["type"] != typ {
			continue
		}
		if subtype != "" && m["subtype"] != subtype {
			if r, _ := m["request"].(map[string]any); r == nil || r["subtype"] != subtype {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

func lastResult(t *testing.T, evs []relay.Event) map[string]any {
	t.Helper()
	rs := agentLines(evs, "result", "")
	if len(rs) == 0 {
		t.Fatal("no result")
	}
	return rs[len(rs)-1]
}

func toolResults(evs []relay.Event) []map[string]any {
	var out []map[string]any
	for _, u := range agentLines(evs, "user", "") {
		msg, _ := u["message"].(map[string]any)
		content, _ := msg["content"].([]any)
		for _, c := range content {
			if b, _ := c.(map[string]any); b != nil && b["type"] == "tool_result" {
				out = append(out, b)
			}
		}
	}
	return out
}

func toolResultText(b map[string]any) string {
	switch c := b["content"].(type) {
	case string:
		return c
	case []any:
		var parts []string
		for _, p := range c {
			if m, _ := p.(map[string]any); m != nil {
				s, _ := m["text"].(string)
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, "\n")
	}
	return ""
}

func noticesOf(evs []relay.Event, event string) []relay.RelayNotice {
	var out []relay.RelayNotice
	for _, n := range notices(evs) {
		if n.Event == event {
			out = append(out, n)
		}
	}
	return out
}

func waitResults(t *testing.T, c *collector, n int) []relay.Event {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, "results", func() bool { return results(c.snapshot()) >= n })
	return c.snapshot()
}

func TestCLIResumeAcrossDroppedConnection(t *testing.T) {
	r := startCLIRelay(t, "acceptEdits", relay.Config{})
	first := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	if err := first.client.Prompt(bg(t), "", "scenario:slow:80:20 a story", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "some streamed output", func() bool { return len(first.snapshot()) >= 15 })
	first.stop()
	seen := first.snapshot()
	cur := relay.Cursor{RelayID: r.srv.ID(), Seq: seen[len(seen)-1].Seq}

	second := collect(t, r.endpoint(), cur, relay.ClientConfig{})
	rest := waitResults(t, second, 1)
	all := append(seen, rest...)
	assertContiguous(t, all)
	if n := results(all); n != 1 {
		t.Fatalf("%d results across the two connections, want 1", n)
	}
	if res := lastResult(t, all); res["is_error"] != false || !strings.Contains(res["result"].(string), "word80") {
		t.Fatalf("result %v", res)
	}
	second.mu.Lock()
	info := second.connects[0]
	second.mu.Unlock()
	if info.Missed || info.NewRelay {
		t.Fatalf("resume reported %+v", info)
	}
}

func TestCLIInterruptAndQueue(t *testing.T) {
	r := startCLIRelay(t, "acceptEdits", relay.Config{})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)
	if err := c.client.Prompt(ctx, "", "scenario:slow:400:50 a long story", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "streamed text", func() bool {
		return len(agentLines(c.snapshot(), "stream_event", "")) >= 8
	})
	if err := c.client.Interrupt(ctx); err != nil {
		t.Fatalf("interrupt: %v", err)
	}
	evs := waitResults(t, c, 1)
	if res := lastResult(t, evs); res["subtype"] != "error_during_execution" {
		t.Fatalf("interrupted turn's result %v", res)
	}
	var partial int
	for _, se := range agentLines(evs, "stream_event", "") {
		if ev, _ := se["event"].(map[string]any); ev["type"] == "content_block_delta" {
			partial++
		}
	}
	if partial == 0 {
		t.Fatal("the partial output of the interrupted turn is gone")
	}

	// Prompts sent during a turn run in order, each as its own turn.
	if err := c.client.Prompt(ctx, "", "scenario:slow:10:30 first", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.client.Prompt(ctx, "", "scenario:text second", ""); err != nil {
		t.Fatal(err)
	}
	evs = waitResults(t, c, 3)
	rs := agentLines(evs, "result", "")
	if !strings.Contains(rs[1]["result"].(string), "word10") || !strings.Contains(rs[2]["result"].(string), "You said: scenario:text second") {
		t.Fatalf("queued turns out of order: %v / %v", rs[1]["result"], rs[2]["result"])
	}
	assertContiguous(t, evs)
}

func TestCLIPermissionAllowAndDeny(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)

	// An approved Bash call runs.
	if err := c.client.Prompt(ctx, "", "scenario:bash run it", ""); err != nil {
		t.Fatal(err)
	}
	req := waitPermission(t, c, "Bash", 1)
	if err := c.client.Decide(ctx, relay.Decision{RequestID: req, Allow: true}); err != nil {
		t.Fatalf("allow: %v", err)
	}
	evs := waitResults(t, c, 1)
	trs := toolResults(evs)
	if len(trs) != 1 || trs[0]["is_error"] == true || !strings.Contains(toolResultText(trs[0]), "hello-from-bash") {
		t.Fatalf("approved Bash: tool results %v", trs)
	}
	if b, err := os.ReadFile(filepath.Join(r.ws, "bash.txt")); err != nil || string(b) != "hello-from-bash\n" {
		t.Fatalf("bash.txt: %q %v", b, err)
	}
	if ns := noticesOf(evs, relay.EventPermissionResolved); len(ns) != 1 || ns[0].Behavior != "allow" || ns[0].Reason != relay.ResolvedAnswered || ns[0].RequestID != req {
		t.Fatalf("resolution notices %+v", ns)
	}

	// A denied Write does not run, and Claude is told why.
	if err := c.client.Prompt(ctx, "", "scenario:write make a file", ""); err != nil {
		t.Fatal(err)
	}
	req = waitPermission(t, c, "Write", 2)
	if err := c.client.Decide(ctx, relay.Decision{RequestID: req, Allow: false, Message: "No writes today, says Ann."}); err != nil {
		t.Fatalf("deny: %v", err)
	}
	evs = waitResults(t, c, 2)
	trs = toolResults(evs)
	if last := trs[len(trs)-1]; last["is_error"] != true || !strings.Contains(toolResultText(last), "No writes today, says Ann.") {
		t.Fatalf("denied Write: tool result %v", last)
	}
	if _, err := os.Stat(filepath.Join(r.ws, "hello.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a denied Write wrote the file")
	}
	// Answering again is refused: the request is gone.
	var re *relay.RemoteError
	if err := c.client.Decide(ctx, relay.Decision{RequestID: req, Allow: true}); !errors.As(err, &re) || re.Code != relay.CodeUnknown {
		t.Fatalf("second answer to one request: %v", err)
	}
	assertContiguous(t, c.snapshot())
}

// waitPermission waits for the nth can_use_tool request and checks it names the tool.
func waitPermission(t *testing.T, c *collector, tool string, n int) string {
	t.Helper()
	var reqs []map[string]any
	testenv.WaitFor(t, 30*time.Second, "a permission request", func() bool {
		reqs = agentLines(c.snapshot(), "control_request", "can_use_tool")
		return len(reqs) >= n
	})
	r := reqs[n-1]
	body := r["request"].(map[string]any)
	if body["tool_name"] != tool || body["input"] == nil {
		t.Fatalf("permission request %v, want one for %s with its input", r, tool)
	}
	return r["request_id"].(string)
}

func TestCLIPermissionTimesOut(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{PermissionTimeout: 700 * time.Millisecond})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	if err := c.client.Prompt(bg(t), "", "scenario:write make a file", ""); err != nil {
		t.Fatal(err)
	}
	req := waitPermission(t, c, "Write", 1)
	evs := waitResults(t, c, 1)
	ns := noticesOf(evs, relay.EventPermissionResolved)
	if len(ns) != 1 || ns[0].RequestID != req || ns[0].Reason != relay.ResolvedTimeout || ns[0].Behavior != "deny" {
		t.Fatalf("resolution %+v, want a timeout denial", ns)
	}
	trs := toolResults(evs)
	if len(trs) != 1 || !strings.Contains(toolResultText(trs[0]), "timed out") || strings.Contains(toolResultText(trs[0]), "The user denied") {
		t.Fatalf("timed-out request's tool result %v: it must say it timed out, not that someone refused", trs)
	}
	if _, err := os.Stat(filepath.Join(r.ws, "hello.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a timed-out Write wrote the file")
	}
}

func TestCLIModeChange(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)
	if err := c.client.Prompt(ctx, "", "scenario:text warm up", ""); err != nil {
		t.Fatal(err)
	}
	waitResults(t, c, 1)
	if err := c.client.SetPermissionMode(ctx, "acceptEdits"); err != nil {
		t.Fatalf("set acceptEdits: %v", err)
	}
	if err := c.client.Prompt(ctx, "", "scenario:write make a file", ""); err != nil {
		t.Fatal(err)
	}
	evs := waitResults(t, c, 2)
	if reqs := agentLines(evs, "control_request", "can_use_tool"); len(reqs) != 0 {
		t.Fatalf("acceptEdits still asked for a Write: %v", reqs)
	}
	if b, err := os.ReadFile(filepath.Join(r.ws, "hello.txt")); err != nil || string(b) != "Hello, world!\n" {
		t.Fatalf("hello.txt after acceptEdits: %q %v", b, err)
	}
	if ns := noticesOf(evs, relay.EventModeChanged); len(ns) != 1 || ns[0].Mode != "acceptEdits" {
		t.Fatalf("mode notices %+v", ns)
	}
	var re *relay.RemoteError
	if err := c.client.SetPermissionMode(ctx, "yolo"); !errors.As(err, &re) || re.Code != relay.CodeBadFrame {
		t.Fatalf("unknown mode: %v", err)
	}
	// bypassPermissions needs the relay started with -allow-bypass: the CLI says so.
	if err := c.client.SetPermissionMode(ctx, "bypassPermissions"); err == nil || !strings.Contains(err.Error(), "bypass") {
		t.Fatalf("bypass without -allow-bypass: %v", err)
	}
}

func TestCLIBypassWhenAllowed(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{Agent: relay.AgentConfig{AllowBypass: true}})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)
	if err := c.client.Prompt(ctx, "", "scenario:text warm up", ""); err != nil {
		t.Fatal(err)
	}
	waitResults(t, c, 1)
	if err := c.client.SetPermissionMode(ctx, "bypassPermissions"); err != nil {
		t.Fatalf("bypass with -allow-bypass: %v", err)
	}
	if err := c.client.Prompt(ctx, "", "scenario:bash run it", ""); err != nil {
		t.Fatal(err)
	}
	evs := waitResults(t, c, 2)
	if reqs := agentLines(evs, "control_request", "can_use_tool"); len(reqs) != 0 {
		t.Fatalf("bypassPermissions still asked: %v", reqs)
	}
	if _, err := os.Stat(filepath.Join(r.ws, "bash.txt")); err != nil {
		t.Fatalf("bash.txt under bypass: %v", err)
	}
}

func TestCLIInterruptWithdrawsPendingPermission(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)
	if err := c.client.Prompt(ctx, "", "scenario:write please", ""); err != nil {
		t.Fatal(err)
	}
	req := waitPermission(t, c, "Write", 1)
	if err := c.client.Interrupt(ctx); err != nil {
		t.Fatal(err)
	}
	evs := waitResults(t, c, 1)
	if cancels := agentLines(evs, "control_cancel_request", ""); len(cancels) != 1 || cancels[0]["request_id"] != req {
		t.Fatalf("control_cancel_request %v", cancels)
	}
	if ns := noticesOf(evs, relay.EventPermissionResolved); len(ns) != 1 || ns[0].Reason != relay.ResolvedCancelled {
		t.Fatalf("resolution %+v, want cancelled", ns)
	}
	var re *relay.RemoteError
	if err := c.client.Decide(ctx, relay.Decision{RequestID: req, Allow: true}); !errors.As(err, &re) || re.Code != relay.CodeUnknown {
		t.Fatalf("answering a withdrawn request: %v", err)
	}
}

func TestCLIUnresumableSessionStartsAnew(t *testing.T) {
	r := startCLIRelay(t, "acceptEdits", relay.Config{})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	const lost = "11111111-2222-3333-4444-555555555555"
	if err := c.client.Prompt(bg(t), "", "scenario:text are you there?", lost); err != nil {
		t.Fatal(err)
	}
	evs := waitResults(t, c, 1)
	res := lastResult(t, evs)
	if res["is_error"] != false || res["session_id"] == lost || !strings.Contains(res["result"].(string), "are you there?") {
		t.Fatalf("result %v: the prompt should run in a new conversation", res)
	}
	errs := noticesOf(evs, relay.EventAgentError)
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "Could not resume") || errs[0].Resume != lost {
		t.Fatalf("agent_error notices %+v", errs)
	}
	if n := results(evs); n != 1 {
		t.Fatalf("%d results: the failed resume's own result leaked", n)
	}
}

func TestCLIShutdownInterruptsAndFlushes(t *testing.T) {
	r := startCLIRelay(t, "acceptEdits", relay.Config{ShutdownGrace: 5 * time.Second})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	if err := c.client.Prompt(bg(t), "", "scenario:slow:400:50 long", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "streamed text", func() bool { return len(agentLines(c.snapshot(), "stream_event", "")) >= 5 })
	r.cancel() // what SIGTERM does in cmd/relay
	<-r.done
	evs := c.snapshot()
	if res := lastResult(t, evs); res["subtype"] != "error_during_execution" {
		t.Fatalf("the interrupted turn's result did not reach the client before shutdown: %v", res)
	}
}

// assistantModels lists the model of each assistant message (the scripted model echoes the
// model the CLI asked for).
func assistantModels(evs []relay.Event) []string {
	var out []string
	for _, m := range agentLines(evs, "assistant", "") {
		if msg, ok := m["message"].(map[string]any); ok {
			model, _ := msg["model"].(string)
			out = append(out, model)
		}
	}
	return out
}

func TestCLIModelAtStartAndChanged(t *testing.T) {
	r := startCLIRelay(t, "default", relay.Config{Agent: relay.AgentConfig{Model: "claude-sonnet-4-5"}})
	c := collect(t, r.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	ctx := bg(t)
	if err := c.client.Prompt(ctx, "", "scenario:text first", ""); err != nil {
		t.Fatal(err)
	}
	evs := waitResults(t, c, 1)
	if ms := assistantModels(evs); len(ms) == 0 || ms[len(ms)-1] != "claude-sonnet-4-5" {
		t.Fatalf("models of the first turn %v, want claude-sonnet-4-5 from --model", ms)
	}
	// At run time: the running CLI switches for the next turn.
	if err := c.client.SetModel(ctx, "claude-haiku-4-5"); err != nil {
		t.Fatalf("set model: %v", err)
	}
	if err := c.client.Prompt(ctx, "", "scenario:text second", ""); err != nil {
		t.Fatal(err)
	}
	evs = waitResults(t, c, 2)
	if ms := assistantModels(evs); ms[len(ms)-1] != "claude-haiku-4-5" {
		t.Fatalf("models after set_model %v, want claude-haiku-4-5 last", ms)
	}
	if ns := noticesOf(evs, relay.EventModelChanged); len(ns) != 1 || ns[0].Model != "claude-haiku-4-5" {
		t.Fatalf("model notices %+v", ns)
	}
	var re *relay.RemoteError
	if err := c.client.SetModel(ctx, "--dangerously-skip-permissions"); !errors.As(err, &re) || re.Code != relay.CodeBadFrame {
		t.Fatalf("a flag as a model name: %v, want a bad_frame refusal", err)
	}
}
