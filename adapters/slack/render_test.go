package slack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightona/nightona/adapters/slack/slacktest"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares v, as indented JSON, with testdata/name.golden.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <@U1> and & readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -run %s -update rewrites it):\n%s", path, t.Name(), got)
	}
}

// validPayloads fails the test when a payload breaks one of Slack's Block Kit limits.
func validPayloads(t *testing.T, ps []payload) {
	t.Helper()
	for i, p := range ps {
		b, _ := json.Marshal(p.Blocks)
		if e := slacktest.ValidateBlocks(b); e != "" {
			t.Fatalf("message %d: Slack would answer %s: %s", i, e, b)
		}
	}
}

var testView = view{
	Thread:  "slack:T1:C1:1712345678.000100",
	Link:    "https://nightona.example/s/ses_1?exp=1&sig=abc",
	Preview: "https://3000-sb1.preview.example",
	Owner:   "slack:U1",
}

func bash(id, cmd, state, output string) *transcript.Item {
	return &transcript.Item{Kind: transcript.KindTool, Tool: &transcript.Tool{ID: id, Name: "Bash", Summary: cmd, State: state, Output: output}}
}

func TestRenderTurnGolden(t *testing.T) {
	edit := &transcript.Item{Kind: transcript.KindTool, Tool: &transcript.Tool{ID: "t2", Name: "Edit", Summary: "src/App.tsx", State: transcript.ToolDone,
		Diff: "- <h1>Hello</h1>\n+ <h1>Hello & welcome</h1>\n"}}
	longOut := strings.Repeat("ok line\n", 40) + "PASS all 40 tests"
	cases := map[string]*transcript.Turn{
		"turn-starting": {Prompt: &transcript.Prompt{ID: "p1", User: "slack:U1", Text: "hi"}, Items: []*transcript.Item{
			{Kind: transcript.KindStatus, Text: "Starting a sandbox for this thread…"},
		}},
		"turn-running": {Prompt: &transcript.Prompt{ID: "p1", User: "slack:U1"}, Items: []*transcript.Item{
			{Kind: transcript.KindStatus, Text: "Starting a sandbox for this thread…"},
			{Kind: transcript.KindStatus, Text: "Sandbox ready (sb-1, started in 1.2s)."},
			{Kind: transcript.KindText, Text: "I'll add a **dark mode** toggle. First, the `App`:"},
			edit,
			bash("t3", "npm test -- --watch=false", transcript.ToolRunning, ""),
			{Kind: transcript.KindText, Text: "Running the tests", Streaming: true},
		}},
		"turn-done": {Prompt: &transcript.Prompt{ID: "p1", User: "slack:U1"}, Done: true, Items: []*transcript.Item{
			{Kind: transcript.KindText, Text: "Done: the toggle is in the header.\n\n```tsx\n<Toggle />\n```"},
			edit,
			bash("t3", "npm test", transcript.ToolDone, longOut),
			bash("t4", "cat <missing>", transcript.ToolFailed, "cat: <missing>: No such file or directory"),
			{Kind: transcript.KindTool, Tool: &transcript.Tool{ID: "t5", Name: "Bash", Summary: "rm -rf build", State: transcript.ToolDenied}},
			{Kind: transcript.KindNotice, Text: "Permission mode is now plan."},
		}, Result: &transcript.Result{Outcome: "done", DurationMS: 12345, NumTurns: 3, CostUSD: 0.0123}},
		"turn-interrupted": {Prompt: &transcript.Prompt{ID: "p2"}, Done: true, Items: []*transcript.Item{
			{Kind: transcript.KindText, Text: "one two three"},
			bash("t1", "sleep 100", transcript.ToolStopped, ""),
		}, Result: &transcript.Result{Outcome: "interrupted", DurationMS: 800, NumTurns: 1, CostUSD: 0}},
		"turn-cancelled": {Prompt: &transcript.Prompt{ID: "p4", Cancelled: true}, Done: true},
		"turn-error": {Prompt: &transcript.Prompt{ID: "p3"}, Done: true, Items: []*transcript.Item{
			{Kind: transcript.KindError, Text: "The sandbox could not be started: quota exceeded."},
		}},
		"turn-not-run": {Prompt: &transcript.Prompt{ID: "p4"}, Done: true},
	}
	for name, turn := range cases {
		t.Run(name, func(t *testing.T) {
			v := testView
			if name == "turn-starting" {
				v.Preview = ""
			}
			ps := renderTurn(turn, v)
			validPayloads(t, ps)
			golden(t, name, ps)
		})
	}
}

