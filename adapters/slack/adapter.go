// Package slack adapts Slack to Nightona. A mention of the bot starts a session in the
// message's thread, replies in that thread continue it, and direct messages work the same
// way. While this replica drives a session, the thread shows the session's transcript as it
// grows: Slack's streaming methods where the workspace has them (chat.postMessage and
// chat.update on a coalescing schedule otherwise), the assistant thread status while Claude
// works, buttons to stop a turn, answer permission requests and open the preview, and the
// /nightona command for status, usage and the channel's settings.
//
// Every Web API call goes through budgets shared by the replicas in Redis, per method and per
// workspace and channel, and waits out a 429's Retry-After, so that a busy workspace slows the
// updates down but never loses the last state of a thread.
//
// Events reach the adapter over Socket Mode (Run, with an app token) or over HTTP through the
// webhook package, which calls SlackEvent, SlackCommand and SlackInteraction once a request's
// signature is checked.
package slack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

// Sessions is what the adapter needs of the session manager (*session.Manager). Its methods
// are safe for concurrent use; errors are the session package's (ErrNotFound, ErrForbidden,
// ErrNoSuchRequest, ErrPromptTooLarge...).
type Sessions interface {
	transcript.Source
	SubmitWith(ctx context.Context, thread, user, text string, settings session.Settings) (*session.Submitted, error)
	Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error
	Interrupt(ctx context.Context, thread, promptID string) error
	Stop(ctx context.Context, thread, user string) error
	Destroy(ctx context.Context, thread, user string) error
	Session(ctx context.Context, thread string) (*session.Session, error)
	Get(ctx context.Context, id string) (*session.Session, error)
	List(ctx context.Context) ([]*session.Session, error)
	Usage(ctx context.Context, scope, key string, day time.Time) (session.Usage, error)
	UsageBy(ctx context.Context, scope string, day time.Time) (map[string]session.Usage, error)
	IsAdmin(user string) bool
}

// Store is what the adapter keeps in Redis, shared by the replicas (*redisstore.Store). Errors
// mean Redis did not answer; the adapter then goes on without the budget or the memory.
type Store interface {
	// Once reports whether key is seen for the first time in ttl.
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Take reserves a call from a budget and returns how long to wait before making it.
	Take(ctx context.Context, key string, rate float64, burst int) (time.Duration, error)
	// Hold stops a budget for d.
	Hold(ctx context.Context, key string, d time.Duration) error
	// Put and Fetch keep small values.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Fetch(ctx context.Context, key string) ([]byte, error)
}

// Linker makes the companion's links (*web.Links): a session's page, for threads, and a
// one-time dashboard login, for an admin.
type Linker interface {
	Session(id string) string
	DashboardLogin(user string) string
}

// Config configures an Adapter. Zero fields take their defaults.
type Config struct {
	Logger *slog.Logger
	// BotToken (xoxb-) is the bot's token. Required.
	BotToken string
	// AppToken (xapp-) turns Socket Mode on: Run then holds the connection.
	AppToken string
	// APIURL points the client at another Web API (ending in /). Default Slack's.
	APIURL string
	// Links makes the companion links; nil leaves them out.
	Links Linker
	// Registry takes the adapter's metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	// UpdateEvery is the least time between two updates of a thread while Claude works.
	// Default 1 s.
	UpdateEvery time.Duration
	// NoStreaming renders every answer with chat.postMessage and chat.update, even where the
	// streaming methods are there.
	NoStreaming bool
	// Prompters, when set, are the only users who may prompt (Slack user ids, "U123" or
	// "slack:U123"); admins always may. Empty: every member of the workspace.
	Prompters []string
	// HTTPClient makes the Web API calls. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// PingInterval is how long Socket Mode waits for Slack's ping before it reconnects.
	// Default 30 s.
	PingInterval time.Duration
}

// Adapter connects Slack to the session manager. It is safe for concurrent use.
type Adapter struct {
	api      slackAPI
	client   *slackgo.Client // for Socket Mode; nil behind a test seam
	sessions Sessions
	store    Store
	cfg      Config
	log      *slog.Logger
	metrics  *metrics

	idMu     sync.Mutex
	identity *slackgo.AuthTestResponse

	capMu sync.Mutex
	caps  map[string]bool // capability keys known to be missing (no streaming, no status)

	workMu sync.Mutex
	closed bool           // Run is returning: no new work
	wg     sync.WaitGroup // work started by events, ended before Run returns
	base   context.Context
	stop   context.CancelFunc
}

