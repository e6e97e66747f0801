package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// relayConn is a running relay client. dead is closed when its Run has returned, with err set.
type relayConn struct {
	client *relay.Client
	stop   context.CancelFunc
	dead   chan struct{}
	err    error
}

func (c *relayConn) deadCh() <-chan struct{} {
	if c == nil {
		return nil
	}
	return c.dead
}

// errRelayGone: the relay went away before it took a prompt; the prompt can be sent again.
var errRelayGone = errors.New("relay gone before it took the prompt")

// connect makes sure the sandbox runs and starts a relay client on it, returning once the
// relay has said hello (so the driver knows whether a turn is running before it sends one).
func (d *driver) connect(ctx context.Context) (*relayConn, error) {
	sess, err := d.m.store.Get(ctx, d.id)
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	sb, err := d.ensureSandbox(ctx, sess)
	if err != nil {
		return nil, err
	}
	c := relay.NewClient(relay.Endpoint{URL: sb.Relay.URL, Token: sb.Relay.Token, Header: sb.Relay.Header},
		relay.ClientConfig{Logger: d.log, ReconnectTimeout: d.m.cfg.RelayReconnect})
	cctx, cancel := context.WithCancel(ctx)
	conn := &relayConn{client: c, stop: cancel, dead: make(chan struct{})}
	hello := make(chan struct{})
	first := true
	var agent relay.AgentState // as the first hello says; read after hello is closed
	from := relay.Cursor{RelayID: sess.RelayID, Seq: sess.RelaySeq}
	go func() {
		conn.err = c.Run(cctx, from, relay.Handlers{
			OnConnect: func(info relay.Connected) {
				d.onConnect(info, first)
				if first {
					first = false
					agent = info.Hello.Agent
					close(hello)
				}
			},
			OnEvent: d.onEvent,
		})
		close(conn.dead)
	}()
	select {
	case <-hello:
	case <-conn.dead:
		return nil, fmt.Errorf("connect to the sandbox's relay: %w", conn.err)
	case <-ctx.Done():
		cancel()
		<-conn.dead
		return nil, ctx.Err()
	}
	d.mu.Lock()
	d.client = c
	d.preview = sb.PreviewURL
	d.previewPrivate = len(sb.PreviewHeader) > 0
	d.sandboxID = sb.ID
	pending := d.pending
	d.mu.Unlock()
	d.applySettings(ctx, c, sess, agent)
	if pending == 0 {
		d.transition(StateIdle, "sandbox ready")
	}
	return conn, nil
}

// applySettings gives the relay the session's permission mode and model when it runs with
// others: a pooled sandbox, or one woken after they were changed.
func (d *driver) applySettings(ctx context.Context, c *relay.Client, sess *Session, agent relay.AgentState) {
	mode := orDefault(sess.PermissionMode, d.m.cfg.PermissionMode)
	if mode != "" && agent.Mode != mode {
		if err := c.SetPermissionMode(ctx, mode); err != nil {
			d.log.Warn("could not give the relay the session's permission mode", "mode", mode, "err", err)
			d.status("settings", "Could not switch Claude Code to the "+mode+" permission mode: "+userError(err))
		}
	}
	if sess.Model != "" && agent.Model != sess.Model {
		if err := c.SetModel(ctx, sess.Model); err != nil {
			d.log.Warn("could not give the relay the session's model", "model", sess.Model, "err", err)
			d.status("settings", "Could not switch Claude Code to the model "+sess.Model+": "+userError(err))
		}
	}
}

