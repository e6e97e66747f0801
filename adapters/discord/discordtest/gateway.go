package discordtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway intents the fake honours.
const (
	IntentGuilds         = 1 << 0
	IntentGuildMessages  = 1 << 9
	IntentDirectMessages = 1 << 12
	IntentMessageContent = 1 << 15
)

// Gateway opcodes.
const (
	opDispatch       = 0
	opHeartbeat      = 1
	opIdentify       = 2
	opResume         = 6
	opReconnect      = 7
	opInvalidSession = 9
	opHello          = 10
	opHeartbeatAck   = 11
)

// GatewayStats says what clients did on the Gateway.
type GatewayStats struct {
	// Connections is how many are open now.
	Connections int
	// Identifies and Resumes count the sessions started and resumed; ResumesAtResumeURL
	// counts the resumes made at READY's resume_gateway_url, as Discord asks.
	Identifies, Resumes, ResumesAtResumeURL int
	// FailedResumes counts resumes of sessions the fake no longer knows (answered with an
	// invalid session).
	FailedResumes int
	// Heartbeats counts heartbeats received (each acknowledged).
	Heartbeats int
	// Intents is what the last IDENTIFY asked for.
	Intents int
	// Dispatched counts dispatches sent (replays included).
	Dispatched int
}

type gateway struct {
	s        *Server
	upgrader websocket.Upgrader
	sessions map[string]*gwSession
	conns    map[*gwConn]bool
	stats    GatewayStats
	closed   bool
}

type gwSession struct {
	id      string
	seq     int64
	log     []gwFrame // every dispatch, for resumes
	conn    *gwConn
	intents int
}

type gwFrame struct {
	Op   int             `json:"op"`
	D    json.RawMessage `json:"d"`
	S    *int64          `json:"s"`
	T    *string         `json:"t"`
	data []byte
}

type gwConn struct {
	ws   *websocket.Conn
	out  chan []byte
	done chan struct{}
	sess *gwSession
}

func newGateway(s *Server) *gateway {
	return &gateway{s: s, sessions: map[string]*gwSession{}, conns: map[*gwConn]bool{}}
}

// GatewayStats returns what clients did on the Gateway.
func (s *Server) GatewayStats() GatewayStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.gw.stats
	st.Connections = len(s.gw.conns)
	return st
}

// DropGateway cuts every Gateway connection without a close frame, as a network failure
// would. Sessions stay resumable; what is dispatched meanwhile is replayed on resume.
func (s *Server) DropGateway() {
	s.mu.Lock()
	conns := make([]*gwConn, 0, len(s.gw.conns))
	for c := range s.gw.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.UnderlyingConn().Close()
	}
}

// RequestReconnect sends op 7 (Reconnect) on every connection: clients should resume.
func (s *Server) RequestReconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.gw.conns {
		c.send(gwFrame{Op: opReconnect, D: json.RawMessage("null")})
	}
}

// InvalidateSessions sends op 9 (Invalid Session) on every connection; unless resumable, the
// sessions are forgotten and clients must identify anew.
func (s *Server) InvalidateSessions(resumable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, _ := json.Marshal(resumable)
	for c := range s.gw.conns {
		c.send(gwFrame{Op: opInvalidSession, D: d})
		if !resumable && c.sess != nil {
			delete(s.gw.sessions, c.sess.id)
			c.sess = nil
		}
	}
}

// CloseGateway closes every connection with a close code (4004: authentication failed,
// 4014: disallowed intents...).
func (s *Server) CloseGateway(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.gw.conns {
		c.close(code, reason)
	}
}

func (g *gateway) close() {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	g.closed = true
	for c := range g.conns {
		_ = c.ws.UnderlyingConn().Close()
	}
}

func (c *gwConn) send(f gwFrame) {
	if f.data == nil {
		f.data, _ = json.Marshal(f)
	}
	select {
	case c.out <- f.data:
	default: // a client this far behind is dropped, as Discord does
		_ = c.ws.UnderlyingConn().Close()
	}
}

