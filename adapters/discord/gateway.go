package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway intents the bot asks for: guilds (channels and threads), guild and direct messages,
// and their content (a privileged intent, switched on in the Developer Portal).
const (
	intentGuilds         = 1 << 0
	intentGuildMessages  = 1 << 9
	intentDirectMessages = 1 << 12
	intentMessageContent = 1 << 15
	intents              = intentGuilds | intentGuildMessages | intentDirectMessages | intentMessageContent
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

// gatewayVersion is the Gateway's API version, the REST API's too.
const gatewayVersion = "10"

// FatalError is a Gateway close that reconnecting cannot fix: a bad token, or intents the
// application may not use. Run returns it.
type FatalError struct {
	Code   int
	Reason string
}

func (e *FatalError) Error() string {
	switch e.Code {
	case 4004:
		return "Discord refused the bot token (Gateway close 4004, authentication failed): check DISCORD_BOT_TOKEN"
	case 4013, 4014:
		return fmt.Sprintf("Discord refused the bot's intents (Gateway close %d): turn on the Message Content intent under Bot, Privileged Gateway Intents, in the Developer Portal", e.Code)
	}
	return fmt.Sprintf("Discord closed the Gateway with %d (%s); reconnecting would not help", e.Code, e.Reason)
}

// fatalCodes are the close codes Discord says not to reconnect after.
var fatalCodes = map[int]bool{4004: true, 4010: true, 4011: true, 4012: true, 4013: true, 4014: true}

// restartCodes end the session: the next connection identifies anew instead of resuming.
var restartCodes = map[int]bool{4007: true, 4009: true}

type frame struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  int64           `json:"s,omitempty"`
	T  string          `json:"t,omitempty"`
}

// gateway holds one Gateway session: it connects, identifies, keeps the heartbeat, resumes
// after a drop (at READY's resume_gateway_url, replaying what was missed), and hands every
// dispatch to handle. Run owns all of it; nothing else touches its state.
type gateway struct {
	token   string
	locate  func(ctx context.Context) (*gatewayBot, error)
	dialer  *websocket.Dialer
	log     *slog.Logger
	metrics *metrics
	// handle takes a dispatch; it is called from the reading goroutine and must not block.
	handle func(event string, data json.RawMessage)

	url       string // from GET /gateway/bot
	sessionID string
	resumeURL string
	seq       atomic.Int64

	// up and why say whether the bot is connected, for health checks.
	up  atomic.Bool
	why atomic.Value // string
}

var errReconnect = errors.New("the Gateway asked for a reconnect")

// run keeps a session until ctx ends. It returns nil then, or a *FatalError.
func (g *gateway) run(ctx context.Context) error {
	failures := 0
	for {
		start := time.Now()
		err := g.connect(ctx)
		g.up.Store(false)
		if ctx.Err() != nil {
			g.why.Store("stopped")
			return nil
		}
		if err != nil {
			g.why.Store("reconnecting: " + err.Error())
		}
		var fatal *FatalError
		if errors.As(err, &fatal) {
			return fatal
		}
		if time.Since(start) > time.Minute {
			failures = 0
		}
		failures++
		// A resume goes at once the first time, as Discord suggests; after that, and for a
		// new session, back off with jitter.
		wait := time.Duration(0)
		if failures > 1 || g.sessionID == "" {
			wait = backoff(min(failures, 8))
		}
		g.metrics.reconnects.Inc()
		g.log.Warn("Gateway connection lost; reconnecting", "err", err, "resume", g.sessionID != "", "in", wait.Round(time.Millisecond))
		if err := sleep(ctx, wait); err != nil {
			return nil
		}
	}
}

