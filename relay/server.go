package relay

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
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
	// Preview, when its Command is set, is the app's dev server the relay supervises.
	Preview PreviewConfig
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
	// PermissionTimeout is how long a can_use_tool request waits for an answer before the
	// relay denies it as timed out. Default 10 min.
	PermissionTimeout time.Duration
	// ShutdownGrace is how long a stopping relay lets a running turn wind down after
	// interrupting it. Default 5 s.
	ShutdownGrace time.Duration
	// MaxRestarts bounds automatic restarts of a crashed agent within RestartWindow; past it
	// the agent is started again only by the next prompt. Defaults: 5 in 5 min.
	MaxRestarts   int
	RestartWindow time.Duration
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
	if c.PermissionTimeout <= 0 {
		c.PermissionTimeout = 10 * time.Minute
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = 5
	}
	if c.RestartWindow <= 0 {
		c.RestartWindow = 5 * time.Minute
	}
	c.Agent = c.Agent.withDefaults()
	return c
}

// Server runs Claude Code and streams what it prints to WebSocket clients. Create it with
// NewServer, serve it as an http.Handler, and call Run to own its lifetime.
type Server struct {
	cfg     Config
	log     *slog.Logger
	id      string
	upgrade websocket.Upgrader
	preview *previewSupervisor

	mu      sync.Mutex // guards seq, buf, clients
	seq     int64
	buf     *replayBuffer
	clients map[*wsConn]struct{}

	amu       sync.Mutex // guards the agent and what the relay knows of it (see control.go)
	agent     *agentProc
	sessionID string
	pending   int
	// begun says whether the oldest pending turn has shown output yet; stopNext, that an
	// interrupt came before it had, to be sent when it does (the CLI drops an interrupt that
	// reaches it before it has begun the turn).
	begun    bool
	stopNext bool
	mode     string
	model    string
	seen     *idSet
	stopping bool
	ctrlSeq  int
	perms    map[string]*permRequest
	waits    map[string]chan controlResult
	restarts []time.Time
}

// NewServer checks the configuration and makes a Server. The agent is started on the first
// prompt.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Token == "" {
		return nil, errors.New("relay: a token is required")
	}
	cfg = cfg.withDefaults()
	if cfg.Agent.PermissionMode != "" && !slices.Contains(PermissionModes, cfg.Agent.PermissionMode) {
		return nil, fmt.Errorf("relay: unknown permission mode %q", cfg.Agent.PermissionMode)
	}
	if cfg.Agent.Model != "" && !ValidModel(cfg.Agent.Model) {
		return nil, fmt.Errorf("relay: %q is not a model name", cfg.Agent.Model)
	}
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
		mode:    cfg.Agent.PermissionMode,
		model:   cfg.Agent.Model,
		seen:    newIDSet(1024),
		perms:   make(map[string]*permRequest),
		waits:   make(map[string]chan controlResult),
	}
	if cfg.Preview.Command != "" {
		s.preview = newPreviewSupervisor(cfg.Preview, cfg.Logger, s.publishNotice)
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

// Run runs the dev server (if configured) and waits for ctx to end, then shuts down: a running
// turn is interrupted and given ShutdownGrace to finish, its output flushed to clients, the
// agent and the dev server stopped, clients closed.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	pctx, stopPreview := context.WithCancel(context.Background())
	if s.preview != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.preview.run(pctx) }()
	}
	<-ctx.Done()
	s.shutdownAgent()
	stopPreview()
	wg.Wait()
	s.mu.Lock()
	for c := range s.clients {
		s.dropLocked(c)
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	st := s.agentState()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ok":            true,
		"protocol":      ProtocolVersion,
		"agent_running": st.Running,
		"pending_turns": st.PendingTurns,
		"preview":       s.previewState(),
	})
}

