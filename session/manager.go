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
	// ReplicaID names this bot replica in leases. Default: random.
	ReplicaID string
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
	// LeaseTTL is how long a replica's heartbeat, and with it its hold on its sessions, lasts
	// without renewal: the time another replica waits before it takes over the sessions of one
	// that died. Default 15 s.
	LeaseTTL time.Duration
	// IdleTimeout stops a session's sandbox after this long without a turn (the record is
	// kept; the next prompt wakes it). Default 30 min; negative: never.
	IdleTimeout time.Duration
	// ClosedRetention is how long a closed session's record and log are kept. Default 7 days.
	ClosedRetention time.Duration
	// EventBuffer bounds how many relay events a session keeps in memory while the store is
	// unreachable; past it, the relay's own buffer holds them. Default 10,000.
	EventBuffer int
	// DrainTimeout is how long shutdown waits for running turns to finish. Default 30 s.
	DrainTimeout time.Duration
	// StopSandboxesOnShutdown stops each driven session's sandbox when the manager stops (for
	// providers whose sandboxes cannot outlive the bot). Otherwise the sessions are left to
	// another replica, or to this one when it comes back.
	StopSandboxesOnShutdown bool
	// Unavailable, when set, makes every prompt fail with ErrUnavailable and this message
	// (for instance: Claude Code is not installed).
	Unavailable string
	// Metrics records what the manager does; nil records nothing.
	Metrics *Metrics
	// Admins may answer any session's permission requests and manage any session, as
	// "<platform>:<user id>".
	Admins []string
	// PreviewTTL is how long a signed link to a private preview lasts. Default 24 h (Daytona's
	// longest).
	PreviewTTL time.Duration
}

// AddFollower adds f to the followers of the sessions this replica drives. Call it before Run.
func (m *Manager) AddFollower(f Follower) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.followers = append(m.followers, f)
}

// Follower shows a session somewhere, a chat thread say. Follow runs from when this replica
// takes the session until it lets go, when ctx ends; it should then show the last state and
// return. It decides itself whether the session is one of its own (by the thread key).
type Follower interface {
	Follow(ctx context.Context, sess *Session)
}

// Manager runs sessions: it takes prompts into each session's inbox, and for the sessions this
// replica holds the lease on it makes sure the sandbox and relay are up, feeds the prompts to
// Claude one turn at a time, and writes everything that happens to the session's log. Create it
// with NewManager and call Run; the other methods are safe for concurrent use while Run runs.
type Manager struct {
	store    Store
	provider sandbox.Provider
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics

	base   context.Context // drivers run under it; cancelled when Run has drained
	cancel context.CancelFunc

	mu        sync.Mutex
	followers []Follower
	drivers   map[string]*driver
	closing   bool
	wg        sync.WaitGroup
}

// NewManager makes a Manager.
func NewManager(store Store, provider sandbox.Provider, cfg Config) (*Manager, error) {
	if store == nil || provider == nil {
		return nil, errors.New("session manager: a store and a sandbox provider are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = relay.NewID("replica")
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
	if cfg.PreviewTTL <= 0 {
		cfg.PreviewTTL = 24 * time.Hour
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.ClosedRetention <= 0 {
		cfg.ClosedRetention = 7 * 24 * time.Hour
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 10000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Manager{
		store: store, provider: provider, cfg: cfg, log: cfg.Logger.With("replica", cfg.ReplicaID),
		metrics: cfg.Metrics, base: base, cancel: cancel, drivers: map[string]*driver{},
	}, nil
}

// Labels sandboxes carry.
const (
	LabelSession = "nightona.session"
	LabelThread  = "nightona.thread"
)

// Run reconciles sandboxes with sessions, takes over the active sessions no replica drives
// (now, and whenever a replica's lease runs out), and when ctx ends drains: new prompts are
// refused, running turns get DrainTimeout to finish streaming into their logs, and what is
// still running then is ended with a note in its log (or, where sandboxes outlive the bot, left
// for the next replica to carry on).
func (m *Manager) Run(ctx context.Context) error {
	m.heartbeat(ctx)
	if err := m.reconcile(ctx); err != nil {
		m.log.Warn("reconciling sandboxes failed; orphans may remain", "err", err)
	}
	m.takeOver(ctx)
	// A dead replica's heartbeat runs out at most LeaseTTL after its last renewal; looking ten
	// times a period keeps the takeover close to that.
	scan := time.NewTicker(min(max(m.cfg.LeaseTTL/10, 100*time.Millisecond), time.Second))
	defer scan.Stop()
	beat := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer beat.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-beat.C:
			m.heartbeat(ctx)
			m.checkLeases(ctx)
		case <-scan.C:
			m.takeOver(ctx)
		}
	}
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.drain()
	m.cancel()
	m.wg.Wait()
	return nil
}

// heartbeat keeps this replica's leases: one write for all of them.
func (m *Manager) heartbeat(ctx context.Context) {
	if err := m.store.Heartbeat(ctx, m.cfg.ReplicaID, m.cfg.LeaseTTL); err != nil {
		m.log.Warn("heartbeat failed; the sessions this replica drives may be taken over", "err", err)
	}
}

// checkLeases stops the drivers whose session another replica has taken over (this replica
// stalled past its heartbeat, say) even if they have nothing to write that would tell them.
func (m *Manager) checkLeases(ctx context.Context) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.drivers))
	drivers := make([]*driver, 0, len(m.drivers))
	for id, d := range m.drivers {
		if d.held.Load() > 0 {
			ids = append(ids, id)
			drivers = append(drivers, d)
		}
	}
	m.mu.Unlock()
	leases, err := m.store.Leases(ctx, ids)
	if err != nil {
		return
	}
	for i, l := range leases {
		if l.Owner != m.cfg.ReplicaID || l.Fence != drivers[i].held.Load() {
			drivers[i].leaseLost()
		}
	}
}

