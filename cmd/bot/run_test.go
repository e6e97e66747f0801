package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox/local"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// bot is a running bot for a test: run() on port 0 with a real Redis, local sandboxes, the
// real Claude Code CLI and the offline scripted model.
type bot struct {
	t       *testing.T
	url     string
	dataDir string
	cancel  context.CancelFunc
	done    chan error
	stdout  *testenv.Buffer
	stderr  *testenv.Buffer
}

func baseEnv(t *testing.T) map[string]string {
	return map[string]string{
		"NIGHTONA_ADDR":          "127.0.0.1:0",
		"NIGHTONA_DATA_DIR":      t.TempDir(),
		"REDIS_URL":              testenv.RedisURL(t),
		"NIGHTONA_REDIS_PREFIX":  testenv.Prefix(t),
		"NIGHTONA_CLAUDE":        testenv.Claude(t),
		"NIGHTONA_RELAY_BIN":     testenv.RelayBinary(t),
		"NIGHTONA_DRAIN_TIMEOUT": "20s",
		// One bot per test: its sandboxes die with it (replicas_test.go detaches them).
		"NIGHTONA_LOCAL_DETACH": "false",
		"PATH":                  os.Getenv("PATH"),
	}
}

var consoleLine = regexp.MustCompile(`Web console: (http://localhost:\d+)/`)

func startBot(t *testing.T, env map[string]string) *bot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bot{t: t, dataDir: env["NIGHTONA_DATA_DIR"], cancel: cancel, done: make(chan error, 1), stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}}
	go func() {
		b.done <- run(ctx, nil, func(k string) string { return env[k] }, b.stdout, b.stderr)
	}()
	testenv.WaitFor(t, 30*time.Second, "the bot to print its console URL", func() bool {
		select {
		case err := <-b.done:
			t.Fatalf("run returned early: %v\nstderr:\n%s", err, b.stderr.String())
		default:
		}
		m := consoleLine.FindStringSubmatch(b.stdout.String())
		if m != nil {
			b.url = m[1]
		}
		return m != nil
	})
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("bot stderr:\n%s", b.stderr.String())
		}
	})
	return b
}

// stop sends the equivalent of SIGTERM and waits for run to return.
func (b *bot) stop() error {
	if b.cancel == nil {
		return nil
	}
	b.cancel()
	b.cancel = nil
	select {
	case err := <-b.done:
		return err
	case <-time.After(60 * time.Second):
		b.t.Fatal("run did not return within 60s of shutdown")
		return nil
	}
}

