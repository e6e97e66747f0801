package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// driver drives one session from this replica while it holds the session's lease: it brings
// the sandbox and the relay up, takes prompts from the inbox one turn at a time, and logs every
// relay event exactly once. Its loop runs on one goroutine (run); the relay client's reader
// runs on another and shares only what mu and bmu guard. Every write it makes to the store
// carries its fencing token, so once another replica has taken the session over it can change
// nothing.
type driver struct {
	m   *Manager
	id  string
	log *slog.Logger

	wakeCh  chan struct{}    // the inbox may have news
	turnCh  chan struct{}    // a turn ended
	quitCh  chan struct{}    // quit was called
	lostCh  chan struct{}    // the lease was lost
	stopCh  chan stopRequest // stop the sandbox, from another goroutine
	exited  chan struct{}    // closed when the loop has returned
	quitOne sync.Once
	lostOne sync.Once

	// wantSandbox asks for the sandbox to be up with no prompt (Manager.Wake).
	wantSandbox atomic.Bool
	// kicked: the manager woke the driver and the loop has not looked since. A driver that
	// ends kicked may have been asked something after its last look (a wake while it was
	// letting go, say), so the manager starts the session's next driver to carry it out.
	kicked atomic.Bool

	fence     int64        // set once by acquire, read by the driver's goroutines
	held      atomic.Int64 // the fence, for the manager's lease check
	inboxDone string       // owned by the loop

	mu      sync.Mutex
	pending int // turns sent and not yet ended
	// finishing counts results received and not yet acted on: their turns are over in the
	// relay, though not yet in the log. A Stop then is for the next prompt, not for them.
	finishing int
	client    *relay.Client // nil while not connected
	relayID   string        // the relay the client reads; set on connect
	claudeID  string        // Claude Code's session id, as last seen
	lastCost  float64       // the agent process's running total_cost_usd
	turnStart time.Time
	turnUser  string
	preview   string
	// previewPrivate: the preview needs a header a browser cannot send, so people get a
	// signed link to it instead (of sandboxID).
	previewPrivate bool
	sandboxID      string
	previewShown   bool // the user was told the preview is ready, and not since that it crashed
	crashShown     bool // the last crash was reported: a crash loop is not repeated
	hadTurn        bool // the session's state was running when this driver took it over

	// delivering is the inbox entry the loop is delivering (bringing the sandbox up for it,
	// sending it), "" between deliveries; sent is the last entry the relay took, sentPrompt
	// its prompt. stopped holds the entries a Stop came for before the relay took them: the
	// loop withdraws them, or interrupts the turn the moment the relay has it. All of these
	// change only under mu, so a Stop and the loop agree on which of them deals with an entry.
	delivering       string
	deliveringPrompt string
	sent             string
	sentPrompt       string
	stopped          map[string]bool

	events eventBuffer
	busy   atomic.Bool // the loop is delivering a prompt
}

type stopRequest struct {
	cause string
	done  chan error
}

func newDriver(m *Manager, id string) *driver {
	return &driver{
		m: m, id: id, log: m.log.With("session_id", id),
		wakeCh: make(chan struct{}, 1), turnCh: make(chan struct{}, 1),
		quitCh: make(chan struct{}), lostCh: make(chan struct{}), stopCh: make(chan stopRequest),
		exited: make(chan struct{}),
	}
}

func (d *driver) pendingTurns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}

func (d *driver) wake() {
	select {
	case d.wakeCh <- struct{}{}:
	default:
	}
}

// quit makes the driver stop at once, writing nothing more (the session is being ended).
func (d *driver) quit() { d.quitOne.Do(func() { close(d.quitCh) }) }

// leaseLost is called when a write was refused for a stale fence, or a renewal failed.
func (d *driver) leaseLost() {
	d.lostOne.Do(func() {
		d.log.Warn("another replica took this session over; stopping here")
		d.m.metrics.leaseLost.Inc()
		close(d.lostCh)
	})
}

func (d *driver) isLost() bool {
	select {
	case <-d.lostCh:
		return true
	default:
		return false
	}
}

