package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// errBacklogFull stops the relay client when the store has been away for longer than the
// driver's buffer lasts: the relay's replay buffer keeps what follows, and the client resumes
// from the last logged event once the store is back.
var errBacklogFull = errors.New("store away and the event buffer is full")

// eventBuffer holds relay events, in order, that could not be logged because the store was
// away. While it holds any, new events queue behind them, so the log keeps the relay's order.
type eventBuffer struct {
	mu       sync.Mutex
	items    []bufferedEvent
	flushing bool
	idle     chan struct{} // closed when the buffer empties; nil while empty
}

type bufferedEvent struct {
	ev     relay.Event
	cur    Cursor
	result bool // Claude Code's result line (see isResult)
}

// onEvent runs on the client's goroutine for each relay event, in order. It logs the event
// with the driver's fence, or buffers it while the store is away.
func (d *driver) onEvent(ev relay.Event) error {
	result := isResult(ev)
	d.mu.Lock()
	cur := Cursor{RelayID: d.relayID, Seq: ev.Seq}
	if result {
		d.finishing++
	}
	d.mu.Unlock()
	b := &d.events
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.items) == 0 {
		err := d.log1(ev, cur, result)
		if err == nil || !errors.Is(err, ErrStoreDown) {
			return err
		}
		d.log.Warn("the session store is away; buffering Claude's output", "err", err)
		d.m.metrics.storeOutages.Inc()
		b.idle = make(chan struct{})
	}
	if len(b.items) >= d.m.cfg.EventBuffer {
		return errBacklogFull
	}
	b.items = append(b.items, bufferedEvent{ev, cur, result})
	d.m.metrics.bufferedEvents.Inc()
	if !b.flushing {
		b.flushing = true
		go d.flush()
	}
	return nil
}

// log1 appends one relay event and acts on it. Called with the buffer's lock held, so events
// are logged and acted on in order.
func (d *driver) log1(ev relay.Event, cur Cursor, result bool) error {
	kind := KindAgent
	if ev.Kind == relay.KindRelay {
		kind = KindNotice
	}
	seq, err := d.m.store.Append(context.Background(), d.id, kind, ev.Data, &cur, d.fence)
	if errors.Is(err, ErrLeaseLost) {
		d.leaseLost()
		return err
	}
	if err != nil {
		return fmt.Errorf("log relay event %d: %w", ev.Seq, err)
	}
	if result {
		defer func() {
			d.mu.Lock()
			d.finishing = max(d.finishing-1, 0)
			d.mu.Unlock()
		}()
	}
	if seq == 0 {
		return nil // already logged (by a replica that drove the session before)
	}
	d.m.metrics.events.WithLabelValues(kind).Inc()
	if kind == KindAgent {
		d.observeAgent(ev.Data)
	} else {
		d.observeNotice(ev.Data)
	}
	return nil
}

// isResult reports whether the event is Claude Code's result line, which ends a turn.
func isResult(ev relay.Event) bool {
	if ev.Kind == relay.KindRelay || !hasType(ev.Data, `"result"`) {
		return false
	}
	var l struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(ev.Data, &l) == nil && l.Type == "result"
}

