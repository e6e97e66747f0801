package transcript

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/session"
)

// replay feeds a transcript the events a session logs for prompts and a captured CLI run: each
// prompt event, then every stdout line of the capture as an agent event, with extra events
// inserted after the stdout line whose number (from 1) is their key.
type replay struct {
	t   *Transcript
	seq int64
}

func newReplay() *replay { return &replay{t: New()} }

func (r *replay) event(kind string, data any) {
	r.seq++
	b, ok := data.([]byte)
	if !ok {
		b, _ = json.Marshal(data)
	}
	r.t.Apply(session.Event{Seq: r.seq, Kind: kind, Data: b})
}

func (r *replay) prompt(id, user, text string) {
	r.event(session.KindPrompt, session.Prompt{ID: id, User: user, Text: text})
}

func (r *replay) capture(tb testing.TB, name string, after map[int]func()) {
	tb.Helper()
	f, err := os.Open("testdata/" + name + ".stdout.jsonl")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	n := 0
	for sc.Scan() {
		n++
		r.event(session.KindAgent, append([]byte(nil), sc.Bytes()...))
		if fn := after[n]; fn != nil {
			fn()
		}
	}
}

func kinds(items []*Item) string {
	var out []string
	for _, it := range items {
		k := it.Kind
		if it.Tool != nil {
			k += ":" + it.Tool.Name + ":" + it.Tool.State
		}
		if it.Permission != nil {
			k += ":" + it.Permission.Tool + ":" + it.Permission.State
		}
		out = append(out, k)
	}
	return strings.Join(out, " ")
}

func TestToolLoop(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "slack:U1", "scenario:multi two tools")
	r.capture(t, "p-multi-acceptEdits", nil)
	if len(r.t.Turns) != 1 {
		t.Fatalf("%d turns", len(r.t.Turns))
	}
	tr := r.t.Turns[0]
	if got, want := kinds(tr.Items), "text tool:Write:done text tool:Bash:done text"; got != want {
		t.Fatalf("items %q, want %q", got, want)
	}
	w := tr.Items[1].Tool
	if w.Summary != "p-multi-acceptEdits/multi.txt" || !strings.Contains(w.Diff, "+ one\n+ two") {
		t.Fatalf("Write: summary %q diff %q", w.Summary, w.Diff)
	}
	b := tr.Items[3].Tool
	if !strings.HasPrefix(b.Summary, "wc -l") || !strings.Contains(b.Output, "multi.txt") {
		t.Fatalf("Bash: summary %q output %q", b.Summary, b.Output)
	}
	if !tr.Done || tr.Result == nil || tr.Result.Outcome != "done" || tr.Result.NumTurns != 3 || tr.Result.CostUSD <= 0 || tr.Result.DurationMS <= 0 {
		t.Fatalf("result %+v", tr.Result)
	}
	if r.t.Running() {
		t.Fatal("running after the result")
	}
}

func TestStreamedTextIsNotRepeated(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "u", "scenario:write make a file")
	var mid string
	r.capture(t, "p-write-partial", map[int]func(){
		5: func() { mid = r.t.Turns[0].Items[0].Text }, // after a few deltas
	})
	if mid == "" {
		t.Fatal("no streamed text mid-way")
	}
	tr := r.t.Turns[0]
	if got := kinds(tr.Items); got != "text tool:Write:done text" {
		t.Fatalf("items %q", got)
	}
	if tr.Items[0].Text != "I'll create hello.txt for you." || tr.Items[0].Streaming {
		t.Fatalf("first text %+v", tr.Items[0])
	}
	if !strings.HasPrefix(tr.Items[0].Text, mid) || mid == tr.Items[0].Text {
		t.Fatalf("mid-way text %q is not a proper beginning of %q", mid, tr.Items[0].Text)
	}
}

