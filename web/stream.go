package web

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/session"
)

// logReader is what a log stream needs of the session manager. Safe for concurrent use.
type logReader interface {
	// Get returns a session by id, or session.ErrNotFound.
	Get(ctx context.Context, id string) (*session.Session, error)
	// Events reads the session's log after seq after, waiting up to block for new events.
	Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)
}

// streamer serves sessions' logs over WebSockets to the console and the session pages.
//
// Frames, one JSON object each:
//
//	{"type":"waiting"}                       the thread has no session yet (console only)
//	{"type":"session","session":{...}}       the session record, first and whenever it changes
//	{"type":"event","seq":N,"kind":...}      one log event; seqs are contiguous from ?after=N+1
//	{"type":"gone"}                          the session was destroyed; the stream ends
//
// A client that drops reconnects with the last seq it took and gets exactly what follows it.
type streamer struct {
	s     logReader
	log   *slog.Logger
	block time.Duration

	base    context.Context // streams end when it is cancelled (close)
	cancel  context.CancelFunc
	streams sync.WaitGroup

	upgrader websocket.Upgrader
}

func newStreamer(s logReader, log *slog.Logger, block time.Duration) *streamer {
	if block <= 0 {
		block = 5 * time.Second
	}
	base, cancel := context.WithCancel(context.Background())
	return &streamer{
		s: s, log: log, block: block, base: base, cancel: cancel,
		upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 32 << 10}, // default CheckOrigin: same host only
	}
}

// close ends every open stream and waits for them.
func (st *streamer) close() {
	st.cancel()
	st.streams.Wait()
}

// find returns the session to stream, or (nil, nil) while there is none yet.
type finder func(ctx context.Context) (*session.Session, error)

// serve upgrades the request and streams the session find returns, from ?after=N. view turns
// the session record into what the client may see.
func (st *streamer) serve(w http.ResponseWriter, r *http.Request, find finder, view func(*session.Session) any) {
	after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if err != nil || after < 0 {
		after = 0
	}
	ws, err := st.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	st.streams.Add(1)
	defer st.streams.Done()
	defer ws.Close()
	ctx, cancel := context.WithCancel(st.base)
	defer cancel()
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	go func() { // the client sends nothing; reading notices when it leaves
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				cancel()
				return
			}
		}
	}()
	go func() {
		t := time.NewTicker(25 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
				return
			case <-t.C:
				_ = ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
			}
		}
	}()
	if err := st.stream(ctx, ws, find, view, after); err != nil && ctx.Err() == nil {
		st.log.Warn("transcript stream ended", "path", r.URL.Path, "err", err)
	}
}

func (st *streamer) stream(ctx context.Context, ws *websocket.Conn, find finder, view func(*session.Session) any, after int64) error {
	send := func(v any) error {
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return ws.WriteJSON(v)
	}
	var sess *session.Session
	for waited := false; sess == nil; {
		s, err := find(ctx)
		switch {
		case errors.Is(err, session.ErrNotFound):
			return send(map[string]string{"type": "gone"})
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case s != nil:
			sess = s
		default:
			if !waited {
				if err := send(map[string]string{"type": "waiting"}); err != nil {
					return err
				}
				waited = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	var last []byte
	sendSession := func(s *session.Session) error {
		b, _ := json.Marshal(summary(s))
		if string(b) == string(last) {
			return nil
		}
		last = b
		return send(map[string]any{"type": "session", "session": view(s)})
	}
	if err := sendSession(sess); err != nil {
		return err
	}
	for ctx.Err() == nil {
		evs, err := st.s.Events(ctx, sess.ID, after, 500, st.block)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, ev := range evs {
			if err := send(eventFrame{Type: "event", Event: ev}); err != nil {
				return err
			}
			after = ev.Seq
		}
		s, err := st.s.Get(ctx, sess.ID)
		if errors.Is(err, session.ErrNotFound) {
			return send(map[string]string{"type": "gone"})
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := sendSession(s); err != nil {
			return err
		}
	}
	return nil
}

type eventFrame struct {
	Type string `json:"type"`
	session.Event
}

// summary is the part of a session record whose change is worth a frame.
func summary(s *session.Session) any {
	return struct {
		State     session.State
		SandboxID string
		Usage     session.Usage
		Claude    string
		Preview   string
	}{s.State, s.SandboxID, s.Usage, s.ClaudeSessionID, s.PreviewURL}
}
