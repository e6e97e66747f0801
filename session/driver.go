package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// driver drives one session from this process: it brings the sandbox and the relay up, sends
// prompts in order, and logs every relay event exactly once. Its loop runs on one goroutine;
// the relay client's reader runs on another and shares only what mu guards.
type driver struct {
	m     *Manager
	id    string
	log   *slog.Logger
	inbox chan Prompt

	mu        sync.Mutex
	pending   int           // turns sent and not yet ended
	client    *relay.Client // nil while not connected
	relayID   string        // the relay the client reads; set on connect
	claudeID  string        // Claude Code's session id, as last seen
	lastCost  float64       // the agent process's running total_cost_usd
	turnStart time.Time
	preview   string // the sandbox's preview URL
	// previewShown: the user was told the preview is ready (and not told since that it
	// crashed); crashShown: the last crash was reported, so a crash loop is not repeated.
	previewShown, crashShown bool
}

func newDriver(m *Manager, sess *Session) *driver {
	return &driver{
		m: m, id: sess.ID,
		log:      m.log.With("session_id", sess.ID, "thread", sess.Thread),
		inbox:    make(chan Prompt, 64),
		claudeID: sess.ClaudeSessionID,
	}
}

func (d *driver) pendingTurns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}

func (d *driver) enqueue(p Prompt) error {
	select {
	case d.inbox <- p:
		return nil
	default:
		return fmt.Errorf("%w: too many prompts are waiting in this thread; wait for Claude to catch up", ErrUnavailable)
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
		mustJSON(Decision{RequestID: requestID, Behavior: behavior, User: user, Message: message}), nil); err != nil {
		d.log.Warn("could not log a decision", "err", err)
	}
	d.m.metrics.decisions.WithLabelValues(behavior).Inc()
	return nil
}

func (d *driver) interrupt(ctx context.Context) error {
	d.mu.Lock()
	c := d.client
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Interrupt(ctx); err != nil {
		return fmt.Errorf("interrupt session %s: %w", d.id, err)
	}
	return nil
}

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

// run is the driver's loop. It returns when ctx ends. conn is owned by this goroutine.
func (d *driver) run(ctx context.Context) {
	var conn *relayConn
	defer func() {
		if conn != nil {
			conn.stop()
			<-conn.dead
		}
		d.shutdown()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.deadCh():
			conn.stop()
			d.relayLost(conn.err)
			conn = nil
		case p := <-d.inbox:
			conn = d.deliver(ctx, conn, p)
		}
	}
}

// deliver sends p, connecting first when needed. If the relay turns out to be gone, it
// reconnects (which restarts the relay) and tries once more. It returns the connection to use
// from now on.
func (d *driver) deliver(ctx context.Context, conn *relayConn, p Prompt) *relayConn {
	for attempt := 0; ; attempt++ {
		if conn == nil {
			var err error
			if conn, err = d.connect(ctx); err != nil {
				d.failPrompts(p, err)
				return nil
			}
		}
		err := d.send(ctx, conn, p)
		if !errors.Is(err, errRelayGone) {
			return conn
		}
		conn.stop()
		d.relayLost(conn.err)
		conn = nil
		if attempt == 1 {
			d.fail(CodeRelayLost, "The sandbox's relay went away twice before it could take the prompt. Send it again; if this keeps happening, check the bot's logs.")
			return nil
		}
	}
}

// connect makes sure the sandbox runs and starts a relay client on it.
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
	from := relay.Cursor{RelayID: sess.RelayID, Seq: sess.RelaySeq}
	go func() {
		conn.err = c.Run(cctx, from, relay.Handlers{OnConnect: d.onConnect, OnEvent: d.onEvent})
		close(conn.dead)
	}()
	d.mu.Lock()
	d.client = c
	d.preview = sb.PreviewURL
	d.mu.Unlock()
	d.setState(StateIdle)
	return conn, nil
}

