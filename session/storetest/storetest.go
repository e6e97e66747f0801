// Package storetest is the suite every session.Store passes, whatever serves it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/session"
)

// Run runs the suite; newStore returns an empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) session.Store) {
	t.Run("CreateOncePerThread", func(t *testing.T) { testCreate(t, newStore(t)) })
	t.Run("Update", func(t *testing.T) { testUpdate(t, newStore(t)) })
	t.Run("AppendAndRead", func(t *testing.T) { testAppend(t, newStore(t)) })
	t.Run("RelayEventsOnce", func(t *testing.T) { testRelayOnce(t, newStore(t)) })
	t.Run("ReadBlocks", func(t *testing.T) { testBlock(t, newStore(t)) })
	t.Run("Usage", func(t *testing.T) { testUsage(t, newStore(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newStore(t)) })
	t.Run("Transitions", func(t *testing.T) { testTransitions(t, newStore(t)) })
	t.Run("LeasesAndFencing", func(t *testing.T) { testLeases(t, newStore(t)) })
	t.Run("ActiveIndex", func(t *testing.T) { testActive(t, newStore(t)) })
	t.Run("Inbox", func(t *testing.T) { testInbox(t, newStore(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, newStore(t)) })
	t.Run("Controls", func(t *testing.T) { testControls(t, newStore(t)) })
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(id, thread string) *session.Session {
	return &session.Session{ID: id, Thread: thread, Owner: "web:alice", State: session.StateNew}
}

func testCreate(t *testing.T, st session.Store) {
	ctx := bg(t)
	// Many creators race for one thread: exactly one wins and all see its session.
	var wg sync.WaitGroup
	got := make([]*session.Session, 8)
	created := make([]bool, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], created[i], errs[i] = st.CreateForThread(ctx, newSession(fmt.Sprintf("s%d", i), "web:race"))
		}()
	}
	wg.Wait()
	winners := 0
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if created[i] {
			winners++
		}
		if got[i].ID != got[0].ID {
			t.Fatalf("creator %d sees session %s, creator 0 sees %s", i, got[i].ID, got[0].ID)
		}
	}
	if winners != 1 {
		t.Fatalf("%d creators won the thread, want 1", winners)
	}
	s, err := st.ByThread(ctx, "web:race")
	if err != nil || s.ID != got[0].ID || s.Owner != "web:alice" || s.State != session.StateNew || s.CreatedAt.IsZero() {
		t.Fatalf("by thread: %+v %v", s, err)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("list after the race: %d sessions, %v; the losers' records must be gone", len(all), err)
	}
	if _, err := st.ByThread(ctx, "web:nobody"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("unknown thread: %v, want ErrNotFound", err)
	}
	if _, err := st.Get(ctx, "nope"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("unknown session: %v, want ErrNotFound", err)
	}
}

func testUpdate(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("u1", "web:u")); err != nil {
		t.Fatal(err)
	}
	sb, prov, claude, preview, mode := "local-1", "local", "claude-abc", "http://localhost:3000/", "plan"
	if err := st.Update(ctx, "u1", session.Update{SandboxID: &sb, Provider: &prov, ClaudeSessionID: &claude, PreviewURL: &preview, PermissionMode: &mode}, 0); err != nil {
		t.Fatal(err)
	}
	s, err := st.Get(ctx, "u1")
	if err != nil || s.SandboxID != sb || s.Provider != prov || s.ClaudeSessionID != claude || s.PreviewURL != preview || s.PermissionMode != mode || s.Owner != "web:alice" {
		t.Fatalf("after update: %+v %v", s, err)
	}
	empty := ""
	if err := st.Update(ctx, "u1", session.Update{PreviewURL: &empty}, 0); err != nil {
		t.Fatal(err)
	}
	if s, _ := st.Get(ctx, "u1"); s.PreviewURL != "" || s.SandboxID != sb {
		t.Fatalf("a partial update changed other fields: %+v", s)
	}
	if err := st.Update(ctx, "ghost", session.Update{PreviewURL: &empty}, 0); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("update of a missing session: %v, want ErrNotFound", err)
	}
	if _, err := st.Get(ctx, "ghost"); !errors.Is(err, session.ErrNotFound) {
		t.Fatal("updating a missing session created it")
	}
}