// ensureSandbox returns the session's sandbox with its relay answering, creating or waking it
// and telling the user while that happens.
func (d *driver) ensureSandbox(ctx context.Context, sess *Session) (*sandbox.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, d.m.cfg.StartTimeout)
	defer cancel()
	p := d.m.provider
	if sess.SandboxID != "" {
		sb, err := p.Get(ctx, sess.SandboxID)
		if err == nil && sb.State == sandbox.StateError {
			// A broken sandbox does not mend by starting it again: a new one does.
			d.log.Warn("the session's sandbox is in an error state; replacing it", "sandbox_id", sb.ID, "reason", sb.Reason)
			d.status(StageSandboxStarting, "The sandbox is broken ("+orDefault(sb.Reason, "the platform says it is in an error state")+"), so a new one starts; Claude starts a new conversation in it.")
			if derr := p.Delete(ctx, sb.ID); derr != nil {
				d.log.Warn("could not delete the broken sandbox", "sandbox_id", sb.ID, "err", derr)
			}
			err = fmt.Errorf("sandbox %s: %w", sb.ID, sandbox.ErrNotFound)
		}
		switch {
		case err == nil && sb.State == sandbox.StateStarted && sb.Relay != nil:
			return sb, nil
		case err == nil:
			d.status(StageSandboxWaking, "Waking the sandbox…")
			d.transition(StateStarting, "waking the sandbox")
			start := time.Now()
			sb, err = p.Start(ctx, sess.SandboxID)
			if err != nil {
				d.transition(StateFailed, "wake failed: "+userError(err))
				return nil, fmt.Errorf("wake sandbox %s: %w", sess.SandboxID, err)
			}
			d.m.metrics.sandboxStart.WithLabelValues(p.Name(), "wake").Observe(time.Since(start).Seconds())
			d.status(StageSandboxReady, fmt.Sprintf("Sandbox ready (%s, woken in %s).", sb.ID, roundDur(time.Since(start))))
			return sb, nil
		case !errors.Is(err, sandbox.ErrNotFound):
			return nil, fmt.Errorf("look up sandbox %s: %w", sess.SandboxID, err)
		}
		d.log.Warn("the session's sandbox is gone; creating a new one", "sandbox_id", sess.SandboxID)
		d.mu.Lock()
		d.claudeID = "" // its conversation lived in the old sandbox
		d.mu.Unlock()
		_ = d.m.store.Update(ctx, d.id, Update{ClaudeSessionID: ptr("")}, d.fence)
	}
	d.status(StageSandboxStarting, "Starting a sandbox for this thread…")
	d.transition(StateStarting, "creating a sandbox")
	start := time.Now()
	mode := sess.PermissionMode
	if mode == "" {
		mode = d.m.cfg.PermissionMode
	}
	sb, err := p.Create(ctx, sandbox.Spec{
		Labels:         map[string]string{LabelSession: d.id, LabelThread: sess.Thread},
		Env:            d.m.cfg.SandboxEnv,
		PermissionMode: mode,
		Model:          sess.Model,
	})
	if err != nil {
		d.transition(StateFailed, "create failed: "+userError(err))
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	d.m.metrics.sandboxStart.WithLabelValues(p.Name(), "create").Observe(time.Since(start).Seconds())
	if err := d.m.store.Update(ctx, d.id, Update{SandboxID: &sb.ID, Provider: ptr(p.Name())}, d.fence); err != nil {
		_ = p.Delete(context.Background(), sb.ID)
		return nil, err
	}
	d.status(StageSandboxReady, fmt.Sprintf("Sandbox ready (%s, started in %s).", sb.ID, roundDur(time.Since(start))))
	return sb, nil
}

// connDied handles a relay client that stopped on its own. If it stopped because the store
// could not take its events, the driver waits for the store and reconnects: the relay still
// holds what was not logged. Otherwise the relay is gone.
func (d *driver) connDied(ctx context.Context, conn *relayConn) *relayConn {
	conn.stop()
	if !errors.Is(conn.err, errBacklogFull) && !errors.Is(conn.err, ErrStoreDown) {
		d.relayLost(conn.err)
		return nil
	}
	d.log.Warn("the session store is away; waiting for it before reading the relay again")
	if !d.events.waitEmpty(ctx) {
		return nil
	}
	next, err := d.connect(ctx)
	if err != nil {
		d.relayLost(err)
		return nil
	}
	return next
}

