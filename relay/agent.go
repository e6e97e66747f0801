package relay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// AgentConfig says how to run Claude Code.
type AgentConfig struct {
	// Command is the CLI to run; default "claude" from PATH.
	Command string
	// Args are appended after the stream-json flags the relay always passes.
	Args []string
	// Dir is the working folder (the workspace). Default: the relay's own.
	Dir string
	// Env is the process environment; nil means the relay's own.
	Env []string
	// PermissionMode is passed as --permission-mode when set (default, acceptEdits, plan,
	// bypassPermissions).
	PermissionMode string
	// Model is passed as --model when set ("" = Claude Code's default).
	Model string
	// AllowBypass lets the mode be switched to bypassPermissions later
	// (--allow-dangerously-skip-permissions). Running as root, the CLI also needs IS_SANDBOX=1
	// for that, which the relay then sets: a sandbox is what the flag is for.
	AllowBypass bool
	// MaxLineBytes bounds one stdout line; longer lines are dropped with a line_too_long event.
	// Default 16 MiB.
	MaxLineBytes int
}

func (c AgentConfig) withDefaults() AgentConfig {
	if c.Command == "" {
		c.Command = "claude"
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = 16 << 20
	}
	return c
}

// argv is the full command line for a start in the given permission mode that resumes the
// given Claude session ("" = a new one). Permission requests always come to the relay
// (--permission-prompt-tool stdio), which passes them on to its clients.
func (c AgentConfig) argv(mode, model, resume string) []string {
	args := []string{
		"--output-format", "stream-json",
		"--verbose",
		"--input-format", "stream-json",
		"--include-partial-messages",
		"--permission-prompt-tool", "stdio",
	}
	if mode != "" {
		args = append(args, "--permission-mode", mode)
	}
	if model != "" {
		args = append(args, "--model", model)
	}
	if c.AllowBypass {
		args = append(args, "--allow-dangerously-skip-permissions")
	}
	if resume != "" {
		args = append(args, "--resume", resume)
	}
	return append(args, c.Args...)
}

func (c AgentConfig) env() []string {
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	if c.AllowBypass && os.Geteuid() == 0 {
		env = append(slices.Clip(env), "IS_SANDBOX=1")
	}
	return env
}

// agentProc is one running Claude Code process. Its stdout lines and its exit are reported
// through the hooks, in order, from the process's own reader goroutine: onExit runs after the
// last onLine.
type agentProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	done   chan struct{}
	resume string // the Claude session it was started to resume

	wmu sync.Mutex // serialises stdin writes: each line must reach the CLI whole

	// Guarded by the Server's amu. A process started to resume a session holds back its
	// output until the CLI has accepted the session (its first system/init), so that a
	// session the CLI cannot find can be replaced without a trace of the failed attempt.
	initSeen    bool
	held        [][]byte
	written     []string // prompts written before the first system/init
	unresumable bool     // it reported that it cannot load the session
	prompted    bool     // a prompt has been written to it
}

type agentHooks struct {
	onLine    func(p *agentProc, line []byte)
	onTooLong func(p *agentProc, n int)
	onExit    func(p *agentProc, code int, stderr string)
}

var errAgentGone = errors.New("agent is not running")

func startAgent(cfg AgentConfig, mode, model, resume string, h agentHooks) (*agentProc, error) {
	cmd := exec.Command(cfg.Command, cfg.argv(mode, model, resume)...)
	cmd.Dir = cfg.Dir
	cmd.Env = cfg.env()
	setProcAttrs(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	tail := newTailBuffer(4096)
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s: %w", cfg.Command, err)
	}
	p := &agentProc{cmd: cmd, stdin: stdin, stderr: tail, done: make(chan struct{}), resume: resume}
	go func() {
		defer close(p.done)
		readLines(stdout, cfg.MaxLineBytes,
			func(line []byte) { h.onLine(p, line) },
			func(n int) { h.onTooLong(p, n) })
		err := cmd.Wait()
		code := 0
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else {
				code = -1
			}
		}
		h.onExit(p, code, tail.String())
	}()
	return p, nil
}