// takeOver starts a driver for every active session that no live replica holds.
func (m *Manager) takeOver(ctx context.Context) {
	ids, err := m.store.Active(ctx)
	if err != nil || len(ids) == 0 {
		return
	}
	m.mu.Lock()
	ids = slices.DeleteFunc(ids, func(id string) bool { _, ok := m.drivers[id]; return ok })
	m.mu.Unlock()
	leases, err := m.store.Leases(ctx, ids)
	if err != nil {
		return
	}
	for i, id := range ids {
		l := leases[i]
		// A lease in this replica's own name with no driver here is an earlier run's of this
		// replica (restarted with the same NIGHTONA_REPLICA_ID): no need to wait for it.
		if l.Owner == "" || !l.Alive || l.Owner == m.cfg.ReplicaID {
			m.log.Info("taking over a session no replica drives", "session_id", id, "previous", l.Owner)
			m.startDriver(id)
		}
	}
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
		sess, err := m.store.Get(ctx, id)
		if err == nil && sess.State != StateClosed && sess.SandboxID == sb.ID {
			continue
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			continue // the store is away: decide nothing now
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
	// PromptID identifies the prompt in the log and the inbox.
	PromptID string
	// Seq is the prompt event's seq in the log.
	Seq int64
	// Ahead is how many prompts wait before this one; Queued is true when it must wait for a
	// running turn or for them.
	Ahead  int
	Queued bool
}

// Submit takes a user's prompt for a thread: it creates the thread's session on its first
// prompt, puts the prompt in the session's inbox (and in its log), and makes sure a replica
// drives the session. It returns once the prompt is stored; what follows shows in the log.
func (m *Manager) Submit(ctx context.Context, thread, user, text string) (*Submitted, error) {
	return m.SubmitWith(ctx, thread, user, text, Settings{})
}

// Settings are what a new session starts with; zero fields take the bot's defaults.
type Settings struct {
	// PermissionMode is Claude Code's permission mode (relay.PermissionModes).
	PermissionMode string
	// Model is Claude Code's model or alias ("sonnet", "claude-opus-4-1").
	Model string
}

// SubmitWith is Submit for a thread whose session, if this prompt creates it, starts with
// settings (a channel's, say). A session that exists keeps its own.
func (m *Manager) SubmitWith(ctx context.Context, thread, user, text string, settings Settings) (*Submitted, error) {
	if err := settings.check(); err != nil {
		return nil, err
	}
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
	if m.isClosing() {
		return nil, fmt.Errorf("%w: the bot is restarting; send your prompt again in a minute", ErrUnavailable)
	}
	sess, err := m.store.ByThread(ctx, thread)
	if errors.Is(err, ErrNotFound) {
		sess, _, err = m.store.CreateForThread(ctx, &Session{
			ID: relay.NewID("ses"), Thread: thread, Owner: user, State: StateNew,
			PermissionMode: settings.PermissionMode, Model: settings.Model,
		})
	}
	if err != nil {
		m.metrics.prompts.WithLabelValues("store_down").Inc()
		return nil, fmt.Errorf("submit prompt: %w", err)
	}
	p := Prompt{ID: relay.NewID("p"), User: user, Text: text}
	_, ahead, seq, err := m.store.Enqueue(ctx, sess.ID, p, mustJSON(p))
	if err != nil {
		return nil, fmt.Errorf("submit prompt: %w", err)
	}
	if err := m.store.SetActive(ctx, sess.ID, true); err != nil {
		return nil, fmt.Errorf("submit prompt: %w", err)
	}
	m.startDriver(sess.ID)
	m.metrics.prompts.WithLabelValues("accepted").Inc()
	queued := ahead > 0 || sess.State == StateRunning
	m.log.Info("prompt submitted", "session_id", sess.ID, "thread", thread, "user", user, "bytes", len(text), "ahead", ahead)
	return &Submitted{Session: sess, PromptID: p.ID, Seq: seq, Ahead: ahead, Queued: queued}, nil
}

func (m *Manager) isClosing() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closing
}