// ensureSandbox returns the session's sandbox with its relay answering, creating or waking it
// and telling the user while that happens.
func (d *driver) ensureSandbox(ctx context.Context, sess *Session) (*sandbox.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, d.m.cfg.StartTimeout)
	defer cancel()
	p := d.m.provider
	if sess.SandboxID != "" {
		sb, err := p.Get(ctx, sess.SandboxID)
		switch {
		case err == nil && sb.State == sandbox.StateStarted && sb.Relay != nil:
			return sb, nil
		case err == nil:
			d.status(StageSandboxWaking, "Waking the sandbox…")
			d.setState(StateStarting)
			start := time.Now()
			sb, err = p.Start(ctx, sess.SandboxID)
			if err != nil {
				d.setState(StateFailed)
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
		_ = d.m.store.Update(ctx, d.id, Update{ClaudeSessionID: ptr("")})
	}
	d.status(StageSandboxStarting, "Starting a sandbox for this thread…")
	d.setState(StateStarting)
	start := time.Now()
	sb, err := p.Create(ctx, sandbox.Spec{
		Labels:         map[string]string{LabelSession: d.id, LabelThread: sess.Thread},
		Env:            d.m.cfg.SandboxEnv,
		PermissionMode: d.m.cfg.PermissionMode,
	})
	if err != nil {
		d.setState(StateFailed)
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	d.m.metrics.sandboxStart.WithLabelValues(p.Name(), "create").Observe(time.Since(start).Seconds())
	if err := d.m.store.Update(ctx, d.id, Update{SandboxID: &sb.ID, Provider: ptr(p.Name())}); err != nil {
		return nil, err
	}
	d.status(StageSandboxReady, fmt.Sprintf("Sandbox ready (%s, started in %s).", sb.ID, roundDur(time.Since(start))))
	return sb, nil
}

// send hands one prompt to the relay. It returns errRelayGone, with the turn not counted, when
// the connection died before the relay took the prompt.
func (d *driver) send(ctx context.Context, conn *relayConn, p Prompt) error {
	d.mu.Lock()
	resume := d.claudeID
	d.pending++
	if d.pending == 1 {
		d.turnStart = time.Now()
	}
	d.mu.Unlock()
	d.setState(StateRunning)
	sctx, cancel := context.WithTimeout(ctx, d.m.cfg.RelayReconnect+15*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- conn.client.Prompt(sctx, p.ID, p.Text, resume) }()
	var err error
	select {
	case err = <-errc:
	case <-conn.dead:
		cancel()
		if err = <-errc; err != nil {
			d.mu.Lock()
			if d.pending > 0 {
				d.pending--
			}
			d.mu.Unlock()
			return errRelayGone
		}
	}
	if err != nil {
		d.endTurn()
		d.fail(CodeAgentFailed, fmt.Sprintf("Claude Code did not take the prompt: %s. Send it again; if this keeps happening, check the bot's logs.", userError(err)))
		d.m.metrics.turns.WithLabelValues("failed").Inc()
	}
	return nil
}

// failPrompts reports that the sandbox could not be brought up, for p and every prompt
// waiting behind it.
func (d *driver) failPrompts(p Prompt, err error) {
	d.log.Error("sandbox unavailable", "err", err)
	n := 1
	for more := true; more; {
		select {
		case <-d.inbox:
			n++
		default:
			more = false
		}
	}
	msg := "Could not start a sandbox for this thread: " + userError(err) + ". Send your prompt again to retry."
	if n > 1 {
		msg = fmt.Sprintf("Could not start a sandbox for this thread: %s. %d prompts were not run; send them again to retry.", userError(err), n)
	}
	d.fail(CodeSandboxFailed, msg)
	d.m.metrics.turns.WithLabelValues("failed").Add(float64(n))
}

// onConnect runs on the client's goroutine after each hello.
func (d *driver) onConnect(info relay.Connected) {
	d.mu.Lock()
	d.relayID = info.Hello.RelayID
	pending := d.pending
	d.mu.Unlock()
	if info.Missed && pending > 0 {
		d.status("output_gap", "Part of Claude's output was lost while the sandbox connection was down.")
	}
}

// onEvent runs on the client's goroutine for each relay event, in order.
func (d *driver) onEvent(ev relay.Event) error {
	d.mu.Lock()
	cur := Cursor{RelayID: d.relayID, Seq: ev.Seq}
	d.mu.Unlock()
	kind := KindAgent
	if ev.Kind == relay.KindRelay {
		kind = KindNotice
	}
	// A store that fails here stops the client; the connection is resumed from the last
	// logged event, so nothing is lost or logged twice.
	seq, err := d.m.store.Append(context.Background(), d.id, kind, ev.Data, &cur)
	if err != nil {
		return fmt.Errorf("log relay event %d: %w", ev.Seq, err)
	}
	if seq == 0 {
		return nil // already logged
	}
	d.m.metrics.events.WithLabelValues(kind).Inc()
	if kind == KindAgent {
		d.observeAgent(ev.Data)
	} else {
		d.observeNotice(ev.Data)
	}
	return nil
}

// agentLine is what the driver reads of Claude Code's messages.
type agentLine struct {
	Type         string  `json:"type"`
	Subtype      string  `json:"subtype"`
	SessionID    string  `json:"session_id"`
	IsError      bool    `json:"is_error"`
	NumTurns     int64   `json:"num_turns"`
	DurationMS   int64   `json:"duration_ms"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	Usage        struct {
		InputTokens              int64 `json:"input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	} `json:"usage"`
	SinceLast map[string]struct {
		CostUSD float64 `json:"costUSD"`
	} `json:"model_usage_since_last_result"`
}

func (d *driver) observeAgent(data []byte) {
	var l agentLine
	if err := json.Unmarshal(data, &l); err != nil {
		return
	}
	if l.Type == "system" && l.Subtype == "init" && l.SessionID != "" {
		d.mu.Lock()
		changed := d.claudeID != l.SessionID
		d.claudeID = l.SessionID
		d.mu.Unlock()
		if changed {
			if err := d.m.store.Update(context.Background(), d.id, Update{ClaudeSessionID: &l.SessionID}); err != nil {
				d.log.Warn("could not record Claude's session id", "err", err)
			}
		}
	}
	if l.Type != "result" {
		return
	}
	d.mu.Lock()
	cost := l.TotalCostUSD - d.lastCost // the CLI reports its process's running total...
	if l.SinceLast != nil {             // ...and, in newer versions, this result's own
		cost = 0
		for _, m := range l.SinceLast {
			cost += m.CostUSD
		}
	}
	if cost < 0 {
		cost = l.TotalCostUSD
	}
	d.lastCost = l.TotalCostUSD
	d.mu.Unlock()
	u := Usage{
		Turns:        1,
		InputTokens:  l.Usage.InputTokens + l.Usage.CacheReadInputTokens + l.Usage.CacheCreationInputTokens,
		OutputTokens: l.Usage.OutputTokens,
		CostUSD:      cost,
		DurationMS:   l.DurationMS,
	}
	if err := d.m.store.AddUsage(context.Background(), d.id, u); err != nil {
		d.log.Warn("could not record usage", "err", err)
	}
	outcome := "success"
	if l.IsError {
		outcome = "error"
	}
	d.m.metrics.turns.WithLabelValues(outcome).Inc()
	d.endTurn()
}

func (d *driver) observeNotice(data []byte) {
	var n relay.RelayNotice
	if err := json.Unmarshal(data, &n); err != nil {
		return
	}
	switch n.Event {
	case relay.EventPreview:
		d.observePreview(n)
	case relay.EventAgentStarted:
		d.mu.Lock()
		d.lastCost = 0
		d.mu.Unlock()
	case relay.EventAgentExited:
		if n.PendingTurns == 0 {
			return
		}
		code := -1
		if n.Code != nil {
			code = *n.Code
		}
		d.mu.Lock()
		d.pending = 0
		d.mu.Unlock()
		d.setState(StateIdle)
		msg := fmt.Sprintf("Claude Code stopped in the middle of the turn (exit status %d). The turn has ended; send your prompt again to continue the conversation.", code)
		d.fail(CodeAgentExited, msg)
		d.m.metrics.turns.WithLabelValues("failed").Add(float64(n.PendingTurns))
	}
}

// observePreview tells the user when the app's preview is ready, and when its dev server
// crashed (once per crash loop: the relay restarts it with backoff and reports every attempt).
func (d *driver) observePreview(n relay.RelayNotice) {
	d.mu.Lock()
	url := d.preview
	var stage, msg string
	switch n.State {
	case relay.PreviewReady:
		if !d.previewShown {
			d.previewShown, d.crashShown = true, false
			stage, msg = StagePreviewReady, "Preview ready: "+url
		}
	case relay.PreviewCrashed:
		if !d.crashShown {
			d.previewShown, d.crashShown = false, true
			code := -1
			if n.Code != nil {
				code = *n.Code
			}
			stage = StagePreviewCrashed
			msg = fmt.Sprintf("The app's dev server stopped (exit status %d); it is being restarted. Its last output:\n%s", code, lastLines(n.Log, 15))
		}
	}
	d.mu.Unlock()
	if stage == "" {
		return
	}
	if stage == StagePreviewReady {
		_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: &url})
		d.statusURL(stage, msg, url)
		return
	}
	_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: ptr("")})
	d.status(stage, msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// endTurn counts one turn as ended.
func (d *driver) endTurn() {
	d.mu.Lock()
	if d.pending > 0 {
		d.pending--
	}
	idle := d.pending == 0
	start := d.turnStart
	if !idle {
		d.turnStart = time.Now()
	}
	d.mu.Unlock()
	if idle {
		d.setState(StateIdle)
		d.m.metrics.turnSeconds.Observe(time.Since(start).Seconds())
	}
}

// relayLost handles a relay client that gave up.
func (d *driver) relayLost(err error) {
	d.mu.Lock()
	pending := d.pending
	d.pending = 0
	d.client = nil
	d.previewShown, d.crashShown = false, false
	d.mu.Unlock()
	d.log.Warn("relay connection lost", "err", err, "pending_turns", pending)
	_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: ptr("")})
	d.setState(StateStopped)
	if pending > 0 {
		d.fail(CodeRelayLost, "Lost the connection to the sandbox in the middle of the turn, so the turn has ended. Send your prompt again to continue: a fresh relay will start and Claude will pick up the conversation.")
		d.m.metrics.turns.WithLabelValues("failed").Add(float64(pending))
	}
}

