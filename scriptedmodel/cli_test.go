package scriptedmodel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
)

// These tests run the real Claude Code CLI against the model, with the clean environment the
// reference transcripts were captured in: nothing inherited, a throw-away HOME, and the four
// switches that keep the CLI from talking to anything but ANTHROPIC_BASE_URL.

const cliTimeout = 60 * time.Second

type cliRun struct {
	events []map[string]any
	exit   int
	stderr string
}

func cliEnv(home, baseURL string, extra ...string) []string {
	return append([]string{
		"HOME=" + home,
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=C.UTF-8",
		"ANTHROPIC_BASE_URL=" + baseURL,
		"ANTHROPIC_API_KEY=test",
		"DISABLE_TELEMETRY=1",
		"DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_ERROR_REPORTING=1",
	}, extra...)
}

// workspace makes a fresh working folder and HOME under one temp root.
func workspace(t *testing.T) (dir, home string) {
	t.Helper()
	root := t.TempDir()
	dir, home = filepath.Join(root, "work"), filepath.Join(root, "home")
	for _, d := range []string{dir, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The CLI reports its cwd with symlinks resolved; compare against the same spelling.
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return real, home
}

// runCLI runs `claude -p PROMPT --output-format stream-json --verbose ARGS...` to completion.
func runCLI(t *testing.T, dir, home, baseURL, prompt string, env []string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	argv := append([]string{"-p", prompt, "--output-format", "stream-json", "--verbose"}, args...)
	cmd := exec.CommandContext(ctx, testenv.Claude(t), argv...)
	cmd.Dir = dir
	cmd.Env = cliEnv(home, baseURL, env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	run := cliRun{stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		run.exit = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run claude: %v\nstderr: %s", err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("claude did not finish within %v\nstdout: %s", cliTimeout, stdout.String())
	}
	for line := range strings.Lines(stdout.String()) {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("stdout line is not JSON: %q", line)
		}
		run.events = append(run.events, ev)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("claude %q exit %d\nstdout:\n%s\nstderr:\n%s", prompt, run.exit, stdout.String(), stderr.String())
		}
	})
	return run
}

// of returns the events of a type (and subtype, when given).
func (r cliRun) of(typ string, subtype ...string) []map[string]any {
	var out []map[string]any
	for _, ev := range r.events {
		if ev["type"] == typ && (len(subtype) == 0 || ev["subtype"] == subtype[0]) {
			out = append(out, ev)
		}
	}
	return out
}

func (r cliRun) result(t *testing.T) map[string]any {
	t.Helper()
	res := r.of("result")
	if len(res) != 1 {
		t.Fatalf("%d result lines, want 1", len(res))
	}
	return res[0]
}

// toolUses lists the names of the tools the assistant called, in order.
func (r cliRun) toolUses() []string {
	var names []string
	for _, ev := range r.of("assistant") {
		msg, _ := ev["message"].(map[string]any)
		content, _ := msg["content"].([]any)
		for _, c := range content {
			if b, _ := c.(map[string]any); b["type"] == "tool_use" {
				names = append(names, b["name"].(string))
			}
		}
	}
	return names
}

// toolResults lists the tool_result blocks the CLI sent back.
func (r cliRun) toolResults() []map[string]any {
	var out []map[string]any
	for _, ev := range r.of("user") {
		msg, _ := ev["message"].(map[string]any)
		content, _ := msg["content"].([]any)
		for _, c := range content {
			if b, _ := c.(map[string]any); b["type"] == "tool_result" {
				out = append(out, b)
			}
		}
	}
	return out
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s = %q (%v), want %q", filepath.Base(path), got, err, want)
	}
}

// wantSuccess asserts a clean turn whose final text contains each of texts.
func wantSuccess(t *testing.T, r cliRun, texts ...string) {
	t.Helper()
	res := r.result(t)
	if r.exit != 0 || res["is_error"] != false || res["subtype"] != "success" {
		t.Errorf("exit %d, result subtype %v is_error %v", r.exit, res["subtype"], res["is_error"])
	}
	for _, s := range texts {
		if text, _ := res["result"].(string); !strings.Contains(text, s) {
			t.Errorf("result %q lacks %q", text, s)
		}
	}
}

