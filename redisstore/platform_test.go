package redisstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
)

func platformStore(t *testing.T) *redisstore.Store {
	rdb := open(t, testenv.RedisURL(t))
	return redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
}

func TestOnce(t *testing.T) {
	st := platformStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	firsts := make(chan bool, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := st.Once(ctx, "slack:Ev123", time.Minute)
			if err != nil {
				t.Error(err)
			}
			firsts <- ok
		}()
	}
	wg.Wait()
	close(firsts)
	n := 0
	for ok := range firsts {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d replicas handled one delivery, want 1", n)
	}
}

func TestTakeSpreadsCalls(t *testing.T) {
	st := platformStore(t)
	ctx := context.Background()
	// 10 calls a second, bursts of 3: three go now, then one every 100 ms.
	var waits []time.Duration
	for i := 0; i < 8; i++ {
		w, err := st.Take(ctx, "slack:T1:chat.update", 10, 3)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	for i := 0; i < 3; i++ {
		if waits[i] != 0 {
			t.Fatalf("call %d of the burst waits %v: %v", i, waits[i], waits)
		}
	}
	for i := 3; i < 8; i++ {
		want := time.Duration(i-2) * 100 * time.Millisecond
		if waits[i] < want-15*time.Millisecond || waits[i] > want+15*time.Millisecond {
			t.Fatalf("call %d waits %v, want about %v: %v", i, waits[i], want, waits)
		}
	}
	// A hold (a 429's Retry-After) stops everyone.
	if err := st.Hold(ctx, "slack:T1:chat.postMessage", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	w, err := st.Take(ctx, "slack:T1:chat.postMessage", 100, 10)
	if err != nil || w < 450*time.Millisecond || w > 550*time.Millisecond {
		t.Fatalf("a call during a hold waits %v %v, want about 500ms", w, err)
	}
	if w, _ := st.Take(ctx, "slack:T1:other", 1, 1); w != 0 {
		t.Fatalf("another budget waits %v", w)
	}
}

func TestPutFetch(t *testing.T) {
	st := platformStore(t)
	ctx := context.Background()
	if b, err := st.Fetch(ctx, "nope"); b != nil || err != nil {
		t.Fatalf("missing value: %q %v", b, err)
	}
	if err := st.Put(ctx, "slack:render:s1", []byte(`{"ts":"1.2"}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	if b, err := st.Fetch(ctx, "slack:render:s1"); string(b) != `{"ts":"1.2"}` || err != nil {
		t.Fatalf("fetched %q %v", b, err)
	}
}