// shutdown runs when the manager stops: turns still running are ended with a note, and the
// sandbox is stopped when the provider's sandboxes cannot outlive the bot.
func (d *driver) shutdown() {
	d.mu.Lock()
	pending := d.pending
	d.pending = 0
	d.client = nil
	d.mu.Unlock()
	if pending > 0 {
		d.fail(CodeShutdown, "The bot restarted in the middle of this turn, so the turn has ended. Send your prompt again to continue.")
	}
	if !d.m.cfg.StopSandboxesOnShutdown {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := d.m.store.Get(ctx, d.id)
	if err != nil || sess.SandboxID == "" {
		return
	}
	if err := d.m.provider.Stop(ctx, sess.SandboxID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		d.log.Warn("could not stop the sandbox", "sandbox_id", sess.SandboxID, "err", err)
		return
	}
	d.setState(StateStopped)
}

func (d *driver) setState(s State) {
	if err := d.m.store.Update(context.Background(), d.id, Update{State: &s}); err != nil {
		d.log.Warn("could not record state", "state", s, "err", err)
	}
}

func (d *driver) status(stage, msg string) { d.statusURL(stage, msg, "") }

func (d *driver) statusURL(stage, msg, url string) {
	if _, err := d.m.store.Append(context.Background(), d.id, KindStatus, mustJSON(Status{Stage: stage, Message: msg, URL: url}), nil); err != nil {
		d.log.Warn("could not log status", "stage", stage, "err", err)
	}
}

func (d *driver) fail(code, msg string) {
	if _, err := d.m.store.Append(context.Background(), d.id, KindError, mustJSON(Failure{Code: code, Message: msg}), nil); err != nil {
		d.log.Error("could not log an error for the user", "code", code, "err", err)
	}
}

// userError is the part of err a user may see: the operation chain, without anything the
// relay client adds about addresses.
func userError(err error) string {
	switch {
	case errors.Is(err, sandbox.ErrStartTimeout):
		return "the sandbox did not start in time (" + err.Error() + ")"
	case errors.Is(err, sandbox.ErrUnavailable):
		return err.Error()
	case errors.Is(err, relay.ErrUnreachable):
		return "the sandbox's relay could not be reached"
	case errors.Is(err, relay.ErrUnauthorized):
		return "the sandbox's relay refused the bot's token"
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

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("session: encode %T: %v", v, err)) // our own types always encode
	}
	return b
}