// flush logs the buffered events as soon as the store answers again, oldest first.
func (d *driver) flush() {
	b := &d.events
	backoff := 100 * time.Millisecond
	for {
		b.mu.Lock()
		if len(b.items) == 0 {
			b.flushing = false
			close(b.idle)
			b.idle = nil
			b.mu.Unlock()
			d.log.Info("the session store is back; Claude's buffered output is logged")
			return
		}
		it := b.items[0]
		err := d.log1(it.ev, it.cur, it.result)
		switch {
		case err == nil:
			b.items = b.items[1:]
			d.m.metrics.bufferedEvents.Dec()
			backoff = 100 * time.Millisecond
			b.mu.Unlock()
			continue
		case errors.Is(err, ErrStoreDown):
			b.mu.Unlock()
		default: // the lease is gone, or the session: what is buffered is another's to log
			d.m.metrics.bufferedEvents.Sub(float64(len(b.items)))
			b.items = nil
			b.mu.Unlock()
			continue
		}
		select {
		case <-d.lostCh:
		case <-d.quitCh:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// waitEmpty waits until nothing is buffered; false if ctx ended first or the lease was lost.
func (b *eventBuffer) waitEmpty(ctx context.Context) bool {
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	if idle == nil {
		return true
	}
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
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
	// Only these carry what the driver needs; skipping the rest keeps deltas cheap.
	if !hasType(data, `"system"`) && !hasType(data, `"result"`) {
		return
	}
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
			if err := d.m.store.Update(context.Background(), d.id, Update{ClaudeSessionID: &l.SessionID}, d.fence); err != nil {
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
	user := d.turnUser
	d.mu.Unlock()
	u := Usage{
		Turns:        1,
		InputTokens:  l.Usage.InputTokens + l.Usage.CacheReadInputTokens + l.Usage.CacheCreationInputTokens,
		OutputTokens: l.Usage.OutputTokens,
		CostUSD:      cost,
		DurationMS:   l.DurationMS,
	}
	sess, err := d.m.store.Get(context.Background(), d.id)
	channel := ""
	if err == nil {
		channel = ChannelOf(sess.Thread)
		if user == "" {
			user = sess.Owner
		}
	}
	if err := d.m.store.AddUsage(context.Background(), d.id, u, user, channel, time.Now()); err != nil {
		d.log.Warn("could not record usage", "err", err)
	}
	outcome := "success"
	if l.IsError {
		outcome = "error"
	}
	d.m.metrics.turns.WithLabelValues(outcome).Inc()
	d.endTurn()
}

// hasType reports whether a stream-json line's type is typ (quoted), looking for the field
// the way the CLI writes it.
func hasType(data []byte, typ string) bool {
	return bytes.Contains(data, []byte(`"type":`+typ))
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
		d.pending = 1 // the turn that died; endTurn closes it
		d.mu.Unlock()
		d.fail(CodeAgentExited, fmt.Sprintf("Claude Code stopped in the middle of the turn (exit status %d). The turn has ended; send your prompt again to continue the conversation.", code))
		d.m.metrics.turns.WithLabelValues("failed").Add(float64(n.PendingTurns))
		d.endTurn()
	}
}

// signPreview returns a link to a private preview that anyone may open for PreviewTTL.
func (d *driver) signPreview(sandboxID string, port int) (string, error) {
	pv, ok := sandbox.As[sandbox.Previews](d.m.provider)
	if !ok {
		return "", fmt.Errorf("%w: the %s provider cannot share private previews", sandbox.ErrUnavailable, d.m.provider.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, _, err := pv.SignedPreview(ctx, sandboxID, port, d.m.cfg.PreviewTTL)
	return url, err
}

// observePreview tells the user when the app's preview is ready, and when its dev server
// crashed (once per crash loop: the relay restarts it with backoff and reports every attempt).
func (d *driver) observePreview(n relay.RelayNotice) {
	d.mu.Lock()
	url, private, sbID := d.preview, d.previewPrivate, d.sandboxID
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
		if private {
			// Signing asks the platform: not on the event path.
			go func() {
				signed, err := d.signPreview(sbID, n.Port)
				if err != nil {
					d.log.Warn("could not sign a preview link", "err", err)
					d.status(stage, "The app's dev server is up, but a link to its preview could not be made ("+userError(err)+").")
					return
				}
				_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: &signed}, d.fence)
				d.statusURL(stage, "Preview ready: "+signed, signed)
			}()
			return
		}
		_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: &url}, d.fence)
		d.statusURL(stage, msg, url)
		return
	}
	_ = d.m.store.Update(context.Background(), d.id, Update{PreviewURL: ptr("")}, d.fence)
	d.status(stage, msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("session: encode %T: %v", v, err)) // our own types always encode
	}
	return b
}
