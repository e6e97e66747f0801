package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file is the relay's side of Claude Code's control protocol: starting and restarting
// the agent, prompts, interrupts, permission requests and modes. Everything here is guarded by
// Server.amu; nothing that can block (a stdin write, a wait for the CLI) runs under it.

// controlResult is the CLI's answer to a control request of the relay.
type controlResult struct {
	response json.RawMessage
	err      error
}

// permRequest is a can_use_tool request waiting for a client's answer.
type permRequest struct {
	PendingPermission
	agent *agentProc
	timer *time.Timer
}

const controlTimeout = 10 * time.Second

// Prompt sends text to Claude Code as a user message, starting the agent first when it is not
// running (resuming the given Claude session, or the one this relay last saw). A prompt whose
// non-empty id was already taken is not sent again: it returns duplicate.
func (s *Server) Prompt(id, text, resume string) (duplicate bool, err error) {
	s.amu.Lock()
	if s.stopping {
		s.amu.Unlock()
		return false, errors.New("the relay is shutting down")
	}
	if id != "" && s.seen.has(id) {
		s.amu.Unlock()
		return true, nil
	}
	if s.agent != nil && !s.agent.prompted && resume != "" && resume != s.agent.resume {
		// An agent started ahead of the first prompt (see Prestart) runs a new conversation;
		// this prompt continues an earlier one, so the agent starts again to resume it.
		old := s.agent
		s.agent = nil
		go old.stop(time.Second)
	}
	if s.agent == nil {
		if resume == "" {
			resume = s.sessionID
		}
		if err := s.startAgentLocked(resume, false); err != nil {
			s.amu.Unlock()
			return false, err
		}
	}
	p := s.agent
	p.prompted = true
	if id != "" {
		s.seen.add(id)
	}
	if s.pending == 0 {
		s.begun = false
	}
	s.pending++ // before the write: the turn's result may be read before Write returns
	if !p.initSeen {
		p.written = append(p.written, text)
	}
	s.amu.Unlock()

	if err := p.writeLine(newUserMessage(text)); err != nil {
		s.amu.Lock()
		if id != "" {
			s.seen.remove(id)
		}
		if s.agent == p && s.pending > 0 {
			s.pending--
		}
		s.amu.Unlock()
		s.publishNotice(RelayNotice{Event: EventAgentError, Message: err.Error()})
		return false, fmt.Errorf("send prompt: %w", err)
	}
	return false, nil
}

// Prestart starts the agent before any prompt, so that the first prompt does not wait for the
// CLI to load. The agent starts a new conversation; a first prompt that resumes another one
// starts it again.
func (s *Server) Prestart() error {
	s.amu.Lock()
	defer s.amu.Unlock()
	if s.agent != nil || s.stopping {
		return nil
	}
	return s.startAgentLocked("", false)
}

// Interrupt stops the running turn and waits for the CLI to confirm. Without a running turn it
// does nothing.
func (s *Server) Interrupt() error {
	wait, err := s.startInterrupt()
	if err != nil || wait == nil {
		return err
	}
	return wait()
}

func (s *Server) startInterrupt() (func() error, error) {
	s.amu.Lock()
	running := s.agent != nil && s.pending > 0
	if running && !s.begun {
		// The prompt is written but the CLI has not begun its turn: an interrupt now would be
		// dropped. It goes as soon as the turn shows its first line.
		s.stopNext = true
		s.amu.Unlock()
		return nil, nil
	}
	s.amu.Unlock()
	if !running {
		return nil, nil
	}
	wait, err := s.control("interrupt", nil)
	if err != nil {
		return nil, err
	}
	return func() error { _, err := wait(); return err }, nil
}

// SetPermissionMode changes Claude Code's permission mode, for the running agent and for any
// later start.
func (s *Server) SetPermissionMode(mode string) error {
	wait, err := s.startSetMode(mode)
	if err != nil || wait == nil {
		return err
	}
	return wait()
}

