// Package web serves Nightona's browser side: the local chat console (a chat surface of its
// own when no Slack or Discord is configured) and, later, the companion pages. Its assets are
// embedded, so the bot needs no build step.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/session"
)

//go:embed static
var static embed.FS

// Sessions is what the console needs of the session manager.
type Sessions interface {
	Submit(ctx context.Context, thread, user, text string) (*session.Submitted, error)
	Interrupt(ctx context.Context, thread string) error
	Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error
	CancelPrompt(ctx context.Context, thread, promptID, user string) (bool, error)
	Session(ctx context.Context, thread string) (*session.Session, error)
	Get(ctx context.Context, id string) (*session.Session, error)
	Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)
}

// Info is what the console shows about this bot.
type Info struct {
	Mode           string     `json:"mode"` // "offline" or "anthropic"
	Provider       string     `json:"provider"`
	MaxPromptBytes int        `json:"max_prompt_bytes"`
	Scenarios      []Scenario `json:"scenarios,omitempty"`
	Version        string     `json:"version"`
}

// Scenario is a keyword of the offline scripted model, shown as a hint.
type Scenario struct {
	Keyword string `json:"keyword"`
	Summary string `json:"summary"`
}

// ConsoleConfig configures the console. Zero fields take their defaults.
type ConsoleConfig struct {
	Logger *slog.Logger
	// User is who console prompts come from. Default "web:local".
	User string
	// Info is served at /api/info.
	Info Info
	// Secret keys the console's login cookie. Required.
	Secret []byte
	// FollowBlock is how long a transcript stream waits on the log per read. Default 5 s.
	FollowBlock time.Duration
}

// Console serves the local chat console.
type Console struct {
	s   Sessions
	cfg ConsoleConfig
	log *slog.Logger

	base    context.Context // transcript streams end when it is cancelled (Close)
	cancel  context.CancelFunc
	streams sync.WaitGroup

	upgrader websocket.Upgrader
}

// NewConsole makes the console.
func NewConsole(s Sessions, cfg ConsoleConfig) (*Console, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("web console: a secret is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.User == "" {
		cfg.User = "web:local"
	}
	if cfg.FollowBlock <= 0 {
		cfg.FollowBlock = 5 * time.Second
	}
	base, cancel := context.WithCancel(context.Background())
	c := &Console{s: s, cfg: cfg, log: cfg.Logger, base: base, cancel: cancel}
	c.upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 32 << 10} // default CheckOrigin: same host only
	return c, nil
}

// Close ends every open transcript stream and waits for them.
func (c *Console) Close() {
	c.cancel()
	c.streams.Wait()
}

// Mount adds the console's routes to r.
func (c *Console) Mount(r chi.Router) {
	assets, _ := fs.Sub(static, "static")
	r.Get("/login", c.login)
	r.Group(func(r chi.Router) {
		r.Use(c.guard)
		r.Get("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, assets, "index.html")
		})
		r.Handle("/assets/*", http.StripPrefix("/assets/", http.FileServerFS(assets)))
		r.Get("/api/info", handle(c.log, c.info))
		r.Post("/api/threads", handle(c.log, c.newThread))
		r.Get("/api/threads/{thread}", handle(c.log, c.thread))
		r.Post("/api/threads/{thread}/prompts", handle(c.log, c.prompt))
		r.Post("/api/threads/{thread}/interrupt", handle(c.log, c.interrupt))
		r.Post("/api/threads/{thread}/permissions/{request}", handle(c.log, c.decide))
		r.Post("/api/threads/{thread}/prompts/{prompt}/cancel", handle(c.log, c.cancelPrompt))
		r.Get("/api/threads/{thread}/events", c.follow)
	})
}

// LoginURL is the link that lets a browser that is not on this machine into the console.
func (c *Console) LoginURL(base string) string {
	return strings.TrimRight(base, "/") + "/login?token=" + c.mac("console-login")
}

func (c *Console) mac(purpose string) string {
	h := hmac.New(sha256.New, c.cfg.Secret)
	h.Write([]byte(purpose))
	return hex.EncodeToString(h.Sum(nil))
}

