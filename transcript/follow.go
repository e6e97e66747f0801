package transcript

import (
	"context"
	"errors"
	"time"

	"github.com/nightona/nightona/session"
)

// Source is where Follow reads a session's log.
type Source interface {
	Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)
}

// Sink shows a transcript somewhere: a chat thread. Follow calls it from one goroutine; it owns
// t only during the call.
type Sink interface {
	// Show brings the place up to date with t. turnEnded is set when a turn ended since the
	// last call: its answer should be finished (a footer, streaming stopped). An error is
	// logged by the caller's sink itself if it wants; Follow retries with the next change.
	Show(ctx context.Context, t *Transcript, turnEnded bool) error
}

// FollowConfig configures Follow. Zero fields take their defaults.
type FollowConfig struct {
	// Every is the least time between two Shows while a turn streams: the platform's update
	// budget. A turn's end is shown at once. Default 1 s.
	Every time.Duration
	// From is the seq to read after (0: from the start of the log).
	From int64
	// Transcript to continue (nil: a new one, filled from the log as it is read).
	Transcript *Transcript
}

// Follow reads the session's log from cfg.From, folds it into a transcript and shows it through
// sink on a coalescing schedule, until ctx ends; then it shows it once more (with a short
// context of its own) so that the last state lands.
//
// A change waits for cfg.Every after the last show, except a turn's end and a turn's first
// item (the first words or tool call after its prompt), which show at once: the budget should
// not keep someone waiting for the start of an answer. A show that fails is tried again after a
// pause that doubles, from cfg.Every up to a minute, so that a platform in trouble is not
// hammered.
func Follow(ctx context.Context, src Source, id string, sink Sink, cfg FollowConfig) error {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	t := cfg.Transcript
	if t == nil {
		t = New()
	}
	after := max(cfg.From, t.LastSeq)
	var next time.Time // the earliest time the next show may go
	var retry time.Duration
	dirty, ended, started := false, false, false
	doneTurns, withItems := countDone(t), countStarted(t)
	show := func(ctx context.Context) {
		if err := sink.Show(ctx, t, ended); err != nil {
			retry = min(max(2*retry, cfg.Every), time.Minute)
			next = time.Now().Add(retry)
			return
		}
		dirty, ended, started, retry = false, false, false, 0
		next = time.Now().Add(cfg.Every)
	}
	for {
		wait := cfg.Every
		if dirty {
			wait = max(time.Until(next), time.Millisecond)
		}
		evs, err := src.Events(ctx, id, after, 500, wait)
		if ctx.Err() != nil {
			// Stopping: catch up with what the log took meanwhile, and show the last state.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			for {
				evs, err := src.Events(fctx, id, after, 500, 0)
				if err != nil || len(evs) == 0 {
					break
				}
				for _, ev := range evs {
					t.Apply(ev)
					after = ev.Seq
					dirty = true
				}
			}
			if countDone(t) > doneTurns {
				ended = true
			}
			if dirty || ended {
				show(fctx)
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, session.ErrNotFound) {
				return err
			}
			// The store is away: wait a little and read again from where we were.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for _, ev := range evs {
			t.Apply(ev)
			after = ev.Seq
			dirty = true
		}
		if n := countDone(t); n > doneTurns {
			doneTurns, ended = n, true
		}
		if n := countStarted(t); n > withItems {
			withItems, started = n, true
		}
		failing := retry > 0
		if (ended || started) && (!failing || !time.Now().Before(next)) || dirty && !time.Now().Before(next) {
			show(ctx)
		}
	}
}

// countStarted counts the turns that have something to show besides their prompt.
func countStarted(t *Transcript) int {
	n := 0
	for _, tr := range t.Turns {
		if len(tr.Items) > 0 {
			n++
		}
	}
	return n
}

func countDone(t *Transcript) int {
	n := 0
	for _, tr := range t.Turns {
		if tr.Done {
			n++
		}
	}
	return n
}

// SourceFunc makes a function a Source.
type SourceFunc func(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error)

// Events implements Source.
func (f SourceFunc) Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error) {
	return f(ctx, id, after, max, block)
}