func wantTools(t *testing.T, r cliRun, names ...string) {
	t.Helper()
	if got := r.toolUses(); strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("tools called %v, want %v", got, names)
	}
	for _, tr := range r.toolResults() {
		if tr["is_error"] == true {
			t.Errorf("tool_result is an error: %v", tr["content"])
		}
	}
}

func TestCLI(t *testing.T) {
	testenv.Claude(t) // fail here, once, if the CLI is missing
	srv, _, _ := newServer(t, Config{})
	acceptEdits := []string{"--permission-mode", "acceptEdits"}
	cases := []struct {
		name   string
		prompt string
		env    []string
		args   []string
		check  func(t *testing.T, dir string, r cliRun)
	}{
		{"text", "scenario:text hello there", nil, nil, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r)
			if got := r.result(t)["result"]; got != "Hello from the scripted model. You said: scenario:text hello there" {
				t.Errorf("result = %q", got)
			}
			msg := r.of("assistant")[0]["message"].(map[string]any)
			if id, _ := msg["id"].(string); !strings.HasPrefix(id, "msg_scripted") {
				t.Errorf("assistant message id %q", id)
			}
			if init := r.of("system", "init"); len(init) != 1 || init[0]["cwd"] != dir || msg["model"] != init[0]["model"] {
				t.Errorf("model %v not echoed from init %v", msg["model"], init)
			}
		}},
		{"offline help without a keyword", "hello, who are you?", nil, nil, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "offline scripted model", "scenario:write", "scenario:slow:N:MS")
		}},
		{"write", "scenario:write make a file", nil, acceptEdits, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "Done: I created hello.txt")
			wantTools(t, r, "Write")
			wantFile(t, filepath.Join(dir, "hello.txt"), "Hello, world!\n")
		}},
		{"write denied in default mode", "scenario:write make a file", nil, nil, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "The Write tool failed: Claude requested permissions to write to "+filepath.Join(dir, "hello.txt"))
			if _, err := os.Stat(filepath.Join(dir, "hello.txt")); err == nil {
				t.Error("hello.txt exists although the Write was denied")
			}
		}},
		{"edit in an empty workspace", "scenario:edit", nil, acceptEdits, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "Hello, Nightona!")
			if got := r.toolUses(); strings.Join(got, ",") != "Read,Write" {
				t.Errorf("tools %v, want Read then Write", got)
			}
			wantFile(t, filepath.Join(dir, "hello.txt"), "Hello, Nightona!\n")
		}},
		{"bashro runs without a grant", "scenario:bashro run it", nil, nil, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "The command printed: hello-from-bash\n"+dir)
			wantTools(t, r, "Bash")
		}},
		{"multi", "scenario:multi two tools", nil, acceptEdits, func(t *testing.T, dir string, r cliRun) {
			wantSuccess(t, r, "wc -l said: 1 hello.txt")
			wantTools(t, r, "Write", "Bash")
			wantFile(t, filepath.Join(dir, "hello.txt"), "Hello, world!\n")
		}},
		{"error", "scenario:error", nil, nil, func(t *testing.T, dir string, r cliRun) {
			res := r.result(t)
			if r.exit != 1 || res["is_error"] != true {
				t.Errorf("exit %d is_error %v, want 1 and true", r.exit, res["is_error"])
			}
			if text, _ := res["result"].(string); !strings.Contains(text, "400") || !strings.Contains(text, "scripted invalid request") {
				t.Errorf("result %q does not carry the 400", text)
			}
		}},
		{"overloaded", "scenario:overloaded", []string{"CLAUDE_CODE_MAX_RETRIES=1"}, nil, func(t *testing.T, dir string, r cliRun) {
			retries := r.of("system", "api_retry")
			if len(retries) != 1 || retries[0]["error_status"] != float64(529) {
				t.Errorf("api_retry events = %v, want one for 529", retries)
			}
			if res := r.result(t); r.exit != 1 || res["is_error"] != true {
				t.Errorf("exit %d is_error %v, want 1 and true", r.exit, res["is_error"])
			}
		}},
		{"flaky recovers after a retry", "scenario:flaky:1", nil, nil, func(t *testing.T, dir string, r cliRun) {
			if retries := r.of("system", "api_retry"); len(retries) != 1 {
				t.Errorf("%d api_retry events, want 1", len(retries))
			}
			wantSuccess(t, r, "Recovered after 1 overloaded answers")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, home := workspace(t)
			tc.check(t, dir, runCLI(t, dir, home, srv.URL, tc.prompt, tc.env, tc.args...))
		})
	}

	t.Run("edit after write, continued session", func(t *testing.T) {
		t.Parallel()
		dir, home := workspace(t)
		first := runCLI(t, dir, home, srv.URL, "scenario:write first", nil, acceptEdits...)
		wantFile(t, filepath.Join(dir, "hello.txt"), "Hello, world!\n")
		second := runCLI(t, dir, home, srv.URL, "scenario:edit second", nil, append([]string{"--continue"}, acceptEdits...)...)
		wantSuccess(t, second, `Done: hello.txt now says "Hello, Nightona!".`)
		wantTools(t, second, "Read", "Edit")
		wantFile(t, filepath.Join(dir, "hello.txt"), "Hello, Nightona!\n")
		if a, b := first.result(t)["session_id"], second.result(t)["session_id"]; a != b {
			t.Errorf("--continue started session %v, want %v", b, a)
		}
	})
}