// New makes an Adapter that talks to Slack with cfg's tokens.
func New(sessions Sessions, store Store, cfg Config) (*Adapter, error) {
	if cfg.BotToken == "" {
		return nil, errors.New("slack: a bot token is required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	opts := []slackgo.Option{slackgo.OptionHTTPClient(cfg.HTTPClient)}
	if cfg.APIURL != "" {
		if !strings.HasSuffix(cfg.APIURL, "/") {
			cfg.APIURL += "/"
		}
		opts = append(opts, slackgo.OptionAPIURL(cfg.APIURL))
	}
	if cfg.AppToken != "" {
		opts = append(opts, slackgo.OptionAppLevelToken(cfg.AppToken))
	}
	client := slackgo.New(cfg.BotToken, opts...)
	a, err := newAdapter(client, sessions, store, cfg)
	if err != nil {
		return nil, err
	}
	a.client = client
	return a, nil
}

func newAdapter(api slackAPI, sessions Sessions, store Store, cfg Config) (*Adapter, error) {
	if sessions == nil || store == nil {
		return nil, errors.New("slack: sessions and a store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UpdateEvery <= 0 {
		cfg.UpdateEvery = time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	base, stop := context.WithCancel(context.Background())
	return &Adapter{
		api: api, sessions: sessions, store: store, cfg: cfg,
		log: cfg.Logger.With(attrPlatform, "slack"), metrics: newMetrics(cfg.Registry),
		caps: map[string]bool{}, base: base, stop: stop,
	}, nil
}

// Log attribute keys.
const (
	attrPlatform = "platform"
	attrSession  = "session_id"
	attrThread   = "thread"
	attrMethod   = "method"
)

// Name implements the bot's chat platform.
func (a *Adapter) Name() string { return "slack" }

// SocketMode reports whether Run holds a Socket Mode connection.
func (a *Adapter) SocketMode() bool { return a.cfg.AppToken != "" && a.client != nil }

// Run checks the bot token, holds the Socket Mode connection when there is an app token, and
// returns when ctx ends, after the work events started has finished (the sessions have
// drained by then, so that is quick).
func (a *Adapter) Run(ctx context.Context) error {
	defer func() {
		a.workMu.Lock()
		a.closed = true
		a.workMu.Unlock()
		a.stop()
		a.wg.Wait()
	}()
	if _, err := a.whoami(ctx); err != nil {
		var se slackgo.SlackErrorResponse
		if errors.As(err, &se) && (se.Err == "invalid_auth" || se.Err == "not_authed" || se.Err == "account_inactive" || se.Err == "token_revoked") {
			return fmt.Errorf("SLACK_BOT_TOKEN is not accepted by Slack (%s)", se.Err)
		}
		a.log.Warn("could not check the bot token; carrying on", "err", err)
	}
	if !a.SocketMode() {
		<-ctx.Done()
		return nil
	}
	return a.runSocket(ctx)
}

// whoami returns the bot's identity (auth.test), asking Slack once.
func (a *Adapter) whoami(ctx context.Context) (*slackgo.AuthTestResponse, error) {
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if a.identity != nil {
		return a.identity, nil
	}
	var id *slackgo.AuthTestResponse
	err := a.do(ctx, "auth.test", "", "", func(ctx context.Context) error {
		var err error
		id, err = a.api.AuthTestContext(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("auth.test: %w", err)
	}
	a.identity = id
	a.log.Info("connected to Slack", "team", id.Team, "team_id", id.TeamID, "bot_user", id.UserID)
	return id, nil
}

// botUserID is the bot's own user id, "" when Slack could not be asked.
func (a *Adapter) botUserID(ctx context.Context) string {
	id, err := a.whoami(ctx)
	if err != nil {
		return ""
	}
	return id.UserID
}

// workspaceURL is the workspace's web address, for permalinks.
func (a *Adapter) workspaceURL(ctx context.Context) string {
	id, err := a.whoami(ctx)
	if err != nil {
		return ""
	}
	return id.URL
}

// goWork runs f for an event after it was acknowledged, under the adapter's lifetime.
func (a *Adapter) goWork(f func(ctx context.Context)) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	if a.closed {
		a.log.Warn("shutting down: a Slack request is dropped")
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.base, 2*time.Minute)
		defer cancel()
		f(ctx)
	}()
}

// missing reports whether a capability (streaming, thread status) is known to be missing
// for key, here or, through Redis, on another replica.
func (a *Adapter) missing(ctx context.Context, key string) bool {
	a.capMu.Lock()
	known, ok := a.caps[key]
	a.capMu.Unlock()
	if ok {
		return known
	}
	v, err := a.store.Fetch(ctx, "slack:missing:"+key)
	if err != nil {
		return false
	}
	gone := v != nil
	a.capMu.Lock()
	a.caps[key] = gone
	a.capMu.Unlock()
	return gone
}

// setMissing records that a capability is missing for key, for a day (an admin may turn it
// on meanwhile).
func (a *Adapter) setMissing(ctx context.Context, key, why string) {
	a.capMu.Lock()
	a.caps[key] = true
	a.capMu.Unlock()
	if err := a.store.Put(ctx, "slack:missing:"+key, []byte(why), 24*time.Hour); err != nil {
		a.log.Warn("could not remember a missing Slack feature", "key", key, "err", err)
	}
	a.log.Info("Slack feature unavailable; using the fallback", "feature", key, "reason", why)
}
