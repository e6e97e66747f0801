package transcript_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type shown struct {
	at    time.Time
	seq   int64
	ended bool
	items int
}

type recorder struct {
	mu    sync.Mutex
	shows []shown
}

func (r *recorder) Show(_ context.Context, t *transcript.Transcript, ended bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, tr := range t.Turns {
		n += len(tr.Items)
	}
	r.shows = append(r.shows, shown{time.Now(), t.LastSeq, ended, n})
	return nil
}

func (r *recorder) snapshot() []shown {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]shown(nil), r.shows...)
}

func TestFollowCoalescesAndShowsTurnEnds(t *testing.T) {
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
	defer st.Shutdown()
	ctx := context.Background()
	if _, _, err := st.CreateForThread(ctx, &session.Session{ID: "f1", Thread: "web:f"}); err != nil {
		t.Fatal(err)
	}
	app := func(kind string, v any) {
		b, _ := json.Marshal(v)
		if _, err := st.Append(ctx, "f1", kind, b, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- transcript.Follow(fctx, transcript.SourceFunc(st.Read), "f1", rec, transcript.FollowConfig{Every: 200 * time.Millisecond})
	}()
	app(session.KindPrompt, session.Prompt{ID: "p1", User: "u", Text: "hi"})
	// 40 deltas over about 400 ms: shown a few times, not 40.
	app(session.KindAgent, json.RawMessage(`{"type":"stream_event","event":{"type":"message_start","message":{"id":"m1"}}}`))
	for i := 0; i < 40; i++ {
		app(session.KindAgent, json.RawMessage(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word "}}}`))
		time.Sleep(10 * time.Millisecond)
	}
	app(session.KindAgent, json.RawMessage(`{"type":"result","subtype":"success","is_error":false,"duration_ms":400,"num_turns":1,"total_cost_usd":0.01}`))
	endAt := time.Now()
	testenv.WaitFor(t, 5*time.Second, "the turn's end to be shown", func() bool {
		s := rec.snapshot()
		return len(s) > 0 && s[len(s)-1].ended
	})
	s := rec.snapshot()
	last := s[len(s)-1]
	if last.at.Sub(endAt) > 150*time.Millisecond {
		t.Fatalf("the turn's end was shown %v after it happened: it must not wait for the budget", last.at.Sub(endAt))
	}
	if len(s) < 2 || len(s) > 6 {
		t.Fatalf("%d shows for 43 events over ~0.5 s at one per 200 ms", len(s))
	}
	// The answer's first words show at once; what follows them waits for the budget.
	first := -1
	for i, sh := range s {
		if sh.items > 0 {
			first = i
			break
		}
	}
	if first < 0 || s[first].at.Sub(s[0].at) > 150*time.Millisecond {
		t.Fatalf("the first words were shown at show %d, %v after the prompt: they must not wait for the budget", first, s[max(first, 0)].at.Sub(s[0].at))
	}
	for i := first + 1; i < len(s)-1; i++ {
		if gap := s[i].at.Sub(s[i-1].at); gap < 180*time.Millisecond {
			t.Fatalf("shows %d and %d only %v apart", i-1, i, gap)
		}
	}
	// Something after the end, then the follower stops: the last state still lands.
	app(session.KindPrompt, session.Prompt{ID: "p2", User: "u", Text: "again"})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s = rec.snapshot()
	if got := s[len(s)-1].seq; got != 44 {
		t.Fatalf("last shown seq %d, want 44 (everything)", got)
	}
}

// failing is a sink whose platform refuses every show.
type failing struct {
	mu    sync.Mutex
	calls int
}

func (f *failing) Show(context.Context, *transcript.Transcript, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return errors.New("the platform is down")
}

// TestFollowBacksOffAFailingSink: a sink that keeps failing is tried again after doubling
// pauses, not in a loop.
func TestFollowBacksOffAFailingSink(t *testing.T) {
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
	defer st.Shutdown()
	ctx := context.Background()
	if _, _, err := st.CreateForThread(ctx, &session.Session{ID: "f2", Thread: "web:f2"}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(session.Prompt{ID: "p1", User: "u", Text: "hi"})
	if _, err := st.Append(ctx, "f2", session.KindPrompt, b, nil, 0); err != nil {
		t.Fatal(err)
	}
	sink := &failing{}
	fctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_ = transcript.Follow(fctx, transcript.SourceFunc(st.Read), "f2", sink, transcript.FollowConfig{Every: 100 * time.Millisecond})
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// At 0, 0.1, 0.3, 0.7 s and the last show on stopping: about 5 in 1.5 s.
	if sink.calls < 3 || sink.calls > 7 {
		t.Fatalf("%d shows of a failing sink in 1.5 s with pauses doubling from 100 ms", sink.calls)
	}
}
