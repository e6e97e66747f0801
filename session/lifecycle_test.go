package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/session"
)

// replica is one manager of a group that shares a Redis (by URL and prefix) and a folder of
// detached local sandboxes, as bot replicas on one machine do.
type replica struct {
	*env
	cancel context.CancelFunc
	done   chan struct{}
}

type group struct {
	url, prefix, dir string
}

func newGroup(t *testing.T, url string) *group {
	return &group{url: url, prefix: testenv.Prefix(t), dir: t.TempDir()}
}

func (g *group) start(t *testing.T, name string, cfg session.Config, followers ...session.Follower) *replica {
	t.Helper()
	rdb, err := redisstore.Open(g.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	st := redisstore.New(rdb, redisstore.Config{Prefix: g.prefix})
	t.Cleanup(st.Shutdown)
	prov, err := local.New(local.Config{Dir: g.dir, RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"}, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReplicaID = name
	if cfg.RelayReconnect == 0 {
		cfg.RelayReconnect = time.Second
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = time.Second
	}
	mgr, err := session.NewManager(st, prov, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		mgr.AddFollower(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{env: &env{store: st, provider: prov, mgr: mgr}, cancel: cancel, done: make(chan struct{})}
	go func() { _ = mgr.Run(ctx); close(r.done) }()
	r.stop = func() { cancel(); <-r.done }
	t.Cleanup(func() {
		r.stop()
		// Detached relays outlive their managers: delete what the test made.
		if boxes, err := prov.List(context.Background(), nil); err == nil {
			for _, b := range boxes {
				_ = prov.Delete(context.Background(), b.ID)
			}
		}
	})
	return r
}

// relaySeqsOnce checks that the log holds each relay event once, in the relay's order.
func relaySeqsOnce(t *testing.T, evs []session.Event) {
	t.Helper()
	assertSeqs(t, evs)
	last := map[string]int64{}
	for _, ev := range evs {
		if ev.From == nil {
			continue
		}
		if prev, ok := last[ev.From.RelayID]; ok && ev.From.Seq != prev+1 {
			t.Fatalf("relay %s event %d follows %d: a relay event is missing or twice in the log", ev.From.RelayID, ev.From.Seq, prev)
		}
		last[ev.From.RelayID] = ev.From.Seq
	}
}

func TestStatesAreRecorded(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:st", "web:a", "echo hi")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the turn", results(1))
	var trs []session.Transition
	testenv.WaitFor(t, 5*time.Second, "the turn's end to be recorded", func() bool {
		trs, _ = e.mgr.Transitions(ctx, sub.Session.ID)
		return len(trs) > 0 && trs[0].To == session.StateIdle && trs[0].From == session.StateRunning
	})
	var path []string
	for i := len(trs) - 1; i >= 0; i-- {
		path = append(path, string(trs[i].From)+">"+string(trs[i].To))
		if trs[i].Cause == "" || trs[i].At.IsZero() {
			t.Fatalf("transition without cause or time: %+v", trs[i])
		}
	}
	want := "new>starting starting>idle idle>running running>idle"
	if got := strings.Join(path, " "); got != want {
		t.Fatalf("transitions %q, want %q", got, want)
	}
}

func TestCancelQueuedPrompt(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	first, err := e.mgr.Submit(ctx, "web:cq", "web:a", "slow:10:40")
	if err != nil {
		t.Fatal(err)
	}
	id := first.Session.ID
	e.waitFor(t, id, "the first turn to run", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 1 })
	second, err := e.mgr.Submit(ctx, "web:cq", "web:b", "echo second")
	if err != nil {
		t.Fatal(err)
	}
	third, err := e.mgr.Submit(ctx, "web:cq", "web:a", "echo third")
	if err != nil {
		t.Fatal(err)
	}
	if !second.Queued || second.Ahead != 0 || third.Ahead != 1 {
		t.Fatalf("queue positions: second %+v, third %+v", second, third)
	}
	// Someone else may not cancel web:b's prompt; web:b may.
	if _, err := e.mgr.CancelPrompt(ctx, "web:cq", second.PromptID, "web:c"); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger's cancel: %v", err)
	}
	if ok, err := e.mgr.CancelPrompt(ctx, "web:cq", second.PromptID, "web:b"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	e.waitFor(t, id, "two turns", results(2))
	time.Sleep(300 * time.Millisecond) // a cancelled prompt would run now
	evs := e.events(t, id)
	var ran []string
	for _, ev := range evs {
		if ev.Kind == session.KindAgent && field(ev.Data, "type") == "result" {
			ran = append(ran, field(ev.Data, "result"))
		}
	}
	if strings.Join(ran, ",") != "slow done,third" {
		t.Fatalf("turns that ran: %v", ran)
	}
	if !containsStage(evs, session.StagePromptCancelled) {
		t.Fatal("the cancellation is not in the log")
	}
	if ok, _ := e.mgr.CancelPrompt(ctx, "web:cq", third.PromptID, "web:a"); ok {
		t.Fatal("cancelled a prompt that already ran")
	}
}

func TestIdleSandboxStopsAndWakes(t *testing.T) {
	e := newEnv(t, session.Config{IdleTimeout: 500 * time.Millisecond})
	ctx := context.Background()
	id := e.firstTurn(t, "web:idle", "web:a", "echo before")
	// The state turns stopped, then the session stops being active (the last thing the stop
	// does): both are waited for.
	testenv.WaitFor(t, 10*time.Second, "the idle sandbox to stop and the session to be inactive", func() bool {
		s, _ := e.store.Get(ctx, id)
		active, _ := e.store.Active(ctx)
		return s.State == session.StateStopped && len(active) == 0
	})
	s, _ := e.store.Get(ctx, id)
	sb, err := e.provider.Get(ctx, s.SandboxID)
	if err != nil || sb.State != "stopped" {
		t.Fatalf("sandbox after idle timeout: %+v %v", sb, err)
	}
	if !containsStage(e.events(t, id), session.StageSandboxStopped) {
		t.Fatal("the user was not told the sandbox stopped")
	}
	if _, err := e.mgr.Submit(ctx, "web:idle", "web:a", "echo after"); err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, id, "the turn after waking", results(2))
	if !containsStage(evs, session.StageSandboxWaking) {
		t.Fatal("waking the sandbox was not shown")
	}
	s2, _ := e.store.Get(ctx, id)
	if s2.SandboxID != s.SandboxID || s2.ClaudeSessionID != s.ClaudeSessionID {
		t.Fatalf("woke into sandbox %s / Claude session %s, want %s / %s", s2.SandboxID, s2.ClaudeSessionID, s.SandboxID, s.ClaudeSessionID)
	}
}

func TestUsageByUserChannelAndDay(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	for _, u := range []string{"slack:UANN", "slack:UBOB", "slack:UANN"} {
		sub, err := e.mgr.Submit(ctx, "slack:T1:C9:1712345678.000100", u, "echo hi")
		if err != nil {
			t.Fatal(err)
		}
		e.waitFor(t, sub.Session.ID, "a turn", func(evs []session.Event) bool {
			return count(evs, session.KindAgent, "result") >= count(evs, session.KindPrompt, "")
		})
	}
	today := time.Now()
	ann, _ := e.mgr.Usage(ctx, "user", "slack:UANN", today)
	bob, _ := e.mgr.Usage(ctx, "user", "slack:UBOB", today)
	ch, _ := e.mgr.Usage(ctx, "channel", "slack:T1:C9", today)
	if ann.Turns != 2 || bob.Turns != 1 || ch.Turns != 3 {
		t.Fatalf("turns: ann %d, bob %d, channel %d; want 2, 1, 3", ann.Turns, bob.Turns, ch.Turns)
	}
}

func TestCloseAndDestroy(t *testing.T) {
	e := newEnv(t, session.Config{ClosedRetention: time.Hour})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:end", "web:a", "echo hi")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the turn", results(1))
	s, _ := e.store.Get(ctx, sub.Session.ID)
	if err := e.mgr.Close(ctx, "web:end", "web:stranger"); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger closing: %v", err)
	}
	if err := e.mgr.Close(ctx, "web:end", "web:a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.provider.Get(ctx, s.SandboxID); err == nil {
		t.Fatal("closing kept the sandbox")
	}
	if got, err := e.store.Get(ctx, s.ID); err != nil || got.State != session.StateClosed {
		t.Fatalf("closed record: %+v %v", got, err)
	}
	// The thread starts afresh.
	sub2, err := e.mgr.Submit(ctx, "web:end", "web:a", "echo again")
	if err != nil || sub2.Session.ID == s.ID {
		t.Fatalf("a prompt after close: %+v %v", sub2, err)
	}
	e.waitFor(t, sub2.Session.ID, "the new session's turn", results(1))
	s2, _ := e.store.Get(ctx, sub2.Session.ID)
	if err := e.mgr.Destroy(ctx, "web:end", "web:a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Get(ctx, s2.ID); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("destroyed record: %v", err)
	}
	if evs, _ := e.store.Read(ctx, s2.ID, 0, 10, 0); len(evs) != 0 {
		t.Fatal("a destroyed session's log is still there")
	}
	if _, err := e.provider.Get(ctx, s2.SandboxID); err == nil {
		t.Fatal("destroying kept the sandbox")
	}
}