func TestInterruptThenNextTurn(t *testing.T) {
	for _, capture := range []string{"sj-interrupt", "sj-interrupt-2.1.197"} {
		t.Run(capture, func(t *testing.T) {
			second := false
			// The capture has both turns; the second gets its prompt where the first ended.
			r2 := newReplay()
			r2.prompt("p1", "u", "scenario:slow")
			f, _ := os.ReadFile("testdata/" + capture + ".stdout.jsonl")
			for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
				r2.event(session.KindAgent, []byte(line))
				if strings.Contains(line, `"type":"result"`) && !second {
					second = true
					r2.prompt("p2", "u", "scenario:text after interrupt")
				}
			}
			if len(r2.t.Turns) != 2 {
				t.Fatalf("%d turns", len(r2.t.Turns))
			}
			first, next := r2.t.Turns[0], r2.t.Turns[1]
			if first.Result == nil || first.Result.Outcome != "interrupted" {
				t.Fatalf("first result %+v", first.Result)
			}
			if len(first.Items) == 0 || first.Items[0].Kind != KindText || !strings.Contains(first.Items[0].Text, "tick 1. tick 2.") {
				t.Fatalf("the interrupted turn lost its partial text: %q", kinds(first.Items))
			}
			if next.Result == nil || next.Result.Outcome != "done" || !strings.Contains(next.Items[len(next.Items)-1].Text, "after interrupt") {
				t.Fatalf("second turn %q %+v", kinds(next.Items), next.Result)
			}
			if next.Result.CostUSD <= 0 || next.Result.CostUSD >= first.Result.CostUSD+next.Result.CostUSD+1 {
				t.Fatalf("second turn's cost %v", next.Result.CostUSD)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "u", "scenario:error")
	r.capture(t, "p-api-error-400", nil)
	tr := r.t.Turns[0]
	if got := kinds(tr.Items); got != "error" || !strings.Contains(tr.Items[0].Text, "API Error: 400") {
		t.Fatalf("items %q %+v", got, tr.Items)
	}
	if tr.Result.Outcome != "failed" {
		t.Fatalf("result %+v", tr.Result)
	}
	r2 := newReplay()
	r2.prompt("p1", "u", "scenario:overloaded")
	r2.capture(t, "p-api-overloaded-529", nil)
	if got := kinds(r2.t.Turns[0].Items); got != "notice notice error" || !strings.Contains(r2.t.Turns[0].Items[0].Text, "(529); retry 1 of 2") {
		t.Fatalf("overloaded: %q %+v", got, r2.t.Turns[0].Items[0])
	}
}

func TestPermissions(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "slack:UOWNER", "scenario:write please")
	var writeReq, bashReq string
	f, _ := os.ReadFile("testdata/sj-initialize-permission-stdio.stdout.jsonl")
	for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		r.event(session.KindAgent, []byte(line))
		var m struct {
			Type      string `json:"type"`
			RequestID string `json:"request_id"`
			Request   struct {
				ToolName string `json:"tool_name"`
			} `json:"request"`
		}
		_ = json.Unmarshal([]byte(line), &m)
		if m.Type == "control_request" {
			if len(r.t.Pending()) != 1 {
				t.Fatalf("pending %d after a request", len(r.t.Pending()))
			}
			switch m.Request.ToolName {
			case "Write":
				writeReq = m.RequestID
				r.event(session.KindDecision, session.Decision{RequestID: m.RequestID, Behavior: "allow", User: "slack:UOWNER"})
				r.event(session.KindNotice, relay.RelayNotice{Event: relay.EventPermissionResolved, RequestID: m.RequestID, Behavior: "allow", Reason: relay.ResolvedAnswered})
			case "Bash":
				bashReq = m.RequestID
				r.event(session.KindNotice, relay.RelayNotice{Event: relay.EventPermissionResolved, RequestID: m.RequestID, Behavior: "deny", Reason: relay.ResolvedAnswered, Message: "Denied by relay test"})
				r.event(session.KindDecision, session.Decision{RequestID: m.RequestID, Behavior: "deny", User: "slack:UADMIN", Message: "Denied by relay test"})
			}
		}
		if m.Type == "result" && bashReq == "" {
			r.prompt("p2", "slack:UOWNER", "scenario:bash please")
		}
	}
	if writeReq == "" || bashReq == "" {
		t.Fatal("the capture has no permission requests")
	}
	first, second := r.t.Turns[0], r.t.Turns[1]
	if got := kinds(first.Items); got != "text tool:Write:done permission:Write:allowed text" {
		t.Fatalf("first turn %q", got)
	}
	if p := first.Items[2].Permission; p.DecidedBy != "slack:UOWNER" || p.Summary == "" {
		t.Fatalf("write permission %+v", p)
	}
	if got := kinds(second.Items); got != "text tool:Bash:failed permission:Bash:denied text" {
		t.Fatalf("second turn %q", got)
	}
	if p := second.Items[2].Permission; p.DecidedBy != "slack:UADMIN" || p.Message != "Denied by relay test" {
		t.Fatalf("bash permission %+v", p)
	}
	if len(r.t.Pending()) != 0 {
		t.Fatal("answered requests still pending")
	}
}

func TestQueueErrorsAndStatus(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "u", "first")
	r.event(session.KindStatus, session.Status{Stage: session.StageSandboxStarting, Message: "Starting a sandbox for this thread…"})
	r.prompt("p2", "u", "second, queued")
	r.prompt("p3", "u", "third, queued")
	r.event(session.KindStatus, session.Status{Stage: session.StagePromptCancelled, PromptID: "p3", Message: "cancelled"})
	r.event(session.KindStatus, session.Status{Stage: session.StagePreviewReady, Message: "Preview ready", URL: "https://3000-x.example/"})
	if r.t.Status != "Preview ready" || r.t.PreviewURL != "https://3000-x.example/" {
		t.Fatalf("status %q preview %q", r.t.Status, r.t.PreviewURL)
	}
	if len(r.t.Turns[0].Items) != 2 || len(r.t.Turns[1].Items) != 0 {
		t.Fatal("status lines went to a queued turn")
	}
	if !r.t.Turns[2].Prompt.Cancelled || !r.t.Turns[2].Done {
		t.Fatalf("cancelled prompt %+v", r.t.Turns[2])
	}
	r.event(session.KindError, session.Failure{Code: session.CodeRelayLost, Message: "Lost the connection"})
	for i, tr := range r.t.Turns {
		if !tr.Done {
			t.Fatalf("turn %d still open after an error", i)
		}
	}
	if r.t.Running() {
		t.Fatal("running after an error")
	}
	// Old events are ignored.
	r.t.Apply(session.Event{Seq: 1, Kind: session.KindPrompt, Data: []byte(`{"id":"again"}`)})
	if len(r.t.Turns) != 3 {
		t.Fatal("a replayed event was applied twice")
	}
}