// connect runs one connection, from dial to drop.
func (g *gateway) connect(ctx context.Context) error {
	resume := g.sessionID != "" && g.resumeURL != ""
	base := g.resumeURL
	if !resume {
		if g.url == "" {
			info, err := g.locate(ctx)
			if err != nil {
				var apiErr *APIError
				if errors.As(err, &apiErr) && apiErr.Status == 401 {
					return &FatalError{Code: 4004, Reason: "the REST API answered 401"}
				}
				return fmt.Errorf("find the Gateway: %w", err)
			}
			if info.SessionStartLimit.Remaining == 0 && info.SessionStartLimit.ResetAfter > 0 {
				wait := time.Duration(info.SessionStartLimit.ResetAfter) * time.Millisecond
				g.log.Warn("Discord's daily session starts are used up; waiting for them to reset", "in", wait)
				if err := sleep(ctx, wait); err != nil {
					return err
				}
			}
			g.url = info.URL
		}
		base = g.url
	}
	u, err := url.Parse(base)
	if err != nil {
		g.url = ""
		return fmt.Errorf("gateway url %q: %w", base, err)
	}
	q := u.Query()
	q.Set("v", gatewayVersion)
	q.Set("encoding", "json")
	u.RawQuery = q.Encode()
	ws, _, err := g.dialer.DialContext(ctx, u.String(), nil)
	if err != nil {
		if !resume {
			g.url = "" // ask where the Gateway is again
		}
		return fmt.Errorf("dial the Gateway: %w", err)
	}
	defer ws.Close()
	ws.SetReadLimit(16 << 20)

	// HELLO first: it sets the heartbeat.
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hello frame
	if err := ws.ReadJSON(&hello); err != nil {
		return fmt.Errorf("read HELLO: %w", err)
	}
	var h struct {
		Interval int64 `json:"heartbeat_interval"`
	}
	if hello.Op != opHello || json.Unmarshal(hello.D, &h) != nil || h.Interval <= 0 {
		return fmt.Errorf("expected HELLO, got op %d", hello.Op)
	}
	interval := time.Duration(h.Interval) * time.Millisecond

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan any, 16)
	var acked atomic.Bool
	acked.Store(true)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		g.write(cctx, ctx, ws, out, interval, &acked)
	}()
	defer func() { cancel(); <-writerDone }()

	if resume {
		g.log.Info("resuming the Gateway session", "seq", g.seq.Load())
		out <- map[string]any{"op": opResume, "d": map[string]any{"token": g.token, "session_id": g.sessionID, "seq": g.seq.Load()}}
	} else {
		g.seq.Store(0)
		out <- map[string]any{"op": opIdentify, "d": map[string]any{
			"token": g.token, "intents": intents,
			"properties": map[string]string{"os": runtime.GOOS, "browser": "nightona", "device": "nightona"},
		}}
	}

	for {
		// A connection that says nothing for two heartbeats is dead, even if TCP has not
		// noticed yet.
		_ = ws.SetReadDeadline(time.Now().Add(2*interval + 10*time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				if fatalCodes[ce.Code] {
					return &FatalError{Code: ce.Code, Reason: ce.Text}
				}
				if restartCodes[ce.Code] {
					g.sessionID, g.resumeURL = "", ""
				}
			}
			return fmt.Errorf("read: %w", err)
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			g.log.Warn("a Gateway frame that is not JSON", "err", err)
			continue
		}
		switch f.Op {
		case opDispatch:
			if f.S > 0 {
				g.seq.Store(f.S)
			}
			switch f.T {
			case "READY":
				var r struct {
					SessionID string `json:"session_id"`
					ResumeURL string `json:"resume_gateway_url"`
				}
				_ = json.Unmarshal(f.D, &r)
				g.sessionID, g.resumeURL = r.SessionID, r.ResumeURL
				g.log.Info("connected to the Discord Gateway")
				g.up.Store(true)
				g.why.Store("connected to the Gateway")
			case "RESUMED":
				g.log.Info("resumed the Discord Gateway session", "seq", g.seq.Load())
				g.up.Store(true)
				g.why.Store("connected to the Gateway (resumed)")
			}
			g.metrics.events.WithLabelValues(f.T).Inc()
			g.handle(f.T, f.D)
		case opHeartbeat:
			select {
			case out <- map[string]any{"op": opHeartbeat, "d": g.seqOrNil()}:
			default:
			}
		case opHeartbeatAck:
			acked.Store(true)
		case opReconnect:
			return errReconnect
		case opInvalidSession:
			var resumable bool
			_ = json.Unmarshal(f.D, &resumable)
			if !resumable {
				g.sessionID, g.resumeURL = "", ""
			}
			// Discord asks for a pause of one to five seconds before identifying again.
			if err := sleep(ctx, time.Second+rand.N(4*time.Second)); err != nil {
				return err
			}
			return errors.New("the Gateway invalidated the session")
		}
	}
}

func (g *gateway) seqOrNil() any {
	if s := g.seq.Load(); s > 0 {
		return s
	}
	return nil
}

// write is the connection's one writer: frames from out, and the heartbeat. A heartbeat not
// acknowledged by the next one means a zombie connection: it is closed with a code that keeps
// the session resumable. When the bot stops (parent ends) it closes with 1000, which ends the
// session.
func (g *gateway) write(cctx, parent context.Context, ws *websocket.Conn, out <-chan any, interval time.Duration, acked *atomic.Bool) {
	// The first heartbeat goes after a random fraction of the interval, as Discord asks.
	beat := time.NewTimer(time.Duration(rand.Float64() * float64(interval)))
	defer beat.Stop()
	send := func(v any) bool {
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return ws.WriteJSON(v) == nil
	}
	for {
		select {
		case <-cctx.Done():
			code := 4000 // resumable
			if parent.Err() != nil {
				code = websocket.CloseNormalClosure
			}
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
			_ = ws.Close()
			return
		case v := <-out:
			if !send(v) {
				_ = ws.Close()
				return
			}
		case <-beat.C:
			if !acked.Swap(false) {
				g.log.Warn("the Gateway did not acknowledge a heartbeat; reconnecting")
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "zombie"), time.Now().Add(time.Second))
				_ = ws.Close()
				return
			}
			if !send(map[string]any{"op": opHeartbeat, "d": g.seqOrNil()}) {
				_ = ws.Close()
				return
			}
			beat.Reset(interval)
		}
	}
}