// run is the driver's loop. It returns when the manager stops, the session is ended, the lease
// is lost, the sandbox stops, or the session has nothing left to do.
func (d *driver) run(ctx context.Context) {
	if !d.acquire(ctx) {
		return
	}
	var conn *relayConn
	defer func() {
		if conn != nil {
			conn.stop()
			<-conn.dead
		}
		if !d.isLost() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = d.m.store.ReleaseLease(ctx, d.id, d.m.cfg.ReplicaID, d.fence)
			cancel()
		}
	}()
	sess, err := d.m.store.Get(ctx, d.id)
	if err != nil {
		d.log.Warn("could not load the session", "err", err)
		return
	}
	d.log = d.log.With("thread", sess.Thread)
	d.inboxDone = sess.InboxDone
	fctx, stopFollowers := context.WithCancel(context.WithoutCancel(ctx))
	var followers sync.WaitGroup
	d.m.mu.Lock()
	fs := slices.Clone(d.m.followers)
	d.m.mu.Unlock()
	for _, f := range fs {
		followers.Add(1)
		go func() { defer followers.Done(); f.Follow(fctx, sess) }()
	}
	defer func() { stopFollowers(); followers.Wait() }()
	d.mu.Lock()
	d.claudeID = sess.ClaudeSessionID
	d.hadTurn = sess.State == StateRunning
	d.mu.Unlock()
	if sess.SandboxID != "" && sess.State.Active() {
		// Carry on a session another replica (or an earlier run of this one) was driving: the
		// relay replays what the log has not taken yet.
		if conn, err = d.connect(ctx); err != nil {
			d.log.Warn("could not reconnect to the session's sandbox", "err", err)
			d.transition(StateStopped, "could not reconnect: "+userError(err))
			d.status(StageSandboxStopped, "Lost the sandbox while the bot restarted ("+userError(err)+"). Send a prompt to start it again.")
			conn = nil
		}
	}

	watch, unwatch := d.m.store.WatchInbox(ctx, d.id)
	defer unwatch()
	// Enqueues wake the driver through the store; the poll is a backstop that costs little.
	// Its period is spread so that a replica's drivers do not all look at once.
	poll := time.NewTicker(25*time.Second + time.Duration(rand.Int64N(int64(10*time.Second))))
	defer poll.Stop()
	idle := newIdleTimer(d.m.cfg.IdleTimeout)
	defer idle.stop()

	conn = d.process(ctx, conn, idle)
	for {
		if conn == nil && d.pendingTurns() == 0 && d.done(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			d.shutdown(conn)
			return
		case <-d.quitCh:
			return
		case <-d.lostCh:
			return
		case <-conn.deadCh():
			conn = d.connDied(ctx, conn)
		case req := <-d.stopCh:
			req.done <- d.stop(conn, req.cause)
			conn = nil
			return
		case <-idle.C():
			if d.pendingTurns() == 0 && !d.waiting(ctx) {
				d.log.Info("stopping an idle sandbox", "after", d.m.cfg.IdleTimeout)
				_ = d.stop(conn, "idle for "+humanDuration(d.m.cfg.IdleTimeout))
				return
			}
			idle.reset()
		case <-watch:
			if d.controls(ctx, conn) {
				conn = nil // stopped
				return
			}
			conn = d.process(ctx, conn, idle)
		case <-d.wakeCh:
			conn = d.process(ctx, conn, idle)
		case <-d.turnCh:
			idle.reset()
			conn = d.process(ctx, conn, idle)
		case <-poll.C:
			if d.controls(ctx, conn) {
				conn = nil // stopped
				return
			}
			conn = d.process(ctx, conn, idle)
		}
	}
}

// controls carries out the requests other replicas sent; true when one stopped the sandbox,
// which ends the loop.
func (d *driver) controls(ctx context.Context, conn *relayConn) bool {
	c := d.takeControls(ctx)
	if c == nil {
		return false
	}
	d.answerControl(ctx, *c, d.stop(conn, "stopped by "+c.User))
	return true
}

// acquire takes the session's lease, waiting for the store if it is away. False when another
// replica holds it, the session is gone, or the manager stops.
func (d *driver) acquire(ctx context.Context) bool {
	for backoff := 200 * time.Millisecond; ; backoff = min(backoff*2, 5*time.Second) {
		fence, err := d.m.store.AcquireLease(ctx, d.id, d.m.cfg.ReplicaID)
		if err == nil {
			d.fence = fence
			d.held.Store(fence)
			return fence > 0
		}
		if !errors.Is(err, ErrStoreDown) {
			d.log.Warn("could not take the session's lease", "err", err)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-d.quitCh:
			return false
		case <-time.After(backoff):
		}
	}
}