const cookieName = "nightona_console"

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(c.mac("console-login"))) != 1 {
		http.Error(w, "This login link is not valid. Use the link the bot printed when it started.", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: c.mac("console-session"), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 30 * 24 * 3600,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// guard lets in browsers on this machine that name it by a loopback host (a foreign site
// cannot, even through DNS rebinding), and others with the login cookie.
func (c *Console) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLocal(r) {
			ck, err := r.Cookie(cookieName)
			if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.mac("console-session"))) != 1 {
				http.Error(w, "The console is open to this machine only. Open the login link the bot printed when it started.", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func isLocal(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	name := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(name, "[]"))
	return ip != nil && ip.IsLoopback()
}

// apiError is an error with the status and code the API answers with.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// handle adapts a handler that returns an error; errors are translated to JSON here, once.
func handle(log *slog.Logger, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var ae *apiError
		switch {
		case errors.As(err, &ae):
		case errors.Is(err, session.ErrPromptTooLarge):
			ae = &apiError{http.StatusRequestEntityTooLarge, "prompt_too_large", "Your prompt is too long: " + strings.TrimPrefix(err.Error(), session.ErrPromptTooLarge.Error()+": ") + ". Shorten it or split it into several messages."}
		case errors.Is(err, session.ErrEmptyPrompt):
			ae = &apiError{http.StatusBadRequest, "empty_prompt", "The prompt is empty."}
		case errors.Is(err, session.ErrBadSetting):
			ae = &apiError{http.StatusBadRequest, "bad_setting", strings.TrimPrefix(err.Error(), session.ErrBadSetting.Error()+": ")}
		case errors.Is(err, session.ErrStoreDown):
			ae = &apiError{http.StatusServiceUnavailable, "store_down", "Nightona can't reach its session store (Redis) right now, so this was not done. It usually comes back within a minute: try again then."}
		case errors.Is(err, session.ErrUnavailable):
			ae = &apiError{http.StatusServiceUnavailable, "unavailable", strings.TrimPrefix(err.Error(), session.ErrUnavailable.Error()+": ")}
		case errors.Is(err, session.ErrForbidden):
			ae = &apiError{http.StatusForbidden, "forbidden", strings.TrimPrefix(err.Error(), session.ErrForbidden.Error()+": ")}
		case errors.Is(err, session.ErrNoSuchRequest):
			ae = &apiError{http.StatusConflict, "no_such_request", "This permission request was already answered, withdrawn or timed out."}
		case errors.Is(err, session.ErrNotFound):
			ae = &apiError{http.StatusNotFound, "not_found", "This thread has no session."}
		default:
			log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = &apiError{http.StatusInternalServerError, "internal", "Something went wrong on the bot's side; its log says what. Try again in a moment."}
		}
		writeJSON(w, ae.status, map[string]string{"error": ae.msg, "code": ae.code})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body. Requiring the JSON content type keeps other sites out: a
// cross-site form cannot send it without a CORS preflight, which the console never allows.
func decodeBody(r *http.Request, v any) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return &apiError{http.StatusUnsupportedMediaType, "bad_request", "Send JSON with Content-Type: application/json."}
	}
	body := http.MaxBytesReader(nil, r.Body, 4<<20)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, "prompt_too_large", "The request is over 4 MiB."}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return &apiError{http.StatusBadRequest, "bad_request", "The request body is not valid JSON."}
	}
	return nil
}

// threadParam returns the thread of the URL; the console reaches only its own threads.
func threadParam(r *http.Request) (string, error) {
	t := chi.URLParam(r, "thread")
	if !strings.HasPrefix(t, "web:") || len(t) > 128 || len(t) < 5 {
		return "", &apiError{http.StatusNotFound, "not_found", "No such console thread."}
	}
	return t, nil
}

func (c *Console) info(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, c.cfg.Info)
	return nil
}

func (c *Console) newThread(w http.ResponseWriter, r *http.Request) error {
	var b [9]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("new thread: %w", err)
	}
	writeJSON(w, http.StatusCreated, map[string]string{"thread": "web:th_" + hex.EncodeToString(b[:])})
	return nil
}