// TestHandoverBetweenReplicas stops the replica that drives a streaming turn without letting
// it finish: the other replica takes the session over and completes the turn from the relay,
// and the log has every relay event once.
func TestHandoverBetweenReplicas(t *testing.T) {
	g := newGroup(t, testenv.RedisURL(t))
	a := g.start(t, "replica-a", session.Config{DrainTimeout: time.Millisecond})
	b := g.start(t, "replica-b", session.Config{})
	ctx := context.Background()
	sub, err := a.mgr.Submit(ctx, "web:ho", "web:a", "slow:40:50")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	a.waitFor(t, id, "the turn to stream on a", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 5 })
	a.stop() // a leaves mid-turn; its sandbox keeps running
	evs := b.waitFor(t, id, "b to complete the turn", results(1))
	relaySeqsOnce(t, evs)
	if n := count(evs, session.KindAgent, "assistant"); n != 40 {
		t.Fatalf("%d of 40 lines of the turn in the log", n)
	}
	if n := count(evs, session.KindError, ""); n != 0 {
		t.Fatalf("%d errors in a clean handover", n)
	}
	// b drives the session now: the next prompt runs there.
	if _, err := b.mgr.Submit(ctx, "web:ho", "web:a", "echo on b"); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, id, "a turn on b", results(2))
}

