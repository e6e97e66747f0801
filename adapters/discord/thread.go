package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

// renderState is what a thread shows, kept in the store: a follower that starts again (after a
// restart, on another replica, when the session wakes) edits the messages that are there
// instead of posting them again, and finishes what the last one could not.
type renderState struct {
	// Done is how many turns are final: shown in their last state, never touched again.
	Done int `json:"done"`
	// Seq is the log seq the thread shows.
	Seq int64 `json:"seq"`
	// Msgs are the messages of the turns from Done on, by "<turn>/<spec key>".
	Msgs map[string]*posted `json:"msgs"`
}

// posted is one message the bot posted, and a hash of what it shows.
type posted struct {
	ID   string `json:"id"`
	Hash string `json:"h"`
}

// Follow shows a session in its Discord thread while this replica drives it (it returns at
// once for other platforms' sessions): it reads the session's log, folds it into a transcript
// and keeps the thread's messages up to date, within Discord's rate limits. When ctx ends it
// shows the last state and returns.
func (a *Adapter) Follow(ctx context.Context, sess *session.Session) {
	p, ok := parseKey(sess.Thread)
	if !ok {
		return
	}
	log := a.log.With("session_id", sess.ID, "thread", sess.Thread)
	s := &threadSink{a: a, sess: sess, channelID: p.ChannelID, log: log}
	if a.cfg.CompanionLink != nil {
		s.view.Companion = a.cfg.CompanionLink(sess.ID)
	}
	s.view.Owner = sess.Owner

	// Even a follower whose session is already letting go shows what is there.
	work := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		work, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	if err := s.load(work); err != nil {
		log.Warn("could not read what the thread shows; not showing the session rather than posting it twice", "err", err)
		return
	}
	t, err := s.catchUp(work)
	if err != nil {
		log.Warn("could not read the session's log", "err", err)
		return
	}
	if err := s.Show(work, t, false); err != nil && work.Err() == nil {
		log.Warn("could not bring the thread up to date", "err", err)
	}
	if ctx.Err() != nil {
		return
	}
	typing := make(chan struct{})
	go func() {
		defer close(typing)
		a.keepTyping(ctx, sess.Thread, &s.running)
	}()
	defer func() { <-typing }()
	err = transcript.Follow(ctx, a.sessions, sess.ID, s, transcript.FollowConfig{Every: a.cfg.UpdateEvery, Transcript: t})
	if err != nil && !errors.Is(err, session.ErrNotFound) {
		log.Warn("stopped following the session", "err", err)
	}
}

// threadSink keeps one thread up to date with its session's transcript (transcript.Sink).
type threadSink struct {
	a         *Adapter
	sess      *session.Session
	channelID string
	view      view
	log       *slog.Logger
	st        renderState
	running   atomic.Bool // a turn runs: the typing indicator is kept on
	gone      bool        // the thread is gone or closed to the bot: nothing more can be shown
}

var _ transcript.Sink = (*threadSink)(nil)

func (s *threadSink) key() string { return keyRender + s.sess.ID }

// load reads the state, trying again while the store is away: without it the thread would be
// posted twice.
func (s *threadSink) load(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		b, err := s.a.store.Fetch(ctx, s.key())
		if err == nil {
			s.st = renderState{Msgs: map[string]*posted{}}
			if b != nil {
				if err := json.Unmarshal(b, &s.st); err != nil {
					return fmt.Errorf("decode the thread's state: %w", err)
				}
				if s.st.Msgs == nil {
					s.st.Msgs = map[string]*posted{}
				}
			}
			return nil
		}
		if err := sleep(ctx, backoff(min(attempt, 6))); err != nil {
			return fmt.Errorf("read the thread's state: %w", err)
		}
	}
}

func (s *threadSink) save(ctx context.Context) {
	b, _ := json.Marshal(s.st)
	if err := s.a.store.Put(ctx, s.key(), b, renderTTL); err != nil {
		s.log.Warn("could not save what the thread shows", "err", err)
	}
}