// done reports whether the driver has nothing left to do (no sandbox, no turn, no prompt
// waiting), and if so marks the session inactive. A prompt that arrives while it does so keeps
// the session active, so it is never stranded.
func (d *driver) done(ctx context.Context) bool {
	if d.waiting(ctx) {
		return false
	}
	if err := d.m.store.SetActive(ctx, d.id, false); err != nil {
		return false
	}
	if d.waiting(ctx) {
		_ = d.m.store.SetActive(ctx, d.id, true)
		return false
	}
	return true
}

// waiting reports whether a prompt waits in the inbox.
func (d *driver) waiting(ctx context.Context) bool {
	entries, err := d.m.store.Inbox(ctx, d.id, d.inboxDone)
	if err != nil {
		return true // cannot tell: keep going
	}
	for _, e := range entries {
		if !e.Cancelled {
			return true
		}
	}
	return false
}

// process delivers the next waiting prompt when no turn is running, skipping cancelled ones.
func (d *driver) process(ctx context.Context, conn *relayConn, idle *idleTimer) *relayConn {
	if d.pendingTurns() > 0 || d.isLost() {
		return conn
	}
	d.kicked.Store(false)
	if d.wantSandbox.Swap(false) && conn == nil {
		idle.reset()
		var err error
		if conn, err = d.connect(ctx); err != nil {
			d.log.Warn("could not wake the sandbox", "err", err)
			d.status(StageSandboxStopped, "Could not wake the sandbox: "+userError(err)+". "+sandboxAdvice(err))
			conn = nil
		}
	}
	entries, err := d.m.store.Inbox(ctx, d.id, d.inboxDone)
	if err != nil {
		return conn
	}
	for _, e := range entries {
		if e.Cancelled {
			d.unstop(e.ID)
			d.markTaken(e.ID)
			continue
		}
		if d.isStopped(e.ID) {
			d.withdrawStopped(ctx, e) // no need to start a sandbox for it
			continue
		}
		idle.reset()
		return d.deliver(ctx, conn, e, entries)
	}
	return conn
}

// markTaken records that the inbox entry is dealt with.
func (d *driver) markTaken(entry string) {
	if err := d.m.store.Update(context.Background(), d.id, Update{InboxDone: &entry}, d.fence); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			d.leaseLost()
		}
		d.log.Warn("could not record the inbox position", "err", err)
	}
	d.inboxDone = entry
}

// deliver sends one prompt, connecting first when needed. If the relay turns out to be gone,
// it reconnects (which restarts the relay) and tries once more. It returns the connection to
// use from now on.
func (d *driver) deliver(ctx context.Context, conn *relayConn, e InboxEntry, waiting []InboxEntry) *relayConn {
	d.busy.Store(true)
	defer d.busy.Store(false)
	d.mu.Lock()
	d.delivering, d.deliveringPrompt = e.ID, e.Prompt.ID
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.delivering, d.deliveringPrompt = "", ""
		delete(d.stopped, e.ID)
		d.mu.Unlock()
	}()
	for attempt := 0; ; attempt++ {
		if conn == nil {
			var err error
			if conn, err = d.connect(ctx); err != nil {
				d.failWaiting(waiting, err)
				return nil
			}
		}
		if d.stopRequested() {
			// Stopped while the sandbox came up: Claude never sees it.
			d.withdrawStopped(ctx, e)
			return conn
		}
		if err := d.send(ctx, conn, e.Prompt); !errors.Is(err, errRelayGone) {
			d.markTaken(e.ID)
			return conn
		}
		conn.stop()
		d.relayLost(conn.err)
		conn = nil
		if attempt == 1 {
			d.markTaken(e.ID)
			d.fail(CodeRelayLost, "The sandbox's relay went away twice before it could take the prompt. Send it again; if this keeps happening, check the bot's logs.")
			return nil
		}
	}
}