func (b *bot) post(path string, body any) (int, map[string]any) {
	b.t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(b.url+path, "application/json", bytes.NewReader(data))
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (b *bot) get(path string) (int, []byte) {
	b.t.Helper()
	resp, err := http.Get(b.url + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (b *bot) newThread() string {
	b.t.Helper()
	status, out := b.post("/api/threads", map[string]any{})
	if status != http.StatusCreated {
		b.t.Fatalf("new thread: %d %v", status, out)
	}
	return out["thread"].(string)
}

func (b *bot) prompt(thread, text string) map[string]any {
	b.t.Helper()
	status, out := b.post("/api/threads/"+thread+"/prompts", map[string]string{"text": text})
	if status != http.StatusAccepted {
		b.t.Fatalf("prompt %q: %d %v", text, status, out)
	}
	return out
}

// frame is a console WebSocket frame.
type frame struct {
	Type    string          `json:"type"`
	Seq     int64           `json:"seq"`
	Kind    string          `json:"kind"`
	Data    json.RawMessage `json:"data"`
	Session json.RawMessage `json:"session"`
}

func (f frame) field(name string) string {
	var m map[string]any
	_ = json.Unmarshal(f.Data, &m)
	s, _ := m[name].(string)
	return s
}

// follower reads a thread's console stream.
type follower struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan frame
}

func (b *bot) follow(thread string, after int64) *follower {
	b.t.Helper()
	u := strings.Replace(b.url, "http", "ws", 1) + "/api/threads/" + thread + "/events?after=" + strconv.FormatInt(after, 10)
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	f := &follower{t: b.t, ws: ws, frames: make(chan frame, 4096)}
	go func() {
		defer close(f.frames)
		for {
			var fr frame
			if err := ws.ReadJSON(&fr); err != nil {
				return
			}
			f.frames <- fr
		}
	}()
	b.t.Cleanup(func() { ws.Close() })
	return f
}

// until reads event frames until one matches, returning every event frame read on the way.
func (f *follower) until(what string, timeout time.Duration, match func(frame) bool) []frame {
	f.t.Helper()
	var got []frame
	deadline := time.After(timeout)
	for {
		select {
		case fr, ok := <-f.frames:
			if !ok {
				f.t.Fatalf("stream closed while waiting for %s", what)
			}
			if fr.Type != "event" {
				continue
			}
			got = append(got, fr)
			if match(fr) {
				return got
			}
		case <-deadline:
			f.t.Fatalf("timed out waiting for %s; got %d events", what, len(got))
		}
	}
}

func isResult(fr frame) bool { return fr.Kind == "agent" && fr.field("type") == "result" }

func agentSessionIDs(frames []frame) map[string]bool {
	ids := map[string]bool{}
	for _, fr := range frames {
		if fr.Kind == "agent" && fr.field("type") == "system" && fr.field("subtype") == "init" {
			ids[fr.field("session_id")] = true
		}
	}
	return ids
}

func assertContiguous(t *testing.T, frames []frame, first int64) {
	t.Helper()
	for i, fr := range frames {
		if fr.Seq != first+int64(i) {
			t.Fatalf("frame %d has seq %d, want %d: events out of order, missing or repeated", i, fr.Seq, first+int64(i))
		}
	}
}

func (b *bot) session(thread string) map[string]any {
	b.t.Helper()
	_, data := b.get("/api/threads/" + thread)
	var out struct {
		Session map[string]any `json:"session"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		b.t.Fatal(err)
	}
	return out.Session
}

func (b *bot) workspace(thread string) string {
	sb, _ := b.session(thread)["sandbox_id"].(string)
	if sb == "" {
		b.t.Fatal("the session has no sandbox")
	}
	return filepath.Join(b.dataDir, "sandboxes", sb, "workspace")
}

// TestConsoleEndToEnd is the first path: a prompt in the console runs the real Claude Code in a
// local sandbox and streams back; a second prompt in the thread continues the conversation.
func TestConsoleEndToEnd(t *testing.T) {
	b := startBot(t, baseEnv(t))
	if status, _ := b.get("/healthz"); status != http.StatusOK {
		t.Fatalf("healthz %d", status)
	}
	if status, body := b.get("/readyz"); status != http.StatusOK {
		t.Fatalf("readyz %d %s", status, body)
	}
	_, info := b.get("/api/info")
	if !bytes.Contains(info, []byte(`"mode":"offline"`)) || !bytes.Contains(info, []byte("scenario:write")) {
		t.Fatalf("info %s", info)
	}

	thread := b.newThread()
	f := b.follow(thread, 0)
	sub := b.prompt(thread, "scenario:write make a file")
	if sub["queued"] != false || sub["session_id"] == "" {
		t.Fatalf("submit answered %v", sub)
	}
	turn1 := f.until("the first result", 60*time.Second, isResult)
	assertContiguous(t, turn1, 1)
	if turn1[0].Kind != "prompt" || turn1[0].field("text") != "scenario:write make a file" {
		t.Fatalf("first event %+v, want the prompt", turn1[0])
	}
	var sawStarting, sawToolUse, sawToolResult, sawDelta bool
	for _, fr := range turn1 {
		switch {
		case fr.Kind == "status" && fr.field("stage") == "sandbox_starting":
			sawStarting = true
		case fr.Kind == "agent" && fr.field("type") == "assistant" && bytes.Contains(fr.Data, []byte(`"name":"Write"`)):
			sawToolUse = true
		case fr.Kind == "agent" && fr.field("type") == "user" && bytes.Contains(fr.Data, []byte(`"tool_result"`)):
			sawToolResult = true
		case fr.Kind == "agent" && fr.field("type") == "stream_event" && bytes.Contains(fr.Data, []byte(`"text_delta"`)):
			sawDelta = true
		}
	}
	if !sawStarting || !sawToolUse || !sawToolResult || !sawDelta {
		t.Fatalf("first turn: starting status %v, Write call %v, its result %v, streamed text %v", sawStarting, sawToolUse, sawToolResult, sawDelta)
	}
	result := turn1[len(turn1)-1]
	if result.field("subtype") != "success" || !strings.Contains(result.field("result"), "created hello.txt") {
		t.Fatalf("first result %s", result.Data)
	}
	got, err := os.ReadFile(filepath.Join(b.workspace(thread), "hello.txt"))
	if err != nil || string(got) != "Hello, world!\n" {
		t.Fatalf("hello.txt in the workspace: %q %v", got, err)
	}

	b.prompt(thread, "scenario:recall what did I ask?")
	turn2 := f.until("the second result", 60*time.Second, isResult)
	assertContiguous(t, turn2, turn1[len(turn1)-1].Seq+1)
	ids1, ids2 := agentSessionIDs(turn1), agentSessionIDs(turn2)
	if len(ids1) != 1 || len(ids2) != 1 {
		t.Fatalf("Claude session ids: turn 1 %v, turn 2 %v", ids1, ids2)
	}
	for id := range ids1 {
		if !ids2[id] {
			t.Fatalf("the second turn ran in Claude session %v, not %v", ids2, ids1)
		}
	}
	if r := turn2[len(turn2)-1].field("result"); !strings.Contains(r, "1. scenario:write make a file") {
		t.Fatalf("the second turn does not remember the first: %q", r)
	}

	// A reconnecting follower gets exactly what it has not seen.
	last := turn2[len(turn2)-1].Seq
	f2 := b.follow(thread, last-3)
	tail := f2.until("the replayed tail", 10*time.Second, isResult)
	assertContiguous(t, tail, last-2)

	sess := b.session(thread)
	usage, _ := sess["usage"].(map[string]any)
	if sess["state"] != "idle" || usage["turns"] != float64(2) || usage["cost_usd"].(float64) <= 0 {
		t.Fatalf("session after two turns: %v", sess)
	}
	_, metrics := b.get("/metrics")
	if !bytes.Contains(metrics, []byte(`nightona_turns_total{outcome="success"} 2`)) {
		t.Fatalf("metrics do not count the two turns:\n%s", grepLines(metrics, "nightona_"))
	}
	if err := b.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func grepLines(data []byte, substr string) string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

func TestPromptErrors(t *testing.T) {
	env := baseEnv(t)
	env["NIGHTONA_MAX_PROMPT_BYTES"] = "1000"
	b := startBot(t, env)
	thread := b.newThread()
	status, out := b.post("/api/threads/"+thread+"/prompts", map[string]string{"text": strings.Repeat("a", 1001)})
	if status != http.StatusRequestEntityTooLarge || out["code"] != "prompt_too_large" || !strings.Contains(out["error"].(string), "1000 bytes") {
		t.Fatalf("oversized prompt: %d %v", status, out)
	}
	if status, out := b.post("/api/threads/"+thread+"/prompts", map[string]string{"text": "  "}); status != http.StatusBadRequest || out["code"] != "empty_prompt" {
		t.Fatalf("empty prompt: %d %v", status, out)
	}
	resp, err := http.Post(b.url+"/api/threads/"+thread+"/prompts", "text/plain", strings.NewReader(`{"text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("a non-JSON post (what a cross-site form sends): %d", resp.StatusCode)
	}
	if status, _ := b.post("/api/threads/slack:T1:C1:1.2/prompts", map[string]string{"text": "hi"}); status != http.StatusNotFound {
		t.Fatalf("the console reached a non-console thread: %d", status)
	}
	// A foreign Host header (DNS rebinding) is refused even from loopback.
	req, _ := http.NewRequest(http.MethodGet, b.url+"/api/info", nil)
	req.Host = "evil.example:8080"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("foreign Host: %d, want 401", resp.StatusCode)
	}
	// A browser page on another site cannot open the transcript stream.
	u := strings.Replace(b.url, "http", "ws", 1) + "/api/threads/" + thread + "/events"
	if _, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin websocket: %v %v", err, resp)
	}
}

func TestMissingCLIIsReported(t *testing.T) {
	env := baseEnv(t)
	env["NIGHTONA_CLAUDE"] = filepath.Join(t.TempDir(), "claude")
	b := startBot(t, env)
	if !strings.Contains(b.stderr.String(), "does not exist") {
		t.Fatalf("start-up log does not report the missing CLI:\n%s", b.stderr.String())
	}
	if status, body := b.get("/readyz"); status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("does not exist")) {
		t.Fatalf("readyz without a CLI: %d %s", status, body)
	}
	status, out := b.post("/api/threads/"+b.newThread()+"/prompts", map[string]string{"text": "hi"})
	if status != http.StatusServiceUnavailable || !strings.Contains(out["error"].(string), "does not exist") {
		t.Fatalf("prompt without a CLI: %d %v", status, out)
	}

	// A CLI that is there but broken is reported too.
	broken := filepath.Join(t.TempDir(), "claude")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env2 := baseEnv(t)
	env2["NIGHTONA_CLAUDE"] = broken
	b2 := startBot(t, env2)
	status, out = b2.post("/api/threads/"+b2.newThread()+"/prompts", map[string]string{"text": "hi"})
	if status != http.StatusServiceUnavailable || !strings.Contains(out["error"].(string), "does not run") {
		t.Fatalf("prompt with a broken CLI: %d %v", status, out)
	}
}