// relayLost handles a relay client that gave up.
func (d *driver) relayLost(err error) {
	d.mu.Lock()
	pending := d.pending
	d.pending, d.finishing = 0, 0
	d.client = nil
	d.previewShown, d.crashShown = false, false
	d.mu.Unlock()
	d.log.Warn("relay connection lost", "err", err, "pending_turns", pending)
	_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: ptr("")}, d.fence)
	d.transition(StateStopped, "relay lost: "+userError(err))
	if pending > 0 {
		d.fail(CodeRelayLost, "Lost the connection to the sandbox in the middle of the turn, so the turn has ended. Send your prompt again to continue: a fresh relay will start and Claude will pick up the conversation.")
		d.m.metrics.turns.WithLabelValues("failed").Add(float64(pending))
	}
}

// onConnect runs on the client's goroutine after each hello.
func (d *driver) onConnect(info relay.Connected, first bool) {
	d.mu.Lock()
	d.relayID = info.Hello.RelayID
	hadTurn := d.hadTurn
	if first {
		// Whatever this replica knew, the relay knows better how many turns it runs.
		d.pending, d.finishing = info.Hello.Agent.PendingTurns, 0
		d.hadTurn = false
	}
	pending := d.pending
	d.mu.Unlock()
	switch {
	case first && info.NewRelay && info.Missed && hadTurn:
		d.fail(CodeRelayLost, "The sandbox's relay restarted while this turn ran, so the turn has ended. Send your prompt again to continue.")
	case info.Missed && pending > 0:
		d.status("output_gap", "Part of Claude's output was lost while the sandbox connection was down.")
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sandboxAdvice says what to do about a sandbox that could not be brought up, by its cause.
func sandboxAdvice(err error) string {
	switch {
	case errors.Is(err, sandbox.ErrQuota):
		return "The sandbox platform refused a new sandbox because the account's quota is used up. Stop or destroy the sessions you no longer need (or ask an admin to raise the quota), then send your prompt again."
	case errors.Is(err, sandbox.ErrSnapshotMissing):
		return "The sandbox image (snapshot) this bot is set to use does not exist on the platform. An admin needs to build and register it (see the README's section on the Daytona snapshot) or fix DAYTONA_SNAPSHOT; then send your prompt again."
	case errors.Is(err, sandbox.ErrFailed):
		return "The sandbox went into an error state on the platform. Send your prompt again to try once more; if it keeps happening, an admin can destroy this session to start afresh."
	case errors.Is(err, sandbox.ErrStartTimeout):
		return "The sandbox did not start in time; the platform may be slow right now. Send your prompt again in a minute."
	}
	return "Send your prompt again to retry."
}

// userError is the part of err a user may see: the operation chain, without anything the
// relay client adds about addresses.
func userError(err error) string {
	switch {
	case err == nil:
		return "no error"
	case errors.Is(err, sandbox.ErrStartTimeout):
		return "the sandbox did not start in time (" + err.Error() + ")"
	case errors.Is(err, sandbox.ErrQuota), errors.Is(err, sandbox.ErrSnapshotMissing), errors.Is(err, sandbox.ErrFailed):
		return err.Error()
	case errors.Is(err, sandbox.ErrUnavailable):
		return err.Error()
	case errors.Is(err, relay.ErrUnreachable):
		return "the sandbox's relay could not be reached"
	case errors.Is(err, relay.ErrUnauthorized):
		return "the sandbox's relay refused the bot's token"
	case errors.Is(err, ErrStoreDown):
		return "the session store (Redis) is unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		return "it timed out"
	}
	return err.Error()
}

func roundDur(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// humanDuration writes d the way a person would: "30 minutes", "90s".
func humanDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.Round(time.Second).String()
}
