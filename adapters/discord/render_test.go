package discord

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// sessionLog builds a session's log the way the manager writes it.
type sessionLog struct {
	seq int64
	evs []session.Event
}

func (l *sessionLog) add(kind string, data any) {
	l.seq++
	b, ok := data.([]byte)
	if !ok {
		if s, isString := data.(string); isString {
			b = []byte(s)
		} else {
			b, _ = json.Marshal(data)
		}
	}
	l.evs = append(l.evs, session.Event{Seq: l.seq, Kind: kind, Data: b})
}

func (l *sessionLog) prompt(id, text string) {
	l.add(session.KindPrompt, session.Prompt{ID: id, User: "discord:111111111111111111", Text: text})
}

func (l *sessionLog) status(stage, msg, url string) {
	l.add(session.KindStatus, session.Status{Stage: stage, Message: msg, URL: url})
}

func (l *sessionLog) agent(line string) { l.add(session.KindAgent, line) }

func (l *sessionLog) streamText(msgID string, chunks ...string) {
	l.agent(`{"type":"stream_event","event":{"type":"message_start","message":{"id":"` + msgID + `"}}}`)
	for _, c := range chunks {
		b, _ := json.Marshal(c)
		l.agent(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":` + string(b) + `}}}`)
	}
}

func (l *sessionLog) text(msgID, text string) {
	b, _ := json.Marshal(text)
	l.agent(`{"type":"assistant","message":{"id":"` + msgID + `","model":"claude-sonnet-4-5","content":[{"type":"text","text":` + string(b) + `}]}}`)
}

func (l *sessionLog) tool(msgID, id, name, input string) {
	l.agent(`{"type":"assistant","message":{"id":"` + msgID + `","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"` + id + `","name":"` + name + `","input":` + input + `}]}}`)
}

func (l *sessionLog) toolResult(id, output string, isError bool) {
	b, _ := json.Marshal(output)
	l.agent(fmt.Sprintf(`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":%q,"content":%s,"is_error":%v}]}}`, id, b, isError))
}

func (l *sessionLog) ask(req, tool, input string) {
	l.agent(`{"type":"control_request","request_id":"` + req + `","request":{"subtype":"can_use_tool","tool_name":"` + tool + `","input":` + input + `}}`)
}

func (l *sessionLog) decide(req, behavior, user, reason string) {
	if user != "" {
		l.add(session.KindDecision, session.Decision{RequestID: req, Behavior: behavior, User: user})
	}
	l.add(session.KindNotice, relay.RelayNotice{Event: relay.EventPermissionResolved, RequestID: req, Behavior: behavior, Reason: reason})
}

func (l *sessionLog) result(subtype string, ms, turns int64, cost float64) {
	l.agent(fmt.Sprintf(`{"type":"result","subtype":%q,"is_error":%v,"duration_ms":%d,"num_turns":%d,"total_cost_usd":%g,"result":"done"}`,
		subtype, subtype != "success", ms, turns, cost))
}

// capture adds a real CLI run's stdout, captured in the transcript package's test data.
func (l *sessionLog) capture(t *testing.T, name string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "transcript", "testdata", name+".stdout.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		l.agent(sc.Text())
	}
}

func (l *sessionLog) transcript() *transcript.Transcript {
	t := transcript.New()
	for _, ev := range l.evs {
		t.Apply(ev)
	}
	return t
}

var testView = view{Owner: "discord:111111111111111111", Companion: "https://nightona.example/s/ses_1?exp=1&sig=abc"}

