package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/session"
)

// Sessions is what the console needs of the session manager. Implementations are safe for
// concurrent use; errors are the session package's (ErrNotFound, ErrForbidden...).
type Sessions interface {
	Submit(ctx context.Context, thread, user, text string) (*session.Submitted, error)
	Interrupt(ctx context.Context, thread, promptID string) error
	Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error
	CancelPrompt(ctx context.Context, thread, promptID, user string) (bool, error)
	Session(ctx context.Context, thread string) (*session.Session, error)
	Get(ctx context.Context, id string) (*session.Session, error)
	Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)
	// List returns every session (the console shows its own threads of them).
	List(ctx context.Context) ([]*session.Session, error)
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
	s      Sessions
	cfg    ConsoleConfig
	log    *slog.Logger
	op     operator
	stream *streamer
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
	c := &Console{s: s, cfg: cfg, log: cfg.Logger, op: operator{secret: cfg.Secret}}
	c.stream = newStreamer(s, cfg.Logger, cfg.FollowBlock)
	return c, nil
}

// Close ends every open transcript stream and waits for them.
func (c *Console) Close() {
	c.stream.close()
}

// Mount adds the console's routes to r. The pages' assets are MountAssets'.
func (c *Console) Mount(r chi.Router) {
	r.Get("/login", c.login)
	r.Group(func(r chi.Router) {
		r.Use(c.guard)
		r.Get("/", func(w http.ResponseWriter, r *http.Request) { servePage(w, r, "index.html") })
		r.Get("/api/info", handle(c.log, c.info))
		r.Get("/api/threads", handle(c.log, c.threads))
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
	return strings.TrimRight(base, "/") + "/login?token=" + c.op.mac("console-login")
}

// operator recognises the person who runs the bot: a browser on this machine, or one that
// opened the console's login link. The console and the dashboard both let them in.
type operator struct{ secret []byte }

const cookieName = "nightona_console"

func (o operator) mac(purpose string) string {
	h := hmac.New(sha256.New, o.secret)
	h.Write([]byte(purpose))
	return hex.EncodeToString(h.Sum(nil))
}

// allowed lets in browsers on this machine that name it by a loopback host, and others with
// the login cookie.
func (o operator) allowed(r *http.Request) bool {
	if isLocal(r) {
		return true
	}
	ck, err := r.Cookie(cookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(o.mac("console-session"))) == 1
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(c.op.mac("console-login"))) != 1 {
		http.Error(w, "This login link is not valid. Use the link the bot printed when it started.", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: c.op.mac("console-session"), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 30 * 24 * 3600,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.op.allowed(r) {
			http.Error(w, "The console is open to this machine only. Open the login link the bot printed when it started.", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
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

// threads lists the console's threads the bot has sessions for, newest first, each titled by
// its first prompt, so that a thread started in another browser shows too.
func (c *Console) threads(w http.ResponseWriter, r *http.Request) error {
	all, err := c.s.List(r.Context())
	if err != nil {
		return err
	}
	type thread struct {
		Thread    string        `json:"thread"`
		Title     string        `json:"title"`
		State     session.State `json:"state"`
		UpdatedAt time.Time     `json:"updated_at"`
	}
	out := []thread{}
	for _, s := range all {
		if !strings.HasPrefix(s.Thread, "web:") || s.State == session.StateClosed {
			continue
		}
		t := thread{Thread: s.Thread, State: s.State, UpdatedAt: s.UpdatedAt}
		if evs, err := c.s.Events(r.Context(), s.ID, 0, 1, 0); err == nil && len(evs) == 1 && evs[0].Kind == session.KindPrompt {
			var p session.Prompt
			if json.Unmarshal(evs[0].Data, &p) == nil {
				t.Title = p.Text
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b thread) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
	writeJSON(w, http.StatusOK, map[string]any{"threads": out})
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
	// prompt_id names the turn to stop ("" or absent: the current one).
	var body struct {
		PromptID string `json:"prompt_id"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if err := c.s.Interrupt(r.Context(), t, body.PromptID); err != nil {
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

// follow streams a thread's log (see streamer): it waits for the thread's first session.
func (c *Console) follow(w http.ResponseWriter, r *http.Request) {
	t, err := threadParam(r)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	c.stream.serve(w, r, func(ctx context.Context) (*session.Session, error) {
		s, err := c.s.Session(ctx, t)
		if errors.Is(err, session.ErrNotFound) {
			return nil, nil
		}
		return s, err
	}, func(s *session.Session) any { return s })
}
