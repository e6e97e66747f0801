// Package slacktest is a fake of the parts of Slack that Nightona talks to, for tests: the Web
// API methods the adapter calls (form or JSON bodies, token checks, unique increasing message
// timestamps, Block Kit limits, streaming messages, ephemeral messages, thread status, 429s on
// demand) and a Socket Mode server (hello, pings, envelopes, acknowledgements, retries and
// disconnects), shaped like Slack's documented payloads. It records every call and keeps each
// channel's messages so that tests can assert on what a person would see.
package slacktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server. Zero fields take their defaults.
type Config struct {
	// BotToken is the only token the Web API methods accept. Default "xoxb-test-token".
	BotToken string
	// AppToken is the only token apps.connections.open accepts. Default "xapp-test-token".
	AppToken string
	// TeamID, TeamName, BotUserID, BotID and AppID describe the workspace and the app.
	// Defaults: T0TEST, Test Team, U0BOT, B0BOT, A0APP.
	TeamID, TeamName, BotUserID, BotID, AppID string
	// NoStreaming makes the streaming methods unknown, as in a workspace without them.
	NoStreaming bool
	// NoAssistantStatus makes assistant.threads.setStatus unknown.
	NoAssistantStatus bool
	// StreamLifetime closes a streaming message this long after it started: later appends
	// answer message_not_in_streaming_state, as Slack does for long streams. 0: never.
	StreamLifetime time.Duration
	// PingInterval is how often Socket Mode connections are pinged. Default 5 s.
	PingInterval time.Duration
	// AckTimeout is how long an envelope waits for its ack before it is delivered again with
	// a higher retry_attempt (three times at most), as Slack does. Default 3 s.
	AckTimeout time.Duration
}

// Server is a running fake. Create it with New and Close it when done.
type Server struct {
	cfg Config
	srv *httptest.Server
	// URL is the server's base URL ("http://127.0.0.1:port/"); APIURL is where the Web API
	// is ("…/api/"), the value for SLACK_API_URL.
	URL, APIURL string

	mu        sync.Mutex
	lastTS    int64 // microseconds of the last ts handed out
	calls     []Call
	msgs      map[string][]*Message // by channel, in ts order
	ephemeral []*Message
	statuses  []Status
	responses []Response
	limiter   func(Call) time.Duration
	nextEvent int

	sock socketState
	up   websocket.Upgrader
}

// Call is one Web API call as the server received it.
type Call struct {
	Method string
	// Params are the call's arguments: form values as strings, JSON bodies as decoded.
	Params map[string]any
	// JSON is true when the body was JSON.
	JSON bool
	At   time.Time
	// Status is the HTTP status answered; Error is Slack's error code when ok was false.
	Status int
	Error  string
}

// Str returns a string argument of the call.
func (c Call) Str(name string) string {
	switch v := c.Params[name].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Message is a message in a channel as the fake keeps it.
type Message struct {
	Channel, TS, ThreadTS string
	// User is who wrote it: the bot's user id for the bot's messages.
	User string
	Text string
	// Blocks is the message's blocks (a JSON array), as last posted or updated.
	Blocks json.RawMessage
	// Updates counts the chat.update calls that changed it.
	Updates int
	// Streaming is true between chat.startStream and chat.stopStream.
	Streaming, Streamed bool
	// Stream is the markdown appended to a streamed message so far; Tasks its task cards by
	// id, in the order they first came; StreamBlocks the blocks chat.stopStream added.
	Stream       string
	Tasks        []Task
	StreamBlocks json.RawMessage
	Appends      int
	Deleted      bool
	// To is the user an ephemeral message was shown to.
	To        string
	started   time.Time
	Ephemeral bool
}

// Task is a task card of a streamed message.
type Task struct {
	ID, Title, Status, Details, Output string
}

// Status is a thread status set with assistant.threads.setStatus.
type Status struct {
	Channel, ThreadTS, Status string
	At                        time.Time
}

// Response is a message posted to a response_url.
type Response struct {
	Path string
	Body map[string]any
}

// New starts a fake.
func New(cfg Config) *Server {
	if cfg.BotToken == "" {
		cfg.BotToken = "xoxb-test-token"
	}
	if cfg.AppToken == "" {
		cfg.AppToken = "xapp-test-token"
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&cfg.TeamID, "T0TEST")
	def(&cfg.TeamName, "Test Team")
	def(&cfg.BotUserID, "U0BOT")
	def(&cfg.BotID, "B0BOT")
	def(&cfg.AppID, "A0APP")
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 5 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 3 * time.Second
	}
	s := &Server{cfg: cfg, msgs: map[string][]*Message{}}
	s.sock.init()
	s.up = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.serveAPI)
	mux.HandleFunc("/link/", s.serveSocket)
	mux.HandleFunc("/respond/{id}", s.serveResponse)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/"
	s.APIURL = s.URL + "api/"
	return s
}