// TestLostLeaseStopsWriting takes a session's lease away from its driver (as if its replica
// had stalled past the lease): the driver stops, the other replica carries on, and nothing is
// logged twice.
func TestLostLeaseStopsWriting(t *testing.T) {
	g := newGroup(t, testenv.RedisURL(t))
	a := g.start(t, "replica-a", session.Config{LeaseTTL: 10 * time.Second})
	ctx := context.Background()
	sub, err := a.mgr.Submit(ctx, "web:ll", "web:a", "slow:30:50")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	a.waitFor(t, id, "the turn to stream", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 3 })
	// Steal the lease: delete it and take it as replica-b, whose manager then finds it held
	// by itself and drives the session.
	rdb, _ := redisstore.Open(g.url)
	defer rdb.Close()
	if err := rdb.Del(ctx, g.prefix+"s:{"+id+"}:lease").Err(); err != nil {
		t.Fatal(err)
	}
	if fence, err := a.store.AcquireLease(ctx, id, "replica-b"); err != nil || fence < 2 {
		t.Fatalf("steal: %d %v", fence, err)
	}
	b := g.start(t, "replica-b", session.Config{LeaseTTL: 10 * time.Second})
	evs := b.waitFor(t, id, "the turn to complete", results(1))
	relaySeqsOnce(t, evs)
	if n := count(evs, session.KindAgent, "assistant"); n != 30 {
		t.Fatalf("%d of 30 lines in the log", n)
	}
}