// failWaiting reports that the sandbox could not be brought up, for every prompt waiting, and
// takes them all: they are not retried until someone sends again.
func (d *driver) failWaiting(waiting []InboxEntry, err error) {
	d.log.Error("sandbox unavailable", "err", err)
	n := 0
	for _, e := range waiting {
		if !e.Cancelled {
			n++
		}
	}
	d.markTaken(waiting[len(waiting)-1].ID)
	msg := "Could not start a sandbox for this thread: " + userError(err) + ". " + sandboxAdvice(err)
	if n > 1 {
		msg = fmt.Sprintf("Could not start a sandbox for this thread: %s. %d prompts were not run. %s", userError(err), n, sandboxAdvice(err))
	}
	d.fail(CodeSandboxFailed, msg)
	d.m.metrics.turns.WithLabelValues("failed").Add(float64(n))
}

// send hands one prompt to the relay. It returns errRelayGone, with the turn not counted, when
// the connection died before the relay took the prompt. A prompt the relay had already taken
// (from a replica that died before it recorded so) is not counted again either.
func (d *driver) send(ctx context.Context, conn *relayConn, p Prompt) error {
	d.mu.Lock()
	resume := d.claudeID
	d.pending++
	if d.pending == 1 {
		d.turnStart = time.Now()
	}
	d.turnUser = p.User
	d.mu.Unlock()
	d.transition(StateRunning, "prompt "+p.ID)
	sctx, cancel := context.WithTimeout(ctx, d.m.cfg.RelayReconnect+15*time.Second)
	defer cancel()
	type result struct {
		dup bool
		err error
	}
	resc := make(chan result, 1)
	go func() {
		dup, err := conn.client.PromptOnce(sctx, p.ID, p.Text, resume)
		resc <- result{dup, err}
	}()
	var r result
	select {
	case r = <-resc:
	case <-conn.dead:
		cancel()
		if r = <-resc; r.err != nil {
			d.undoTurn()
			return errRelayGone
		}
	}
	if r.err != nil {
		d.endTurn()
		d.fail(CodeAgentFailed, fmt.Sprintf("Claude Code did not take the prompt: %s. Send it again; if this keeps happening, check the bot's logs.", userError(r.err)))
		d.m.metrics.turns.WithLabelValues("failed").Inc()
		return nil
	}
	if r.dup {
		d.endTurn() // its turn is the one the relay already runs, counted when we connected
	}
	d.mu.Lock()
	stop := d.delivering != "" && d.stopped[d.delivering]
	d.sent, d.sentPrompt = d.delivering, d.deliveringPrompt // from here on, a Stop interrupts the turn itself
	d.mu.Unlock()
	if stop {
		// Stopped while on its way: the relay has it now, so the turn can be interrupted.
		if err := d.interruptRelay(ctx, conn.client); err != nil {
			d.log.Warn("could not stop a turn that was stopped as it began", "err", err)
		}
	}
	return nil
}

// stopRequested reports whether a Stop came for the entry being delivered.
func (d *driver) stopRequested() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.delivering != "" && d.stopped[d.delivering]
}

// isStopped reports whether a Stop came for the entry before the relay took it.
func (d *driver) isStopped(entry string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopped[entry]
}

// markStopped records a Stop for an entry the relay has not taken. Called under mu.
func (d *driver) markStopped(entry string) {
	if d.stopped == nil {
		d.stopped = map[string]bool{}
	}
	d.stopped[entry] = true
}

// unstop forgets a Stop for an entry that is dealt with.
func (d *driver) unstop(entry string) {
	d.mu.Lock()
	delete(d.stopped, entry)
	d.mu.Unlock()
}

// withdrawStopped takes an entry a Stop came for without sending it.
func (d *driver) withdrawStopped(ctx context.Context, e InboxEntry) {
	if _, err := d.m.withdraw(ctx, d.id, e.Prompt.ID, stoppedBeforeStart); err != nil {
		d.log.Warn("could not withdraw a stopped prompt", "err", err)
	}
	d.unstop(e.ID)
	d.markTaken(e.ID)
}

func (d *driver) undoTurn() {
	d.mu.Lock()
	if d.pending > 0 {
		d.pending--
	}
	d.mu.Unlock()
}

// endTurn counts one turn as ended.
func (d *driver) endTurn() {
	d.mu.Lock()
	if d.pending > 0 {
		d.pending--
	}
	idle := d.pending == 0
	start := d.turnStart
	d.mu.Unlock()
	if idle {
		d.transition(StateIdle, "turn ended")
		if !start.IsZero() {
			d.m.metrics.turnSeconds.Observe(time.Since(start).Seconds())
		}
		select {
		case d.turnCh <- struct{}{}:
		default:
		}
	}
}