// renderCases are transcripts in the states a thread goes through.
func renderCases(t *testing.T) map[string]*sessionLog {
	cases := map[string]*sessionLog{}

	l := &sessionLog{}
	l.prompt("p1", "add a dark mode toggle")
	l.status(session.StageSandboxStarting, "Starting a sandbox for this thread…", "")
	cases["starting"] = l

	l = &sessionLog{}
	l.prompt("p1", "add a dark mode toggle")
	l.status(session.StageSandboxReady, "Sandbox ready (sb-1, started in 1.2s).", "")
	l.streamText("msg_1", "I'll add ", "a toggle to the **header**.")
	l.tool("msg_1", "toolu_1", "Read", `{"file_path":"/workspace/src/Header.tsx"}`)
	l.toolResult("toolu_1", "export function Header() {}", false)
	l.tool("msg_2", "toolu_2", "Edit", `{"file_path":"/workspace/src/Header.tsx","old_string":"a\nb","new_string":"a\nb\nc\nd"}`)
	l.tool("msg_2", "toolu_3", "Bash", "{\"command\":\"npm test -- --grep `toggle`\"}")
	l.toolResult("toolu_3", "running\nError: expected dark", true)
	cases["streaming"] = l

	l = &sessionLog{}
	l.prompt("p1", "scenario:multi two tools")
	l.status(session.StageSandboxStarting, "Starting a sandbox for this thread…", "")
	l.capture(t, "p-multi-acceptEdits")
	cases["done-multi"] = l

	for _, st := range []struct{ name, behavior, user, reason string }{
		{"pending", "", "", ""},
		{"allowed", "allow", "discord:222222222222222222", ""},
		{"denied", "deny", "discord:111111111111111111", ""},
		{"timed_out", "deny", "", relay.ResolvedTimeout},
		{"withdrawn", "deny", "", relay.ResolvedCancelled},
	} {
		l = &sessionLog{}
		l.prompt("p1", "scenario:bash run it")
		l.streamText("msg_1", "Let me run it.")
		l.text("msg_1", "Let me run it.")
		l.tool("msg_1", "toolu_1", "Bash", `{"command":"echo hello-from-bash > bash.txt"}`)
		l.ask("req_7", "Bash", `{"command":"echo hello-from-bash > bash.txt"}`)
		if st.behavior != "" {
			l.decide("req_7", st.behavior, st.user, st.reason)
		}
		cases["permission-"+st.name] = l
	}

	l = &sessionLog{}
	l.prompt("p1", "a long story")
	l.streamText("msg_1", "Once upon a time")
	l.result("error_during_execution", 2300, 1, 0.0042)
	cases["stopped"] = l

	l = &sessionLog{}
	l.prompt("p1", "first")
	l.streamText("msg_1", "Working on the first.")
	l.prompt("p2", "second")
	cases["queued"] = l

	l = &sessionLog{}
	l.prompt("p1", "first")
	l.streamText("msg_1", "Working on the first.")
	l.prompt("p2", "second")
	l.add(session.KindStatus, session.Status{Stage: session.StagePromptCancelled, PromptID: "p2", Message: "A queued prompt was cancelled by discord:111111111111111111."})
	cases["cancelled"] = l

	l = &sessionLog{}
	l.prompt("p1", "first")
	l.text("msg_1", "Done with the first.")
	l.result("success", 1500, 1, 0.0031)
	l.status(session.StagePreviewReady, "Preview ready: https://3000-sb1.preview.example", "https://3000-sb1.preview.example")
	l.status(session.StageSandboxStopped, "The sandbox was stopped (idle for 30m). Your next prompt wakes it, with the conversation as it was.", "")
	l.prompt("p2", "second")
	l.status(session.StageSandboxWaking, "Waking the sandbox…", "")
	cases["between-turns"] = l

	l = &sessionLog{}
	l.prompt("p1", "first")
	l.add(session.KindError, session.Failure{Code: session.CodeRelayLost, Message: "Lost the sandbox mid-turn. Send your prompt again."})
	cases["error"] = l

	l = &sessionLog{}
	l.prompt("p1", "write a long answer")
	var long strings.Builder
	long.WriteString("Here is the plan.\n\n")
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&long, "Step %d: a paragraph that says what happens in this step, with enough words to fill lines.\n\n", i)
	}
	long.WriteString("```go\n")
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&long, "fmt.Println(\"line %d of a program that goes on\")\n", i)
	}
	long.WriteString("```\n\nThat is all.")
	l.text("msg_1", long.String())
	l.result("success", 64000, 5, 0.5)
	cases["long"] = l
	return cases
}

func TestRenderGolden(t *testing.T) {
	for name, l := range renderCases(t) {
		t.Run(name, func(t *testing.T) {
			turns := render(l.transcript(), testView)
			for _, specs := range turns {
				for _, sp := range specs {
					checkSpec(t, sp)
				}
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(turns); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRenderGolden -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("rendering of %s changed (go test -update rewrites it):\n%s", name, got)
			}
		})
	}
}