// Close stops the server and its Socket Mode connections.
func (s *Server) Close() {
	s.sock.closeAll()
	s.srv.Close()
}

// Config returns the server's configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// RateLimit makes the server answer a call 429 with Retry-After (whole seconds, at least one)
// when f returns more than zero for it. nil stops it.
func (s *Server) RateLimit(f func(Call) time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limiter = f
}

// newTS returns a message timestamp later than every one before it, as Slack's are unique
// and increasing within a channel.
func (s *Server) newTS() string {
	now := time.Now().UnixMicro()
	if now <= s.lastTS {
		now = s.lastTS + 1
	}
	s.lastTS = now
	return fmt.Sprintf("%d.%06d", now/1e6, now%1e6)
}

// PostUserMessage records a person's message in a channel (a thread reply when threadTS is
// set) and returns its ts, for the events a test then delivers about it.
func (s *Server) PostUserMessage(channel, user, text, threadTS string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := &Message{Channel: channel, TS: s.newTS(), ThreadTS: threadTS, User: user, Text: text}
	s.msgs[channel] = append(s.msgs[channel], m)
	return m.TS
}

// Calls returns the calls made so far, of the given methods (all when none).
func (s *Server) Calls(methods ...string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if len(methods) == 0 || slices.Contains(methods, c.Method) {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the messages of a thread (threadTS: the parent's ts, which comes first) or
// of a whole channel (threadTS ""), deleted ones left out, as copies.
func (s *Server) Messages(channel, threadTS string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs[channel] {
		if m.Deleted {
			continue
		}
		if threadTS == "" || m.TS == threadTS || m.ThreadTS == threadTS {
			out = append(out, m.copy())
		}
	}
	return out
}

// BotMessages returns the bot's messages in a thread, as Messages does.
func (s *Server) BotMessages(channel, threadTS string) []Message {
	var out []Message
	for _, m := range s.Messages(channel, threadTS) {
		if m.User == s.cfg.BotUserID {
			out = append(out, m)
		}
	}
	return out
}

// Ephemerals returns the ephemeral messages shown to user so far.
func (s *Server) Ephemerals(user string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.ephemeral {
		if m.To == user {
			out = append(out, m.copy())
		}
	}
	return out
}

// Statuses returns the thread statuses set so far in a thread, oldest first.
func (s *Server) Statuses(channel, threadTS string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, st := range s.statuses {
		if st.Channel == channel && st.ThreadTS == threadTS {
			out = append(out, st)
		}
	}
	return out
}

// ResponseURL returns a new response_url on this server, for slash command and interaction
// payloads.
func (s *Server) ResponseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextEvent++
	return s.URL + "respond/" + strconv.Itoa(s.nextEvent)
}

// Responses returns what was posted to the response_url given (all when "").
func (s *Server) Responses(responseURL string) []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Response
	for _, r := range s.responses {
		if responseURL == "" || strings.HasSuffix(responseURL, r.Path) {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) serveResponse(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.responses = append(s.responses, Response{Path: r.URL.Path, Body: body})
	s.mu.Unlock()
	w.Write([]byte("ok"))
}

func (m *Message) copy() Message {
	c := *m
	c.Tasks = slices.Clone(m.Tasks)
	return c
}

// Content is what a person reads in the message: its text when it has no blocks, the text
// of its blocks, and for a streamed message the streamed markdown, its task cards and the
// blocks it ended with.
func (m Message) Content() string {
	var b strings.Builder
	if len(m.Blocks) == 0 && !m.Streamed {
		b.WriteString(m.Text)
	}
	blockText(&b, m.Blocks)
	b.WriteString(m.Stream)
	for _, t := range m.Tasks {
		fmt.Fprintf(&b, "\n[%s] %s %s %s", t.Status, t.Title, t.Details, t.Output)
	}
	blockText(&b, m.StreamBlocks)
	return b.String()
}

// Buttons returns the action ids of the message's buttons, in order.
func (m Message) Buttons() []string {
	var out []string
	for _, raw := range [][]byte{m.Blocks, m.StreamBlocks} {
		var blocks []map[string]any
		_ = json.Unmarshal(raw, &blocks)
		for _, bl := range blocks {
			els, _ := bl["elements"].([]any)
			if bl["type"] != "actions" {
				continue
			}
			for _, e := range els {
				if em, ok := e.(map[string]any); ok && em["type"] == "button" {
					id, _ := em["action_id"].(string)
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// Button returns the button with the given action id, as JSON fields (value, url, text...).
func (m Message) Button(actionID string) map[string]any {
	for _, raw := range [][]byte{m.Blocks, m.StreamBlocks} {
		var blocks []map[string]any
		_ = json.Unmarshal(raw, &blocks)
		for _, bl := range blocks {
			els, _ := bl["elements"].([]any)
			for _, e := range els {
				if em, ok := e.(map[string]any); ok && em["action_id"] == actionID {
					return em
				}
			}
		}
	}
	return nil
}