func (d *driver) decide(ctx context.Context, requestID, user string, allow bool, message string) error {
	d.mu.Lock()
	c := d.client
	d.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: the sandbox is not connected", ErrNoSuchRequest)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := c.Decide(ctx, relay.Decision{RequestID: requestID, Allow: allow, Message: message})
	var re *relay.RemoteError
	if errors.As(err, &re) && re.Code == relay.CodeUnknown {
		return fmt.Errorf("%w: it was already answered, withdrawn or timed out", ErrNoSuchRequest)
	}
	if err != nil {
		return fmt.Errorf("answer permission request %s: %w", requestID, err)
	}
	behavior := "deny"
	if allow {
		behavior = "allow"
	}
	if _, err := d.m.store.Append(context.Background(), d.id, KindDecision,
		mustJSON(Decision{RequestID: requestID, Behavior: behavior, User: user, Message: message}), nil, 0); err != nil {
		d.log.Warn("could not log a decision", "err", err)
	}
	d.m.metrics.decisions.WithLabelValues(behavior).Inc()
	return nil
}

// interrupt stops the turn of prompt promptID ("" for whichever is current): the one that
// runs, or the one about to. A prompt waiting in the inbox or on its way to the relay is
// withdrawn before Claude sees it, or its turn is interrupted the moment the relay has it. A
// Stop pressed the moment a prompt is sent is not lost; one for a turn that is over stops
// nothing, not even the turn after it.
func (d *driver) interrupt(ctx context.Context, promptID string) error {
	d.mu.Lock()
	c, running, delivering := d.client, d.pending-d.finishing > 0, d.delivering
	if delivering != "" && d.sent != delivering && (promptID == "" || promptID == d.deliveringPrompt) {
		d.markStopped(delivering) // the loop sees it before or right after sending
		d.mu.Unlock()
		return nil
	}
	current := (running || delivering != "") && (promptID == "" || promptID == d.sentPrompt)
	d.mu.Unlock()
	if !current {
		// No turn of that prompt runs: the Stop is for a prompt that waits, if one does.
		e, err := d.m.waitingEntry(ctx, d.id, promptID)
		if err != nil || e == nil {
			return err
		}
		d.mu.Lock()
		if d.sent != e.ID && d.delivering != e.ID {
			// Marked, the loop will not send it: it can be withdrawn now, even while another
			// turn runs, and the loop takes it when it comes to it.
			d.markStopped(e.ID)
			d.mu.Unlock()
			_, err := d.m.withdraw(ctx, d.id, e.Prompt.ID, stoppedBeforeStart)
			d.wake()
			return err
		}
		if d.sent != e.ID {
			d.markStopped(e.ID) // on its way: the loop withdraws it or stops its turn
			d.mu.Unlock()
			return nil
		}
		c = d.client // sent meanwhile: its turn is the one to stop
		d.mu.Unlock()
	}
	if c == nil {
		return nil // the relay is gone, and the turn with it
	}
	return d.interruptRelay(ctx, c)
}

func (d *driver) interruptRelay(ctx context.Context, c *relay.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Interrupt(ctx); err != nil {
		return fmt.Errorf("interrupt session %s: %w", d.id, err)
	}
	return nil
}

func (d *driver) setMode(ctx context.Context, mode string) error {
	return d.changeSetting(ctx, func(ctx context.Context, c *relay.Client) error { return c.SetPermissionMode(ctx, mode) })
}

func (d *driver) setModel(ctx context.Context, model string) error {
	return d.changeSetting(ctx, func(ctx context.Context, c *relay.Client) error { return c.SetModel(ctx, model) })
}

