package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/session"
)

// CompanionSessions is what the session pages need of the session manager: reading, nothing
// else. Safe for concurrent use; a session that does not exist is session.ErrNotFound.
type CompanionSessions interface {
	logReader
}

// CompanionConfig configures the session pages. Zero fields take their defaults.
type CompanionConfig struct {
	Logger *slog.Logger
	// PassTTL caps how long a browser may watch a session after opening its link (it never
	// outlives the link). Default 12 h.
	PassTTL time.Duration
	// FollowBlock is how long a transcript stream waits on the log per read. Default 5 s.
	FollowBlock time.Duration
}

// Companion serves the session pages chat threads link to: /s/{id}?exp=..&sig=.. (a link of
// Links.Session) shows the session's live transcript beside the app's preview.
//
// Opening a link trades it for a pass: a cookie scoped to that session's path that lasts as
// long as the link, at most PassTTL. The page, its API and its WebSocket take only the pass,
// so a session id alone opens nothing. The pages are read-only: a reviewer may watch, while
// Stop, Approve and Deny stay in the chat thread, where the bot knows who is asking.
type Companion struct {
	s      CompanionSessions
	links  *Links
	cfg    CompanionConfig
	log    *slog.Logger
	stream *streamer
}

// NewCompanion makes the session pages; links checks their links.
func NewCompanion(s CompanionSessions, links *Links, cfg CompanionConfig) *Companion {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PassTTL <= 0 {
		cfg.PassTTL = 12 * time.Hour
	}
	return &Companion{s: s, links: links, cfg: cfg, log: cfg.Logger, stream: newStreamer(s, cfg.Logger, cfg.FollowBlock)}
}

// Close ends every open transcript stream and waits for them.
func (c *Companion) Close() { c.stream.close() }

// Mount adds the session pages' routes to r. The pages' assets are MountAssets'.
func (c *Companion) Mount(r chi.Router) {
	r.Get("/s/{id}", c.open)
	r.Route("/s/{id}/", func(r chi.Router) {
		r.Use(c.guard)
		r.Get("/", func(w http.ResponseWriter, r *http.Request) { servePage(w, r, "session.html") })
		r.Get("/api/session", handle(c.log, c.session))
		r.Get("/api/events", c.follow)
	})
}

// sessionIDs are what relay.NewID makes; anything else is not worth a lookup.
var sessionIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

const passCookie = "nightona_session"

// open trades a session link for a pass and sends the browser to the page.
func (c *Companion) open(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	q := r.URL.Query()
	err := ErrLinkInvalid
	if sessionIDRE.MatchString(id) {
		err = c.links.CheckSession(id, q.Get("exp"), q.Get("sig"))
	}
	if err != nil {
		linkRefused(w, err)
		return
	}
	exp, _ := strconv.ParseInt(q.Get("exp"), 10, 64)
	until := time.Unix(exp, 0)
	if capped := c.links.now().Add(c.cfg.PassTTL); capped.Before(until) {
		until = capped
	}
	http.SetCookie(w, &http.Cookie{
		Name: passCookie, Value: c.links.pass("session", id, until), Path: "/s/" + id + "/",
		MaxAge: int(until.Sub(c.links.now()).Seconds()) + 1,
		// Lax, not Strict: the link is opened from a chat app, another site, and the redirect
		// below is part of that same navigation.
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	pageHeaders(w)
	http.Redirect(w, r, "/s/"+id+"/", http.StatusSeeOther)
}

// guard lets in browsers with a pass for the session of the path.
func (c *Companion) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		err := ErrLinkInvalid
		if ck, cerr := r.Cookie(passCookie); cerr == nil && sessionIDRE.MatchString(id) {
			var subject string
			subject, err = c.links.checkPass("session", ck.Value)
			if err == nil && subject != id {
				err = ErrLinkInvalid
			}
		}
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path != "/s/"+id+"/" { // the API and the WebSocket
			writeJSON(w, http.StatusUnauthorized, map[string]string{"code": "no_pass",
				"error": "Your access to this session has ended. Open the link in the chat thread again."})
			return
		}
		showNotice(w, notice{Status: http.StatusUnauthorized, Title: "Open this page from its link",
			Text: "Session pages open from the link the bot posts in the chat thread. That link lets your browser in for a while; it has not, or no longer does.",
			Hint: "Go back to the thread and click the session link again."})
	})
}

// sessionView is what a session page may see of a session record: not the relay's cursor,
// leases or inbox.
type sessionView struct {
	ID             string        `json:"id"`
	Thread         string        `json:"thread"`
	Owner          string        `json:"owner"`
	State          session.State `json:"state"`
	StateAt        time.Time     `json:"state_at"`
	CreatedAt      time.Time     `json:"created_at"`
	UpdatedAt      time.Time     `json:"updated_at"`
	Provider       string        `json:"provider,omitempty"`
	PreviewURL     string        `json:"preview_url,omitempty"`
	PermissionMode string        `json:"permission_mode,omitempty"`
	Model          string        `json:"model,omitempty"`
	LastSeq        int64         `json:"last_seq"`
	Usage          session.Usage `json:"usage"`
}

func viewOf(s *session.Session) any {
	return sessionView{
		ID: s.ID, Thread: s.Thread, Owner: s.Owner, State: s.State, StateAt: s.StateAt,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, Provider: s.Provider, PreviewURL: s.PreviewURL,
		PermissionMode: s.PermissionMode, Model: s.Model, LastSeq: s.LastSeq, Usage: s.Usage,
	}
}

func (c *Companion) session(w http.ResponseWriter, r *http.Request) error {
	s, err := c.s.Get(r.Context(), chi.URLParam(r, "id"))
	if errors.Is(err, session.ErrNotFound) {
		return &apiError{http.StatusNotFound, "gone", "This session no longer exists: it was destroyed, and its transcript with it."}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": viewOf(s)})
	return nil
}

func (c *Companion) follow(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	c.stream.serve(w, r, func(ctx context.Context) (*session.Session, error) {
		return c.s.Get(ctx, id)
	}, viewOf)
}