func (c *gwConn) close(code int, reason string) {
	select {
	case <-c.done:
	default:
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = c.ws.UnderlyingConn().Close()
	}
}

func (g *gateway) serve(resumeURL bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("encoding") != "json" || r.URL.Query().Get("v") == "" {
			http.Error(w, "the Gateway needs ?v=10&encoding=json", http.StatusBadRequest)
			return
		}
		ws, err := g.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &gwConn{ws: ws, out: make(chan []byte, 4096), done: make(chan struct{})}
		g.s.mu.Lock()
		if g.closed {
			g.s.mu.Unlock()
			ws.Close()
			return
		}
		g.conns[c] = true
		g.s.notify()
		hello, _ := json.Marshal(map[string]any{"heartbeat_interval": g.s.cfg.HeartbeatInterval.Milliseconds()})
		c.send(gwFrame{Op: opHello, D: hello})
		g.s.mu.Unlock()

		go func() { // the one writer
			for {
				select {
				case data := <-c.out:
					_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if ws.WriteMessage(websocket.TextMessage, data) != nil {
						_ = ws.UnderlyingConn().Close()
						return
					}
				case <-c.done:
					return
				}
			}
		}()
		defer func() {
			close(c.done)
			ws.Close()
			g.s.mu.Lock()
			delete(g.conns, c)
			if c.sess != nil && c.sess.conn == c {
				c.sess.conn = nil
			}
			g.s.notify()
			g.s.mu.Unlock()
		}()
		for {
			var f gwFrame
			_, data, err := ws.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); ok && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) {
					// A clean close ends the session: it cannot be resumed.
					g.s.mu.Lock()
					if c.sess != nil {
						delete(g.sessions, c.sess.id)
					}
					g.s.mu.Unlock()
				}
				return
			}
			if json.Unmarshal(data, &f) != nil {
				c.close(4002, "Error while decoding payload.")
				return
			}
			if !g.handle(c, f, resumeURL) {
				return
			}
		}
	}
}

// handle answers one frame from a client; false ends the connection.
func (g *gateway) handle(c *gwConn, f gwFrame, resumeURL bool) bool {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	defer g.s.notify()
	switch f.Op {
	case opHeartbeat:
		g.stats.Heartbeats++
		c.send(gwFrame{Op: opHeartbeatAck, D: json.RawMessage("null")})
	case opIdentify:
		var d struct {
			Token      string         `json:"token"`
			Intents    int            `json:"intents"`
			Properties map[string]any `json:"properties"`
		}
		_ = json.Unmarshal(f.D, &d)
		if c.sess != nil {
			c.close(4005, "Already authenticated.")
			return false
		}
		if strings.TrimPrefix(d.Token, "Bot ") != g.s.cfg.Token {
			c.close(4004, "Authentication failed.")
			return false
		}
		if d.Properties["os"] == nil || d.Properties["browser"] == nil || d.Properties["device"] == nil {
			c.close(4002, "Error while decoding payload.")
			return false
		}
		g.stats.Identifies++
		g.stats.Intents = d.Intents
		sess := &gwSession{id: randomToken(), conn: c, intents: d.Intents}
		g.sessions[sess.id] = sess
		c.sess = sess
		guilds := []map[string]any{}
		for _, gd := range g.s.guilds {
			guilds = append(guilds, map[string]any{"id": gd.ID, "unavailable": true})
		}
		g.emit(sess, "READY", map[string]any{
			"v": 10, "user": g.s.bot, "guilds": guilds, "session_id": sess.id,
			"resume_gateway_url": "ws" + strings.TrimPrefix(g.s.http.URL, "http") + "/gateway/resume",
			"application":        map[string]any{"id": g.s.cfg.AppID, "flags": 0},
		})
		for _, gd := range g.s.guilds {
			g.emit(sess, "GUILD_CREATE", g.s.guildCreate(gd))
		}
	case opResume:
		var d struct {
			Token     string `json:"token"`
			SessionID string `json:"session_id"`
			Seq       int64  `json:"seq"`
		}
		_ = json.Unmarshal(f.D, &d)
		if strings.TrimPrefix(d.Token, "Bot ") != g.s.cfg.Token {
			c.close(4004, "Authentication failed.")
			return false
		}
		sess := g.sessions[d.SessionID]
		if sess == nil || d.Seq > sess.seq {
			g.stats.FailedResumes++
			c.send(gwFrame{Op: opInvalidSession, D: json.RawMessage("false")})
			return true
		}
		if sess.conn != nil && sess.conn != c {
			sess.conn.close(4000, "Session resumed elsewhere.")
		}
		g.stats.Resumes++
		if resumeURL {
			g.stats.ResumesAtResumeURL++
		}
		sess.conn, c.sess = c, sess
		for _, fr := range sess.log {
			if *fr.S > d.Seq {
				c.send(fr)
				g.stats.Dispatched++
			}
		}
		g.emit(sess, "RESUMED", map[string]any{})
	default:
		if c.sess == nil {
			c.close(4003, "Not authenticated.")
		} else {
			c.close(4001, "Unknown opcode.")
		}
		return false
	}
	return true
}