// changeSetting changes a setting of the running agent through the relay. Without a
// connected relay it does nothing: the next start takes the session's settings.
func (d *driver) changeSetting(ctx context.Context, set func(context.Context, *relay.Client) error) error {
	d.mu.Lock()
	c := d.client
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := set(ctx, c); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// errDriverGone: the driver's loop returned before it took a request.
var errDriverGone = errors.New("the session's driver has let go")

// stopSandbox asks the loop to stop the sandbox and waits for it; errDriverGone when the loop
// has returned (the sandbox is then stopped without it).
func (d *driver) stopSandbox(ctx context.Context, cause string) error {
	req := stopRequest{cause: cause, done: make(chan error, 1)}
	select {
	case d.stopCh <- req:
	case <-d.exited:
		return errDriverGone
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop interrupts a running turn, stops the sandbox and records it. Called on the loop.
func (d *driver) stop(conn *relayConn, cause string) error {
	d.wantSandbox.Store(false) // a stop supersedes a wake asked before it
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if conn != nil && d.pendingTurns() > 0 {
		select {
		case <-conn.dead: // nobody to ask; stopping the relay interrupts the turn anyway
		default:
			ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
			_ = conn.client.Interrupt(ictx)
			icancel()
		}
	}
	if conn != nil {
		conn.stop()
		<-conn.dead
	}
	d.mu.Lock()
	d.client, d.pending, d.finishing = nil, 0, 0
	d.previewShown, d.crashShown = false, false
	d.mu.Unlock()
	sess, err := d.m.store.Get(ctx, d.id)
	if err != nil {
		return err
	}
	if sess.SandboxID != "" {
		if err := d.m.provider.Stop(ctx, sess.SandboxID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("stop sandbox %s: %w", sess.SandboxID, err)
		}
	}
	_ = d.m.store.Update(ctx, d.id, Update{PreviewURL: ptr("")}, d.fence)
	d.transition(StateStopped, cause)
	d.status(StageSandboxStopped, "The sandbox was stopped ("+cause+"). Your next prompt wakes it, with the conversation as it was.")
	return d.m.store.SetActive(ctx, d.id, false)
}

// shutdown runs when the manager stops: turns still running after the drain are ended with a
// note, and the sandbox is stopped when it cannot outlive the bot; otherwise the session stays
// active for the next replica.
func (d *driver) shutdown(conn *relayConn) {
	if d.isLost() {
		return
	}
	if !d.m.cfg.StopSandboxesOnShutdown {
		return // the lease is released on the way out; another replica carries on
	}
	if d.pendingTurns() > 0 {
		d.fail(CodeShutdown, "The bot restarted in the middle of this turn, so the turn has ended. Send your prompt again to continue.")
	}
	if err := d.stop(conn, "the bot shut down"); err != nil {
		d.log.Warn("could not stop the sandbox on shutdown", "err", err)
	}
}

func (d *driver) transition(to State, cause string) {
	_, err := d.m.store.Transition(context.Background(), d.id, to, AllowedFrom(to), cause, d.fence)
	switch {
	case err == nil:
	case errors.Is(err, ErrLeaseLost):
		d.leaseLost()
	case errors.Is(err, ErrIllegalTransition):
		d.log.Error("refused state change", "to", to, "cause", cause, "err", err)
	default:
		d.log.Warn("could not record state", "to", to, "err", err)
	}
}

func (d *driver) status(stage, msg string) { d.statusURL(stage, msg, "") }

func (d *driver) statusURL(stage, msg, url string) {
	if _, err := d.m.store.Append(context.Background(), d.id, KindStatus, mustJSON(Status{Stage: stage, Message: msg, URL: url}), nil, d.fence); err != nil {
		d.log.Warn("could not log status", "stage", stage, "err", err)
		if errors.Is(err, ErrLeaseLost) {
			d.leaseLost()
		}
	}
}

func (d *driver) fail(code, msg string) {
	if _, err := d.m.store.Append(context.Background(), d.id, KindError, mustJSON(Failure{Code: code, Message: msg}), nil, d.fence); err != nil {
		d.log.Error("could not log an error for the user", "code", code, "err", err)
		if errors.Is(err, ErrLeaseLost) {
			d.leaseLost()
		}
	}
}

// idleTimer fires after a stretch without turns; a negative timeout never fires.
type idleTimer struct {
	t *time.Timer
	d time.Duration
}

func newIdleTimer(d time.Duration) *idleTimer {
	if d < 0 {
		return &idleTimer{}
	}
	return &idleTimer{t: time.NewTimer(d), d: d}
}

func (i *idleTimer) C() <-chan time.Time {
	if i.t == nil {
		return nil
	}
	return i.t.C
}

func (i *idleTimer) reset() {
	if i.t != nil {
		i.t.Reset(i.d)
	}
}

func (i *idleTimer) stop() {
	if i.t != nil {
		i.t.Stop()
	}
}
