// Package discord adapts Nightona to Discord. A mention of the bot in a channel opens a thread
// from that message and starts a session in it; messages in the thread continue it, and DMs
// work the same way without threads. Each session is shown in its thread as Claude works:
// messages edited as text streams in (paced by Discord's rate-limit headers, which every
// replica shares through Redis), tool calls as compact lines, permission requests with Approve
// and Deny buttons, the result as an embed with duration, turns and cost, and buttons to stop
// the turn, open the preview and open the companion page. /nightona manages sessions and
// channel settings.
//
// Events come over the Gateway (held by Run, resumed after drops); interactions come over the
// Gateway or, when the application has an interactions endpoint, over HTTP through
// Adapter.Interaction. This is the only package that speaks Discord's API; it uses discordgo
// for Discord's types and its own REST and Gateway clients for the connections, so that both
// follow a context, share rate limits across replicas, and resume where Discord says to.
package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightona/nightona/session"
)

// Sessions is what the adapter needs of the session manager (*session.Manager). Its methods
// are safe for concurrent use and return the session package's errors (session.ErrForbidden,
// ErrNotFound, ErrPromptTooLarge...), which the adapter words for users.
type Sessions interface {
	SubmitWith(ctx context.Context, thread, user, text string, settings session.Settings) (*session.Submitted, error)
	Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error
	Interrupt(ctx context.Context, thread, promptID string) error
	CancelPrompt(ctx context.Context, thread, promptID, user string) (bool, error)
	Stop(ctx context.Context, thread, user string) error
	Destroy(ctx context.Context, thread, user string) error
	Close(ctx context.Context, thread, user string) error
	Session(ctx context.Context, thread string) (*session.Session, error)
	List(ctx context.Context) ([]*session.Session, error)
	Usage(ctx context.Context, scope, key string, day time.Time) (session.Usage, error)
	UsageBy(ctx context.Context, scope string, day time.Time) (map[string]session.Usage, error)
	IsAdmin(user string) bool
	Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)
}

// Store is what the adapter keeps in Redis, shared by every replica (*redisstore.Store): rate
// budgets, handled deliveries, and small values (what each thread shows, channel settings).
// Its methods are safe for concurrent use; an error means the store is away.
type Store interface {
	Budgets
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Fetch(ctx context.Context, key string) ([]byte, error)
}

// Config configures an Adapter. Zero fields take their defaults.
type Config struct {
	// Token is the bot's token. Required.
	Token string
	// AppID is the application's id: with it, Run registers /nightona (a bulk overwrite of
	// the application's global commands). Without it, the id READY gives is used to answer
	// interactions, and no command is registered.
	AppID string
	// APIURL is the REST API's base. Default DefaultAPIURL.
	APIURL string
	// HTTPClient makes the REST calls. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Dialer opens the Gateway's WebSocket. Default: websocket.DefaultDialer.
	Dialer *websocket.Dialer
	Logger *slog.Logger
	// Registerer gets the adapter's metrics (nil: not exported).
	Registerer prometheus.Registerer
	// CompanionLink returns the companion page of a session (nil: no companion button).
	CompanionLink func(sessionID string) string
	// DashboardLink returns a one-time login to the admin dashboard for an admin (nil: no
	// /nightona dashboard).
	DashboardLink func(user string) string
	// UpdateEvery is the least time between two edits of a streaming answer. Default 1 s.
	UpdateEvery time.Duration
	// GlobalRate is the requests a second all replicas together make, under Discord's
	// global limit of 50. Default 45.
	GlobalRate float64
	// AnswerWithin is how long an interaction's work may take before it is answered with a
	// deferral and finished later: Discord waits three seconds for the first answer.
	// Default 2 s.
	AnswerWithin time.Duration
	// Version goes into the User-Agent Discord asks bots to send.
	Version string
}

// Adapter connects Nightona to Discord. Create it with New; it implements session.Follower,
// and Run holds the Gateway.
type Adapter struct {
	sessions Sessions
	store    Store
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	api      *rest
	gw       *gateway

	mu    sync.Mutex
	appID string
	botID string

	// Background work (interaction work finished after a deferral, dispatches) runs under
	// base and is waited for by Run.
	base    context.Context
	stop    context.CancelFunc
	bgMu    sync.RWMutex // Add under RLock; closing and Wait under Lock
	bg      sync.WaitGroup
	closing bool
	workers []chan func(context.Context)
}

var _ session.Follower = (*Adapter)(nil)

