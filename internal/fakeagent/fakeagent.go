// Package fakeagent is a stand-in for the Claude Code CLI in stream-json mode, for fault tests
// and benchmarks: it speaks the same line protocol but its behaviour is chosen by the prompt,
// so a test can make it crash, print garbage or flood its stdout.
//
// Like the real CLI it exits with status 1 on a stdin line that is not a JSON object. Prompts:
//
//	echo <text>       system/init, one assistant text message, a success result
//	garbage           a line that is not JSON, then a result
//	crash             "boom" on stderr, exit status 3, mid-turn
//	lines:N           N text_delta stream_events as fast as it can, then a result
//	rate:N:R          N text_delta stream_events at R per second; then a result
//	                  (each stream_event carries the time it was written, in unix
//	                  nanoseconds, in "sent_ns")
//	slow:N:MS         N assistant messages MS apart; an interrupt ends the turn early
//	ask:TOOL          asks permission to use TOOL (can_use_tool) and reports the answer;
//	                  an interrupt withdraws the request (control_cancel_request)
//	spawn             starts `sleep 300` in the background, as a tool would start a dev
//	                  server, and reports its pid in "spawned_pid"
package fakeagent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvVar, when set in a test binary's environment, makes TestMain run Main instead of the tests.
const EnvVar = "NIGHTONA_FAKE_AGENT"

// Main runs the stand-in on the process's stdin and stdout and exits.
func Main() {
	os.Exit(Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Run runs the stand-in and returns its exit status.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	session := "fake-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	model := "fake"
	for i, a := range args {
		if a == "--resume" && i+1 < len(args) {
			session = args[i+1]
		}
		if a == "--model" && i+1 < len(args) {
			model = args[i+1]
		}
	}
	a := &agent{out: bufio.NewWriterSize(stdout, 64<<10), session: session, model: model, interrupt: make(chan struct{}, 1),
		answers: make(chan json.RawMessage, 16)}
	lines := make(chan []byte)
	bad := make(chan string, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var probe map[string]any
			if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
				bad <- sc.Text()
				return
			}
			var head struct {
				Type    string `json:"type"`
				Request struct {
					Subtype string `json:"subtype"`
				} `json:"request"`
				Response json.RawMessage `json:"response"`
			}
			_ = json.Unmarshal(sc.Bytes(), &head)
			if head.Type == "control_request" && head.Request.Subtype == "interrupt" {
				select {
				case a.interrupt <- struct{}{}:
				default:
				}
			}
			if head.Type == "control_response" {
				a.answers <- head.Response // the answer to a permission request of ours
				continue
			}
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return 0
			}
			if code := a.handle(l, stderr); code >= 0 {
				return code
			}
		case b := <-bad:
			fmt.Fprintf(stderr, "Error parsing streaming input line: %q\n", b)
			return 1
		}
	}
}

type agent struct {
	mu        sync.Mutex
	buf       []byte
	out       *bufio.Writer
	session   string
	model     string // as --model or the last set_model named it; init reports it
	msg       int
	interrupt chan struct{}
	answers   chan json.RawMessage
}

func (a *agent) emit(v map[string]any) {
	v["session_id"] = a.session
	b, _ := json.Marshal(v)
	a.mu.Lock()
	a.out.Write(b)
	a.out.WriteByte('\n')
	a.out.Flush()
	a.mu.Unlock()
}

func (a *agent) text(s string, extra map[string]any) {
	a.msg++
	m := map[string]any{
		"type": "assistant",
		"message": map[string]any{
			"id": fmt.Sprintf("msg_fake%d", a.msg), "role": "assistant", "type": "message",
			"content": []any{map[string]any{"type": "text", "text": s}},
		},
		"parent_tool_use_id": nil,
	}
	for k, v := range extra {
		m[k] = v
	}
	a.emit(m)
}

// delta writes a text_delta stream_event shaped like the CLI's (about 280 bytes), carrying the
// time it was written in "sent_ns". It is built by hand so that the stand-in, not the relay,
// is never what limits a benchmark.
func (a *agent) delta(i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.buf[:0]
	b = append(b, `{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ` "}},"session_id":"`...)
	b = append(b, a.session...)
	b = append(b, `","parent_tool_use_id":null,"uuid":"5193081e-7f8b-44dc-83cd-`...)
	b = fmt.Appendf(b, "%012d", i)
	b = append(b, `","sent_ns":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, "}\n"...)
	a.buf = b
	a.out.Write(b)
	a.out.Flush()
}

