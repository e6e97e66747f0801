package slack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

// The thread of a session, kept up to date while this replica drives the session. What was
// posted (each message's ts and a hash of what it shows) is kept in Redis, so that a follower
// started again (after a restart, on another replica) edits the same messages: nothing is
// posted twice and nothing is lost.

// stateTTL is how long a thread's rendering state is kept after its last change.
const stateTTL = 30 * 24 * time.Hour

// Render modes of a turn.
const (
	modeUpdate = "update" // chat.postMessage, then chat.update
	modeStream = "stream" // chat.startStream, appendStream, stopStream
)

// renderState is what a thread shows, as kept in Redis.
type renderState struct {
	Turns   map[string]*turnState `json:"turns"`
	LastSeq int64                 `json:"last_seq"`
}

// turnState is what a turn shows.
type turnState struct {
	Mode string `json:"mode"`
	// Parts are the turn's messages in update mode.
	Parts []*part `json:"parts,omitempty"`
	// Stream is the turn's streamed messages in stream mode; Controls the message with
	// Stop that goes with them while the turn runs.
	Stream   *streamState `json:"stream,omitempty"`
	Controls *part        `json:"controls,omitempty"`
	// Perms are the messages of the turn's permission requests, by request id.
	Perms map[string]*part `json:"perms,omitempty"`
	// Done is set once the turn's final state has landed; Preview is the preview URL it
	// shows.
	Done    bool   `json:"done,omitempty"`
	Preview string `json:"preview,omitempty"`
}

// part is a message and a hash of what it shows.
type part struct {
	TS   string `json:"ts"`
	Hash string `json:"hash"`
}

// Follow implements session.Follower: it keeps the session's Slack thread up to date while
// this replica drives the session, and returns once ctx ends and the last state has landed.
func (a *Adapter) Follow(ctx context.Context, sess *session.Session) {
	th, ok := parseThread(sess.Thread)
	if !ok {
		return
	}
	r := &renderer{a: a, th: th, sess: sess, log: a.log.With(attrSession, sess.ID, attrThread, sess.Thread)}
	if a.cfg.Links != nil {
		r.link = a.cfg.Links.Session(sess.ID)
	}
	if err := r.load(ctx); err != nil {
		r.log.Warn("Redis does not answer; the thread is shown once it does", "err", err)
	}
	statusCtx, stopStatus := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.keepStatus(statusCtx) }()
	err := transcript.Follow(ctx, a.sessions, sess.ID, r, transcript.FollowConfig{Every: a.cfg.UpdateEvery})
	stopStatus()
	wg.Wait()
	if err != nil && !errors.Is(err, session.ErrNotFound) {
		r.log.Warn("following the session stopped", "err", err)
	}
}

// renderer is one thread's transcript.Sink. Follow calls Show from one goroutine; the thread
// status is also refreshed from keepStatus, with what they share under statusMu.
type renderer struct {
	a      *Adapter
	th     thread
	sess   *session.Session
	log    *slog.Logger
	link   string
	state  renderState
	loaded bool
	saved  []byte

	statusMu sync.Mutex
	status   string    // the thread status last set
	statusAt time.Time // when
	posted   bool      // a message was posted since (Slack clears the status then)
	running  bool      // a turn runs: presses left by other replicas are looked for
	pending  []string  // the permission requests that wait for an answer
}

func (r *renderer) stateKey() string { return "slack:render:" + r.sess.ID }

// load reads what the thread shows from Redis. Until it can, nothing is shown: showing
// without it would post every message again.
func (r *renderer) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	b, err := r.a.store.Fetch(ctx, r.stateKey())
	if err != nil {
		return fmt.Errorf("read what the thread shows: %w", err)
	}
	r.state = renderState{Turns: map[string]*turnState{}}
	if b != nil {
		if err := json.Unmarshal(b, &r.state); err != nil || r.state.Turns == nil {
			r.log.Warn("what the thread shows could not be read; starting afresh", "err", err)
			r.state = renderState{Turns: map[string]*turnState{}}
		}
		r.saved = b
	}
	r.loaded = true
	return nil
}

// save keeps the state in Redis when it changed.
func (r *renderer) save(ctx context.Context) {
	b, err := json.Marshal(r.state)
	if err != nil || string(b) == string(r.saved) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.a.store.Put(ctx, r.stateKey(), b, stateTTL); err != nil {
		r.log.Warn("could not keep what the thread shows", "err", err)
		return
	}
	r.saved = b
}