// checkSpec holds a message to Discord's limits.
func checkSpec(t *testing.T, sp spec) {
	t.Helper()
	if n := utf8.RuneCountInString(sp.Content); n > maxContent {
		t.Errorf("%s: %d characters, over Discord's %d", sp.Key, n, maxContent)
	}
	if sp.Content == "" && len(sp.Embeds) == 0 {
		t.Errorf("%s: an empty message", sp.Key)
	}
	if strings.Count(sp.Content, "```")%2 != 0 {
		t.Errorf("%s: a code fence left open:\n%s", sp.Key, sp.Content)
	}
	if len(sp.Components) > 5 {
		t.Errorf("%s: %d rows", sp.Key, len(sp.Components))
	}
	for _, c := range sp.Components {
		row := c.(discordgo.ActionsRow)
		for _, b := range row.Components {
			btn := b.(discordgo.Button)
			if len(btn.CustomID) > 100 || utf8.RuneCountInString(btn.URL) > maxURL || (btn.URL == "") == (btn.Style == discordgo.LinkButton) {
				t.Errorf("%s: a bad button %+v", sp.Key, btn)
			}
		}
	}
}

func TestRenderStates(t *testing.T) {
	cases := renderCases(t)
	last := func(name string) spec {
		turns := render(cases[name].transcript(), testView)
		specs := turns[len(turns)-1]
		return specs[len(specs)-1]
	}
	buttons := func(sp spec) []string {
		var out []string
		for _, c := range sp.Components {
			for _, b := range c.(discordgo.ActionsRow).Components {
				btn := b.(discordgo.Button)
				out = append(out, btn.Label)
			}
		}
		return out
	}
	if got := buttons(last("streaming")); strings.Join(got, ",") != "Stop,Companion" {
		t.Errorf("a running turn's buttons: %v", got)
	}
	if sp := last("done-multi"); len(sp.Embeds) != 1 || sp.Embeds[0].Title != "✅ Done" || len(sp.Embeds[0].Fields) != 3 ||
		sp.Embeds[0].Fields[0].Name != "Duration" || sp.Embeds[0].Fields[1].Name != "Turns" || sp.Embeds[0].Fields[2].Name != "Cost" {
		t.Errorf("a finished turn's embed: %+v", sp.Embeds)
	} else if strings.Join(buttons(sp), ",") != "Companion" {
		t.Errorf("a finished turn's buttons: %v", buttons(sp))
	}
	if sp := last("stopped"); sp.Embeds[0].Title != "⏹️ Stopped" {
		t.Errorf("an interrupted turn: %+v", sp.Embeds[0])
	}
	pending := last("permission-pending")
	if !strings.Contains(pending.Content, "Only <@111111111111111111> or an admin") || strings.Join(buttons(pending), ",") != "Approve,Deny,Stop,Companion" {
		t.Errorf("a pending request: %q %v", pending.Content, buttons(pending))
	}
	allowed := last("permission-allowed")
	if !strings.Contains(allowed.Content, "✅ Approved by <@222222222222222222>") || strings.Contains(strings.Join(buttons(allowed), ","), "Approve") {
		t.Errorf("an approved request: %q %v", allowed.Content, buttons(allowed))
	}
	turns := render(cases["queued"].transcript(), testView)
	if got := buttons(turns[0][len(turns[0])-1]); strings.Join(got, ",") != "Stop" {
		t.Errorf("the running turn before a queued one: %v", got)
	}
	if got := buttons(turns[1][0]); strings.Join(got, ",") != "Cancel,Companion" || turns[1][0].Components[0].(discordgo.ActionsRow).Components[0].(discordgo.Button).CustomID != idCancel+"p2" {
		t.Errorf("a queued turn: %v", got)
	}
	turns = render(cases["between-turns"].transcript(), testView)
	if len(turns) != 3 || !strings.Contains(turns[1][0].Content, "Preview ready") || !strings.Contains(turns[1][0].Content, "sandbox was stopped") {
		t.Fatalf("what happened between turns: %+v", turns)
	}
	if len(turns[0][0].Components) != 0 {
		t.Errorf("an earlier turn kept its buttons: %+v", turns[0][0].Components)
	}
	// The preview stopped with the sandbox: no preview button.
	if got := buttons(turns[2][0]); strings.Join(got, ",") != "Stop,Companion" {
		t.Errorf("the latest turn after the sandbox stopped: %v", got)
	}
	long := render(cases["long"].transcript(), testView)[0]
	if len(long) < 3 {
		t.Fatalf("a long answer in %d messages", len(long))
	}
	var joined strings.Builder
	for _, sp := range long {
		joined.WriteString(sp.Content)
	}
	for i := 0; i < 60; i++ {
		if !strings.Contains(joined.String(), fmt.Sprintf("line %d of a program", i)) {
			t.Fatalf("line %d of the program is lost in the split", i)
		}
	}
}