func testAppend(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("a1", "web:a")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 25; i++ {
		seq, err := st.Append(ctx, "a1", session.KindStatus, []byte(fmt.Sprintf(`{"n":%d}`, i)), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if seq != int64(i) {
			t.Fatalf("append %d got seq %d", i, seq)
		}
	}
	evs, err := st.Read(ctx, "a1", 0, 10, 0)
	if err != nil || len(evs) != 10 || evs[0].Seq != 1 || evs[9].Seq != 10 {
		t.Fatalf("first page: %d events %v", len(evs), err)
	}
	evs, err = st.Read(ctx, "a1", 20, 100, 0)
	if err != nil || len(evs) != 5 || evs[0].Seq != 21 || string(evs[4].Data) != `{"n":25}` || evs[4].Kind != session.KindStatus {
		t.Fatalf("tail: %+v %v", evs, err)
	}
	if evs[0].Time.IsZero() || time.Since(evs[0].Time) > time.Minute {
		t.Fatalf("event time %v", evs[0].Time)
	}
	if evs, err := st.Read(ctx, "a1", 25, 10, 0); err != nil || len(evs) != 0 {
		t.Fatalf("read past the end: %v %v", evs, err)
	}
	if s, _ := st.Get(ctx, "a1"); s.LastSeq != 25 {
		t.Fatalf("last seq %d, want 25", s.LastSeq)
	}
	if _, err := st.Append(ctx, "ghost", session.KindStatus, []byte(`{}`), nil, 0); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("append to a missing session: %v, want ErrNotFound", err)
	}
}

