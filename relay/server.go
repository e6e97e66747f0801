package relay

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server. Zero fields take their defaults.
type Config struct {
	// Token is the bearer token clients must present. Required.
	Token string
	// Agent says how to run Claude Code.
	Agent AgentConfig
	// Logger receives the relay's logs; nil discards them.
	Logger *slog.Logger
	// BufferEvents and BufferBytes bound the replay buffer. Defaults: 10,000 events, 64 MiB.
	BufferEvents int
	BufferBytes  int
	// ClientQueue is how many frames may wait for a slow client before it is dropped (it then
	// reconnects and resumes). Default 4,096.
	ClientQueue int
	// MaxClientFrame bounds a frame a client sends. Default 1 MiB.
	MaxClientFrame int64
	// AllowedOrigins lists the Origin values a browser connection may come from. Connections
	// with no Origin header (programs, not browsers) are not affected. Default: none allowed.
	AllowedOrigins []string
	// ShutdownGrace is how long a stopping relay lets a running turn wind down after
	// interrupting it. Default 5 s.
	ShutdownGrace time.Duration
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BufferEvents <= 0 {
		c.BufferEvents = 10000
	}
	if c.BufferBytes <= 0 {
		c.BufferBytes = 64 << 20
	}
	if c.ClientQueue <= 0 {
		c.ClientQueue = 4096
	}
	if c.MaxClientFrame <= 0 {
		c.MaxClientFrame = 1 << 20
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	c.Agent = c.Agent.withDefaults()
	return c
}

// Server runs Claude Code and streams what it prints to WebSocket clients. Create it with
// NewServer, serve its handler, and call Run to own its lifetime.
type Server struct {
	cfg     Config
	log     *slog.Logger
	id      string
	upgrade websocket.Upgrader

	mu      sync.Mutex // guards seq, buf, clients
	seq     int64
	buf     *replayBuffer
	clients map[*wsConn]struct{}

	amu        sync.Mutex // guards the agent and what the relay knows of it
	agent      *agentProc
	sessionID  string
	pending    int
	seen       *idSet
	stopping   bool
	interrupts int
}

// NewServer checks the configuration and makes a Server. The agent is started on the first
// prompt.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Token == "" {
		return nil, errors.New("relay: a token is required")
	}
	cfg = cfg.withDefaults()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("relay: make id: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		id:      "r_" + hex.EncodeToString(b[:]),
		buf:     newReplayBuffer(cfg.BufferEvents, cfg.BufferBytes),
		clients: make(map[*wsConn]struct{}),
		seen:    newIDSet(1024),
	}
	s.upgrade = websocket.Upgrader{
		ReadBufferSize:  16 << 10,
		WriteBufferSize: 32 << 10,
		CheckOrigin:     s.checkOrigin,
	}
	return s, nil
}

// ID is this relay process's id (relay_id in hello frames).
func (s *Server) ID() string { return s.id }

// ServeHTTP routes /healthz and the stream endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		s.handleHealth(w, r)
	case StreamPath:
		s.handleStream(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Run waits for ctx to end, then shuts down: a running turn is interrupted and given
// ShutdownGrace to finish, its output flushed to clients, the agent stopped, clients closed.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.shutdown()
	return nil
}

func (s *Server) shutdown() {
	s.amu.Lock()
	s.stopping = true
	p := s.agent
	pending := s.pending
	s.amu.Unlock()
	if p != nil {
		if pending > 0 {
			_ = s.sendInterrupt(p)
			s.waitIdle(p, s.cfg.ShutdownGrace)
		}
		p.stop(s.cfg.ShutdownGrace)
	}
	s.mu.Lock()
	for c := range s.clients {
		s.dropLocked(c)
	}
	s.mu.Unlock()
}

// waitIdle waits until no turn is pending or the process exited, at most d.
func (s *Server) waitIdle(p *agentProc, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s.amu.Lock()
		pending := s.pending
		s.amu.Unlock()
		if pending == 0 {
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	s.amu.Lock()
	st := s.agentStateLocked()
	s.amu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ok":            true,
		"protocol":      ProtocolVersion,
		"agent_running": st.Running,
		"pending_turns": st.PendingTurns,
	})
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(h[len(prefix):]), []byte(s.cfg.Token)) == 1
}

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nightona-relay"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	after, err := parseAfter(r.URL.Query().Get("after"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rid := r.URL.Query().Get("relay_id"); rid != "" && rid != s.id {
		after = 0 // another relay's numbers mean nothing here: send all we have
	}
	ws, err := s.upgrade.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	ws.SetReadLimit(s.cfg.MaxClientFrame)
	c := &wsConn{ws: ws, send: make(chan []byte, s.cfg.ClientQueue), replies: make(chan []byte, 16)}

	s.amu.Lock()
	agent := s.agentStateLocked()
	s.amu.Unlock()

	s.mu.Lock()
	backlog, _ := s.buf.since(after)
	hello, _ := json.Marshal(Hello{
		Type: TypeHello, Protocol: ProtocolVersion, RelayID: s.id,
		FirstSeq: s.buf.firstSeq(), LastSeq: s.seq, Agent: agent,
	})
	s.clients[c] = struct{}{}
	s.mu.Unlock()

	s.log.Info("client connected", "remote", r.RemoteAddr, "after", after, "replay", len(backlog))
	go c.writeLoop(hello, backlog)
	s.readLoop(c)
	s.mu.Lock()
	s.dropLocked(c)
	s.mu.Unlock()
	s.log.Info("client disconnected", "remote", r.RemoteAddr)
}