// TestStoreOutageMidTurn stops Redis while a turn streams and starts it again: prompts are
// refused clearly meanwhile, the turn's events are kept and logged once it is back, each once.
func TestStoreOutageMidTurn(t *testing.T) {
	rs := testenv.StartPersistentRedis(t)
	g := newGroup(t, rs.URL())
	r := g.start(t, "replica-a", session.Config{LeaseTTL: 30 * time.Second})
	ctx := context.Background()
	sub, err := r.mgr.Submit(ctx, "web:out", "web:a", "slow:60:50")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	r.waitFor(t, id, "the turn to stream", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 3 })
	rs.Stop()
	_, err = r.mgr.Submit(ctx, "web:out", "web:a", "echo while away")
	if !errors.Is(err, session.ErrStoreDown) {
		t.Fatalf("a prompt while Redis is away: %v, want ErrStoreDown", err)
	}
	if err := r.mgr.Ready(ctx); err == nil {
		t.Fatal("ready while Redis is away")
	}
	time.Sleep(1500 * time.Millisecond) // the turn goes on; its events wait in the driver
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	evs := r.waitFor(t, id, "the turn to be logged after the outage", results(1))
	relaySeqsOnce(t, evs)
	if n := count(evs, session.KindAgent, "assistant"); n != 60 {
		t.Fatalf("%d of 60 lines of the turn in the log", n)
	}
	// And the session works on.
	if _, err := r.mgr.Submit(ctx, "web:out", "web:a", "echo after"); err != nil {
		t.Fatal(err)
	}
	evs = r.waitFor(t, id, "a turn after the outage", results(2))
	var last map[string]any
	_ = json.Unmarshal(evs[len(evs)-1].Data, &last)
	relaySeqsOnce(t, evs)
}

// recordingFollower notes which sessions it follows and when it lets go.
type recordingFollower struct {
	mu      sync.Mutex
	started map[string]int
	ended   map[string]int
}

func (f *recordingFollower) Follow(ctx context.Context, sess *session.Session) {
	f.mu.Lock()
	f.started[sess.ID]++
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	f.ended[sess.ID]++
	f.mu.Unlock()
}

func (f *recordingFollower) counts(id string) (started, ended int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started[id], f.ended[id]
}

// TestFollowersRunWhereSessionIsDriven checks that a session is followed by the replica
// driving it, once, and by the next replica when the first leaves.
func TestFollowersRunWhereSessionIsDriven(t *testing.T) {
	g := newGroup(t, testenv.RedisURL(t))
	fa := &recordingFollower{started: map[string]int{}, ended: map[string]int{}}
	fb := &recordingFollower{started: map[string]int{}, ended: map[string]int{}}
	a := g.start(t, "replica-a", session.Config{DrainTimeout: time.Millisecond}, fa)
	ctx := context.Background()
	sub, err := a.mgr.Submit(ctx, "web:fol", "web:a", "echo one")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	a.waitFor(t, id, "the first turn", results(1))
	b := g.start(t, "replica-b", session.Config{}, fb)
	if _, err := a.mgr.Submit(ctx, "web:fol", "web:a", "echo two"); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, id, "the second turn", results(2))
	if s, _ := fa.counts(id); s != 1 {
		t.Fatalf("replica a followed the session %d times while driving it, want 1", s)
	}
	if s, _ := fb.counts(id); s != 0 {
		t.Fatalf("replica b followed a session it does not drive")
	}
	a.stop()
	if s, e := fa.counts(id); s != 1 || e != 1 {
		t.Fatalf("after a stopped: a started %d, ended %d following; want 1 and 1", s, e)
	}
	testenv.WaitFor(t, 15*time.Second, "b to follow the session it took over", func() bool {
		s, _ := fb.counts(id)
		return s == 1
	})
	if _, err := b.mgr.Submit(ctx, "web:fol", "web:a", "echo three"); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, id, "a turn on b", results(3))
	if s, _ := fb.counts(id); s != 1 {
		t.Fatalf("b followed the session %d times, want 1", s)
	}
}

