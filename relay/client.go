package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

var writePool = &sync.Pool{}

// Endpoint is where a relay answers and the token it wants.
type Endpoint struct {
	// URL is the relay's base URL, http:// or https:// (ws:// and wss:// work too).
	URL string
	// Token is the relay's bearer token.
	Token string
	// Header is added to every request (a sandbox platform's proxy may want its own token).
	Header http.Header
}

// Cursor is how far a client has read a relay's stream.
type Cursor struct {
	RelayID string `json:"relay_id"`
	Seq     int64  `json:"seq"`
}

// Errors of the client.
var (
	// ErrUnauthorized: the relay refused the token. Retrying will not help.
	ErrUnauthorized = errors.New("relay refused the token")
	// ErrUnreachable: the relay could not be reached for ClientConfig.ReconnectTimeout.
	ErrUnreachable = errors.New("relay unreachable")
	// ErrProtocol: the relay speaks another protocol version or sent something unreadable.
	ErrProtocol = errors.New("relay protocol mismatch")
)

// RemoteError is an error frame the relay answered a request with.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return "relay: " + e.Code + ": " + e.Message }

// ClientConfig configures a Client. Zero fields take their defaults.
type ClientConfig struct {
	Logger *slog.Logger
	// ReconnectTimeout is how long the client keeps trying to reach the relay before Run gives
	// up with ErrUnreachable. Default 10 s.
	ReconnectTimeout time.Duration
	// MaxFrame bounds a frame from the relay. Default 32 MiB.
	MaxFrame int64
	// PingInterval is how often the client pings; a relay silent for three intervals is taken
	// as gone. Default 10 s.
	PingInterval time.Duration
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReconnectTimeout <= 0 {
		c.ReconnectTimeout = 10 * time.Second
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = 32 << 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 10 * time.Second
	}
	return c
}

// Connected describes a (re)connection, as given to Handlers.OnConnect.
type Connected struct {
	Hello Hello
	// NewRelay is true when the relay is not the one the cursor came from (it restarted, or
	// this is the first connection): its sequence numbers start again.
	NewRelay bool
	// Missed is true when events after the cursor are no longer in the relay's buffer (or the
	// relay restarted with events unread): the stream has a hole.
	Missed bool
}

// Handlers receive what Run reads, in order, on Run's goroutine.
type Handlers struct {
	// OnConnect is called after every hello, before the events that follow it.
	OnConnect func(Connected)
	// OnEvent is called once per event, in seq order. An error stops Run and is returned: the
	// event counts as not handled, so a later Run from the same cursor gets it again.
	OnEvent func(Event) error
}

// Client is the bot's side of a relay connection. Run reads; Prompt and Interrupt may be called
// from any goroutine while Run runs.
type Client struct {
	ep  Endpoint
	cfg ClientConfig
	log *slog.Logger

	mu      sync.Mutex
	conn    *clientConn // nil between connections
	connCh  chan struct{}
	waiters map[string]chan answer
}

// answer is what a request got back: an ack (err nil), or an error frame.
type answer struct {
	err       error
	duplicate bool
}

type clientConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
}

func (c *clientConn) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// NewClient makes a client for the relay at ep. It does not connect until Run.
func NewClient(ep Endpoint, cfg ClientConfig) *Client {
	cfg = cfg.withDefaults()
	return &Client{ep: ep, cfg: cfg, log: cfg.Logger, connCh: make(chan struct{}), waiters: map[string]chan answer{}}
}

// Run connects and reads the relay's stream until ctx ends (returning nil) or the relay cannot
// be reached for ReconnectTimeout (ErrUnreachable), refuses the token (ErrUnauthorized) or a
// handler fails (its error). After a dropped connection it reconnects and resumes after the
// last event handled, so handlers see every event at most once and, while the relay's buffer
// holds them, exactly once.
func (c *Client) Run(ctx context.Context, from Cursor, h Handlers) error {
	cur := from
	for {
		ws, err := c.dialRetry(ctx, cur)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		cur, err = c.serve(ctx, ws, cur, h)
		if ctx.Err() != nil {
			return nil
		}
		var he handlerError
		if errors.As(err, &he) {
			return he.err
		}
		if errors.Is(err, ErrProtocol) {
			return err
		}
		c.log.Warn("relay connection lost, reconnecting", "err", err, "seq", cur.Seq)
	}
}