// emit sends a dispatch to one session, logging it for resumes. Call with s.mu held.
func (g *gateway) emit(sess *gwSession, event string, data any) {
	d, _ := json.Marshal(data)
	sess.seq++
	seq, t := sess.seq, event
	f := gwFrame{Op: opDispatch, D: d, S: &seq, T: &t}
	f.data, _ = json.Marshal(f)
	sess.log = append(sess.log, f)
	if sess.conn != nil {
		sess.conn.send(f)
		g.stats.Dispatched++
	}
}

// dispatch sends an event to every session. Call with s.mu held.
func (g *gateway) dispatch(event string, data any) {
	for _, sess := range g.sessions {
		g.emit(sess, event, data)
	}
}

// dispatchMessage sends MESSAGE_CREATE or MESSAGE_UPDATE to the sessions whose intents let
// them see it, with the content blanked for those without the message-content intent (unless
// it is a DM, mentions the bot, or is the bot's own). Call with s.mu held.
func (g *gateway) dispatchMessage(event string, m *Message) {
	dm := m.GuildID == ""
	for _, sess := range g.sessions {
		need := IntentGuildMessages
		if dm {
			need = IntentDirectMessages
		}
		if sess.intents&need == 0 {
			continue
		}
		out := copyMessage(m)
		mentioned := slices.ContainsFunc(m.Mentions, func(u User) bool { return u.ID == g.s.bot.ID })
		if sess.intents&IntentMessageContent == 0 && !dm && !mentioned && m.Author.ID != g.s.bot.ID {
			out.Content, out.Embeds, out.Components, out.Attachments = "", []Embed{}, []Component{}, []any{}
		}
		payload := struct {
			Message
			Member *map[string]any `json:"member,omitempty"`
		}{Message: out}
		if !dm {
			member := map[string]any{"roles": []string{}, "joined_at": out.Timestamp, "deaf": false, "mute": false}
			payload.Member = &member
		}
		g.emit(sess, event, payload)
	}
}

func (s *Server) guildCreate(gd *guild) map[string]any {
	var channels, threads []*Channel
	for _, c := range s.channels {
		if c.GuildID != gd.ID {
			continue
		}
		if c.ParentID != "" {
			threads = append(threads, c)
		} else {
			channels = append(channels, c)
		}
	}
	return map[string]any{"id": gd.ID, "name": gd.Name, "unavailable": false, "channels": channels, "threads": threads,
		"members": []any{}, "roles": []any{}}
}