func testRelayOnce(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("r1", "web:r")); err != nil {
		t.Fatal(err)
	}
	app := func(relay string, seq int64) int64 {
		t.Helper()
		n, err := st.Append(ctx, "r1", session.KindAgent, []byte(fmt.Sprintf(`{"relay":%q,"seq":%d}`, relay, seq)), &session.Cursor{RelayID: relay, Seq: seq}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if app("r_a", 1) != 1 || app("r_a", 2) != 2 {
		t.Fatal("first relay events not numbered 1, 2")
	}
	if app("r_a", 2) != 0 || app("r_a", 1) != 0 {
		t.Fatal("a relay event was logged twice")
	}
	if app("r_a", 3) != 3 {
		t.Fatal("next relay event not taken")
	}
	// A new relay starts its numbers again.
	if app("r_b", 1) != 4 {
		t.Fatal("a new relay's first event not taken")
	}
	s, _ := st.Get(ctx, "r1")
	if s.RelayID != "r_b" || s.RelaySeq != 1 {
		t.Fatalf("cursor %s/%d, want r_b/1", s.RelayID, s.RelaySeq)
	}
	// Concurrent writers with the same events (two replicas): each event logged once.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(2); seq <= 40; seq++ {
				if _, err := st.Append(ctx, "r1", session.KindAgent, []byte(`{}`), &session.Cursor{RelayID: "r_b", Seq: seq}, 0); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	evs, err := st.Read(ctx, "r1", 0, 1000, 0)
	if err != nil || len(evs) != 43 {
		t.Fatalf("%d events after concurrent appends, want 43: %v", len(evs), err)
	}
	if last := evs[len(evs)-1]; last.From == nil || last.From.RelayID != "r_b" || last.From.Seq != 40 {
		t.Fatalf("last event's relay cursor %+v, want r_b/40", last.From)
	}
}

func testBlock(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("b1", "web:b")); err != nil {
		t.Fatal(err)
	}
	got := make(chan []session.Event, 1)
	go func() {
		evs, err := st.Read(ctx, "b1", 0, 10, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- evs
	}()
	time.Sleep(50 * time.Millisecond) // let the reader block first; it must be woken
	if _, err := st.Append(ctx, "b1", session.KindStatus, []byte(`{"x":1}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].Seq != 1 {
			t.Fatalf("woken with %+v", evs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked read was not woken by an append")
	}
	start := time.Now()
	evs, err := st.Read(ctx, "b1", 1, 10, 100*time.Millisecond)
	if err != nil || len(evs) != 0 {
		t.Fatalf("timed-out read: %v %v", evs, err)
	}
	if time.Since(start) < 80*time.Millisecond {
		t.Fatal("a blocking read returned at once with nothing to read")
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _, _ = st.Read(cctx, "b1", 1, 10, 20*time.Second); close(done) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked read ignored its context")
	}
}

func testUsage(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("c1", "web:c")); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	turn := session.Usage{Turns: 1, InputTokens: 100, OutputTokens: 10, CostUSD: 0.25, DurationMS: 1000}
	for i := 0; i < 3; i++ {
		if err := st.AddUsage(ctx, "c1", turn, "web:alice", "web", day); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddUsage(ctx, "c1", turn, "web:bob", "web", day.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	s, _ := st.Get(ctx, "c1")
	want := session.Usage{Turns: 4, InputTokens: 400, OutputTokens: 40, CostUSD: 1, DurationMS: 4000}
	if s.Usage != want {
		t.Fatalf("session usage %+v, want %+v", s.Usage, want)
	}
	for _, c := range []struct {
		scope, key string
		day        time.Time
		turns      int64
	}{
		{"user", "web:alice", day, 3}, {"user", "web:bob", day, 0}, {"user", "web:bob", day.Add(24 * time.Hour), 1},
		{"channel", "web", day, 3}, {"all", "", day, 3}, {"all", "", day.Add(24 * time.Hour), 1},
	} {
		u, err := st.UsageOn(ctx, c.scope, c.key, c.day)
		if err != nil || u.Turns != c.turns || (c.turns > 0 && u.CostUSD != 0.25*float64(c.turns)) {
			t.Fatalf("usage of %s %s on %s: %+v %v, want %d turns", c.scope, c.key, c.day.Format(time.DateOnly), u, err, c.turns)
		}
	}
	// The session is gone, its users' and channel's usage is still listed.
	if err := st.AddUsage(ctx, "c1", turn, "web:carol", "other", day); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	users, err := st.UsageBy(ctx, "user", day)
	if err != nil || len(users) != 2 || users["web:alice"].Turns != 3 || users["web:carol"].Turns != 1 || users["web:alice"].CostUSD != 0.75 {
		t.Fatalf("usage by user on %s: %+v %v, want alice 3 turns and carol 1", day.Format(time.DateOnly), users, err)
	}
	channels, err := st.UsageBy(ctx, "channel", day.Add(24*time.Hour))
	if err != nil || len(channels) != 1 || channels["web"].Turns != 1 {
		t.Fatalf("usage by channel on the next day: %+v %v, want web 1 turn", channels, err)
	}
	if none, err := st.UsageBy(ctx, "user", day.Add(-24*time.Hour)); err != nil || len(none) != 0 {
		t.Fatalf("usage by user on a day without any: %+v %v", none, err)
	}
}

func testDelete(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("d1", "web:d")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "d1", session.KindStatus, []byte(`{}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ByThread(ctx, "web:d"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("thread after delete: %v", err)
	}
	if evs, _ := st.Read(ctx, "d1", 0, 10, 0); len(evs) != 0 {
		t.Fatal("the log outlived its session")
	}
	// The thread can start afresh.
	s, created, err := st.CreateForThread(ctx, newSession("d2", "web:d"))
	if err != nil || !created || s.ID != "d2" {
		t.Fatalf("new session for the thread: %+v %v %v", s, created, err)
	}
	if err := st.Delete(ctx, "d1"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if s, err := st.ByThread(ctx, "web:d"); err != nil || s.ID != "d2" {
		t.Fatalf("deleting an old session took the thread from the new one: %+v %v", s, err)
	}
}

func testTransitions(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("m1", "web:m")); err != nil {
		t.Fatal(err)
	}
	move := func(to session.State, cause string) (session.State, error) {
		return st.Transition(ctx, "m1", to, session.AllowedFrom(to), cause, 0)
	}
	for _, step := range []struct {
		to    session.State
		cause string
		from  session.State
	}{
		{session.StateStarting, "creating a sandbox", session.StateNew},
		{session.StateIdle, "sandbox ready", session.StateStarting},
		{session.StateRunning, "prompt p1", session.StateIdle},
		{session.StateIdle, "turn ended", session.StateRunning},
	} {
		from, err := move(step.to, step.cause)
		if err != nil || from != step.from {
			t.Fatalf("%s -> %s: from %q, %v", step.from, step.to, from, err)
		}
	}
	// Moving to the current state changes nothing and records nothing.
	if from, err := move(session.StateIdle, "again"); err != nil || from != session.StateIdle {
		t.Fatalf("idle -> idle: %q %v", from, err)
	}
	// An illegal move is refused and leaves the state alone.
	if _, err := move(session.StateNew, "back to new"); !errors.Is(err, session.ErrIllegalTransition) {
		t.Fatalf("idle -> new: %v, want ErrIllegalTransition", err)
	}
	if _, err := st.Transition(ctx, "m1", session.StateRunning, []session.State{session.StateStopped}, "not from idle", 0); !errors.Is(err, session.ErrIllegalTransition) {
		t.Fatalf("a move not allowed from the current state: %v", err)
	}
	s, _ := st.Get(ctx, "m1")
	if s.State != session.StateIdle || s.StateAt.IsZero() {
		t.Fatalf("state %q at %v", s.State, s.StateAt)
	}
	trs, err := st.Transitions(ctx, "m1")
	if err != nil || len(trs) != 4 {
		t.Fatalf("%d transitions recorded, want 4: %v", len(trs), err)
	}
	if trs[0].From != session.StateRunning || trs[0].To != session.StateIdle || trs[0].Cause != "turn ended" || trs[0].At.IsZero() {
		t.Fatalf("newest transition %+v", trs[0])
	}
	if trs[3].Cause != "creating a sandbox" {
		t.Fatalf("oldest transition %+v", trs[3])
	}
	if _, err := st.Transition(ctx, "ghost", session.StateIdle, session.AllowedFrom(session.StateIdle), "x", 0); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("moving a missing session: %v", err)
	}
}

func testLeases(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("l1", "web:l")); err != nil {
		t.Fatal(err)
	}
	ttl := 400 * time.Millisecond
	for _, r := range []string{"replica-a", "replica-b"} {
		if err := st.Heartbeat(ctx, r, ttl); err != nil {
			t.Fatal(err)
		}
	}
	fa, err := st.AcquireLease(ctx, "l1", "replica-a")
	if err != nil || fa <= 0 {
		t.Fatalf("first lease: %d %v", fa, err)
	}
	if fb, err := st.AcquireLease(ctx, "l1", "replica-b"); err != nil || fb != 0 {
		t.Fatalf("second replica got %d %v while a live replica holds the lease", fb, err)
	}
	if again, err := st.AcquireLease(ctx, "l1", "replica-a"); err != nil || again != fa {
		t.Fatalf("the holder acquiring again: %d %v, want its fence %d", again, err, fa)
	}
	ls, err := st.Leases(ctx, []string{"l1", "l-none"})
	if err != nil || len(ls) != 2 || ls[0] != (session.Lease{Owner: "replica-a", Fence: fa, Alive: true}) || ls[1] != (session.Lease{}) {
		t.Fatalf("leases %+v %v", ls, err)
	}
	// Fenced writes by the holder pass.
	if _, err := st.Append(ctx, "l1", session.KindStatus, []byte(`{}`), nil, fa); err != nil {
		t.Fatalf("holder's fenced append: %v", err)
	}
	// Heartbeats keep the lease however long it is held.
	for i := 0; i < 4; i++ {
		time.Sleep(ttl / 2)
		if err := st.Heartbeat(ctx, "replica-a", ttl); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, "replica-b", ttl); err != nil {
			t.Fatal(err)
		}
	}
	if fb, _ := st.AcquireLease(ctx, "l1", "replica-b"); fb != 0 {
		t.Fatal("the lease of a replica with a live heartbeat was taken")
	}
	// When a's heartbeat runs out, the lease passes to b with a higher fence...
	deadline := time.Now().Add(ttl + 100*time.Millisecond)
	for time.Now().Before(deadline) {
		_ = st.Heartbeat(ctx, "replica-b", ttl)
		time.Sleep(50 * time.Millisecond)
	}
	if ls, _ := st.Leases(ctx, []string{"l1"}); ls[0].Alive {
		t.Fatalf("a dead replica's lease is reported alive: %+v", ls[0])
	}
	fb, err := st.AcquireLease(ctx, "l1", "replica-b")
	if err != nil || fb <= fa {
		t.Fatalf("after a's heartbeat ran out: fence %d %v, want more than %d", fb, err, fa)
	}
	// ...and a can no longer write.
	if _, err := st.Append(ctx, "l1", session.KindStatus, []byte(`{}`), nil, fa); !errors.Is(err, session.ErrLeaseLost) {
		t.Fatalf("stale fenced append: %v, want ErrLeaseLost", err)
	}
	if err := st.Update(ctx, "l1", session.Update{PreviewURL: new(string)}, fa); !errors.Is(err, session.ErrLeaseLost) {
		t.Fatalf("stale fenced update: %v, want ErrLeaseLost", err)
	}
	if _, err := st.Transition(ctx, "l1", session.StateStarting, session.AllowedFrom(session.StateStarting), "x", fa); !errors.Is(err, session.ErrLeaseLost) {
		t.Fatalf("stale fenced transition: %v, want ErrLeaseLost", err)
	}
	// Unfenced writes (a user's prompt) still go in.
	if _, err := st.Append(ctx, "l1", session.KindPrompt, []byte(`{}`), nil, 0); err != nil {
		t.Fatalf("unfenced append: %v", err)
	}
	if err := st.ReleaseLease(ctx, "l1", "replica-a", fa); err != nil {
		t.Fatal(err)
	}
	if ls, _ := st.Leases(ctx, []string{"l1"}); ls[0].Owner != "replica-b" {
		t.Fatal("a stale holder released the new holder's lease")
	}
	if err := st.ReleaseLease(ctx, "l1", "replica-b", fb); err != nil {
		t.Fatal(err)
	}
	if ls, _ := st.Leases(ctx, []string{"l1"}); ls[0].Owner != "" {
		t.Fatal("a released lease is still held")
	}
	if fc, err := st.AcquireLease(ctx, "l1", "replica-a"); err != nil || fc <= fb {
		t.Fatalf("a released lease taken again: %d %v", fc, err)
	}
	if _, err := st.AcquireLease(ctx, "ghost", "replica-a"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("lease on a missing session: %v", err)
	}
}