// Wake starts the thread's sandbox (and Claude Code in it) without a prompt, as user: the
// session's owner or an admin. It returns once the wake is under way; progress and failure
// show in the log. A session another replica drives is up already, and is left alone.
func (m *Manager) Wake(ctx context.Context, thread, user string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if err := m.mayManage(sess, user, "wake its sandbox"); err != nil {
		return err
	}
	if sess.State == StateClosed {
		return fmt.Errorf("%w: this session is closed; start a new thread", ErrUnavailable)
	}
	if err := m.store.SetActive(ctx, sess.ID, true); err != nil {
		return fmt.Errorf("wake session %s: %w", sess.ID, err)
	}
	m.startDriver(sess.ID, func(d *driver) { d.wantSandbox.Store(true) })
	m.log.Info("wake asked", "session_id", sess.ID, "by", user)
	return nil
}

// startDriver starts a driver for the session unless this replica runs one; a running one is
// woken to look at its inbox. The driver gives up at once if another replica holds the lease.
// prepare, if given, sets the driver up before it is woken.
func (m *Manager) startDriver(id string, prepare ...func(*driver)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return
	}
	if d, ok := m.drivers[id]; ok {
		for _, p := range prepare {
			p(d)
		}
		d.kicked.Store(true)
		d.wake()
		return
	}
	d := newDriver(m, id)
	for _, p := range prepare {
		p(d)
	}
	m.drivers[id] = d
	m.metrics.activeSessions.Set(float64(len(m.drivers)))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		d.run(m.base)
		close(d.exited)
		m.mu.Lock()
		delete(m.drivers, id)
		m.metrics.activeSessions.Set(float64(len(m.drivers)))
		again := d.kicked.Load() && !m.closing
		m.mu.Unlock()
		if again {
			// Woken after its last look: the next driver carries out what was asked.
			want := d.wantSandbox.Load()
			m.startDriver(id, func(n *driver) {
				if want {
					n.wantSandbox.Store(true)
				}
			})
		}
	}()
}

func (m *Manager) driverOf(id string) *driver {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drivers[id]
}

// IsAdmin reports whether user is one of the configured admins.
func (m *Manager) IsAdmin(user string) bool {
	return slices.Contains(m.cfg.Admins, user)
}

// mayManage checks that user owns the session or is an admin.
func (m *Manager) mayManage(sess *Session, user, what string) error {
	if user == sess.Owner || m.IsAdmin(user) {
		return nil
	}
	return fmt.Errorf("%w: only the person who started this session or an admin may %s", ErrForbidden, what)
}

// Decide answers a permission request of the thread's session, as user: the session's owner
// or an admin. The decision goes to Claude Code and into the log with who made it.
func (m *Manager) Decide(ctx context.Context, thread, requestID, user string, allow bool, message string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if err := m.mayManage(sess, user, "answer its permission requests"); err != nil {
		return err
	}
	if d := m.driverOf(sess.ID); d != nil {
		return d.decide(ctx, requestID, user, allow, message)
	}
	elsewhere, err := m.drivenElsewhere(ctx, sess.ID)
	if err != nil {
		return err
	}
	if !elsewhere {
		return fmt.Errorf("%w: the session is not running", ErrNoSuchRequest)
	}
	return m.sendControl(ctx, sess.ID, control{Kind: controlDecide, RequestID: requestID, User: user, Allow: allow, Message: message})
}