// TestRelayDeathMidTurn kills the sandbox's relay during a streamed turn: the turn ends with an
// error in the transcript, and the next prompt starts a fresh relay that resumes the real
// CLI's conversation.
func TestRelayDeathMidTurn(t *testing.T) {
	b := startBot(t, baseEnv(t))
	thread := b.newThread()
	f := b.follow(thread, 0)
	b.prompt(thread, "scenario:write first")
	first := f.until("the first result", 60*time.Second, isResult)
	b.prompt(thread, "scenario:slow:400:50 tell a long story")
	f.until("the slow turn to stream", 30*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`))
	})
	sb, _ := b.session(thread)["sandbox_id"].(string)
	pid, err := local.RelayPID(filepath.Join(b.dataDir, "sandboxes", sb))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil { // the relay and its CLI
		t.Fatal(err)
	}
	cut := f.until("the error that ends the turn", 30*time.Second, func(fr frame) bool { return fr.Kind == "error" })
	if last := cut[len(cut)-1]; last.field("code") != "relay_lost" || !strings.Contains(last.field("message"), "Send your prompt again") {
		t.Fatalf("error event %s", last.Data)
	}
	for _, fr := range cut {
		if isResult(fr) {
			t.Fatal("the cut turn has a result")
		}
	}

	b.prompt(thread, "scenario:recall after the crash")
	after := f.until("a result from a fresh relay", 60*time.Second, isResult)
	var woke bool
	for _, fr := range after {
		if fr.Kind == "status" && fr.field("stage") == "sandbox_waking" {
			woke = true
		}
	}
	if !woke {
		t.Fatal("waking the sandbox was not shown")
	}
	ids1, ids3 := agentSessionIDs(first), agentSessionIDs(after)
	for id := range ids1 {
		if !ids3[id] {
			t.Fatalf("after the crash Claude ran in session %v, not %v", ids3, ids1)
		}
	}
	if r := after[len(after)-1].field("result"); !strings.Contains(r, "1. scenario:write first") {
		t.Fatalf("the fresh relay's Claude does not remember the conversation: %q", r)
	}
}

// TestShutdownDrainsStreams stops the bot during a turn: the turn finishes and its result
// reaches the log and the open console stream before run returns.
func TestShutdownDrainsStreams(t *testing.T) {
	b := startBot(t, baseEnv(t))
	thread := b.newThread()
	f := b.follow(thread, 0)
	b.prompt(thread, "scenario:slow:30:50 a short story")
	f.until("the turn to stream", 30*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`))
	})
	var pids []int
	sandboxes, _ := os.ReadDir(filepath.Join(b.dataDir, "sandboxes"))
	for _, sb := range sandboxes {
		if pid, err := local.RelayPID(filepath.Join(b.dataDir, "sandboxes", sb.Name())); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("%d running relays before shutdown, want 1", len(pids))
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	f.until("the drained turn's result", 30*time.Second, isResult)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after the drain")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("relay %d still runs after shutdown", pid)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	env := baseEnv(t)
	env["NIGHTONA_SANDBOX"] = "cloud"
	env["NIGHTONA_MAX_PROMPT_BYTES"] = "lots"
	env["NIGHTONA_SECRET"] = "short"
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"NIGHTONA_SANDBOX", "NIGHTONA_MAX_PROMPT_BYTES", "NIGHTONA_SECRET"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("configuration error does not name %s: %v", want, err)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "nightona ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
}