// TestRenderLongTextSplits: a long answer takes several messages, every one within Slack's
// limits, with no code fence left open, and nothing lost.
func TestRenderLongTextSplits(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 40000; i++ {
		b.WriteString("Paragraph with some words in it, to be read in a chat thread.\n\n")
		if i%20 == 0 {
			b.WriteString("```go\n" + strings.Repeat("fmt.Println(\"a line of code in a long block\")\n", 60) + "```\n\n")
		}
	}
	text := b.String()
	turn := &transcript.Turn{Prompt: &transcript.Prompt{ID: "p1"}, Done: true,
		Items:  []*transcript.Item{{Kind: transcript.KindText, Text: text}},
		Result: &transcript.Result{Outcome: "done", DurationMS: 1000, NumTurns: 1, CostUSD: 0.5}}
	ps := renderTurn(turn, testView)
	if len(ps) < 4 {
		t.Fatalf("%d messages for %d characters, want at least 4", len(ps), len(text))
	}
	validPayloads(t, ps)
	var joined strings.Builder
	for i, p := range ps {
		for _, bl := range p.Blocks {
			raw, _ := json.Marshal(bl)
			var m struct{ Type, Text string }
			_ = json.Unmarshal(raw, &m)
			if m.Type != "markdown" {
				continue
			}
			if strings.Count(m.Text, "```")%2 != 0 {
				t.Fatalf("message %d has a markdown block with an open code fence", i)
			}
			joined.WriteString(m.Text)
		}
	}
	// Every word is there (fences closed and reopened at cuts add their own lines).
	if got, want := strings.Count(joined.String(), "Paragraph with"), strings.Count(text, "Paragraph with"); got != want {
		t.Fatalf("%d paragraphs shown, want %d", got, want)
	}
	last := ps[len(ps)-1]
	if raw, _ := json.Marshal(last.Blocks); !strings.Contains(string(raw), "Done in 1.0 s") || !strings.Contains(string(raw), actionPreview) {
		t.Fatalf("the last message lacks the footer or the buttons: %s", raw)
	}
}

// TestRenderHugeTurnIsShortened: past maxParts messages, the rest of a turn is on the
// companion page.
func TestRenderHugeTurnIsShortened(t *testing.T) {
	text := strings.Repeat("word ", 30000) // 150,000 characters
	turn := &transcript.Turn{Prompt: &transcript.Prompt{ID: "p1"}, Items: []*transcript.Item{{Kind: transcript.KindText, Text: text}}}
	ps := renderTurn(turn, testView)
	if len(ps) != maxParts {
		t.Fatalf("%d messages, want %d", len(ps), maxParts)
	}
	validPayloads(t, ps)
	raw, _ := json.Marshal(ps[len(ps)-1].Blocks[0])
	var context struct{ Elements []struct{ Text string } }
	_ = json.Unmarshal(raw, &context)
	if len(context.Elements) == 0 || !strings.Contains(context.Elements[0].Text, "rest of this answer") ||
		slacktest.Links(context.Elements[0].Text)["companion page"] != testView.Link {
		t.Fatalf("the last message does not point at the companion page: %s", raw)
	}
}

func TestRenderPermissionGolden(t *testing.T) {
	for _, state := range []string{transcript.PermPending, transcript.PermAllowed, transcript.PermDenied, transcript.PermTimedOut, transcript.PermWithdrawn} {
		t.Run(state, func(t *testing.T) {
			p := &transcript.Permission{RequestID: "req-1", Tool: "Bash", Summary: "rm -rf build && echo `done`", State: state}
			switch state {
			case transcript.PermAllowed:
				p.DecidedBy = "slack:U1"
			case transcript.PermDenied:
				p.DecidedBy, p.Message = "slack:U9", "A reviewer denied this in Slack."
			}
			pl := renderPermission(p, testView)
			validPayloads(t, []payload{pl})
			golden(t, "permission-"+state, pl)
		})
	}
}

func TestRenderControlsGolden(t *testing.T) {
	p := renderControls(&transcript.Turn{Prompt: &transcript.Prompt{ID: "p1"}}, testView)
	validPayloads(t, []payload{p})
	golden(t, "controls", p)
}