func (c *Console) thread(w http.ResponseWriter, r *http.Request) error {
	t, err := threadParam(r)
	if err != nil {
		return err
	}
	s, err := c.s.Session(r.Context(), t)
	if errors.Is(err, session.ErrNotFound) {
		s, err = nil, nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"thread": t, "session": s})
	return nil
}

func (c *Console) prompt(w http.ResponseWriter, r *http.Request) error {
	t, err := threadParam(r)
	if err != nil {
		return err
	}
	var body struct {
		Text string `json:"text"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	sub, err := c.s.Submit(r.Context(), t, c.cfg.User, body.Text)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"session_id": sub.Session.ID, "prompt_id": sub.PromptID, "seq": sub.Seq, "queued": sub.Queued, "ahead": sub.Ahead,
	})
	return nil
}

func (c *Console) interrupt(w http.ResponseWriter, r *http.Request) error {
	t, err := threadParam(r)
	if err != nil {
		return err
	}
	if err := decodeBody(r, &struct{}{}); err != nil {
		return err
	}
	if err := c.s.Interrupt(r.Context(), t); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{})
	return nil
}

func (c *Console) decide(w http.ResponseWriter, r *http.Request) error {
	t, err := threadParam(r)
	if err != nil {
		return err
	}
	var body struct {
		Behavior string `json:"behavior"`
		Message  string `json:"message"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if body.Behavior != "allow" && body.Behavior != "deny" {
		return &apiError{http.StatusBadRequest, "bad_request", `behavior must be "allow" or "deny".`}
	}
	if err := c.s.Decide(r.Context(), t, chi.URLParam(r, "request"), c.cfg.User, body.Behavior == "allow", body.Message); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{})
	return nil
}

func (c *Console) cancelPrompt(w http.ResponseWriter, r *http.Request) error {
	t, err := threadParam(r)
	if err != nil {
		return err
	}
	if err := decodeBody(r, &struct{}{}); err != nil {
		return err
	}
	ok, err := c.s.CancelPrompt(r.Context(), t, chi.URLParam(r, "prompt"), c.cfg.User)
	if err != nil {
		return err
	}
	if !ok {
		return &apiError{http.StatusConflict, "not_waiting", "This prompt is no longer waiting: Claude has taken it already."}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{})
	return nil
}

// follow streams a thread's log over a WebSocket from ?after=N: every event once, in order,
// and the session record whenever it changes. The client reconnects with the last seq it
// rendered.
func (c *Console) follow(w http.ResponseWriter, r *http.Request) {
	t, err := threadParam(r)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if err != nil || after < 0 {
		after = 0
	}
	ws, err := c.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c.streams.Add(1)
	defer c.streams.Done()
	defer ws.Close()
	ctx, cancel := context.WithCancel(c.base)
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
	if err := c.stream(ctx, ws, t, after); err != nil && ctx.Err() == nil {
		c.log.Warn("transcript stream ended", "thread", t, "err", err)
	}
}

func (c *Console) stream(ctx context.Context, ws *websocket.Conn, thread string, after int64) error {
	send := func(v any) error {
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return ws.WriteJSON(v)
	}
	var sess *session.Session
	for waited := false; sess == nil; {
		s, err := c.s.Session(ctx, thread)
		switch {
		case err == nil:
			sess = s
		case errors.Is(err, session.ErrNotFound):
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
		default:
			return err
		}
	}
	var last []byte
	sendSession := func(s *session.Session) error {
		b, _ := json.Marshal(summary(s))
		if string(b) == string(last) {
			return nil
		}
		last = b
		return send(map[string]any{"type": "session", "session": s})
	}
	if err := sendSession(sess); err != nil {
		return err
	}
	for ctx.Err() == nil {
		evs, err := c.s.Events(ctx, sess.ID, after, 500, c.cfg.FollowBlock)
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
		s, err := c.s.Get(ctx, sess.ID)
		if errors.Is(err, session.ErrNotFound) {
			return nil // destroyed
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