func parseAfter(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("after must be a sequence number, not %q", v)
	}
	return n, nil
}

// readLoop handles the client's frames until the connection fails.
func (s *Server) readLoop(c *wsConn) {
	c.ws.SetReadDeadline(time.Now().Add(pongWait))
	c.ws.SetPongHandler(func(string) error {
		c.ws.SetReadDeadline(time.Now().Add(pongWait))
		return nil
	})
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.reply(errorFrame{Type: TypeError, Code: CodeTooLarge,
					Message: fmt.Sprintf("frame over %d bytes", s.cfg.MaxClientFrame)})
			}
			return
		}
		var f clientFrame
		if err := json.Unmarshal(data, &f); err != nil {
			c.reply(errorFrame{Type: TypeError, Code: CodeBadFrame, Message: "frame is not a JSON object"})
			continue
		}
		switch f.Type {
		case TypePrompt:
			if strings.TrimSpace(f.Text) == "" {
				c.reply(errorFrame{Type: TypeError, ID: f.ID, Code: CodeBadFrame, Message: "prompt text is empty"})
				continue
			}
			if err := s.Prompt(f.ID, f.Text, f.Resume); err != nil {
				c.reply(errorFrame{Type: TypeError, ID: f.ID, Code: CodeAgentFailure, Message: err.Error()})
				continue
			}
			c.reply(ackFrame{Type: TypeAck, ID: f.ID})
		case TypeInterrupt:
			if err := s.Interrupt(); err != nil {
				c.reply(errorFrame{Type: TypeError, ID: f.ID, Code: CodeAgentFailure, Message: err.Error()})
				continue
			}
			c.reply(ackFrame{Type: TypeAck, ID: f.ID})
		default:
			c.reply(errorFrame{Type: TypeError, ID: f.ID, Code: CodeBadFrame, Message: fmt.Sprintf("unknown frame type %q", f.Type)})
		}
	}
}

// Prompt sends text to Claude Code as a user message, starting the agent first when it is not
// running (resuming the given Claude session, or the one this relay last saw). A prompt whose
// non-empty id was already taken is not sent again.
func (s *Server) Prompt(id, text, resume string) error {
	s.amu.Lock()
	if s.stopping {
		s.amu.Unlock()
		return errors.New("the relay is shutting down")
	}
	if id != "" && s.seen.has(id) {
		s.amu.Unlock()
		return nil
	}
	if s.agent == nil {
		if resume == "" {
			resume = s.sessionID
		}
		if err := s.startAgentLocked(resume); err != nil {
			s.amu.Unlock()
			return err
		}
	}
	p := s.agent
	if id != "" {
		s.seen.add(id)
	}
	s.pending++ // before the write: the turn's result may be read before Write returns
	s.amu.Unlock()

	// Not under amu: a blocked stdin must not stop the stdout reader, which takes amu.
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
		return fmt.Errorf("send prompt: %w", err)
	}
	return nil
}

// Interrupt asks Claude Code to stop the running turn. Without a running turn it does nothing.
func (s *Server) Interrupt() error {
	s.amu.Lock()
	p, pending := s.agent, s.pending
	s.amu.Unlock()
	if p == nil || pending == 0 {
		return nil
	}
	return s.sendInterrupt(p)
}

func (s *Server) sendInterrupt(p *agentProc) error {
	s.amu.Lock()
	s.interrupts++
	id := "int-" + strconv.Itoa(s.interrupts)
	s.amu.Unlock()
	return p.writeLine(controlRequest{Type: "control_request", RequestID: id,
		Request: map[string]any{"subtype": "interrupt"}})
}