// readLines calls onLine for every line of r without its line ending, and onTooLong (with the
// line's size) instead for lines over max bytes, which are skipped whole. The slice passed to
// onLine is only valid during the call.
func readLines(r io.Reader, max int, onLine func([]byte), onTooLong func(int)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var acc []byte // a line longer than the reader's buffer, so far
	over := 0      // when the current line has passed max: its size so far
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			switch {
			case over > 0:
				over += len(chunk)
			case len(acc)+len(chunk) > max:
				over, acc = len(acc)+len(chunk), acc[:0]
			default:
				acc = append(acc, chunk...)
			}
			continue
		}
		if len(chunk) > 0 || len(acc) > 0 || over > 0 {
			if over > 0 {
				onTooLong(over + len(chunk))
			} else {
				line := chunk
				if len(acc) > 0 {
					acc = append(acc, chunk...)
					line = acc
				}
				line = bytes.TrimRight(line, "\r\n")
				if len(line) > max {
					onTooLong(len(line))
				} else if len(line) > 0 {
					onLine(line)
				}
			}
			acc, over = acc[:0], 0
		}
		if err != nil {
			return
		}
	}
}

// writeLine writes one JSON value as one stdin line.
func (p *agentProc) writeLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode agent input: %w", err)
	}
	b = append(b, '\n')
	p.wmu.Lock()
	defer p.wmu.Unlock()
	select {
	case <-p.done:
		return errAgentGone
	default:
	}
	if f, ok := p.stdin.(*os.File); ok {
		_ = f.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := p.stdin.Write(b); err != nil {
		return fmt.Errorf("write to agent: %w", err)
	}
	return nil
}

// closeInput closes stdin: the CLI finishes its turn and exits.
func (p *agentProc) closeInput() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.stdin.Close()
}

// stop ends the process: stdin closed, then SIGTERM after grace, then
// SIGKILL. It returns once the process has exited.
func (p *agentProc) stop(grace time.Duration) {
	p.closeInput()
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	signalProc(p.cmd, termSignal)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	signalProc(p.cmd, killSignal)
	<-p.done
}

func (p *agentProc) pid() int { return p.cmd.Process.Pid }

// userMessage is the stream-json line that carries a prompt.
type userMessage struct {
	Type            string      `json:"type"`
	SessionID       string      `json:"session_id"`
	Message         userContent `json:"message"`
	ParentToolUseID *string     `json:"parent_tool_use_id"`
}

type userContent struct {
	Role    string      `json:"role"`
	Content []textBlock `json:"content"`
}

type textBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func newUserMessage(text string) userMessage {
	return userMessage{
		Type:    "user",
		Message: userContent{Role: "user", Content: []textBlock{{Type: "text", Text: text}}},
	}
}

// controlRequest is a request of the CLI's control protocol.
type controlRequest struct {
	Type      string         `json:"type"`
	RequestID string         `json:"request_id"`
	Request   map[string]any `json:"request"`
}

// lineHead is the part of a stdout line the relay looks at.
type lineHead struct {
	Type      string `json:"type"`
	Subtype   string `json:"subtype"`
	SessionID string `json:"session_id"`
	RequestID string `json:"request_id"`
	// control_request (from the CLI)
	Request *struct {
		Subtype   string          `json:"subtype"`
		ToolName  string          `json:"tool_name"`
		Input     json.RawMessage `json:"input"`
		ToolUseID string          `json:"tool_use_id"`
	} `json:"request"`
	// control_response (to the relay's own requests)
	Response *struct {
		Subtype   string          `json:"subtype"`
		RequestID string          `json:"request_id"`
		Error     string          `json:"error"`
		Response  json.RawMessage `json:"response"`
	} `json:"response"`
	// result of a start that could not resume
	Errors []string `json:"errors"`
	// system/session_state_changed: idle, running, requires_action
	State string `json:"state"`
}

// controlResponse is the stdout-bound answer to a control request of the CLI.
type controlResponse struct {
	Type     string              `json:"type"`
	Response controlResponseBody `json:"response"`
}

type controlResponseBody struct {
	Subtype   string `json:"subtype"`
	RequestID string `json:"request_id"`
	Response  any    `json:"response,omitempty"`
	Error     string `json:"error,omitempty"`
}

// permissionAllow and permissionDeny are the answers to can_use_tool. updatedInput is always
// sent with allow: the CLI runs the tool on what it is given, and older CLIs require it.
type permissionAllow struct {
	Behavior     string          `json:"behavior"`
	UpdatedInput json.RawMessage `json:"updatedInput"`
	ToolUseID    string          `json:"toolUseID,omitempty"`
}

type permissionDeny struct {
	Behavior  string `json:"behavior"`
	Message   string `json:"message"`
	ToolUseID string `json:"toolUseID,omitempty"`
}

// tailBuffer keeps the last n bytes written to it, cut at a line start where it can.
type tailBuffer struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if len(t.buf) == t.n {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(s)
}