// TestCLIStreamingInterrupt drives the CLI over stdin as the SDK does: a slow answer is
// interrupted mid-stream, then a second turn runs in the same process.
func TestCLIStreamingInterrupt(t *testing.T) {
	claude := testenv.Claude(t)
	t.Parallel()
	srv, _, logs := newServer(t, Config{})
	dir, home := workspace(t)
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, claude, "--input-format", "stream-json", "--output-format", "stream-json",
		"--verbose", "--include-partial-messages")
	cmd.Dir, cmd.Env, cmd.WaitDelay = dir, cliEnv(home, srv.URL), 5*time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var transcript strings.Builder
	defer func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", transcript.String(), stderr.String())
		}
	}()
	send := func(line string) {
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Errorf("write to claude: %v", err)
		}
	}
	userLine := func(text string) string {
		b, _ := json.Marshal(map[string]any{"type": "user", "session_id": "", "parent_tool_use_id": nil,
			"message": map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": text}}}})
		return string(b)
	}

	send(userLine("scenario:slow:30:50 tell a story"))
	var results []map[string]any
	var firstText strings.Builder
	deltas, interruptAcked := 0, false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	for sc.Scan() {
		transcript.WriteString(sc.Text() + "\n")
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stdout line is not JSON: %q", sc.Text())
		}
		switch ev["type"] {
		case "stream_event":
			e, _ := ev["event"].(map[string]any)
			if e["type"] == "content_block_delta" && len(results) == 0 {
				deltas++
				if d, _ := e["delta"].(map[string]any); d["type"] == "text_delta" {
					firstText.WriteString(d["text"].(string))
				}
				if deltas == 3 {
					send(`{"type":"control_request","request_id":"int-1","request":{"subtype":"interrupt"}}`)
				}
			}
		case "control_response":
			r, _ := ev["response"].(map[string]any)
			interruptAcked = interruptAcked || r["request_id"] == "int-1" && r["subtype"] == "success"
		case "result":
			results = append(results, ev)
			if len(results) == 1 {
				send(userLine("scenario:text after interrupt"))
				stdin.Close()
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("claude exited with %v", err)
	}
	if !interruptAcked {
		t.Error("no successful control_response to the interrupt")
	}
	if !strings.HasPrefix(firstText.String(), "word1 word2") {
		t.Errorf("first turn streamed %q", firstText.String())
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}
	if r := results[0]; r["subtype"] != "error_during_execution" && r["is_error"] != true {
		t.Errorf("first result subtype %v is_error %v, want an interrupted turn", r["subtype"], r["is_error"])
	}
	if r := results[1]; r["is_error"] != false || !strings.Contains(r["result"].(string), "You said: scenario:text after interrupt") {
		t.Errorf("second result is_error %v: %q", r["is_error"], r["result"])
	}
	// The CLI drops the connection when interrupted; the model must notice instead of
	// streaming the remaining words into the void.
	testenv.WaitFor(t, 5*time.Second, "the model to log the aborted stream", func() bool {
		return len(logs.find("scriptedmodel: stream aborted")) == 1
	})
}
