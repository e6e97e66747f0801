package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// Config configures a Manager. Zero fields take their defaults.
type Config struct {
	Logger *slog.Logger
	// MaxPromptBytes bounds a prompt. Default 32 KiB.
	MaxPromptBytes int
	// PermissionMode is Claude Code's permission mode for new sandboxes ("" = the provider's).
	PermissionMode string
	// SandboxEnv is added to every new sandbox's environment.
	SandboxEnv map[string]string
	// StartTimeout bounds creating or waking a sandbox. Default 3 min.
	StartTimeout time.Duration
	// RelayReconnect is how long a lost relay connection is retried before the turn is given
	// up. Default 5 s.
	RelayReconnect time.Duration
	// DrainTimeout is how long shutdown waits for running turns to finish. Default 30 s.
	DrainTimeout time.Duration
	// StopSandboxesOnShutdown stops each live session's sandbox when the manager stops (for
	// providers whose sandboxes cannot outlive the bot).
	StopSandboxesOnShutdown bool
	// Unavailable, when set, makes every prompt fail with ErrUnavailable and this message
	// (for instance: Claude Code is not installed).
	Unavailable string
	// Metrics records what the manager does; nil records nothing.
	Metrics *Metrics
	// Admins may answer any session's permission requests and manage any session, as
	// "<platform>:<user id>".
	Admins []string
}

// Manager runs sessions: it takes prompts, makes sure each session's sandbox and relay are up,
// and writes everything that happens to the session's log. Create it with NewManager and call
// Run; Submit and the other methods are safe for concurrent use while Run runs.
type Manager struct {
	store    Store
	provider sandbox.Provider
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics

	base   context.Context // drivers run under it; cancelled when Run has drained
	cancel context.CancelFunc

	mu      sync.Mutex
	drivers map[string]*driver
	closing bool
	wg      sync.WaitGroup
}

// NewManager makes a Manager.
func NewManager(store Store, provider sandbox.Provider, cfg Config) (*Manager, error) {
	if store == nil || provider == nil {
		return nil, errors.New("session manager: a store and a sandbox provider are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPromptBytes <= 0 {
		cfg.MaxPromptBytes = 32 << 10
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 3 * time.Minute
	}
	if cfg.RelayReconnect <= 0 {
		cfg.RelayReconnect = 5 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Manager{
		store: store, provider: provider, cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics,
		base: base, cancel: cancel, drivers: map[string]*driver{},
	}, nil
}

// Labels sandboxes carry.
const (
	LabelSession = "nightona.session"
	LabelThread  = "nightona.thread"
)

// Run reconciles sandboxes with sessions, then waits for ctx to end and drains: new prompts
// are refused, running turns get DrainTimeout to finish streaming into their logs, and what
// is still running then is ended with a note in its log.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.reconcile(ctx); err != nil {
		m.log.Warn("reconciling sandboxes failed; orphans may remain", "err", err)
	}
	<-ctx.Done()
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.drain()
	m.cancel()
	m.wg.Wait()
	return nil
}