// Interrupt stops the turn of the thread's prompt promptID, or with promptID "" the current
// one: the turn that runs, or, if none does yet, the prompt that is on its way to Claude or
// waits for it (withdrawn before Claude starts on it). Wherever the session is driven, the
// Stop reaches it; pressed the moment a prompt is sent, it is not lost. A Stop for a prompt
// whose turn is over does nothing: a button pressed as its turn ended leaves the next alone.
func (m *Manager) Interrupt(ctx context.Context, thread, promptID string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	for range 3 {
		if d := m.driverOf(sess.ID); d != nil {
			return d.interrupt(ctx, promptID)
		}
		elsewhere, err := m.drivenElsewhere(ctx, sess.ID)
		if err != nil {
			return err
		}
		if elsewhere {
			return m.sendControl(ctx, sess.ID, control{Kind: controlInterrupt, PromptID: promptID})
		}
		// No replica drives it: the prompt that waits, if any, is withdrawn before one takes it.
		e, err := m.waitingEntry(ctx, sess.ID, promptID)
		if err != nil || e == nil {
			return err
		}
		if ok, err := m.withdraw(ctx, sess.ID, e.Prompt.ID, stoppedBeforeStart); ok || err != nil {
			return err
		}
		// A driver took it meanwhile: stop it there.
	}
	return nil
}

// waitingEntry returns the inbox entry of the session's prompt promptID while it waits, or
// with promptID "" the first prompt that waits; nil for none.
func (m *Manager) waitingEntry(ctx context.Context, id, promptID string) (*InboxEntry, error) {
	sess, err := m.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	entries, err := m.store.Inbox(ctx, id, sess.InboxDone)
	if err != nil {
		return nil, err
	}
	for i := range entries {
		if !entries[i].Cancelled && (promptID == "" || entries[i].Prompt.ID == promptID) {
			return &entries[i], nil
		}
	}
	return nil, nil
}

// stoppedBeforeStart is what the log says of a prompt stopped before Claude began on it.
const stoppedBeforeStart = "Stopped before Claude started on it."

// withdraw cancels a prompt that waits in the session's inbox and says so in its log, once:
// false, and nothing logged, when it was no longer waiting.
func (m *Manager) withdraw(ctx context.Context, id, promptID, message string) (bool, error) {
	ok, err := m.store.Cancel(ctx, id, promptID)
	if err != nil || !ok {
		return false, err
	}
	if _, err := m.store.Append(ctx, id, KindStatus, mustJSON(Status{Stage: StagePromptCancelled, PromptID: promptID,
		Message: message}), nil, 0); err != nil {
		m.log.Warn("could not log a withdrawn prompt", "session_id", id, "err", err)
	}
	return true, nil
}

// CancelPrompt withdraws a prompt that still waits in the thread's inbox, for the user who sent
// it, the session's owner or an admin. False when it is no longer waiting.
func (m *Manager) CancelPrompt(ctx context.Context, thread, promptID, user string) (bool, error) {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return false, err
	}
	entries, err := m.store.Inbox(ctx, sess.ID, sess.InboxDone)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.Prompt.ID == promptID && e.Prompt.User != user {
			if err := m.mayManage(sess, user, "cancel someone else's prompt"); err != nil {
				return false, err
			}
		}
	}
	ok, err := m.withdraw(ctx, sess.ID, promptID, "A queued prompt was cancelled by "+user+".")
	if err != nil || !ok {
		return false, err
	}
	if d := m.driverOf(sess.ID); d != nil {
		d.wake()
	}
	return true, nil
}

// Stop stops the thread's sandbox (the record is kept; the next prompt wakes it).
func (m *Manager) Stop(ctx context.Context, thread, user string) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if err := m.mayManage(sess, user, "stop it"); err != nil {
		return err
	}
	if d := m.driverOf(sess.ID); d != nil {
		if err := d.stopSandbox(ctx, "stopped by "+user); !errors.Is(err, errDriverGone) {
			return err
		}
	}
	// The replica that drives the session stops it, so that its turn ends as a stop and not
	// as a lost sandbox.
	if elsewhere, err := m.drivenElsewhere(ctx, sess.ID); err != nil {
		return err
	} else if elsewhere {
		return m.sendControl(ctx, sess.ID, control{Kind: controlStop, User: user})
	}
	if sess.SandboxID != "" {
		if err := m.provider.Stop(ctx, sess.SandboxID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("stop sandbox %s: %w", sess.SandboxID, err)
		}
	}
	if _, err := m.store.Transition(ctx, sess.ID, StateStopped, AllowedFrom(StateStopped), "stopped by "+user, 0); err != nil && !errors.Is(err, ErrIllegalTransition) {
		return err
	}
	return m.store.SetActive(ctx, sess.ID, false)
}

// Destroy deletes the thread's session: its sandbox, its record and its log. The thread starts
// afresh.
func (m *Manager) Destroy(ctx context.Context, thread, user string) error {
	return m.end(ctx, thread, user, true)
}

// Close ends the thread's session: its sandbox is deleted and the thread starts afresh, while
// the record and log are kept for ClosedRetention.
func (m *Manager) Close(ctx context.Context, thread, user string) error {
	return m.end(ctx, thread, user, false)
}