func TestPreviewButton(t *testing.T) {
	l := &sessionLog{}
	l.prompt("p1", "run the app")
	l.text("msg_1", "Started.")
	l.result("success", 1000, 1, 0.001)
	l.status(session.StagePreviewReady, "Preview ready: https://3000-sb1.preview.example", "https://3000-sb1.preview.example")
	turns := render(l.transcript(), testView)
	row := turns[0][0].Components[0].(discordgo.ActionsRow)
	if b := row.Components[0].(discordgo.Button); b.Label != "Open preview" || b.URL != "https://3000-sb1.preview.example" || b.Style != discordgo.LinkButton {
		t.Fatalf("preview button: %+v", b)
	}
	long := "https://preview.example/" + strings.Repeat("x", 600)
	if linkOK(long) || linkOK("javascript:alert(1)") || !linkOK("http://localhost:3000/") {
		t.Fatal("linkOK")
	}
}

func TestToolLine(t *testing.T) {
	cases := []struct {
		tool transcript.Tool
		want string
	}{
		{transcript.Tool{Name: "Read", Summary: "src/app.ts", State: transcript.ToolDone}, "✅ **Read** `src/app.ts`"},
		{transcript.Tool{Name: "Bash", Summary: "echo `date`", State: transcript.ToolRunning}, "⏳ **Bash** `` echo `date` ``"},
		{transcript.Tool{Name: "Edit", Summary: "src/a.go", State: transcript.ToolDone, Diff: "- a\n+ b\n+ c\n+… 4 more lines\n"}, "✅ **Edit** `src/a.go` (+6 −1)"},
		{transcript.Tool{Name: "Bash", Summary: "npm test", State: transcript.ToolFailed, Output: "x\nError: boom\n"}, "❌ **Bash** `npm test` — `Error: boom`"},
		{transcript.Tool{Name: "Bash", Summary: "rm -rf /", State: transcript.ToolDenied}, "🚫 **Bash** `rm -rf /` — denied"},
		{transcript.Tool{Name: "mcp__x__do_it", State: transcript.ToolStopped}, "⏹️ **mcp\\_\\_x\\_\\_do\\_it** — stopped"},
	}
	for _, c := range cases {
		if got := toolLine(&c.tool); got != c.want {
			t.Errorf("toolLine(%+v) = %q, want %q", c.tool, got, c.want)
		}
	}
}

func TestThreadKeys(t *testing.T) {
	k := threadKey("10", "20", "30")
	if k != "discord:10:20:30" || session.ChannelOf(k) != "discord:10:20" {
		t.Fatalf("thread key %q, channel %q", k, session.ChannelOf(k))
	}
	p, ok := parseKey(k)
	if !ok || p != (place{GuildID: "10", ParentID: "20", ChannelID: "30"}) {
		t.Fatalf("parse %q: %+v %v", k, p, ok)
	}
	d := dmKey("40")
	if p, ok := parseKey(d); !ok || p.GuildID != "" || p.ChannelID != "40" || session.ChannelOf(d) != "discord:dm:40" {
		t.Fatalf("dm key %q: %+v", d, p)
	}
	for _, bad := range []string{"slack:T1:C2:1.2", "web:th_1", "discord:1:2", "discord:1::3"} {
		if _, ok := parseKey(bad); ok {
			t.Errorf("%q parsed as a Discord thread", bad)
		}
	}
	if mention("discord:123456789012345678") != "<@123456789012345678>" || mention("web:local") != "web:local" {
		t.Fatal("mention")
	}
}

func TestPromptText(t *testing.T) {
	m := &discordgo.Message{Content: "<@42> add a <@!7> toggle <@!42>", Attachments: []*discordgo.MessageAttachment{{Filename: "a.png", URL: "https://cdn.example/a.png"}}}
	if got := promptText(m, "42"); got != "add a <@!7> toggle\n\nAttached: a.png https://cdn.example/a.png" {
		t.Fatalf("prompt %q", got)
	}
	if got := threadName("<@42>   \n  "); got != "Nightona session" {
		t.Fatalf("empty name %q", got)
	}
	if got := threadName(strings.Repeat("é", 200) + "\nmore"); utf8.RuneCountInString(got) > 100 {
		t.Fatalf("name of %d characters", utf8.RuneCountInString(got))
	}
}