func (a *agent) result(subtype, text string, isError bool) {
	a.emit(map[string]any{"type": "result", "subtype": subtype, "is_error": isError, "result": text,
		"num_turns": 1, "duration_ms": 1, "total_cost_usd": 0.0})
}

// handle runs one stdin line; it returns an exit status to stop with, or -1 to go on.
func (a *agent) handle(line []byte, stderr io.Writer) int {
	var m struct {
		Type    string `json:"type"`
		Message struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"message"`
		RequestID string `json:"request_id"`
		Request   struct {
			Subtype string `json:"subtype"`
			Model   string `json:"model"`
		} `json:"request"`
	}
	_ = json.Unmarshal(line, &m)
	if m.Type == "control_request" {
		if m.Request.Subtype == "set_model" {
			a.model = m.Request.Model
		}
		a.emit(map[string]any{"type": "control_response", "response": map[string]any{"subtype": "success", "request_id": m.RequestID}})
		return -1
	}
	if m.Type != "user" || len(m.Message.Content) == 0 {
		return -1
	}
	select { // an interrupt that came while idle does not carry over
	case <-a.interrupt:
	default:
	}
	prompt := m.Message.Content[0].Text
	a.emit(map[string]any{"type": "system", "subtype": "init", "cwd": ".", "model": a.model})
	cmd, rest, _ := strings.Cut(prompt, " ")
	parts := strings.Split(cmd, ":")
	num := func(i, def int) int {
		if i < len(parts) {
			if n, err := strconv.Atoi(parts[i]); err == nil {
				return n
			}
		}
		return def
	}
	switch parts[0] {
	case "echo":
		a.text(rest, nil)
		a.result("success", rest, false)
	case "garbage":
		a.mu.Lock()
		a.out.WriteString("this is not json\n")
		a.out.Flush()
		a.mu.Unlock()
		a.result("success", "garbage done", false)
	case "crash":
		a.text("about to crash", nil)
		fmt.Fprintln(stderr, "boom")
		return 3
	case "lines":
		n := num(1, 100)
		for i := 0; i < n; i++ {
			a.delta(i)
		}
		a.result("success", "lines done", false)
	case "rate":
		n, r := num(1, 1000), num(2, 1000)
		interval := time.Second / time.Duration(max(r, 1))
		start := time.Now()
		for i := 0; i < n; i++ {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			a.delta(i)
		}
		a.result("success", "rate done", false)
	case "slow":
		n, ms := num(1, 50), num(2, 100)
		for i := 0; i < n; i++ {
			select {
			case <-a.interrupt:
				a.result("error_during_execution", "", true)
				return -1
			case <-time.After(time.Duration(ms) * time.Millisecond):
			}
			a.text("word"+strconv.Itoa(i), nil)
		}
		a.result("success", "slow done", false)
	case "ask":
		// ask:<tool> asks for permission to use the tool, as the CLI's can_use_tool does,
		// and reports what the answer was.
		tool := "Bash"
		if len(parts) > 1 {
			tool = parts[1]
		}
		a.msg++
		id := fmt.Sprintf("perm-%d", a.msg)
		a.emit(map[string]any{"type": "control_request", "request_id": id, "request": map[string]any{
			"subtype": "can_use_tool", "tool_name": tool, "input": map[string]any{"command": "echo hi"},
			"tool_use_id": "toolu_" + id,
		}})
		select {
		case ans := <-a.answers:
			var r struct {
				RequestID string `json:"request_id"`
				Response  struct {
					Behavior string `json:"behavior"`
					Message  string `json:"message"`
				} `json:"response"`
			}
			_ = json.Unmarshal(ans, &r)
			a.text(fmt.Sprintf("%s %s: %s", r.RequestID, r.Response.Behavior, r.Response.Message), nil)
			a.result("success", r.Response.Behavior, false)
		case <-a.interrupt:
			a.emit(map[string]any{"type": "control_cancel_request", "request_id": id})
			a.result("error_during_execution", "", true)
		}
	case "spawn":
		cmd := exec.Command("sleep", "300")
		if err := cmd.Start(); err != nil {
			a.result("error_during_execution", err.Error(), true)
			return -1
		}
		a.text("spawned", map[string]any{"spawned_pid": cmd.Process.Pid})
		a.result("success", "spawned", false)
	default:
		a.text("unknown prompt: "+prompt, nil)
		a.result("success", "", false)
	}
	return -1
}
