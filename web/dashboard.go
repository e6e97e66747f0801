package web

import (
	"context"
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

// Admin is what the dashboard needs of the session manager. Safe for concurrent use; errors
// are the session package's (ErrNotFound, ErrForbidden, ErrStoreDown...).
type Admin interface {
	List(ctx context.Context) ([]*session.Session, error)
	Get(ctx context.Context, id string) (*session.Session, error)
	// Stop stops the thread's sandbox, as user (its owner or an admin).
	Stop(ctx context.Context, thread, user string) error
	// Destroy deletes the thread's session, sandbox and log, as user.
	Destroy(ctx context.Context, thread, user string) error
	// Usage returns what a user, a channel or everybody ("all") used on a day.
	Usage(ctx context.Context, scope, key string, day time.Time) (session.Usage, error)
	// UsageBy returns what each user ("user") or channel ("channel") used on a day.
	UsageBy(ctx context.Context, scope string, day time.Time) (map[string]session.Usage, error)
	IsAdmin(user string) bool
}

// Waker starts a stopped session's sandbox again without sending Claude anything, as user
// (its owner or an admin). The dashboard offers Wake when its Admin has it, or when
// DashboardConfig.Waker is set.
type Waker interface {
	Wake(ctx context.Context, thread, user string) error
}

// Health reports how the bot's parts are doing. It is called for each dashboard refresh with a
// context that ends within a few seconds, and must be safe for concurrent use.
type Health interface {
	Check(ctx context.Context) []Check
}

// HealthFunc is a Health made of a function.
type HealthFunc func(ctx context.Context) []Check

// Check implements Health.
func (f HealthFunc) Check(ctx context.Context) []Check { return f(ctx) }

// Check is the state of one part of the bot.
type Check struct {
	// Name is what the part is called: "Redis", "Slack", "Sandboxes".
	Name string `json:"name"`
	// Kind groups parts: "store", "sandbox", "model", "chat".
	Kind string `json:"kind"`
	OK   bool   `json:"ok"`
	// Detail says more, for people: "local", "connected", "no answer in 2 s".
	Detail string `json:"detail,omitempty"`
}

// DashboardConfig configures the dashboard. Zero fields take their defaults.
type DashboardConfig struct {
	Logger *slog.Logger
	// Once makes dashboard login links one-time across replicas. Required.
	Once Once
	// Secret is the console's, so that its operator (on this machine, or logged in with
	// the console's link) gets in as LocalUser. Required.
	Secret []byte
	// LocalUser is who the operator acts as. Default "web:local". Stopping or destroying
	// another's session needs it to be an admin.
	LocalUser string
	// Health fills the health view; nil shows none.
	Health Health
	// Waker wakes sessions; nil: the Admin's own Wake if it has one, else no Wake.
	Waker Waker
	// PassTTL is how long a dashboard login lasts. Default 12 h.
	PassTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Dashboard serves the admin dashboard under /admin: every session with its thread, owner,
// state, age and cost, with Stop, Wake and Destroy; usage per user and channel; the bot's
// health. Admins get in with a one-time link (Links.DashboardLogin), the operator from the
// console.
type Dashboard struct {
	s     Admin
	links *Links
	cfg   DashboardConfig
	log   *slog.Logger
	op    operator
	waker Waker
}

// NewDashboard makes the dashboard; links checks its login links and makes session links.
func NewDashboard(s Admin, links *Links, cfg DashboardConfig) (*Dashboard, error) {
	if cfg.Once == nil || len(cfg.Secret) == 0 {
		return nil, errors.New("web dashboard: Once and Secret are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LocalUser == "" {
		cfg.LocalUser = "web:local"
	}
	if cfg.PassTTL <= 0 {
		cfg.PassTTL = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Dashboard{s: s, links: links, cfg: cfg, log: cfg.Logger, op: operator{secret: cfg.Secret}, waker: cfg.Waker}
	if w, ok := s.(Waker); ok && d.waker == nil {
		d.waker = w
	}
	return d, nil
}

// Mount adds the dashboard's routes to r. The pages' assets are MountAssets'.
func (d *Dashboard) Mount(r chi.Router) {
	r.Get("/admin/login", d.login)
	r.Post("/admin/logout", d.logout)
	r.Group(func(r chi.Router) {
		r.Use(d.guard)
		r.Get("/admin", func(w http.ResponseWriter, r *http.Request) { servePage(w, r, "admin.html") })
		r.Get("/admin/api/overview", handle(d.log, d.overview))
		r.Post("/admin/api/sessions/{id}/{action}", handle(d.log, d.act))
	})
}

const adminCookie = "nightona_admin"

type userKey struct{}

// userOf is who the request acts as, set by guard.
func userOf(r *http.Request) string {
	u, _ := r.Context().Value(userKey{}).(string)
	return u
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	user, err := d.links.UseDashboardLogin(r.Context(), d.cfg.Once, r.URL.Query())
	switch {
	case errors.Is(err, ErrLinkInvalid), errors.Is(err, ErrLinkExpired), errors.Is(err, ErrLinkUsed):
		linkRefused(w, err)
		return
	case err != nil:
		d.log.Error("dashboard login failed", "err", err)
		showNotice(w, notice{Status: http.StatusServiceUnavailable, Title: "Could not log you in",
			Text: "Nightona can't reach its session store (Redis) to check the link. The link still works: try it again in a minute."})
		return
	case !d.s.IsAdmin(user):
		showNotice(w, notice{Status: http.StatusForbidden, Title: "Only admins may open the dashboard",
			Text: user + " is not one of this bot's admins (NIGHTONA_ADMINS)."})
		return
	}
	until := d.cfg.Now().Add(d.cfg.PassTTL)
	http.SetCookie(w, &http.Cookie{
		Name: adminCookie, Value: d.links.pass("admin", user, until), Path: "/admin",
		MaxAge:   int(d.cfg.PassTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	d.log.Info("admin logged into the dashboard", "user", user)
	pageHeaders(w)
	http.Redirect(w, r, "/admin", http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if err := decodeBody(r, &struct{}{}); err != nil { // JSON only: no cross-site form logs anyone out
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: adminCookie, Path: "/admin", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	writeJSON(w, http.StatusOK, map[string]any{})
}

// guard lets in admins with a pass, as themselves, and the operator, as LocalUser.
func (d *Dashboard) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := ""
		if ck, err := r.Cookie(adminCookie); err == nil {
			if u, err := d.links.checkPass("admin", ck.Value); err == nil && d.s.IsAdmin(u) {
				user = u
			}
		}
		if user == "" && d.op.allowed(r) {
			user = d.cfg.LocalUser
		}
		if user == "" {
			if strings.HasPrefix(r.URL.Path, "/admin/api/") {
				writeJSON(w, http.StatusUnauthorized, map[string]string{"code": "no_login",
					"error": "Your dashboard login has ended. Ask the bot for a new link with /nightona dashboard."})
				return
			}
			showNotice(w, notice{Status: http.StatusUnauthorized, Title: "Log in to the dashboard",
				Text: "The admin dashboard opens from a one-time link the bot sends you privately.",
				Hint: "Ask for one with /nightona dashboard in Slack or Discord (admins only)."})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

// sessionRow is one session as the dashboard lists it.
type sessionRow struct {
	ID         string        `json:"id"`
	Thread     string        `json:"thread"`
	Platform   string        `json:"platform"`
	Channel    string        `json:"channel"`
	Owner      string        `json:"owner"`
	State      session.State `json:"state"`
	StateAt    time.Time     `json:"state_at"`
	CreatedAt  time.Time     `json:"created_at"`
	AgeSeconds int64         `json:"age_seconds"`
	Usage      session.Usage `json:"usage"`
	PreviewURL string        `json:"preview_url,omitempty"`
	// Link opens the session's page.
	Link string `json:"link"`
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	now := d.cfg.Now()
	day := now.UTC()
	if q := r.URL.Query().Get("day"); q != "" {
		t, err := time.Parse(time.DateOnly, q)
		if err != nil {
			return &apiError{http.StatusBadRequest, "bad_request", "day must look like 2006-01-02."}
		}
		day = t
	}
	all, err := d.s.List(ctx)
	if err != nil {
		return err
	}
	rows := make([]sessionRow, 0, len(all))
	for _, s := range all {
		platform, _, _ := strings.Cut(s.Thread, ":")
		rows = append(rows, sessionRow{
			ID: s.ID, Thread: s.Thread, Platform: platform, Channel: session.ChannelOf(s.Thread), Owner: s.Owner,
			State: s.State, StateAt: s.StateAt, CreatedAt: s.CreatedAt, AgeSeconds: int64(now.Sub(s.CreatedAt).Seconds()),
			Usage: s.Usage, PreviewURL: s.PreviewURL, Link: d.links.Session(s.ID),
		})
	}
	slices.SortFunc(rows, func(a, b sessionRow) int { return b.CreatedAt.Compare(a.CreatedAt) })
	total, err := d.s.Usage(ctx, "all", "", day)
	if err != nil {
		return err
	}
	perUser, err := d.usage(ctx, "user", day)
	if err != nil {
		return err
	}
	perChannel, err := d.usage(ctx, "channel", day)
	if err != nil {
		return err
	}
	var health []Check
	if d.cfg.Health != nil {
		hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		health = d.cfg.Health.Check(hctx)
		cancel()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"user": userOf(r), "can_wake": d.waker != nil, "now": now,
		"sessions": rows,
		"usage":    map[string]any{"day": day.Format(time.DateOnly), "all": total, "users": perUser, "channels": perChannel},
		"health":   health,
	})
	return nil
}

// usage returns the day's usage of each user or channel that used anything, most expensive
// first, whether or not its sessions are still there.
func (d *Dashboard) usage(ctx context.Context, scope string, day time.Time) ([]session.KeyUsage, error) {
	by, err := d.s.UsageBy(ctx, scope, day)
	if err != nil {
		return nil, err
	}
	return session.ByCost(by, 0), nil
}

func (d *Dashboard) act(w http.ResponseWriter, r *http.Request) error {
	if err := decodeBody(r, &struct{}{}); err != nil {
		return err
	}
	ctx, user, action := r.Context(), userOf(r), chi.URLParam(r, "action")
	s, err := d.s.Get(ctx, chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	switch action {
	case "stop":
		err = d.s.Stop(ctx, s.Thread, user)
	case "destroy":
		err = d.s.Destroy(ctx, s.Thread, user)
	case "wake":
		if d.waker == nil {
			return &apiError{http.StatusNotImplemented, "no_wake", "This bot can't wake a sandbox on its own yet: the next prompt in the thread wakes it."}
		}
		err = d.waker.Wake(ctx, s.Thread, user)
	default:
		return &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("No such action %q: use stop, wake or destroy.", action)}
	}
	if err != nil {
		return err
	}
	d.log.Info("dashboard action", "action", action, "session_id", s.ID, "thread", s.Thread, "user", user)
	writeJSON(w, http.StatusAccepted, map[string]any{})
	return nil
}