func (s *Server) startSetMode(mode string) (func() error, error) {
	if !slices.Contains(PermissionModes, mode) {
		return nil, frameError{CodeBadFrame, fmt.Sprintf("unknown permission mode %q (want one of %s)", mode, strings.Join(PermissionModes, ", "))}
	}
	s.amu.Lock()
	running := s.agent != nil
	if !running {
		s.mode = mode
	}
	s.amu.Unlock()
	if !running {
		s.publishNotice(RelayNotice{Event: EventModeChanged, Mode: mode})
		return nil, nil
	}
	wait, err := s.control("set_permission_mode", map[string]any{"mode": mode})
	if err != nil {
		return nil, err
	}
	return func() error {
		if _, err := wait(); err != nil {
			return fmt.Errorf("set permission mode %s: %w", mode, err)
		}
		s.amu.Lock()
		s.mode = mode
		s.amu.Unlock()
		s.publishNotice(RelayNotice{Event: EventModeChanged, Mode: mode})
		return nil
	}, nil
}

// SetModel changes the model Claude Code uses, for the running agent and for any later start.
func (s *Server) SetModel(model string) error {
	wait, err := s.startSetModel(model)
	if err != nil || wait == nil {
		return err
	}
	return wait()
}

func (s *Server) startSetModel(model string) (func() error, error) {
	if !ValidModel(model) {
		return nil, frameError{CodeBadFrame, fmt.Sprintf("%q is not a model name (letters, digits, '.', '-', '_', '[', ']' and ':', up to 100)", model)}
	}
	s.amu.Lock()
	running := s.agent != nil
	if !running {
		s.model = model
	}
	s.amu.Unlock()
	if !running {
		s.publishNotice(RelayNotice{Event: EventModelChanged, Model: model})
		return nil, nil
	}
	wait, err := s.control("set_model", map[string]any{"model": model})
	if err != nil {
		return nil, err
	}
	return func() error {
		if _, err := wait(); err != nil {
			return fmt.Errorf("set model %s: %w", model, err)
		}
		s.amu.Lock()
		s.model = model
		s.amu.Unlock()
		s.publishNotice(RelayNotice{Event: EventModelChanged, Model: model})
		return nil
	}, nil
}

// ValidModel reports whether name looks like a model name or alias ("sonnet",
// "claude-sonnet-4-5", "claude-opus-4-1[1m]"): it goes on Claude Code's command line.
func ValidModel(name string) bool {
	if name == "" || len(name) > 100 || name[0] == '-' {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_[]:", r)
		if !ok {
			return false
		}
	}
	return true
}

// control writes a control request to the running agent and returns a function that waits for
// its answer.
func (s *Server) control(subtype string, fields map[string]any) (func() (json.RawMessage, error), error) {
	s.amu.Lock()
	p := s.agent
	if p == nil {
		s.amu.Unlock()
		return nil, errAgentGone
	}
	s.ctrlSeq++
	id := "relay-" + strconv.Itoa(s.ctrlSeq)
	ch := make(chan controlResult, 1)
	s.waits[id] = ch
	s.amu.Unlock()

	req := map[string]any{"subtype": subtype}
	for k, v := range fields {
		req[k] = v
	}
	if err := p.writeLine(controlRequest{Type: "control_request", RequestID: id, Request: req}); err != nil {
		s.amu.Lock()
		delete(s.waits, id)
		s.amu.Unlock()
		return nil, err
	}
	return func() (json.RawMessage, error) {
		select {
		case r := <-ch:
			return r.response, r.err
		case <-time.After(controlTimeout):
			s.amu.Lock()
			delete(s.waits, id)
			s.amu.Unlock()
			return nil, fmt.Errorf("claude did not answer %s within %v", subtype, controlTimeout)
		}
	}, nil
}

// Decide answers a pending permission request.
func (s *Server) Decide(d Decision) error {
	var input json.RawMessage
	if d.Allow && len(d.UpdatedInput) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(d.UpdatedInput, &obj); err != nil || obj == nil {
			return frameError{CodeBadFrame, "updated_input must be a JSON object"}
		}
		input = d.UpdatedInput
	}
	pr := s.takePermission(d.RequestID)
	if pr == nil {
		return frameError{CodeUnknown, fmt.Sprintf("no pending permission request %q: it was answered, withdrawn or timed out", d.RequestID)}
	}
	if input == nil {
		input = pr.Input
	}
	if len(input) == 0 {
		input = json.RawMessage(`{}`)
	}
	var resp any = permissionAllow{Behavior: "allow", UpdatedInput: input, ToolUseID: pr.ToolUseID}
	behavior := "allow"
	if !d.Allow {
		msg := d.Message
		if msg == "" {
			msg = "The user denied this tool use."
		}
		resp = permissionDeny{Behavior: "deny", Message: msg, ToolUseID: pr.ToolUseID}
		behavior = "deny"
	}
	if err := s.answerPermission(pr, resp); err != nil {
		return err
	}
	s.publishNotice(RelayNotice{Event: EventPermissionResolved, RequestID: pr.RequestID, Behavior: behavior,
		Reason: ResolvedAnswered, Message: d.Message})
	return nil
}