// TestStopFromConsole interrupts a streaming turn: the partial output stays, the turn ends with
// an interrupted result, and the next prompt works.
func TestStopFromConsole(t *testing.T) {
	b := startBot(t, baseEnv(t))
	thread := b.newThread()
	f := b.follow(thread, 0)
	streaming := func(fr frame) bool { return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`)) }
	long := b.prompt(thread, "scenario:slow:400:50 a long story")
	f.until("the turn to stream", 30*time.Second, streaming)
	stopLong := map[string]any{"prompt_id": long["prompt_id"]}
	if status, out := b.post("/api/threads/"+thread+"/interrupt", stopLong); status != http.StatusAccepted {
		t.Fatalf("interrupt: %d %v", status, out)
	}
	turn := f.until("the interrupted result", 30*time.Second, isResult)
	res := turn[len(turn)-1]
	if res.field("subtype") != "error_during_execution" {
		t.Fatalf("result after Stop: %s", res.Data)
	}
	// The same Stop again, late, while the next turn runs: it named a turn that is over.
	b.prompt(thread, "scenario:slow:30:50 a short story")
	f.until("the next turn to stream", 30*time.Second, streaming)
	if status, out := b.post("/api/threads/"+thread+"/interrupt", stopLong); status != http.StatusAccepted {
		t.Fatalf("a late interrupt: %d %v", status, out)
	}
	short := f.until("the short story's result", 30*time.Second, isResult)
	if r := short[len(short)-1]; r.field("subtype") != "success" {
		t.Fatalf("a late Stop for the turn before stopped the next: %s", r.Data)
	}
	b.goesOn(f, thread)
}

// goesOn checks that the thread, followed by f, answers its next prompt as usual after a Stop.
func (b *bot) goesOn(f *follower, thread string) {
	b.t.Helper()
	b.prompt(thread, "scenario:text after stop")
	next := f.until("the next result", 60*time.Second, isResult)
	if r := next[len(next)-1]; r.field("subtype") != "success" || !strings.Contains(r.field("result"), "after stop") {
		b.t.Fatalf("turn after Stop: %s", r.Data)
	}
}

// TestStopAsSoonAsSent stops a thread's first prompt the moment it is sent, while its sandbox
// comes up: whether it is withdrawn before Claude sees it or its turn is interrupted as it
// begins, it does not run to its end, and the thread goes on.
func TestStopAsSoonAsSent(t *testing.T) {
	b := startBot(t, baseEnv(t))
	thread := b.newThread()
	f := b.follow(thread, 0)
	sent := b.prompt(thread, "scenario:slow:400:50 a long story")
	if status, out := b.post("/api/threads/"+thread+"/interrupt", map[string]any{}); status != http.StatusAccepted {
		t.Fatalf("interrupt: %d %v", status, out)
	}
	withdrawn := func(fr frame) bool {
		return fr.Kind == "status" && fr.field("stage") == "prompt_cancelled" && fr.field("prompt_id") == sent["prompt_id"]
	}
	got := f.until("the stopped prompt's end", 15*time.Second, func(fr frame) bool { return withdrawn(fr) || isResult(fr) })
	last := got[len(got)-1]
	switch {
	case withdrawn(last):
		t.Logf("withdrawn before Claude saw it: %s", last.field("message"))
	case last.field("subtype") != "error_during_execution":
		t.Fatalf("stopped as soon as sent, the turn ended with %s", last.Data)
	}
	b.goesOn(f, thread)
}

// TestApproveFromConsole approves a Bash call Claude asks permission for, with the real CLI.
func TestApproveFromConsole(t *testing.T) {
	b := startBot(t, baseEnv(t))
	thread := b.newThread()
	f := b.follow(thread, 0)
	b.prompt(thread, "scenario:bash run it")
	asked := f.until("a permission request", 60*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && fr.field("type") == "control_request"
	})
	req := asked[len(asked)-1].field("request_id")
	if status, out := b.post("/api/threads/"+thread+"/permissions/"+req, map[string]string{"behavior": "maybe"}); status != http.StatusBadRequest {
		t.Fatalf("a decision that is neither allow nor deny: %d %v", status, out)
	}
	if status, out := b.post("/api/threads/"+thread+"/permissions/"+req, map[string]string{"behavior": "allow"}); status != http.StatusAccepted {
		t.Fatalf("approve: %d %v", status, out)
	}
	turn := f.until("the result", 60*time.Second, isResult)
	var decided bool
	for _, fr := range turn {
		if fr.Kind == "decision" && fr.field("behavior") == "allow" && fr.field("user") == "web:local" && fr.field("request_id") == req {
			decided = true
		}
	}
	if !decided {
		t.Fatal("the decision is not in the log with who made it")
	}
	if r := turn[len(turn)-1].field("result"); !strings.Contains(r, "hello-from-bash") {
		t.Fatalf("result %q", r)
	}
	if got, err := os.ReadFile(filepath.Join(b.workspace(thread), "bash.txt")); err != nil || string(got) != "hello-from-bash\n" {
		t.Fatalf("bash.txt: %q %v", got, err)
	}
	if status, out := b.post("/api/threads/"+thread+"/permissions/"+req, map[string]string{"behavior": "deny"}); status != http.StatusConflict || out["code"] != "no_such_request" {
		t.Fatalf("answering twice: %d %v", status, out)
	}
}