// TestWakeWithoutAPrompt starts a stopped session's sandbox from the dashboard's Wake: no
// prompt goes in, only the owner or an admin may, and the woken sandbox stops again when idle.
func TestWakeWithoutAPrompt(t *testing.T) {
	e := newEnv(t, session.Config{IdleTimeout: 2 * time.Second, Admins: []string{"web:admin"}})
	ctx := context.Background()
	id := e.firstTurn(t, "web:wake", "web:owner", "echo first")
	if err := e.mgr.Stop(ctx, "web:wake", "web:owner"); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Wake(ctx, "web:wake", "web:stranger"); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger's wake: %v, want ErrForbidden", err)
	}
	if err := e.mgr.Wake(ctx, "web:nothread", "web:owner"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("waking a thread without a session: %v, want ErrNotFound", err)
	}
	before := len(e.events(t, id))
	if err := e.mgr.Wake(ctx, "web:wake", "web:admin"); err != nil {
		t.Fatal(err)
	}
	e.waitUp(t, id)
	evs := e.events(t, id)
	if !containsStage(evs[before:], session.StageSandboxWaking) {
		t.Fatal("the wake was not shown")
	}
	if n := count(evs, session.KindPrompt, ""); n != 1 {
		t.Fatalf("%d prompts in the log after a wake, want the 1 sent", n)
	}
	testenv.WaitFor(t, 15*time.Second, "the woken sandbox to stop when idle", func() bool {
		s, _ := e.store.Get(ctx, id)
		return s.State == session.StateStopped
	})
}

// waitUp waits for the session to be idle with its sandbox started and its relay up.
func (e *env) waitUp(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	testenv.WaitFor(t, 15*time.Second, "the sandbox to be up", func() bool {
		s, _ := e.store.Get(ctx, id)
		if s.State != session.StateIdle {
			return false
		}
		sb, err := e.provider.Get(ctx, s.SandboxID)
		return err == nil && sb.State == sandbox.StateStarted && sb.Relay != nil
	})
}

// TestStopOnAnotherReplica: /nightona stop taken on a replica that does not drive the session
// is carried out by the one that does: the running turn ends as stopped, not as a sandbox lost.
func TestStopOnAnotherReplica(t *testing.T) {
	g := newGroup(t, testenv.RedisURL(t))
	a := g.start(t, "replica-a", session.Config{})
	b := g.start(t, "replica-b", session.Config{})
	ctx := context.Background()
	sub, err := a.mgr.Submit(ctx, "web:farstop", "web:owner", "slow:200:50")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	a.waitFor(t, id, "the turn to stream", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "assistant") >= 3
	})
	if err := b.mgr.Stop(ctx, "web:farstop", "web:stranger"); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger's stop on b: %v, want ErrForbidden", err)
	}
	start := time.Now()
	if err := b.mgr.Stop(ctx, "web:farstop", "web:owner"); err != nil {
		t.Fatalf("the owner's stop on b: %v", err)
	}
	t.Logf("a stop taken on b was carried out on a in %v", time.Since(start))
	s, err := a.store.Get(ctx, id)
	if err != nil || s.State != session.StateStopped {
		t.Fatalf("state %v (%v) once the stop returned, want stopped", s, err)
	}
	if sb, err := a.provider.Get(ctx, s.SandboxID); err != nil || sb.State != sandbox.StateStopped {
		t.Fatalf("the sandbox once the stop returned: %+v %v, want stopped", sb, err)
	}
	evs := a.events(t, id)
	for _, ev := range evs {
		if ev.Kind == session.KindError {
			t.Fatalf("the stop showed as an error: %s", ev.Data)
		}
	}
	said := false
	for _, ev := range evs {
		if ev.Kind == session.KindStatus && field(ev.Data, "stage") == session.StageSandboxStopped &&
			strings.Contains(field(ev.Data, "message"), "stopped by web:owner") {
			said = true
		}
	}
	if !said {
		t.Fatal("the log does not say who stopped the sandbox")
	}
	// The next prompt, on b, wakes it with the conversation as it was.
	if _, err := b.mgr.Submit(ctx, "web:farstop", "web:owner", "echo again"); err != nil {
		t.Fatal(err)
	}
	evs = b.waitFor(t, id, "the next turn", func(evs []session.Event) bool { return lastResultText(evs) == "again" })
	relaySeqsOnce(t, evs)
}

// slowToLetGo is a follower that takes a while to show the last state once its session is let
// go, as a chat adapter does when its API is slow.
type slowToLetGo struct{ delay time.Duration }

func (f slowToLetGo) Follow(ctx context.Context, _ *session.Session) {
	<-ctx.Done()
	time.Sleep(f.delay)
}