// Show implements transcript.Sink: it brings every turn of the thread up to date.
func (r *renderer) Show(ctx context.Context, t *transcript.Transcript, turnEnded bool) error {
	// A failed show is tried again by transcript.Follow after pauses that double.
	if !r.loaded {
		if err := r.load(ctx); err != nil {
			return err
		}
	}
	// The preview button goes on the latest turn only: older ones keep what they had.
	latest := 0
	for i, turn := range t.Turns {
		if turn.Prompt != nil {
			latest = i
		}
	}
	running := -1
	for i, turn := range t.Turns {
		if !turn.Done && turn.Prompt != nil {
			running = i
			break
		}
	}
	var firstErr error
	for i, turn := range t.Turns {
		v := view{Thread: r.th.key(), Link: r.link, Owner: r.sess.Owner}
		if i >= latest {
			v.Preview = t.PreviewURL
		}
		key := turnKey(i, turn)
		ts := r.state.Turns[key]
		if ts == nil {
			ts = &turnState{}
		}
		if ts.Done && !(i == latest && ts.Mode == modeUpdate && ts.Preview != v.Preview) {
			// Landed. Only its permission messages may still change: who decided can be
			// logged after the turn's end.
			if err := r.showPermissions(ctx, turn, ts, v); err != nil && firstErr == nil {
				firstErr = err
			}
			continue
		}
		if len(turn.Items) == 0 && (i != running || ts.Mode == modeStream) && (!turn.Done || turn.Prompt == nil || turn.Prompt.Cancelled) {
			// Waiting in the queue, or withdrawn before it ran. The running turn shows at
			// once ("Working on it…", with Stop) where it is not streamed; a stream starts
			// with its first words, the thread status saying meanwhile that Claude works.
			continue
		}
		r.state.Turns[key] = ts
		if err := r.showTurn(ctx, turn, ts, v); err != nil {
			r.log.Warn("could not update the thread", "turn", key, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	var pending []string
	for _, p := range t.Pending() {
		pending = append(pending, p.RequestID)
	}
	r.statusMu.Lock()
	r.running, r.pending = t.Running(), pending
	r.statusMu.Unlock()
	r.state.LastSeq = t.LastSeq
	r.save(ctx)
	r.showStatus(ctx, threadStatus(t))
	return firstErr
}

// turnKey names a turn across restarts: by its prompt, or by its place.
func turnKey(i int, turn *transcript.Turn) string {
	if turn.Prompt != nil && turn.Prompt.ID != "" {
		return turn.Prompt.ID
	}
	return "#" + strconv.Itoa(i)
}

func (r *renderer) showTurn(ctx context.Context, turn *transcript.Turn, ts *turnState, v view) error {
	if ts.Mode == "" {
		ts.Mode = modeUpdate
		if turn.Prompt != nil && !r.a.cfg.NoStreaming && !r.a.missing(ctx, "stream:"+r.th.Team) && !r.a.missing(ctx, "stream:"+r.th.Team+":"+r.th.Channel) {
			ts.Mode = modeStream
		}
	}
	var err error
	if ts.Mode == modeStream {
		err = r.showStream(ctx, turn, ts, v)
		if errors.Is(err, errFallback) {
			ts.Mode, ts.Stream = modeUpdate, nil
			err = nil
		}
	}
	if ts.Mode == modeUpdate {
		err = r.showParts(ctx, turn, ts, v)
	}
	if perr := r.showPermissions(ctx, turn, ts, v); err == nil {
		err = perr
	}
	if err == nil {
		ts.Done, ts.Preview = turn.Done, v.Preview
	}
	return err
}

// showParts brings a turn's messages up to date in update mode.
func (r *renderer) showParts(ctx context.Context, turn *transcript.Turn, ts *turnState, v view) error {
	payloads := renderTurn(turn, v)
	for k, p := range payloads {
		h := hashOf(p)
		if k < len(ts.Parts) {
			if ts.Parts[k].Hash == h {
				continue
			}
			err := r.a.update(ctx, r.th, ts.Parts[k].TS, p)
			if slackError(err) == "message_not_found" {
				// Someone deleted it: post what it should show again, after the others.
				ts.Parts = append(ts.Parts[:k], ts.Parts[k+1:]...)
				return r.showParts(ctx, turn, ts, v)
			}
			if err != nil {
				return err
			}
			ts.Parts[k].Hash = h
			continue
		}
		msgTS, err := r.a.post(ctx, r.th, p)
		if err != nil {
			return err
		}
		ts.Parts = append(ts.Parts, &part{TS: msgTS, Hash: h})
		r.markPosted()
		r.save(ctx)
	}
	// Content moved back into fewer messages: the ones left over go.
	for len(ts.Parts) > len(payloads) {
		last := ts.Parts[len(ts.Parts)-1]
		if err := r.a.remove(ctx, r.th, last.TS); err != nil {
			return err
		}
		ts.Parts = ts.Parts[:len(ts.Parts)-1]
	}
	return nil
}

// showPermissions posts a message for each permission request of the turn, with Approve and
// Deny, and replaces it with the decision once there is one.
func (r *renderer) showPermissions(ctx context.Context, turn *transcript.Turn, ts *turnState, v view) error {
	for _, it := range turn.Items {
		if it.Kind != transcript.KindPermission {
			continue
		}
		p := renderPermission(it.Permission, v)
		h := hashOf(p)
		if ts.Perms == nil {
			ts.Perms = map[string]*part{}
		}
		pp := ts.Perms[it.Permission.RequestID]
		switch {
		case pp == nil:
			msgTS, err := r.a.post(ctx, r.th, p)
			if err != nil {
				return err
			}
			ts.Perms[it.Permission.RequestID] = &part{TS: msgTS, Hash: h}
			r.markPosted()
			r.save(ctx)
		case pp.Hash != h:
			if err := r.a.update(ctx, r.th, pp.TS, p); err != nil && slackError(err) != "message_not_found" {
				return err
			}
			pp.Hash = h
		}
	}
	return nil
}

func hashOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (r *renderer) markPosted() {
	r.statusMu.Lock()
	r.posted = true
	r.statusMu.Unlock()
}