func (s *Server) answerPermission(pr *permRequest, resp any) error {
	return pr.agent.writeLine(controlResponse{Type: "control_response", Response: controlResponseBody{
		Subtype: "success", RequestID: pr.RequestID, Response: resp,
	}})
}

// takePermission removes and returns a pending request, or nil.
func (s *Server) takePermission(id string) *permRequest {
	s.amu.Lock()
	defer s.amu.Unlock()
	pr := s.perms[id]
	if pr == nil {
		return nil
	}
	delete(s.perms, id)
	pr.timer.Stop()
	return pr
}

// permissionTimedOut denies a request nobody answered, saying so: the user must not read it
// as somebody's refusal.
func (s *Server) permissionTimedOut(id string) {
	pr := s.takePermission(id)
	if pr == nil {
		return
	}
	msg := fmt.Sprintf("Nobody approved or denied this %s request within %s, so it timed out and the tool did not run.",
		pr.ToolName, humanDuration(s.cfg.PermissionTimeout))
	if err := s.answerPermission(pr, permissionDeny{Behavior: "deny", Message: msg, ToolUseID: pr.ToolUseID}); err != nil {
		s.log.Warn("could not deny a timed-out permission request", "request_id", id, "err", err)
	}
	s.publishNotice(RelayNotice{Event: EventPermissionResolved, RequestID: id, Behavior: "deny", Reason: ResolvedTimeout, Message: msg})
}

// startAgentLocked starts the agent. Called with amu held.
func (s *Server) startAgentLocked(resume string, restart bool) error {
	p, err := startAgent(s.cfg.Agent, s.mode, s.model, resume, agentHooks{
		onLine:    s.onAgentLine,
		onTooLong: func(_ *agentProc, n int) { s.publishNotice(RelayNotice{Event: EventLineTooLong, Bytes: n}) },
		onExit:    s.onAgentExit,
	})
	if err != nil {
		s.publishNotice(RelayNotice{Event: EventAgentError, Message: err.Error()})
		s.log.Error("agent did not start", "err", err)
		return err
	}
	s.agent = p
	s.log.Info("agent started", "pid", p.pid(), "resume", resume, "restart", restart)
	s.publishNotice(RelayNotice{Event: EventAgentStarted, PID: p.pid(), Resume: resume, Restart: restart, Mode: s.mode})
	return nil
}