func (m *Manager) end(ctx context.Context, thread, user string, destroy bool) error {
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	what := "close it"
	if destroy {
		what = "destroy it"
	}
	if err := m.mayManage(sess, user, what); err != nil {
		return err
	}
	if d := m.driverOf(sess.ID); d != nil {
		d.quit() // it stops driving and lets go of the lease, without touching the record
	}
	if err := m.store.SetActive(ctx, sess.ID, false); err != nil {
		return err
	}
	if sess.SandboxID != "" {
		if err := m.provider.Delete(ctx, sess.SandboxID); err != nil {
			return fmt.Errorf("delete sandbox %s: %w", sess.SandboxID, err)
		}
	}
	if destroy {
		m.log.Info("session destroyed", "session_id", sess.ID, "by", user)
		return m.store.Delete(ctx, sess.ID)
	}
	if _, err := m.store.Append(ctx, sess.ID, KindStatus, mustJSON(Status{Stage: StageClosed,
		Message: "This session was closed by " + user + ". A new prompt in the thread starts a new one."}), nil, 0); err != nil {
		return err
	}
	m.log.Info("session closed", "session_id", sess.ID, "by", user)
	return m.store.Close(ctx, sess.ID, m.cfg.ClosedRetention)
}

func (s Settings) check() error {
	if s.PermissionMode != "" && !slices.Contains(relay.PermissionModes, s.PermissionMode) {
		return fmt.Errorf("%w: unknown permission mode %q (use %s)", ErrBadSetting, s.PermissionMode, strings.Join(relay.PermissionModes, ", "))
	}
	if s.Model != "" && !relay.ValidModel(s.Model) {
		return fmt.Errorf("%w: %q is not a model name (try sonnet, opus, haiku or a full name like claude-sonnet-4-5)", ErrBadSetting, s.Model)
	}
	return nil
}

// SetModel changes the model of the thread's session, now (if its agent runs) and for later
// starts.
func (m *Manager) SetModel(ctx context.Context, thread, user, model string) error {
	if model == "" {
		return fmt.Errorf("%w: name a model", ErrBadSetting)
	}
	if err := (Settings{Model: model}).check(); err != nil {
		return err
	}
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if err := m.mayManage(sess, user, "change its model"); err != nil {
		return err
	}
	if err := m.store.Update(ctx, sess.ID, Update{Model: &model}, 0); err != nil {
		return err
	}
	if d := m.driverOf(sess.ID); d != nil {
		return d.setModel(ctx, model)
	}
	return nil
}

// SetPermissionMode changes the permission mode of the thread's session, now (if its agent
// runs) and for later starts.
func (m *Manager) SetPermissionMode(ctx context.Context, thread, user, mode string) error {
	if mode == "" {
		return fmt.Errorf("%w: name a permission mode (%s)", ErrBadSetting, strings.Join(relay.PermissionModes, ", "))
	}
	if err := (Settings{PermissionMode: mode}).check(); err != nil {
		return err
	}
	sess, err := m.store.ByThread(ctx, thread)
	if err != nil {
		return err
	}
	if err := m.mayManage(sess, user, "change its permission mode"); err != nil {
		return err
	}
	if err := m.store.Update(ctx, sess.ID, Update{PermissionMode: &mode}, 0); err != nil {
		return err
	}
	if d := m.driverOf(sess.ID); d != nil {
		return d.setMode(ctx, mode)
	}
	return nil
}

// Session returns the thread's session (ErrNotFound if it has none).
func (m *Manager) Session(ctx context.Context, thread string) (*Session, error) {
	return m.store.ByThread(ctx, thread)
}

// Get returns a session by id.
func (m *Manager) Get(ctx context.Context, id string) (*Session, error) {
	return m.store.Get(ctx, id)
}

// List returns every session.
func (m *Manager) List(ctx context.Context) ([]*Session, error) {
	return m.store.List(ctx)
}

// Transitions returns the recorded state changes of a session, newest first.
func (m *Manager) Transitions(ctx context.Context, id string) ([]Transition, error) {
	return m.store.Transitions(ctx, id)
}

// Usage returns the usage of a user or channel (scope "user", "channel", or "all") on a day.
func (m *Manager) Usage(ctx context.Context, scope, key string, day time.Time) (Usage, error) {
	return m.store.UsageOn(ctx, scope, key, day)
}

// UsageBy returns the usage of every user (scope "user") or channel ("channel") that used
// anything on a day, by key.
func (m *Manager) UsageBy(ctx context.Context, scope string, day time.Time) (map[string]Usage, error) {
	return m.store.UsageBy(ctx, scope, day)
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
