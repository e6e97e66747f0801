package daytona

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// ensureStarted waits until the sandbox is started, starting it when it is stopped or
// archived (after letting a stop or archive under way finish). started says whether it
// started the sandbox.
func (p *Provider) ensureStarted(ctx context.Context, id string) (*apiSandbox, bool, error) {
	started := false
	var posted time.Time
	var last error
	w := p.newWaiter()
	for {
		s, err := p.getSandbox(ctx, id)
		if err != nil {
			return nil, started, err
		}
		st, _ := mapState(s)
		switch st {
		case sandbox.StateStarted:
			return s, started, nil
		case sandbox.StateError:
			return nil, started, failed(s)
		case sandbox.StateStopped, sandbox.StateArchived:
			// Daytona may still report the old state just after a start was accepted.
			if time.Since(posted) > 10*time.Second {
				p.log.Info("starting sandbox", "sandbox_id", id, "state", s.State)
				if err := p.api.lifecycle(ctx, id, "start"); err != nil && !isConflict(err) {
					return nil, started, err
				} else if err != nil {
					last = err
				}
				posted, started = time.Now(), true
				w.reset()
			}
		}
		if err := w.wait(ctx); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil, started, err
			}
			return nil, started, timeoutError(id, s.State, "started", last)
		}
	}
}

func failed(s *apiSandbox) error {
	reason := s.ErrorReason
	if reason == "" {
		reason = "no reason given"
	}
	hint := ""
	if s.Recoverable {
		hint = " (Daytona says it can be recovered)"
	}
	return fmt.Errorf("%w: Daytona sandbox %s is in state %s: %s%s", sandbox.ErrFailed, s.ID, s.State, reason, hint)
}

// errStartTimeout is the cause of a start's context ending at StartTimeout.
var errStartTimeout = errors.New("start timeout")

func (p *Provider) startContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, p.cfg.StartTimeout, errStartTimeout)
}

// startError names the operation (unless op is empty) and, when time ran out, says so with
// ErrStartTimeout.
func (p *Provider) startError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, sandbox.ErrStartTimeout) &&
		(errors.Is(context.Cause(ctx), errStartTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded)) {
		err = fmt.Errorf("%w after %v: %v", sandbox.ErrStartTimeout, p.cfg.StartTimeout, err)
	}
	if op == "" {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

func timeoutError(id, state, want string, last error) error {
	why := ""
	if last != nil {
		why = " (Daytona last said: " + last.Error() + ")"
	}
	return fmt.Errorf("%w: sandbox %s is still %s, waiting for %s%s", sandbox.ErrStartTimeout, id, state, want, why)
}

// waiter paces polling: PollInterval growing by half each time up to 5 s.
type waiter struct {
	first, next time.Duration
}

func (p *Provider) newWaiter() *waiter {
	return &waiter{first: p.cfg.PollInterval, next: p.cfg.PollInterval}
}

func (w *waiter) reset() { w.next = w.first }

func (w *waiter) wait(ctx context.Context) error {
	t := time.NewTimer(w.next)
	defer t.Stop()
	w.next = min(w.next*3/2, 5*time.Second)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Stop implements sandbox.Provider. The relay is asked to stop first, so that it can end a
// running turn and hand its output to connected clients; then the sandbox is stopped.
func (p *Provider) Stop(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StopTimeout)
	defer cancel()
	b := p.box(id)
	b.ops.Lock()
	defer b.ops.Unlock()
	if err := p.stopLocked(ctx, b, id); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	return nil
}

func (p *Provider) stopLocked(ctx context.Context, b *box, id string) error {
	var posted time.Time
	var last error
	relayStopped := false
	w := p.newWaiter()
	for {
		s, err := p.getSandbox(ctx, id)
		if err != nil {
			return err
		}
		st, _ := mapState(s)
		switch st {
		case sandbox.StateStopped, sandbox.StateArchived, sandbox.StateArchiving:
			b.setRelay(nil)
			return nil
		case sandbox.StateError:
			return failed(s)
		case sandbox.StateStarted:
			if !relayStopped {
				p.stopRelay(ctx, b, s)
				relayStopped = true
			}
			if time.Since(posted) > 10*time.Second {
				if err := p.api.lifecycle(ctx, id, "stop"); err != nil && !isConflict(err) {
					return err
				} else if err != nil {
					last = err
				}
				posted = time.Now()
				w.reset()
			}
		}
		if err := w.wait(ctx); err != nil {
			if last != nil {
				return fmt.Errorf("sandbox is still %s: %w", s.State, last)
			}
			return fmt.Errorf("sandbox is still %s: %w", s.State, err)
		}
	}
}

// Archive implements sandbox.Archiver. Like Daytona it archives only a stopped sandbox (it
// waits for a stop under way to finish), and returns once Daytona is archiving it: that may
// take minutes, and Start waits for it to finish.
func (p *Provider) Archive(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StopTimeout)
	defer cancel()
	b := p.box(id)
	b.ops.Lock()
	defer b.ops.Unlock()
	w := p.newWaiter()
	var last error
	for {
		s, err := p.getSandbox(ctx, id)
		if err != nil {
			return fmt.Errorf("archive sandbox %s: %w", id, err)
		}
		st, _ := mapState(s)
		switch st {
		case sandbox.StateArchived, sandbox.StateArchiving:
			return nil
		case sandbox.StateError:
			return fmt.Errorf("archive sandbox %s: %w", id, failed(s))
		case sandbox.StateStarted, sandbox.StateStarting, sandbox.StateCreating:
			return fmt.Errorf("archive sandbox %s: it is %s; stop it first", id, s.State)
		case sandbox.StateStopped:
			err := p.api.lifecycle(ctx, id, "archive")
			if err == nil {
				b.setRelay(nil)
				return nil
			}
			if !isConflict(err) {
				return fmt.Errorf("archive sandbox %s: %w", id, err)
			}
			last = err
		}
		if err := w.wait(ctx); err != nil {
			if last != nil {
				err = last
			}
			return fmt.Errorf("archive sandbox %s: still %s: %w", id, s.State, err)
		}
	}
}