// onAgentLine runs on the agent's reader goroutine for each stdout line.
func (s *Server) onAgentLine(p *agentProc, line []byte) {
	if !json.Valid(line) {
		s.publishNotice(RelayNotice{Event: EventAgentOutput, Line: string(line)})
		return
	}
	var head lineHead
	typ, _ := topLevelString(line, "type")
	switch string(typ) {
	case "stream_event", "assistant", "user":
		// The bulk of the stream, and nothing the relay acts on: its type is enough.
		head.Type = string(typ)
	default:
		if err := json.Unmarshal(line, &head); err != nil {
			s.publishNotice(RelayNotice{Event: EventAgentOutput, Line: string(line)})
			return
		}
	}
	s.amu.Lock()
	if p.resume != "" && !p.initSeen && head.Type != "control_response" {
		if head.Type != "system" || head.Subtype != "init" {
			p.held = append(p.held, append([]byte(nil), line...))
			if head.Type == "result" && len(head.Errors) > 0 {
				// The CLI could not load the session ("No conversation found..."): stop it;
				// onAgentExit starts a new conversation in its place.
				p.unresumable = true
				go p.stop(time.Second)
			}
			s.amu.Unlock()
			return
		}
		p.initSeen = true // the session was accepted: what it held back is real
		held := p.held
		p.held = nil
		s.amu.Unlock()
		for _, l := range held {
			s.onAgentLine(p, l)
		}
		s.amu.Lock()
	}
	var answer *controlResult
	var waiter chan controlResult
	var pr *permRequest
	stopNow := false
	switch head.Type {
	case "system", "assistant", "stream_event", "user", "control_request":
		if head.Type == "system" && head.Subtype != "init" && head.State != "running" {
			break // a status, or the state going idle after the last turn: no turn begins
		}
		if s.agent == p && s.pending > 0 && !s.begun {
			s.begun = true // the turn is under way: an interrupt reaches it now
			stopNow, s.stopNext = s.stopNext, false
		}
	case "result":
		if s.agent == p && s.pending > 0 {
			s.pending--
			s.begun, s.stopNext = false, false // a queued turn has not begun yet
		}
	}
	switch head.Type {
	case "system":
		if head.Subtype == "init" {
			p.initSeen, p.written = true, nil
		}
	case "control_response":
		if head.Response != nil {
			if waiter = s.waits[head.Response.RequestID]; waiter != nil {
				delete(s.waits, head.Response.RequestID)
				answer = &controlResult{response: head.Response.Response}
				if head.Response.Subtype != "success" {
					answer.err = errors.New(head.Response.Error)
				}
			}
		}
	case "control_request":
		if head.Request != nil && head.Request.Subtype == "can_use_tool" {
			pr = &permRequest{PendingPermission: PendingPermission{
				RequestID: head.RequestID, ToolName: head.Request.ToolName, ToolUseID: head.Request.ToolUseID,
				Input: append(json.RawMessage(nil), head.Request.Input...), Deadline: time.Now().Add(s.cfg.PermissionTimeout),
			}, agent: p}
			id := head.RequestID
			pr.timer = time.AfterFunc(s.cfg.PermissionTimeout, func() { s.permissionTimedOut(id) })
			s.perms[id] = pr
		}
	case "control_cancel_request":
		if cancelled := s.perms[head.RequestID]; cancelled != nil {
			delete(s.perms, head.RequestID)
			cancelled.timer.Stop()
			defer s.publishNotice(RelayNotice{Event: EventPermissionResolved, RequestID: head.RequestID, Behavior: "deny", Reason: ResolvedCancelled})
		}
	}
	if head.SessionID != "" {
		s.sessionID = head.SessionID
	}
	s.amu.Unlock()

	s.publish(KindAgent, line)
	if waiter != nil {
		waiter <- *answer
	}
	if stopNow {
		go func() {
			if err := s.Interrupt(); err != nil {
				s.log.Warn("could not interrupt a turn stopped before it began", "err", err)
			}
		}()
	}
	if head.Type == "control_request" && pr == nil && head.Request != nil {
		// The relay registers no hooks or MCP servers, so nothing else should come; answer
		// anyway, or the CLI would wait for ever.
		_ = p.writeLine(controlResponse{Type: "control_response", Response: controlResponseBody{
			Subtype: "error", RequestID: head.RequestID, Error: "the relay does not handle " + head.Request.Subtype,
		}})
	}
}

// onAgentExit runs on the agent's reader goroutine after its last line.
func (s *Server) onAgentExit(p *agentProc, code int, stderr string) {
	s.amu.Lock()
	if s.agent != p {
		s.amu.Unlock()
		return
	}
	s.agent = nil
	pending := s.pending
	s.pending = 0
	s.begun, s.stopNext = false, false
	var ended []*permRequest
	for id, pr := range s.perms {
		if pr.agent == p {
			pr.timer.Stop()
			delete(s.perms, id)
			ended = append(ended, pr)
		}
	}
	for id, ch := range s.waits {
		delete(s.waits, id)
		ch <- controlResult{err: errAgentGone}
	}
	stopping := s.stopping
	held, written := p.held, p.written
	s.amu.Unlock()

	for _, pr := range ended {
		s.publishNotice(RelayNotice{Event: EventPermissionResolved, RequestID: pr.RequestID, Behavior: "deny", Reason: ResolvedAgentExited})
	}
	if p.unresumable && !stopping {
		s.replaceUnresumable(p, held, written, stderr)
		return
	}
	for _, l := range held { // an exit without init that nothing was waiting on: show all
		s.publish(KindAgent, l)
	}
	s.log.Info("agent exited", "code", code, "pending_turns", pending)
	c := code
	s.publishNotice(RelayNotice{Event: EventAgentExited, Code: &c, PendingTurns: pending, Stderr: stderr})
	if stopping || (code == 0 && pending == 0) {
		return
	}
	s.amu.Lock()
	defer s.amu.Unlock()
	if s.agent != nil || s.stopping {
		return
	}
	if !s.mayRestartLocked() {
		s.publishNotice(RelayNotice{Event: EventAgentError, Message: fmt.Sprintf(
			"Claude Code crashed %d times in %s; it will start again with the next prompt", s.cfg.MaxRestarts, s.cfg.RestartWindow)})
		return
	}
	_ = s.startAgentLocked(s.sessionID, true)
}

