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
	running := session.StateRunning
	sb, prov, claude, preview := "local-1", "local", "claude-abc", "http://localhost:3000/"
	if err := st.Update(ctx, "u1", session.Update{State: &running, SandboxID: &sb, Provider: &prov, ClaudeSessionID: &claude, PreviewURL: &preview}); err != nil {
		t.Fatal(err)
	}
	s, err := st.Get(ctx, "u1")
	if err != nil || s.State != running || s.SandboxID != sb || s.Provider != prov || s.ClaudeSessionID != claude || s.PreviewURL != preview || s.Owner != "web:alice" {
		t.Fatalf("after update: %+v %v", s, err)
	}
	idle := session.StateIdle
	if err := st.Update(ctx, "u1", session.Update{State: &idle}); err != nil {
		t.Fatal(err)
	}
	if s, _ := st.Get(ctx, "u1"); s.State != idle || s.SandboxID != sb {
		t.Fatalf("a partial update changed other fields: %+v", s)
	}
	if err := st.Update(ctx, "ghost", session.Update{State: &idle}); !errors.Is(err, session.ErrNotFound) {
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
		seq, err := st.Append(ctx, "a1", session.KindStatus, []byte(fmt.Sprintf(`{"n":%d}`, i)), nil)
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
	if _, err := st.Append(ctx, "ghost", session.KindStatus, []byte(`{}`), nil); !errors.Is(err, session.ErrNotFound) {
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
		n, err := st.Append(ctx, "r1", session.KindAgent, []byte(fmt.Sprintf(`{"relay":%q,"seq":%d}`, relay, seq)), &session.Cursor{RelayID: relay, Seq: seq})
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
				if _, err := st.Append(ctx, "r1", session.KindAgent, []byte(`{}`), &session.Cursor{RelayID: "r_b", Seq: seq}); err != nil {
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
	if _, err := st.Append(ctx, "b1", session.KindStatus, []byte(`{"x":1}`), nil); err != nil {
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
	for i := 0; i < 3; i++ {
		if err := st.AddUsage(ctx, "c1", session.Usage{Turns: 1, InputTokens: 100, OutputTokens: 10, CostUSD: 0.25, DurationMS: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := st.Get(ctx, "c1")
	want := session.Usage{Turns: 3, InputTokens: 300, OutputTokens: 30, CostUSD: 0.75, DurationMS: 3000}
	if s.Usage != want {
		t.Fatalf("usage %+v, want %+v", s.Usage, want)
	}
}

func testDelete(t *testing.T, st session.Store) {
	ctx := bg(t)
	if _, _, err := st.CreateForThread(ctx, newSession("d1", "web:d")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "d1", session.KindStatus, []byte(`{}`), nil); err != nil {
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