// Delete implements sandbox.Provider.
func (p *Provider) Delete(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StopTimeout)
	defer cancel()
	b := p.box(id)
	b.ops.Lock()
	defer b.ops.Unlock()
	w := p.newWaiter()
	for {
		err := p.api.delete(ctx, id)
		switch {
		case err == nil, errors.Is(err, sandbox.ErrNotFound):
			p.forget(id)
			return nil
		case !isConflict(err):
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
		// Daytona refuses while a state change is under way: wait for it.
		if werr := w.wait(ctx); werr != nil {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
	}
}

// List implements sandbox.Provider: the sandboxes Nightona made carrying all the labels. It
// does not look for their relays (Get does). Daytona's list is eventually consistent: a
// sandbox made a moment ago may be missing.
func (p *Provider) List(ctx context.Context, labels map[string]string) ([]*sandbox.Sandbox, error) {
	filter := map[string]string{LabelManaged: "true"}
	for k, v := range labels {
		filter[k] = v
	}
	items, err := p.api.list(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []*sandbox.Sandbox
	for i := range items {
		if _, gone := mapState(&items[i]); gone || !sandbox.MatchLabels(items[i].Labels, filter) {
			continue
		}
		out = append(out, report(&items[i]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// SetLabels implements sandbox.Provider. The provider's own labels are kept.
func (p *Provider) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	s, err := p.getSandbox(ctx, id)
	if err != nil {
		return fmt.Errorf("set labels of sandbox %s: %w", id, err)
	}
	next := map[string]string{}
	for k, v := range labels {
		if !internalLabel(k) {
			next[k] = v
		}
	}
	for k, v := range s.Labels {
		if internalLabel(k) {
			next[k] = v
		}
	}
	if err := p.api.setLabels(ctx, id, next); err != nil {
		return fmt.Errorf("set labels of sandbox %s: %w", id, err)
	}
	return nil
}

// WaitState implements sandbox.Waiter.
func (p *Provider) WaitState(ctx context.Context, id string, state sandbox.State, timeout time.Duration) (*sandbox.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w := p.newWaiter()
	for {
		s, err := p.getSandbox(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("wait for sandbox %s to be %s: %w after %v", id, state, sandbox.ErrStartTimeout, timeout)
			}
			return nil, fmt.Errorf("wait for sandbox %s to be %s: %w", id, state, err)
		}
		sb := report(s)
		switch {
		case sb.State == state:
			return sb, nil
		case sb.State == sandbox.StateError:
			return nil, fmt.Errorf("wait for sandbox %s to be %s: %w", id, state, failed(s))
		}
		if err := w.wait(ctx); err != nil {
			return nil, fmt.Errorf("wait for sandbox %s to be %s: %w: still %s after %v", id, state, sandbox.ErrStartTimeout, s.State, timeout)
		}
	}
}