// New returns an adapter for the bot with cfg.Token.
func New(sessions Sessions, store Store, cfg Config) (*Adapter, error) {
	if sessions == nil || store == nil {
		return nil, errors.New("discord: a session manager and a store are required")
	}
	if cfg.Token == "" {
		return nil, errors.New("discord: a bot token is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Dialer == nil {
		cfg.Dialer = websocket.DefaultDialer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UpdateEvery <= 0 {
		cfg.UpdateEvery = time.Second
	}
	if cfg.GlobalRate <= 0 {
		cfg.GlobalRate = 45
	}
	if cfg.AnswerWithin <= 0 {
		cfg.AnswerWithin = 2 * time.Second
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	log := cfg.Logger.With("platform", platform)
	m := newMetrics(cfg.Registerer)
	a := &Adapter{sessions: sessions, store: store, cfg: cfg, log: log, metrics: m, appID: cfg.AppID}
	a.api = &rest{
		base: cfg.APIURL, token: cfg.Token, client: cfg.HTTPClient, log: log, metrics: m,
		agent:   "DiscordBot (https://github.com/nightona/nightona, " + cfg.Version + ")",
		limiter: newLimiter(store, cfg.GlobalRate, log, m),
	}
	a.gw = &gateway{token: cfg.Token, locate: a.api.gatewayBot, dialer: cfg.Dialer, log: log, metrics: m, handle: a.dispatch}
	a.base, a.stop = context.WithCancel(context.Background())
	// Dispatches go to a few workers by channel: one channel's messages keep their order,
	// and a slow one does not hold up the others.
	a.workers = make([]chan func(context.Context), 8)
	for i := range a.workers {
		a.workers[i] = make(chan func(context.Context), 256)
	}
	return a, nil
}

// Run holds the Gateway until ctx ends, registering /nightona first when an application id
// is configured. It returns nil when ctx ends, or an error that reconnecting cannot fix (a
// refused token, refused intents). Work in flight gets a few seconds to finish.
func (a *Adapter) Run(ctx context.Context) error {
	var workers sync.WaitGroup
	for _, w := range a.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for {
				select {
				case <-a.base.Done():
					return
				case job := <-w:
					job(a.base)
				}
			}
		}()
	}
	defer func() {
		// Let interaction work and dispatches in flight finish, briefly.
		a.bgMu.Lock()
		a.closing = true
		a.bgMu.Unlock()
		done := make(chan struct{})
		go func() { a.bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			a.log.Warn("Discord work still running at shutdown was cut short")
		}
		a.stop()
		workers.Wait()
	}()
	if a.cfg.AppID != "" {
		if err := a.registerCommands(ctx); err != nil {
			var apiErr *APIError
			if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
				return fmt.Errorf("register /nightona: Discord refused the bot token: check DISCORD_BOT_TOKEN (%w)", err)
			}
			a.log.Error("could not register /nightona; the command will not work until the bot restarts", "err", err)
		}
	}
	return a.gw.run(ctx)
}

// background runs f beside the caller, under the adapter's context; Run waits for it when it
// ends. Once Run is ending, f gets a short context of its own instead.
func (a *Adapter) background(f func(ctx context.Context)) {
	if !a.track() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			f(ctx)
		}()
		return
	}
	go func() {
		defer a.bg.Done()
		f(a.base)
	}()
}

// track counts one more piece of background work, unless Run is ending.
func (a *Adapter) track() bool {
	a.bgMu.RLock()
	defer a.bgMu.RUnlock()
	if a.closing {
		return false
	}
	a.bg.Add(1)
	return true
}

// enqueue runs job on the worker of channel, in order with that channel's other jobs.
func (a *Adapter) enqueue(channel string, job func(ctx context.Context)) {
	h := fnv.New32a()
	h.Write([]byte(channel))
	w := a.workers[h.Sum32()%uint32(len(a.workers))]
	if !a.track() {
		return // the Gateway has stopped; nothing is taken in any more
	}
	wrapped := func(ctx context.Context) { defer a.bg.Done(); job(ctx) }
	select {
	case w <- wrapped:
	default:
		// A backed-up worker: run this one beside it rather than stall the Gateway.
		go wrapped(a.base)
	}
}

// dispatch takes a Gateway event. It runs on the Gateway's reading goroutine: anything that
// waits goes to a worker.
func (a *Adapter) dispatch(event string, data json.RawMessage) {
	switch event {
	case "READY":
		var r struct {
			User        discordgo.User `json:"user"`
			Application struct {
				ID string `json:"id"`
			} `json:"application"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			a.log.Error("a READY that does not decode", "err", err)
			return
		}
		a.mu.Lock()
		a.botID = r.User.ID
		if a.appID == "" {
			a.appID = r.Application.ID
		}
		a.mu.Unlock()
	case "MESSAGE_CREATE":
		var m discordgo.Message
		if err := json.Unmarshal(data, &m); err != nil {
			a.log.Warn("a MESSAGE_CREATE that does not decode", "err", err)
			return
		}
		a.enqueue(m.ChannelID, func(ctx context.Context) { a.onMessage(ctx, &m) })
	case "INTERACTION_CREATE":
		raw := append(json.RawMessage(nil), data...)
		a.background(func(ctx context.Context) { a.onGatewayInteraction(ctx, raw) })
	case "THREAD_DELETE":
		var ch struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data, &ch) == nil {
			a.enqueue(ch.ID, func(ctx context.Context) { a.onThreadDeleted(ctx, ch.ID) })
		}
	}
}

func (a *Adapter) ids() (appID, botID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.appID, a.botID
}

// Connected reports whether the Gateway is connected now, and a word about it.
func (a *Adapter) Connected() (bool, string) {
	why, _ := a.gw.why.Load().(string)
	if why == "" {
		why = "connecting to the Gateway"
	}
	return a.gw.up.Load(), why
}
