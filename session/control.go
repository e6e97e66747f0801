package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nightona/nightona/relay"
)

// A button can be pressed on any replica (Slack and Discord hand an interaction to whichever
// replica they reach), but only the replica that drives a session talks to its relay. So a
// Stop or a decision taken elsewhere goes to the driving replica through the store, which
// carries it out and sends the outcome back; the caller gets the same answer it would have got
// on the driving replica.

// Control kinds.
const (
	controlDecide    = "decide"
	controlInterrupt = "interrupt"
	controlStop      = "stop"
)

// controlWait is how long a replica waits for the driving replica's answer; stopWait, for a
// stop, which waits for the sandbox to stop.
const (
	controlWait = 10 * time.Second
	stopWait    = 45 * time.Second
)

// waitFor is how long the sender of a request of this kind waits for its answer.
func waitFor(kind string) time.Duration {
	if kind == controlStop {
		return stopWait
	}
	return controlWait
}

// control is a request for the driving replica.
type control struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	RequestID string    `json:"request_id,omitempty"`
	PromptID  string    `json:"prompt_id,omitempty"`
	User      string    `json:"user,omitempty"`
	Allow     bool      `json:"allow,omitempty"`
	Message   string    `json:"message,omitempty"`
	At        time.Time `json:"at"`
}

// controlAnswer is what became of a control request: Code names the error ("" when done).
type controlAnswer struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

var controlErrors = map[string]error{
	"no_such_request": ErrNoSuchRequest,
	"forbidden":       ErrForbidden,
	"unavailable":     ErrUnavailable,
	"store_down":      ErrStoreDown,
}

func answerOf(err error) controlAnswer {
	if err == nil {
		return controlAnswer{}
	}
	for code, sentinel := range controlErrors {
		if errors.Is(err, sentinel) {
			return controlAnswer{Code: code, Message: err.Error()}
		}
	}
	return controlAnswer{Code: "failed", Message: err.Error()}
}

func (a controlAnswer) err() error {
	if a.Code == "" {
		return nil
	}
	if sentinel, ok := controlErrors[a.Code]; ok {
		// The message already names the sentinel: keep it whole and matchable.
		return wrappedError{sentinel, a.Message}
	}
	return errors.New(a.Message)
}

type wrappedError struct {
	sentinel error
	msg      string
}

func (e wrappedError) Error() string { return e.msg }
func (e wrappedError) Unwrap() error { return e.sentinel }

// drivenElsewhere reports whether a live replica other than this one holds the session's lease.
func (m *Manager) drivenElsewhere(ctx context.Context, id string) (bool, error) {
	ls, err := m.store.Leases(ctx, []string{id})
	if err != nil {
		return false, err
	}
	return len(ls) == 1 && ls[0].Owner != "" && ls[0].Owner != m.cfg.ReplicaID && ls[0].Alive, nil
}

// sendControl hands c to the replica that drives the session and waits for its answer.
func (m *Manager) sendControl(ctx context.Context, id string, c control) error {
	c.ID, c.At = relay.NewID("ctl"), time.Now()
	if err := m.store.SendControl(ctx, id, mustJSON(c)); err != nil {
		return err
	}
	b, err := m.store.AwaitAnswer(ctx, c.ID, waitFor(c.Kind))
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("%w: the bot replica that runs this session did not answer in time; try again in a moment", ErrUnavailable)
	}
	var a controlAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("read the answer to a control request: %w", err)
	}
	return a.err()
}

// takeControls carries out the requests other replicas sent this driver, and answers each. A
// stop it returns instead, for the loop to carry out and answer (see answerControl); any
// requests after it are answered as they would be had they come after the stop.
func (d *driver) takeControls(ctx context.Context) *control {
	reqs, err := d.m.store.TakeControls(ctx, d.id)
	if err != nil {
		return nil // still there on the next look (or dropped: the sender is told it timed out)
	}
	var stop *control
	for _, b := range reqs {
		var c control
		if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
			d.log.Warn("dropped a malformed control request", "err", err)
			continue
		}
		if time.Since(c.At) > waitFor(c.Kind) {
			continue // its sender has given up waiting
		}
		var cerr error
		switch {
		case stop != nil:
			// The sandbox is being stopped: nothing runs to decide on or interrupt, and a
			// second stop is the first's.
			if c.Kind != controlStop {
				cerr = fmt.Errorf("%w: the sandbox is being stopped", ErrNoSuchRequest)
			}
		case c.Kind == controlStop:
			stop = &c
			continue
		case c.Kind == controlDecide:
			cerr = d.decide(ctx, c.RequestID, c.User, c.Allow, c.Message)
		case c.Kind == controlInterrupt:
			cerr = d.interrupt(ctx, c.PromptID)
		default:
			cerr = fmt.Errorf("unknown control request %q", c.Kind)
		}
		d.answerControl(ctx, c, cerr)
	}
	return stop
}

// answerControl tells the sender of c what became of it.
func (d *driver) answerControl(ctx context.Context, c control, cerr error) {
	d.log.Info("carried out a request from another replica", "kind", c.Kind, "user", c.User, "err", cerr)
	if err := d.m.store.AnswerControl(ctx, c.ID, mustJSON(answerOf(cerr))); err != nil {
		d.log.Warn("could not answer a control request", "err", err)
	}
}