func TestSplit(t *testing.T) {
	para := strings.Repeat("word ", 30) // 150 bytes
	code := "```go\n" + strings.Repeat("fmt.Println(\"hello\")\n", 20) + "```\n"
	cases := []struct {
		name string
		in   string
		max  int
	}{
		{"short", "hello", 100},
		{"paragraphs", para + "\n\n" + para + "\n\n" + para, 200},
		{"code fence", "Intro.\n\n" + code + "\nOutro.", 150},
		{"one long word", strings.Repeat("x", 500), 64},
		{"unicode", strings.Repeat("héllo wörld ✓ ", 40), 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pieces := Split(tc.in, tc.max)
			var joined strings.Builder
			for i, p := range pieces {
				if len(p) > tc.max {
					t.Fatalf("piece %d is %d bytes, over %d", i, len(p), tc.max)
				}
				if !strings.Contains(p, "\uFFFD") && !utf8Valid(p) {
					t.Fatalf("piece %d is not valid UTF-8", i)
				}
				if _, open := openFence(p); open {
					t.Fatalf("piece %d leaves a code fence open:\n%s", i, p)
				}
				joined.WriteString(p)
			}
			got := strings.NewReplacer("```go\n", "", "```", "", "\n", "", " ", "").Replace(joined.String())
			want := strings.NewReplacer("```go\n", "", "```", "", "\n", "", " ", "").Replace(tc.in)
			if got != want {
				t.Fatalf("splitting lost or changed text")
			}
		})
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestTrim(t *testing.T) {
	var lines []string
	for i := 1; i <= 100; i++ {
		lines = append(lines, "line "+string(rune('a'+i%26)))
	}
	out := Trim(strings.Join(lines, "\n"), 10, 10000)
	if !strings.HasPrefix(out, "… 90 earlier lines\n") || strings.Count(out, "\n") != 10 {
		t.Fatalf("trimmed to lines: %q", out)
	}
	out = Trim(strings.Repeat("x", 5000), 100, 300)
	if len(out) > 330 || !strings.HasPrefix(out, "… (earlier output cut)") {
		t.Fatalf("trimmed to bytes: %d %q", len(out), out[:40])
	}
	if Trim("short\n", 10, 100) != "short" {
		t.Fatal("short output changed")
	}
}

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Money(0.0999), "$0.10"}, {Money(0.0042), "$0.0042"}, {Money(0), "$0"},
		{Duration(850), "850 ms"}, {Duration(12345), "12.3 s"}, {Duration(125000), "2m 05s"},
		{FirstLine("a\nb"), "a …"}, {shortPath("/home/u/ws/src/app.go"), "src/app.go"}, {shortPath("app.go"), "app.go"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// TestStatusBetweenTurns: a status logged after a turn ended (the preview came up) must not
// swallow the next turn's events.
func TestStatusBetweenTurns(t *testing.T) {
	r := newReplay()
	r.prompt("p1", "slack:U1", "scenario:text a")
	r.event(session.KindAgent, []byte(`{"type":"result","subtype":"success","duration_ms":5,"num_turns":1,"total_cost_usd":0.01,"result":"a"}`))
	r.event(session.KindStatus, session.Status{Stage: session.StagePreviewReady, Message: "The preview is up.", URL: "http://preview"})
	r.prompt("p2", "slack:U1", "scenario:text b")
	r.event(session.KindAgent, []byte(`{"type":"result","subtype":"success","duration_ms":5,"num_turns":1,"total_cost_usd":0.02,"result":"b"}`))
	if len(r.t.Turns) != 3 {
		t.Fatalf("%d turns, want the two prompts and the status between them", len(r.t.Turns))
	}
	between, second := r.t.Turns[1], r.t.Turns[2]
	if between.Prompt != nil || !between.Done || between.Result != nil || kinds(between.Items) != "status" {
		t.Fatalf("the status turn: prompt %v done %v result %v items %q", between.Prompt, between.Done, between.Result, kinds(between.Items))
	}
	if second.Result == nil || second.Result.Text != "b" || !second.Done || r.t.Running() {
		t.Fatalf("the second turn did not get its result: %+v running %v", second, r.t.Running())
	}
	if r.t.PreviewURL != "http://preview" {
		t.Fatalf("preview %q", r.t.PreviewURL)
	}
}
