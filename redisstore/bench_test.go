package redisstore_test

import (
	"context"
	"testing"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/session"
)

// BenchmarkAppend appends relay events (with their cursor, as the driver does) to one session's
// log on a real redis-server and on the embedded Redis.
func BenchmarkAppend(b *testing.B) {
	emb, err := redisstore.StartEmbedded()
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	for _, bc := range []struct{ name, url string }{{"redis-server", testenv.RedisURL(b)}, {"embedded", emb.URL()}} {
		b.Run(bc.name, func(b *testing.B) {
			rdb, err := redisstore.Open(bc.url)
			if err != nil {
				b.Fatal(err)
			}
			defer rdb.Close()
			st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(b)})
			ctx := context.Background()
			if _, _, err := st.CreateForThread(ctx, &session.Session{ID: "bench", Thread: "web:bench"}); err != nil {
				b.Fatal(err)
			}
			data := []byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello world"}},"session_id":"6f890222-0e46-4fee-8b64-86d29e226935"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := st.Append(ctx, "bench", session.KindAgent, data, &session.Cursor{RelayID: "r", Seq: int64(i + 1)}, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
