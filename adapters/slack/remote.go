package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nightona/nightona/session"
)

// Stop and the answers to permission requests reach Claude only through the replica that
// drives the session, and Slack hands a button press to any replica (whichever Socket Mode
// connection or HTTP request it picks). A replica that does not show the session leaves the
// press in Redis, where the replica that shows it, polling while a turn runs, takes it (once)
// and carries it out.

const (
	// pollEvery is how often the showing replica looks for presses left for it.
	pollEvery = 300 * time.Millisecond
	// pressTTL: a press not taken by then is dropped (nobody drives the session).
	pressTTL = 15 * time.Second
)

// press is a button press left for the replica that shows the session.
type press struct {
	ID        string    `json:"id"`
	User      string    `json:"user"` // a user key
	Allow     bool      `json:"allow,omitempty"`
	Message   string    `json:"message,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	At        time.Time `json:"at"`
	// Where to tell the user if it does not work.
	Team, Channel, ThreadTS string
}

func stopKey(sessID string) string { return "slack:press:" + sessID + ":stop" }

func decideKey(sessID, requestID string) string {
	return "slack:press:" + sessID + ":decide:" + requestID
}

// following reports whether this replica shows the session now (and so drives it).
func (a *Adapter) following(sessID string) bool {
	a.followMu.Lock()
	defer a.followMu.Unlock()
	return a.followed[sessID] > 0
}

func (a *Adapter) follows(sessID string, delta int) {
	a.followMu.Lock()
	defer a.followMu.Unlock()
	a.followed[sessID] += delta
	if a.followed[sessID] <= 0 {
		delete(a.followed, sessID)
	}
}

// leave puts a press in Redis for the replica that shows the session.
func (a *Adapter) leave(ctx context.Context, key string, p press) error {
	p.ID = fmt.Sprintf("%x", rand.Uint64())
	p.At = time.Now()
	b, _ := json.Marshal(p)
	if err := a.store.Put(ctx, key, b, pressTTL); err != nil {
		return fmt.Errorf("%w: %v", session.ErrStoreDown, err)
	}
	return nil
}

// takePress returns the press under key unless it was taken (here or elsewhere) or is stale.
func (a *Adapter) takePress(ctx context.Context, key string) (*press, bool) {
	b, err := a.store.Fetch(ctx, key)
	if err != nil || b == nil {
		return nil, false
	}
	var p press
	if json.Unmarshal(b, &p) != nil || time.Since(p.At) > pressTTL {
		return nil, false
	}
	if first, err := a.store.Once(ctx, "slack:press-taken:"+p.ID, 2*pressTTL); err != nil || !first {
		return nil, false
	}
	return &p, true
}

// pollPresses carries out the presses left for this replica while the session's turn runs.
func (r *renderer) pollPresses(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.statusMu.Lock()
		running, pending := r.running, r.pending
		r.statusMu.Unlock()
		if !running {
			continue
		}
		key := r.th.key()
		if p, ok := r.a.takePress(ctx, stopKey(r.sess.ID)); ok {
			r.log.Info("a Stop pressed on another replica", "user", p.User)
			if err := r.a.sessions.Interrupt(ctx, key); err != nil {
				r.a.tell(ctx, thread{Team: p.Team, Channel: p.Channel, TS: p.ThreadTS}, trimUser(p.User), userMessage(err))
			}
		}
		for _, req := range pending {
			p, ok := r.a.takePress(ctx, decideKey(r.sess.ID, req))
			if !ok {
				continue
			}
			r.log.Info("a permission answered on another replica", "user", p.User, "request_id", req)
			if err := r.a.sessions.Decide(ctx, key, req, p.User, p.Allow, p.Message); err != nil {
				r.a.tell(ctx, thread{Team: p.Team, Channel: p.Channel, TS: p.ThreadTS}, trimUser(p.User), r.a.refusal(ctx, r.th, actionApprove, err))
			}
		}
	}
}

func trimUser(userKey string) string {
	if len(userKey) > 6 && userKey[:6] == "slack:" {
		return userKey[6:]
	}
	return userKey
}