type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

func (c *Client) dialRetry(ctx context.Context, cur Cursor) (*websocket.Conn, error) {
	deadline := time.Now().Add(c.cfg.ReconnectTimeout)
	backoff := 50 * time.Millisecond
	for {
		ws, err := c.dial(ctx, cur)
		if err == nil {
			return ws, nil
		}
		if errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
			return nil, err
		}
		if time.Now().Add(backoff).After(deadline) {
			return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

func (c *Client) dial(ctx context.Context, cur Cursor) (*websocket.Conn, error) {
	u, err := streamURL(c.ep.URL, cur)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{}
	for k, v := range c.ep.Header {
		hdr[k] = v
	}
	hdr.Set("Authorization", "Bearer "+c.ep.Token)
	// A bot holds a connection per live session, most of them idle: small read buffers (larger
	// frames are still read whole) and write buffers borrowed only while writing.
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 4 << 10, WriteBufferSize: 4 << 10, WriteBufferPool: writePool}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, resp, err := d.DialContext(dctx, u, hdr)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, ErrUnauthorized
		}
		if resp != nil {
			return nil, fmt.Errorf("dial relay: %s", resp.Status)
		}
		return nil, fmt.Errorf("dial relay: %w", err)
	}
	ws.SetReadLimit(c.cfg.MaxFrame)
	return ws, nil
}

func streamURL(base string, cur Cursor) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("relay url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("relay url: unsupported scheme %q", u.Scheme)
	}
	u.Path = strings.TrimRight(u.Path, "/") + StreamPath
	q := url.Values{}
	if cur.RelayID != "" {
		q.Set("relay_id", cur.RelayID)
		q.Set("after", strconv.FormatInt(cur.Seq, 10))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// serve reads one connection until it fails, returning the cursor of the last event handled.
func (c *Client) serve(ctx context.Context, ws *websocket.Conn, cur Cursor, h Handlers) (Cursor, error) {
	cc := &clientConn{ws: ws, done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	defer stop()
	defer func() {
		_ = ws.Close()
		c.mu.Lock()
		if c.conn == cc {
			c.conn = nil
		}
		c.mu.Unlock()
		close(cc.done)
	}()

	alive := func() { _ = ws.SetReadDeadline(time.Now().Add(3 * c.cfg.PingInterval)) }
	alive()
	ws.SetPongHandler(func(string) error { alive(); return nil })
	go func() {
		t := time.NewTicker(c.cfg.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-cc.done:
				return
			case <-t.C:
				_ = ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
			}
		}
	}()

	var f serverFrame
	if err := readFrame(ws, &f); err != nil {
		return cur, err
	}
	if f.Type != TypeHello || f.Protocol != ProtocolVersion {
		return cur, fmt.Errorf("%w: first frame %q, protocol %d (want %d)", ErrProtocol, f.Type, f.Protocol, ProtocolVersion)
	}
	hello := Hello{Type: f.Type, Protocol: f.Protocol, RelayID: f.RelayID, FirstSeq: f.FirstSeq, LastSeq: f.LastSeq,
		Missed: f.Missed, Agent: f.Agent, Preview: f.Preview}
	info := Connected{Hello: hello}
	if cur.RelayID != hello.RelayID {
		info.NewRelay = true
		// The old relay's unread events are gone with it, and a buffer that no longer starts
		// at 1 has lost the stream's beginning.
		info.Missed = cur.RelayID != "" || hello.FirstSeq > 1
		cur = Cursor{RelayID: hello.RelayID}
	} else if hello.Missed != nil || cur.Seq < hello.FirstSeq-1 {
		info.Missed = true
	}
	if h.OnConnect != nil {
		h.OnConnect(info)
	}

	c.mu.Lock()
	c.conn = cc
	close(c.connCh)
	c.connCh = make(chan struct{})
	c.mu.Unlock()

	for {
		alive()
		f = serverFrame{}
		if err := readFrame(ws, &f); err != nil {
			return cur, err
		}
		switch f.Type {
		case TypeEvent:
			if f.Seq <= cur.Seq {
				continue // already handled before a reconnect
			}
			if err := h.OnEvent(Event{Seq: f.Seq, Time: f.Time, Kind: f.Kind, Data: f.Data}); err != nil {
				return cur, handlerError{err}
			}
			cur.Seq = f.Seq
		case TypeAck:
			c.settle(f.ID, answer{duplicate: f.Duplicate})
		case TypeError:
			err := &RemoteError{Code: f.Code, Message: f.Message}
			if !c.settle(f.ID, answer{err: err}) {
				c.log.Warn("relay reported an error", "code", f.Code, "message", f.Message)
			}
		default:
			c.log.Warn("unknown frame from relay", "type", f.Type)
		}
	}
}

func readFrame(ws *websocket.Conn, f *serverFrame) error {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, f); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return nil
}