func (s *Server) previewState() PreviewState {
	if s.preview == nil {
		return PreviewState{}
	}
	return s.preview.state()
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
	rid := r.URL.Query().Get("relay_id")
	ws, err := s.upgrade.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	ws.SetReadLimit(s.cfg.MaxClientFrame)
	c := &wsConn{ws: ws, send: make(chan []byte, s.cfg.ClientQueue), replies: make(chan []byte, 16)}

	agent, preview := s.agentState(), s.previewState()
	s.mu.Lock()
	hello := Hello{Type: TypeHello, Protocol: ProtocolVersion, RelayID: s.id,
		FirstSeq: s.buf.firstSeq(), LastSeq: s.seq, Agent: agent, Preview: preview}
	switch {
	case rid != "" && rid != s.id:
		// Another relay's numbers mean nothing here: what that relay sent after the cursor is
		// gone, and this one's stream is sent from its start.
		hello.Missed = &SeqRange{From: after + 1, To: -1}
		after = 0
	case rid != "" && after < hello.FirstSeq-1:
		hello.Missed = &SeqRange{From: after + 1, To: hello.FirstSeq - 1}
	}
	backlog, _ := s.buf.since(after)
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	helloBytes, _ := json.Marshal(hello)

	s.log.Info("client connected", "remote", r.RemoteAddr, "after", after, "replay", len(backlog), "missed", hello.Missed != nil)
	go c.writeLoop(helloBytes, backlog)
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
	_ = c.ws.SetReadDeadline(time.Now().Add(pongWait))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(pongWait))
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
		_ = c.ws.SetReadDeadline(time.Now().Add(pongWait))
		var f clientFrame
		if err := json.Unmarshal(data, &f); err != nil {
			c.reply(errorFrame{Type: TypeError, Code: CodeBadFrame, Message: "frame is not a JSON object"})
			continue
		}
		s.handleFrame(c, f)
	}
}

// handleFrame handles one client frame on the reader goroutine, so that what a client sends
// reaches the CLI in the order it was sent. Requests the CLI answers later (an interrupt, a mode
// change) are written here and waited for on a goroutine of their own.
func (s *Server) handleFrame(c *wsConn, f clientFrame) {
	var err error
	var wait func() error
	switch f.Type {
	case TypePrompt:
		if strings.TrimSpace(f.Text) == "" {
			err = frameError{CodeBadFrame, "prompt text is empty"}
			break
		}
		var dup bool
		if dup, err = s.Prompt(f.ID, f.Text, f.Resume); err == nil && dup {
			c.reply(ackFrame{Type: TypeAck, ID: f.ID, Duplicate: true})
			return
		}
	case TypeInterrupt:
		wait, err = s.startInterrupt()
	case TypePermission:
		switch f.Behavior {
		case "allow", "deny":
			err = s.Decide(Decision{RequestID: f.RequestID, Allow: f.Behavior == "allow", UpdatedInput: f.UpdatedInput, Message: f.Message})
		default:
			err = frameError{CodeBadFrame, fmt.Sprintf("behavior must be allow or deny, not %q", f.Behavior)}
		}
	case TypeSetMode:
		wait, err = s.startSetMode(f.Mode)
	case TypeSetModel:
		wait, err = s.startSetModel(f.Model)
	default:
		err = frameError{CodeBadFrame, fmt.Sprintf("unknown frame type %q", f.Type)}
	}
	if err == nil && wait != nil {
		go func() { c.answer(f.ID, wait()) }()
		return
	}
	c.answer(f.ID, err)
}

// answer replies to the frame with the given id: an ack, or an error frame.
func (c *wsConn) answer(id string, err error) {
	if err == nil {
		c.reply(ackFrame{Type: TypeAck, ID: id})
		return
	}
	code := CodeAgentFailure
	var fe frameError
	if errors.As(err, &fe) {
		code = fe.code
	}
	c.reply(errorFrame{Type: TypeError, ID: id, Code: code, Message: err.Error()})
}

// frameError is an error with the code its error frame carries.
type frameError struct{ code, msg string }

func (e frameError) Error() string { return e.msg }

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
// reader go through a queue of their own so that frames never interleave.
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