// TestWakeRightAfterStop: a stop and a wake asked while the stopped session's driver is still
// letting go (its followers showing the last state) are carried out, not lost with that driver.
func TestWakeRightAfterStop(t *testing.T) {
	e := newEnv(t, session.Config{})
	e.mgr.AddFollower(slowToLetGo{delay: 500 * time.Millisecond})
	ctx := context.Background()
	id := e.firstTurn(t, "web:rewake", "web:owner", "echo first")
	if err := e.mgr.Stop(ctx, "web:rewake", "web:owner"); err != nil {
		t.Fatal(err)
	}
	// A second stop in that moment is not left waiting on the driver that lets go.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.mgr.Stop(sctx, "web:rewake", "web:owner"); err != nil {
		t.Fatalf("a second stop while the driver lets go: %v", err)
	}
	if err := e.mgr.Wake(ctx, "web:rewake", "web:owner"); err != nil {
		t.Fatal(err)
	}
	e.waitUp(t, id)
	// A stop then supersedes the wake before it: the sandbox stays stopped.
	if err := e.mgr.Stop(ctx, "web:rewake", "web:owner"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if s, _ := e.store.Get(ctx, id); s.State != session.StateStopped {
		t.Fatalf("state %s after the last stop, want stopped", s.State)
	}
}

// TestButtonsOnAnotherReplica: a decision and a Stop taken on a replica that does not drive
// the session reach the one that does, and their outcome comes back.
func TestButtonsOnAnotherReplica(t *testing.T) {
	g := newGroup(t, testenv.RedisURL(t))
	a := g.start(t, "replica-a", session.Config{})
	b := g.start(t, "replica-b", session.Config{})
	ctx := context.Background()
	id, req := askPermission(t, a.env, "web:far", "web:owner")
	if err := b.mgr.Decide(ctx, "web:far", req, "web:stranger", true, ""); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger's decision on b: %v, want ErrForbidden", err)
	}
	if err := b.mgr.Decide(ctx, "web:far", "no-such-request", "web:owner", true, ""); !errors.Is(err, session.ErrNoSuchRequest) {
		t.Fatalf("an unknown request on b: %v, want ErrNoSuchRequest from a", err)
	}
	start := time.Now()
	if err := b.mgr.Decide(ctx, "web:far", req, "web:owner", true, ""); err != nil {
		t.Fatalf("the owner's decision on b: %v", err)
	}
	t.Logf("a decision taken on b was carried out on a in %v", time.Since(start))
	evs := a.waitFor(t, id, "the turn to end", results(1))
	if got := lastResultText(evs); got != "allow" {
		t.Fatalf("the agent got %q, want allow", got)
	}
	if err := b.mgr.Decide(ctx, "web:far", req, "web:owner", true, ""); !errors.Is(err, session.ErrNoSuchRequest) {
		t.Fatalf("answering twice on b: %v, want ErrNoSuchRequest", err)
	}

	// Stop on b interrupts a's running turn.
	if _, err := a.mgr.Submit(ctx, "web:far", "web:owner", "slow:200:50"); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, id, "the slow turn to stream", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "assistant") >= 3
	})
	testenv.WaitFor(t, 5*time.Second, "the session to be running", func() bool {
		s, _ := a.store.Get(ctx, id)
		return s.State == session.StateRunning
	})
	if err := b.mgr.Interrupt(ctx, "web:far", ""); err != nil {
		t.Fatalf("Stop on b: %v", err)
	}
	evs = a.waitFor(t, id, "the interrupted turn to end", results(2))
	if n := count(evs, session.KindAgent, "assistant"); n >= 150 {
		t.Fatalf("%d lines of a 200-line turn: the Stop on b did not interrupt it", n)
	}
	// No replica drives a finished session's turn: Stop is a no-op, at once.
	if err := b.mgr.Interrupt(ctx, "web:far", ""); err != nil {
		t.Fatalf("Stop with nothing running: %v", err)
	}
	// A Stop on b the moment a prompt is sent on a is not lost either.
	stopsRightAfter(t, a.env, b.mgr, "web:far", id, 5)
}