func (c *Client) settle(id string, a answer) bool {
	if id == "" {
		return false
	}
	c.mu.Lock()
	ch, ok := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if ok {
		ch <- a
	}
	return ok
}

// Prompt sends a prompt and waits until the relay has taken it. If the connection drops first,
// it is sent again once Run has reconnected; the relay takes each id once. resume names the
// Claude session to continue if the relay has to start Claude Code.
func (c *Client) Prompt(ctx context.Context, id, text, resume string) error {
	_, err := c.PromptOnce(ctx, id, text, resume)
	return err
}

// PromptOnce is Prompt that also says whether the relay had taken this prompt id before (and
// so did not run it again).
func (c *Client) PromptOnce(ctx context.Context, id, text, resume string) (duplicate bool, err error) {
	if id == "" {
		id = NewID("p")
	}
	a := c.request(ctx, clientFrame{Type: TypePrompt, ID: id, Text: text, Resume: resume})
	return a.duplicate, a.err
}

// Interrupt stops the running turn; it returns once Claude Code has confirmed.
func (c *Client) Interrupt(ctx context.Context) error {
	return c.request(ctx, clientFrame{Type: TypeInterrupt, ID: NewID("i")}).err
}

// Decide answers a permission request.
func (c *Client) Decide(ctx context.Context, d Decision) error {
	behavior := "deny"
	if d.Allow {
		behavior = "allow"
	}
	return c.request(ctx, clientFrame{Type: TypePermission, ID: NewID("d"), RequestID: d.RequestID,
		Behavior: behavior, UpdatedInput: d.UpdatedInput, Message: d.Message}).err
}

// SetPermissionMode changes Claude Code's permission mode.
func (c *Client) SetPermissionMode(ctx context.Context, mode string) error {
	return c.request(ctx, clientFrame{Type: TypeSetMode, ID: NewID("m"), Mode: mode}).err
}

// SetModel changes the model Claude Code uses.
func (c *Client) SetModel(ctx context.Context, model string) error {
	return c.request(ctx, clientFrame{Type: TypeSetModel, ID: NewID("m"), Model: model}).err
}

func (c *Client) request(ctx context.Context, f clientFrame) answer {
	for {
		c.mu.Lock()
		conn, next := c.conn, c.connCh
		var ch chan answer
		if conn != nil {
			ch = make(chan answer, 1)
			c.waiters[f.ID] = ch
		}
		c.mu.Unlock()
		if conn == nil {
			select {
			case <-ctx.Done():
				return answer{err: ctx.Err()}
			case <-next:
				continue
			}
		}
		if err := conn.writeJSON(f); err == nil {
			select {
			case a := <-ch:
				return a
			case <-conn.done:
			case <-ctx.Done():
				c.settle(f.ID, answer{})
				return answer{err: ctx.Err()}
			}
		}
		c.mu.Lock()
		delete(c.waiters, f.ID)
		c.mu.Unlock()
		select { // wait for the next connection before sending again
		case <-ctx.Done():
			return answer{err: ctx.Err()}
		case <-conn.done:
		}
	}
}

// NewID returns a random id with the given prefix.
func NewID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}