// catchUp folds the whole log into a transcript, so that the first Show has everything: the
// turns the thread shows already are rendered the same and need no edit.
func (s *threadSink) catchUp(ctx context.Context) (*transcript.Transcript, error) {
	t := transcript.New()
	for {
		evs, err := s.a.sessions.Events(ctx, s.sess.ID, t.LastSeq, 1000, 0)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return t, nil
		}
		for _, ev := range evs {
			t.Apply(ev)
		}
	}
}

// Show brings the thread up to date with t: it posts the messages that are new, edits those
// that changed, and deletes those no longer there, in order.
func (s *threadSink) Show(ctx context.Context, t *transcript.Transcript, turnEnded bool) error {
	if s.gone {
		return nil
	}
	err := s.show(ctx, t)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	switch apiCode(err) {
	case codeUnknownChannel, codeMissingAccess, codeThreadLocked, codeThreadArchived:
		s.log.Warn("the thread is gone or closed to the bot; the session is no longer shown there", "err", err)
		s.gone = true
		return nil
	}
	// transcript.Follow tries again after a pause that doubles.
	s.log.Warn("could not update the thread; trying again", "err", err)
	return err
}

func (s *threadSink) show(ctx context.Context, t *transcript.Transcript) error {
	s.running.Store(t.Running())
	turns := render(t, s.view)
	dirty := false
	defer func() {
		if dirty {
			s.save(ctx)
		}
	}()
	for i := s.st.Done; i < len(turns); i++ {
		want := map[string]bool{}
		for _, sp := range turns[i] {
			key := strconv.Itoa(i) + "/" + sp.Key
			want[key] = true
			changed, err := s.put(ctx, key, sp)
			if err != nil {
				return err
			}
			dirty = dirty || changed
		}
		// A message the turn no longer has (its text got shorter, which Claude's final
		// text can make it) goes.
		prefix := strconv.Itoa(i) + "/"
		for key, p := range s.st.Msgs {
			if strings.HasPrefix(key, prefix) && !want[key] {
				if err := s.a.api.delete(ctx, s.channelID, p.ID); err != nil && apiCode(err) != codeUnknownMessage {
					return err
				}
				s.a.metrics.writes.WithLabelValues("delete").Inc()
				delete(s.st.Msgs, key)
				dirty = true
			}
		}
	}
	// Turns that ended, with a newer turn after them, are final: their messages are
	// forgotten and never edited again.
	latest := -1
	for i, tr := range t.Turns {
		if tr.Prompt != nil {
			latest = i
		}
	}
	for s.st.Done < len(t.Turns) && t.Turns[s.st.Done].Done && s.st.Done < latest {
		prefix := strconv.Itoa(s.st.Done) + "/"
		for key := range s.st.Msgs {
			if strings.HasPrefix(key, prefix) {
				delete(s.st.Msgs, key)
			}
		}
		s.st.Done++
		dirty = true
	}
	if s.st.Seq != t.LastSeq {
		s.st.Seq, dirty = t.LastSeq, true
	}
	return nil
}

// put makes one message show sp: posted if new, edited if it changed. It reports whether the
// state changed.
func (s *threadSink) put(ctx context.Context, key string, sp spec) (bool, error) {
	h := sp.hash()
	p := s.st.Msgs[key]
	if p != nil && p.Hash == h {
		return false, nil
	}
	if p != nil {
		err := s.a.api.edit(ctx, s.channelID, p.ID, sp.payload())
		if err == nil {
			s.a.metrics.writes.WithLabelValues("edit").Inc()
			p.Hash = h
			return true, nil
		}
		if apiCode(err) != codeUnknownMessage {
			return false, err
		}
		// Someone deleted it: post it again, below.
		s.log.Info("a message of the thread was deleted; posting it again", "key", key)
	}
	m := sp.payload()
	prev := ""
	if p != nil {
		prev = p.ID
	}
	m.Nonce, m.EnforceNonce = nonce(s.sess.ID, key, prev), true
	out, err := s.a.api.send(ctx, s.channelID, m)
	if err != nil {
		return false, err
	}
	s.a.metrics.writes.WithLabelValues("post").Inc()
	s.st.Msgs[key] = &posted{ID: out.ID, Hash: h}
	// Saved at once: a follower that starts after a crash must know this one exists.
	s.save(ctx)
	return true, nil
}