func testActive(t *testing.T, st session.Store) {
	ctx := bg(t)
	for _, id := range []string{"x1", "x2"} {
		if _, _, err := st.CreateForThread(ctx, newSession(id, "web:"+id)); err != nil {
			t.Fatal(err)
		}
		if err := st.SetActive(ctx, id, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetActive(ctx, "x1", false); err != nil {
		t.Fatal(err)
	}
	ids, err := st.Active(ctx)
	if err != nil || len(ids) != 1 || ids[0] != "x2" {
		t.Fatalf("active %v %v", ids, err)
	}
}

func testInbox(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("q1", "web:q")); err != nil {
		t.Fatal(err)
	}
	watch, stop := st.WatchInbox(ctx, "q1")
	defer stop()
	var entries []string
	for i, text := range []string{"first", "second", "third"} {
		p := session.Prompt{ID: fmt.Sprintf("p%d", i), User: "web:alice", Text: text}
		entry, ahead, seq, err := st.Enqueue(ctx, "q1", p, []byte(fmt.Sprintf(`{"id":"p%d"}`, i)))
		if err != nil || ahead != i || seq != int64(i+1) || entry == "" {
			t.Fatalf("enqueue %d: entry %q ahead %d seq %d %v", i, entry, ahead, seq, err)
		}
		entries = append(entries, entry)
	}
	select {
	case <-watch:
	case <-time.After(5 * time.Second):
		t.Fatal("enqueueing did not wake the inbox's watcher")
	}
	evs, _ := st.Read(ctx, "q1", 0, 10, 0)
	if len(evs) != 3 || evs[0].Kind != session.KindPrompt || string(evs[2].Data) != `{"id":"p2"}` {
		t.Fatalf("prompt events %+v", evs)
	}
	// Taking the first: the others are ahead of nothing but each other.
	done := entries[0]
	if err := st.Update(ctx, "q1", session.Update{InboxDone: &done}, 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Cancel(ctx, "q1", "p0"); err != nil || ok {
		t.Fatalf("cancelling a taken prompt: %v %v", ok, err)
	}
	if ok, err := st.Cancel(ctx, "q1", "p1"); err != nil || !ok {
		t.Fatalf("cancelling a waiting prompt: %v %v", ok, err)
	}
	if ok, err := st.Cancel(ctx, "q1", "p1"); err != nil || ok {
		t.Fatalf("cancelling a prompt twice: %v %v", ok, err)
	}
	if ok, _ := st.Cancel(ctx, "q1", "nope"); ok {
		t.Fatal("cancelled an unknown prompt")
	}
	got, err := st.Inbox(ctx, "q1", done)
	if err != nil || len(got) != 2 || got[0].Prompt.ID != "p1" || !got[0].Cancelled || got[1].Cancelled || got[1].Prompt.Text != "third" || got[1].Prompt.User != "web:alice" {
		t.Fatalf("inbox after the first: %+v %v", got, err)
	}
	if _, ahead, _, _ := st.Enqueue(ctx, "q1", session.Prompt{ID: "p3", Text: "fourth"}, []byte(`{}`)); ahead != 2 {
		t.Fatalf("a new prompt has %d ahead, want 2", ahead)
	}
	s, _ := st.Get(ctx, "q1")
	if s.InboxDone != done {
		t.Fatalf("inbox position %q, want %q", s.InboxDone, done)
	}
}

func testClose(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("z1", "web:z")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "z1", session.KindStatus, []byte(`{}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.SetActive(ctx, "z1", true); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(ctx, "z1", 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	s, err := st.Get(ctx, "z1")
	if err != nil || s.State != session.StateClosed {
		t.Fatalf("closed session: %+v %v", s, err)
	}
	if _, err := st.ByThread(ctx, "web:z"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("the thread still names a closed session: %v", err)
	}
	if ids, _ := st.Active(ctx); len(ids) != 0 {
		t.Fatalf("a closed session is active: %v", ids)
	}
	if evs, _ := st.Read(ctx, "z1", 0, 10, 0); len(evs) != 1 {
		t.Fatal("a closed session's log is gone before its retention")
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := st.Get(ctx, "z1"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("a closed session outlived its retention: %v", err)
	}
	if evs, _ := st.Read(ctx, "z1", 0, 10, 0); len(evs) != 0 {
		t.Fatal("a closed session's log outlived its retention")
	}
	if all, _ := st.List(ctx); len(all) != 0 {
		t.Fatalf("list still shows an expired session: %d", len(all))
	}
}

func testControls(t *testing.T, st session.Store) {
	ctx := context.Background()
	watch, stop := st.WatchInbox(ctx, "c1")
	defer stop()
	for _, r := range []string{"one", "two"} {
		if err := st.SendControl(ctx, "c1", []byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-watch:
	case <-time.After(5 * time.Second):
		t.Fatal("a control request did not wake the session's watchers")
	}
	got, err := st.TakeControls(ctx, "c1")
	if err != nil || len(got) != 2 || string(got[0]) != "one" || string(got[1]) != "two" {
		t.Fatalf("took %q %v, want one and two in order", got, err)
	}
	if got, err := st.TakeControls(ctx, "c1"); err != nil || len(got) != 0 {
		t.Fatalf("took %q %v a second time, want nothing", got, err)
	}
	if err := st.AnswerControl(ctx, "req1", []byte("done")); err != nil {
		t.Fatal(err)
	}
	if a, err := st.AwaitAnswer(ctx, "req1", time.Second); err != nil || string(a) != "done" {
		t.Fatalf("answer %q %v", a, err)
	}
	start := time.Now()
	if a, err := st.AwaitAnswer(ctx, "req2", 200*time.Millisecond); err != nil || a != nil {
		t.Fatalf("an answer that never came: %q %v, want nil, nil", a, err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("AwaitAnswer did not wait")
	}
	// A caller that gives up is let go long before the timeout, with its context's error.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if a, err := st.AwaitAnswer(cctx, "req3", time.Minute); !errors.Is(err, context.Canceled) || a != nil {
		t.Fatalf("awaiting with a cancelled context: %q %v, want context.Canceled", a, err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("a cancelled wait took %v", took)
	}
	// An answer that comes after the first slice of the wait is still taken.
	time.AfterFunc(1500*time.Millisecond, func() { _ = st.AnswerControl(ctx, "req4", []byte("late")) })
	if a, err := st.AwaitAnswer(ctx, "req4", 10*time.Second); err != nil || string(a) != "late" {
		t.Fatalf("a late answer: %q %v", a, err)
	}
}