func TestStreamSegmentsGolden(t *testing.T) {
	turn := &transcript.Turn{Prompt: &transcript.Prompt{ID: "p1"}, Done: true, Items: []*transcript.Item{
		{Kind: transcript.KindStatus, Text: "Starting a sandbox for this thread…"},
		{Kind: transcript.KindText, Text: "Adding the toggle."},
		{Kind: transcript.KindTool, Tool: &transcript.Tool{ID: "t1", Name: "Edit", Summary: "src/App.tsx", State: transcript.ToolDone, Diff: "- a\n+ b\n"}},
		bash("t2", "npm test", transcript.ToolFailed, "1 failing"),
		{Kind: transcript.KindError, Text: "Claude Code stopped."},
	}, Result: &transcript.Result{Outcome: "failed", DurationMS: 61000, NumTurns: 2, CostUSD: 0.004}}
	type seg struct {
		Markdown string `json:"markdown,omitempty"`
		Task     any    `json:"task,omitempty"`
	}
	var out []seg
	for _, s := range streamSegments(turn) {
		if s.task != nil {
			out = append(out, seg{Task: s.task})
		} else {
			out = append(out, seg{Markdown: s.markdown})
		}
	}
	golden(t, "stream-segments", map[string]any{"segments": out, "stop_blocks": turnTail(turn, testView)})
}

// TestRenderRealCapture renders a turn folded from a real Claude Code run: it must be valid
// and show each tool call.
func TestRenderRealCapture(t *testing.T) {
	tr := transcript.New()
	seq := int64(0)
	apply := func(kind string, data []byte) {
		seq++
		tr.Apply(session.Event{Seq: seq, Kind: kind, Data: data})
	}
	p, _ := json.Marshal(session.Prompt{ID: "p1", User: "slack:U1", Text: "scenario:multi"})
	apply(session.KindPrompt, p)
	f, err := os.Open("../../transcript/testdata/p-multi-acceptEdits.stdout.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		apply(session.KindAgent, append([]byte(nil), sc.Bytes()...))
	}
	if len(tr.Turns) != 1 || !tr.Turns[0].Done {
		t.Fatalf("the capture folded into %d turns", len(tr.Turns))
	}
	ps := renderTurn(tr.Turns[0], testView)
	validPayloads(t, ps)
	golden(t, "turn-real-multi", ps)
}

func TestThreadStatus(t *testing.T) {
	running := func(items ...*transcript.Item) *transcript.Transcript {
		tr := transcript.New()
		tr.Turns = []*transcript.Turn{{Prompt: &transcript.Prompt{ID: "p"}, Items: items}}
		return tr
	}
	for _, c := range []struct {
		t    *transcript.Transcript
		want string
	}{
		{transcript.New(), ""},
		{running(), "is thinking…"},
		{running(&transcript.Item{Kind: transcript.KindStatus, Text: "Starting a sandbox for this thread…"}), "is starting a sandbox…"},
		{running(bash("t", "npm test", transcript.ToolRunning, "")), "is running npm test…"},
		{running(&transcript.Item{Kind: transcript.KindTool, Tool: &transcript.Tool{Name: "Edit", Summary: "src/App.tsx", State: transcript.ToolRunning}}), "is editing src/App.tsx…"},
		{running(&transcript.Item{Kind: transcript.KindText, Text: "Hel", Streaming: true}), "is writing…"},
		{running(&transcript.Item{Kind: transcript.KindPermission, Permission: &transcript.Permission{State: transcript.PermPending}}), "is waiting for an approval…"},
	} {
		if got := threadStatus(c.t); got != c.want {
			t.Errorf("status %q, want %q", got, c.want)
		}
	}
}

func TestCleanText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"<@U0BOT> add a toggle", "add a toggle"},
		{"<@U0BOT>   ", ""},
		{"fix <https://example.com/a?b=1&amp;c=2|the page> &amp; <#C1|general> for <@U2>", "fix https://example.com/a?b=1&c=2 & #general for @U2"},
		{"if a &lt; b &amp;&amp; c &gt; d", "if a < b && c > d"},
		{"ping <!here>", "ping @here"},
		{"mail <mailto:a@b.c|a@b.c>", "mail a@b.c"},
	} {
		if got := cleanText(c.in, "U0BOT"); got != c.want {
			t.Errorf("cleanText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
