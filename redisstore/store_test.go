package redisstore_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/session/storetest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func open(t *testing.T, url string) *redis.Client {
	t.Helper()
	rdb, err := redisstore.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", url, err)
	}
	return rdb
}

// The same suite runs against a real redis-server and against the embedded default.
func TestStoreOnRedisServer(t *testing.T) {
	rdb := open(t, testenv.RedisURL(t))
	storetest.Run(t, func(t *testing.T) session.Store {
		st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
		t.Cleanup(st.Shutdown)
		return st
	})
}

func TestStoreOnEmbeddedRedis(t *testing.T) {
	emb, err := redisstore.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	rdb := open(t, emb.URL())
	storetest.Run(t, func(t *testing.T) session.Store {
		st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
		t.Cleanup(st.Shutdown)
		return st
	})
}

func TestEventLogIsCapped(t *testing.T) {
	rdb := open(t, testenv.RedisURL(t))
	st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t), EventLogMax: 50})
	ctx := context.Background()
	if _, _, err := st.CreateForThread(ctx, &session.Session{ID: "cap", Thread: "web:cap"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if _, err := st.Append(ctx, "cap", session.KindStatus, []byte(`{}`), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := st.Read(ctx, "cap", 0, 5000, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Redis trims whole stream nodes (100 entries by default), so the cap is approximate.
	if len(evs) >= 1000 || len(evs) < 50 || evs[len(evs)-1].Seq != 1000 {
		t.Fatalf("%d events kept, last %d: want the newest, at least 50 and far fewer than 1000", len(evs), evs[len(evs)-1].Seq)
	}
}

func TestClaimOnce(t *testing.T) {
	rdb := open(t, testenv.RedisURL(t))
	prefix := testenv.Prefix(t)
	a := redisstore.New(rdb, redisstore.Config{Prefix: prefix})
	b := redisstore.New(rdb, redisstore.Config{Prefix: prefix})
	ctx := context.Background()
	if ok, err := a.Claim(ctx, "sb-1"); err != nil || !ok {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	if ok, err := b.Claim(ctx, "sb-1"); err != nil || ok {
		t.Fatalf("second claim from another replica: %v %v", ok, err)
	}
	if ok, _ := b.Claim(ctx, "sb-2"); !ok {
		t.Fatal("another sandbox could not be claimed")
	}
}