func (s *Server) mayRestartLocked() bool {
	now := time.Now()
	s.restarts = slices.DeleteFunc(s.restarts, func(t time.Time) bool { return now.Sub(t) > s.cfg.RestartWindow })
	if len(s.restarts) >= s.cfg.MaxRestarts {
		return false
	}
	s.restarts = append(s.restarts, now)
	return true
}

// replaceUnresumable handles a CLI that could not resume its session: the conversation is
// gone (a new HOME, a wiped ~/.claude), so a new one starts and the prompts the failed process
// took are sent to it.
func (s *Server) replaceUnresumable(p *agentProc, held [][]byte, written []string, stderr string) {
	why := strings.TrimSpace(stderr)
	for _, l := range held {
		var head lineHead
		if json.Unmarshal(l, &head) == nil && len(head.Errors) > 0 {
			why = strings.Join(head.Errors, "; ")
		}
	}
	s.log.Warn("could not resume the Claude session; starting a new one", "session", p.resume, "why", why)
	s.publishNotice(RelayNotice{Event: EventAgentError, Resume: p.resume,
		Message: fmt.Sprintf("Could not resume the earlier conversation (%s), so Claude starts a new one.", why)})
	s.amu.Lock()
	if s.agent != nil || s.stopping {
		s.amu.Unlock()
		return
	}
	s.sessionID = ""
	s.pending = 0
	if err := s.startAgentLocked("", true); err != nil {
		s.amu.Unlock()
		return
	}
	np := s.agent
	np.written = append(np.written, written...)
	s.pending += len(written)
	s.amu.Unlock()
	for _, text := range written {
		if err := np.writeLine(newUserMessage(text)); err != nil {
			s.publishNotice(RelayNotice{Event: EventAgentError, Message: err.Error()})
			return
		}
	}
}

// agentState is what hello frames and /healthz say of the agent.
func (s *Server) agentState() AgentState {
	s.amu.Lock()
	defer s.amu.Unlock()
	st := AgentState{Running: s.agent != nil, SessionID: s.sessionID, PendingTurns: s.pending, Mode: s.mode, Model: s.model}
	for _, pr := range s.perms {
		st.Permissions = append(st.Permissions, pr.PendingPermission)
	}
	slices.SortFunc(st.Permissions, func(a, b PendingPermission) int { return a.Deadline.Compare(b.Deadline) })
	return st
}

// shutdownAgent interrupts a running turn, gives it ShutdownGrace to end (its output reaches
// the clients), and stops the agent.
func (s *Server) shutdownAgent() {
	s.amu.Lock()
	s.stopping = true
	p := s.agent
	pending := s.pending
	s.amu.Unlock()
	if p == nil {
		return
	}
	if pending > 0 {
		if wait, err := s.control("interrupt", nil); err == nil {
			_, _ = wait()
		}
		deadline := time.Now().Add(s.cfg.ShutdownGrace)
		for time.Now().Before(deadline) {
			s.amu.Lock()
			pending = s.pending
			s.amu.Unlock()
			if pending == 0 {
				break
			}
			select {
			case <-p.done:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	p.stop(s.cfg.ShutdownGrace)
}

// humanDuration writes d the way a person would: "10 minutes", "90s", "700ms".
func humanDuration(d time.Duration) string {
	switch {
	case d >= time.Minute && d%time.Minute == 0:
		if d == time.Minute {
			return "1 minute"
		}
		return strconv.Itoa(int(d/time.Minute)) + " minutes"
	case d >= time.Second:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}
