package slacktest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Socket Mode, as https://api.slack.com/apis/socket-mode describes it: the app opens a
// connection with a URL from apps.connections.open, is greeted with hello, is pinged, receives
// envelopes and acknowledges each by its envelope_id within 3 seconds, or gets it again with a
// higher retry_attempt. A disconnect message asks it to reconnect.

type socketState struct {
	mu       sync.Mutex
	conns    []*sockConn
	pending  map[string]*envelope
	queue    []*envelope
	acks     []Ack
	connects int
	next     int
	changed  chan struct{} // closed and replaced on every ack and connection
}

func (st *socketState) init() {
	st.pending = map[string]*envelope{}
	st.changed = make(chan struct{})
}

// notify wakes the waiters; st.mu held.
func (st *socketState) notify() {
	close(st.changed)
	st.changed = make(chan struct{})
}

type envelope struct {
	id, kind string
	payload  json.RawMessage
	attempt  int
	sentAt   time.Time
	timer    *time.Timer
	acked    bool
}

// Ack is an envelope's acknowledgement as the server received it.
type Ack struct {
	EnvelopeID string
	// Payload is what the app answered with (a slash command's reply), or null.
	Payload json.RawMessage
	// Latency is the time from the envelope's first delivery to this ack; Attempt the
	// retry_attempt of the delivery acknowledged.
	Latency time.Duration
	Attempt int
}

type sockConn struct {
	ws   *websocket.Conn
	send chan []byte
	done chan struct{}
	once sync.Once
}

func (c *sockConn) close() {
	c.once.Do(func() { close(c.done) })
}

func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("ticket") == "" {
		http.Error(w, "no ticket", http.StatusUnauthorized)
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &sockConn{ws: ws, send: make(chan []byte, 64), done: make(chan struct{})}
	st := &s.sock
	st.mu.Lock()
	st.connects++
	st.conns = append(st.conns, c)
	hello, _ := json.Marshal(map[string]any{"type": "hello", "num_connections": len(st.conns),
		"debug_info":      map[string]any{"host": "applink-test", "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": map[string]any{"app_id": s.cfg.AppID}})
	c.send <- hello
	queued := st.queue
	st.queue = nil
	st.notify()
	st.mu.Unlock()
	for _, e := range queued {
		s.deliver(e)
	}
	go s.writePump(c)
	s.readPump(c)
	st.mu.Lock()
	for i, x := range st.conns {
		if x == c {
			st.conns = append(st.conns[:i], st.conns[i+1:]...)
			break
		}
	}
	st.notify()
	st.mu.Unlock()
}

// writePump owns every write to the connection: messages and pings.
func (s *Server) writePump(c *sockConn) {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	defer c.ws.Close()
	for {
		select {
		case <-c.done:
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return
		case msg := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.close()
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second)); err != nil {
				c.close()
				return
			}
		}
	}
}

func (s *Server) readPump(c *sockConn) {
	defer c.close()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(data, &ack) != nil || ack.EnvelopeID == "" {
			continue
		}
		st := &s.sock
		st.mu.Lock()
		if e := st.pending[ack.EnvelopeID]; e != nil {
			if !e.acked {
				e.acked = true
				e.timer.Stop()
				st.acks = append(st.acks, Ack{EnvelopeID: e.id, Payload: ack.Payload, Latency: time.Since(e.sentAt), Attempt: e.attempt})
			}
			st.notify()
		}
		st.mu.Unlock()
	}
}

// Deliver sends an envelope of the given type (events_api, slash_commands, interactive) with
// its payload to the newest connection (queued until there is one) and returns its
// envelope_id. It is delivered again with a higher retry_attempt when not acknowledged within
// AckTimeout, three times at most.
func (s *Server) Deliver(kind string, payload any) string {
	raw, ok := payload.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			panic(err)
		}
	}
	st := &s.sock
	st.mu.Lock()
	st.next++
	e := &envelope{id: "env-" + strconv.Itoa(st.next), kind: kind, payload: raw}
	st.pending[e.id] = e
	st.mu.Unlock()
	s.deliver(e)
	return e.id
}

func (s *Server) deliver(e *envelope) {
	st := &s.sock
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.acked {
		return
	}
	if len(st.conns) == 0 {
		st.queue = append(st.queue, e)
		return
	}
	reason := ""
	if e.attempt > 0 {
		reason = "timeout"
	}
	msg, _ := json.Marshal(map[string]any{"envelope_id": e.id, "type": e.kind, "payload": e.payload,
		"accepts_response_payload": e.kind != "events_api", "retry_attempt": e.attempt, "retry_reason": reason})
	if e.sentAt.IsZero() {
		e.sentAt = time.Now()
	}
	c := st.conns[len(st.conns)-1]
	select {
	case c.send <- msg:
	default:
		c.close() // a connection that does not read is dropped
	}
	e.timer = time.AfterFunc(s.cfg.AckTimeout, func() {
		st.mu.Lock()
		retry := !e.acked && e.attempt < 3
		if retry {
			e.attempt++
		}
		st.mu.Unlock()
		if retry {
			s.deliver(e)
		}
	})
}

// WaitAck waits up to timeout for the envelope's ack.
func (s *Server) WaitAck(envelopeID string, timeout time.Duration) (Ack, bool) {
	deadline := time.After(timeout)
	st := &s.sock
	for {
		st.mu.Lock()
		for _, a := range st.acks {
			if a.EnvelopeID == envelopeID {
				st.mu.Unlock()
				return a, true
			}
		}
		ch := st.changed
		st.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return Ack{}, false
		}
	}
}

// Acks returns every ack received so far.
func (s *Server) Acks() []Ack {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return append([]Ack(nil), s.sock.acks...)
}

// Connections returns how many Socket Mode connections are open, and how many were opened in
// all.
func (s *Server) Connections() (open, opened int) {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return len(s.sock.conns), s.sock.connects
}

// WaitConnected waits up to timeout for n connections to have been opened in all.
func (s *Server) WaitConnected(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	st := &s.sock
	for {
		st.mu.Lock()
		ok := st.connects >= n && len(st.conns) > 0
		ch := st.changed
		st.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// Disconnect asks every connection to reconnect with a disconnect message (reason
// "refresh_requested", "warning", "link_disabled"...), and closes them a moment later.
func (s *Server) Disconnect(reason string) {
	msg, _ := json.Marshal(map[string]any{"type": "disconnect", "reason": reason, "debug_info": map[string]any{"host": "applink-test"}})
	st := &s.sock
	st.mu.Lock()
	conns := append([]*sockConn(nil), st.conns...)
	st.mu.Unlock()
	for _, c := range conns {
		select {
		case c.send <- msg:
		default:
		}
		time.AfterFunc(500*time.Millisecond, c.close)
	}
}

func (st *socketState) closeAll() {
	st.mu.Lock()
	conns := append([]*sockConn(nil), st.conns...)
	for _, e := range st.pending {
		if e.timer != nil {
			e.timer.Stop()
		}
		e.acked = true
	}
	st.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}