func (s *Server) startAgentLocked(resume string) error {
	var p *agentProc
	p, err := startAgent(s.cfg.Agent, resume,
		s.onAgentLine,
		func(n int) { s.publishNotice(RelayNotice{Event: EventLineTooLong, Bytes: n}) },
		func(code int, stderr string) { s.onAgentExit(p, code, stderr) },
	)
	if err != nil {
		s.publishNotice(RelayNotice{Event: EventAgentError, Message: err.Error()})
		s.log.Error("agent did not start", "err", err)
		return err
	}
	s.agent = p
	s.log.Info("agent started", "pid", p.pid(), "resume", resume)
	s.publishNotice(RelayNotice{Event: EventAgentStarted, PID: p.pid(), Resume: resume})
	return nil
}

func (s *Server) onAgentLine(line []byte) {
	var head lineHead
	if err := json.Unmarshal(line, &head); err != nil {
		s.publishNotice(RelayNotice{Event: EventAgentOutput, Line: string(line)})
		return
	}
	if head.SessionID != "" || head.Type == "result" {
		s.amu.Lock()
		if head.SessionID != "" {
			s.sessionID = head.SessionID
		}
		if head.Type == "result" && s.pending > 0 {
			s.pending--
		}
		s.amu.Unlock()
	}
	s.publish(KindAgent, line)
}

func (s *Server) onAgentExit(p *agentProc, code int, stderr string) {
	s.amu.Lock()
	pending := s.pending
	if s.agent == p {
		s.agent = nil
		s.pending = 0
	}
	s.amu.Unlock()
	s.log.Info("agent exited", "code", code, "pending_turns", pending)
	c := code
	s.publishNotice(RelayNotice{Event: EventAgentExited, Code: &c, PendingTurns: pending, Stderr: stderr})
}

func (s *Server) agentStateLocked() AgentState {
	return AgentState{Running: s.agent != nil, SessionID: s.sessionID, PendingTurns: s.pending}
}

func (s *Server) publishNotice(n RelayNotice) {
	b, err := json.Marshal(n)
	if err != nil {
		s.log.Error("encode notice", "err", err)
		return
	}
	s.publish(KindRelay, b)
}

// publish numbers an event, keeps it for replay and queues it to every client. A client whose
// queue is full is dropped: it will reconnect and resume from the buffer, and it never holds up
// the agent.
func (s *Server) publish(kind string, data []byte) {
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	frame := encodeEvent(s.seq, now, kind, data)
	s.buf.add(s.seq, frame)
	for c := range s.clients {
		select {
		case c.send <- frame:
		default:
			s.log.Warn("dropping slow client", "queued", len(c.send))
			s.dropLocked(c)
		}
	}
}

func (s *Server) dropLocked(c *wsConn) {
	if _, ok := s.clients[c]; ok {
		delete(s.clients, c)
		close(c.send)
	}
}

// encodeEvent builds an event frame around data, which is already JSON, without re-encoding it.
func encodeEvent(seq int64, t time.Time, kind string, data []byte) []byte {
	b := make([]byte, 0, len(data)+96)
	b = append(b, `{"type":"event","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"`...)
	b = append(b, kind...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

const (
	writeWait  = 10 * time.Second
	pongWait   = 60 * time.Second
	pingPeriod = pongWait * 9 / 10
)

// wsConn is one client connection. Its writer goroutine owns every write; replies from the
// reader go through the same queue so that frames never interleave.
type wsConn struct {
	ws      *websocket.Conn
	send    chan []byte
	replies chan []byte
}

func (c *wsConn) reply(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	select {
	case c.replies <- b:
	default: // a client that does not read its replies loses them, not the stream
	}
}

func (c *wsConn) writeLoop(hello []byte, backlog [][]byte) {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		_ = c.ws.Close()
	}()
	write := func(b []byte) bool {
		_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
		return c.ws.WriteMessage(websocket.TextMessage, b) == nil
	}
	if !write(hello) {
		return
	}
	for _, f := range backlog {
		if !write(f) {
			return
		}
	}
	for {
		select {
		case f, ok := <-c.send:
			if !ok {
				_ = c.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseGoingAway, "resume later"),
					time.Now().Add(time.Second))
				return
			}
			if !write(f) {
				return
			}
		case r := <-c.replies:
			if !write(r) {
				return
			}
		case <-ticker.C:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.ws.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

// idSet remembers the last n ids added.
type idSet struct {
	n     int
	order []string
	set   map[string]struct{}
}

func newIDSet(n int) *idSet { return &idSet{n: n, set: make(map[string]struct{}, n)} }

func (s *idSet) has(id string) bool { _, ok := s.set[id]; return ok }

func (s *idSet) remove(id string) {
	delete(s.set, id)
	for i, v := range s.order {
		if v == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			return
		}
	}
}

func (s *idSet) add(id string) {
	if len(s.order) == s.n {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.order = append(s.order, id)
	s.set[id] = struct{}{}
}

var _ io.Writer = (*tailBuffer)(nil)