// reconcile deletes the sandboxes this provider holds for sessions the store no longer has.
func (m *Manager) reconcile(ctx context.Context) error {
	boxes, err := m.provider.List(ctx, nil)
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	removed := 0
	for _, sb := range boxes {
		id := sb.Labels[LabelSession]
		if id == "" {
			continue // not ours
		}
		if _, err := m.store.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			continue
		}
		if err := m.provider.Delete(ctx, sb.ID); err != nil {
			m.log.Warn("could not delete orphaned sandbox", "sandbox_id", sb.ID, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		m.log.Info("deleted sandboxes of sessions that no longer exist", "count", removed)
	}
	return nil
}

func (m *Manager) drain() {
	deadline := time.Now().Add(m.cfg.DrainTimeout)
	for time.Now().Before(deadline) {
		if m.runningTurns() == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.log.Warn("drain timeout: ending running turns", "turns", m.runningTurns())
}

func (m *Manager) runningTurns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, d := range m.drivers {
		n += d.pendingTurns()
	}
	return n
}

// Submitted says what became of a prompt.
type Submitted struct {
	Session *Session
	// PromptID identifies the prompt in the log.
	PromptID string
	// Seq is the prompt event's seq in the log.
	Seq int64
	// Queued is true when a turn was already running: the prompt runs after it.
	Queued bool
}

// Submit takes a user's prompt for a thread: it creates the thread's session on its first
// prompt, records the prompt in the log and hands it to the session's driver, which starts
// the sandbox if needed. It returns once the prompt is recorded; what follows shows in the log.
func (m *Manager) Submit(ctx context.Context, thread, user, text string) (*Submitted, error) {
	if strings.TrimSpace(text) == "" {
		return nil, ErrEmptyPrompt
	}
	if len(text) > m.cfg.MaxPromptBytes {
		m.metrics.prompts.WithLabelValues("too_large").Inc()
		return nil, fmt.Errorf("%w: it is %d bytes and the limit is %d bytes", ErrPromptTooLarge, len(text), m.cfg.MaxPromptBytes)
	}
	if m.cfg.Unavailable != "" {
		m.metrics.prompts.WithLabelValues("unavailable").Inc()
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, m.cfg.Unavailable)
	}
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return nil, fmt.Errorf("%w: the bot is restarting; send your prompt again in a minute", ErrUnavailable)
	}
	sess, err := m.store.ByThread(ctx, thread)
	if errors.Is(err, ErrNotFound) {
		sess, _, err = m.store.CreateForThread(ctx, &Session{
			ID: relay.NewID("ses"), Thread: thread, Owner: user, State: StateNew,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("submit prompt: %w", err)
	}
	p := Prompt{ID: relay.NewID("p"), User: user, Text: text}
	seq, err := m.store.Append(ctx, sess.ID, KindPrompt, mustJSON(p), nil)
	if err != nil {
		return nil, fmt.Errorf("submit prompt: %w", err)
	}
	d, err := m.driver(sess)
	if err != nil {
		return nil, err
	}
	queued := d.pendingTurns() > 0
	if err := d.enqueue(p); err != nil {
		return nil, err
	}
	m.metrics.prompts.WithLabelValues("accepted").Inc()
	m.log.Info("prompt submitted", "session_id", sess.ID, "thread", thread, "user", user, "bytes", len(text), "queued", queued)
	return &Submitted{Session: sess, PromptID: p.ID, Seq: seq, Queued: queued}, nil
}

// driver returns the session's driver, starting one if it has none.
func (m *Manager) driver(sess *Session) (*driver, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil, fmt.Errorf("%w: the bot is restarting; send your prompt again in a minute", ErrUnavailable)
	}
	if d, ok := m.drivers[sess.ID]; ok {
		return d, nil
	}
	d := newDriver(m, sess)
	m.drivers[sess.ID] = d
	m.metrics.activeSessions.Set(float64(len(m.drivers)))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		d.run(m.base)
		m.mu.Lock()
		delete(m.drivers, sess.ID)
		m.metrics.activeSessions.Set(float64(len(m.drivers)))
		m.mu.Unlock()
	}()
	return d, nil
}

// Interrupt stops the thread's running turn, if any.
func (m *Manager) Interrupt(ctx context.Context, thread string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	m.mu.Lock()
	d := m.drivers[sess.ID]
	m.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.interrupt(ctx)
}

// IsAdmin reports whether user is one of the configured admins.
func (m *Manager) IsAdmin(user string) bool {
	return slices.Contains(m.cfg.Admins, user)
}

// Decide answers a permission request of the thread's session, as user: the session's owner
// or an admin. The decision goes to Claude Code and into the log with who made it.
func (m *Manager) Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if user != sess.Owner && !m.IsAdmin(user) {
		return fmt.Errorf("%w: only the person who started this session or an admin may answer its permission requests", ErrForbidden)
	}
	m.mu.Lock()
	d := m.drivers[sess.ID]
	m.mu.Unlock()
	if d == nil {
		return fmt.Errorf("%w: the session is not running here", ErrNoSuchRequest)
	}
	return d.decide(ctx, requestID, user, allow, message)
}

// Session returns the thread's session (ErrNotFound if it has none).
func (m *Manager) Session(ctx context.Context, thread string) (*Session, error) {
	return m.store.ByThread(ctx, thread)
}

// Get returns a session by id.
func (m *Manager) Get(ctx context.Context, id string) (*Session, error) {
	return m.store.Get(ctx, id)
}

// Events reads the session's log after seq after, waiting up to block for new events.
func (m *Manager) Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]Event, error) {
	return m.store.Read(ctx, id, after, max, block)
}

// Ready reports whether sessions can run: the store answers and nothing makes them unavailable.
func (m *Manager) Ready(ctx context.Context) error {
	if m.cfg.Unavailable != "" {
		return fmt.Errorf("%w: %s", ErrUnavailable, m.cfg.Unavailable)
	}
	return m.store.Ping(ctx)
}
