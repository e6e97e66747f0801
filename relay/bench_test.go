package relay_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nightona/nightona/relay"
)

// BenchmarkRelayThroughput pushes b.N stdout lines of the stand-in agent through the relay to
// one client and reports the rate the client handled them at.
func BenchmarkRelayThroughput(b *testing.B) {
	h := startRelay(b, relay.Config{Agent: fakeAgent()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := relay.NewClient(h.endpoint(), relay.ClientConfig{})
	done := make(chan struct{})
	lines := 0
	go c.Run(ctx, relay.Cursor{}, relay.Handlers{OnEvent: func(ev relay.Event) error {
		if ev.Kind == relay.KindAgent {
			switch lineType(ev.Data) {
			case "assistant":
				lines++
			case "result":
				close(done)
			}
		}
		return nil
	}})
	b.ResetTimer()
	start := time.Now()
	if err := c.Prompt(ctx, "", "lines:"+strconv.Itoa(b.N), ""); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("the turn did not end")
	}
	b.StopTimer()
	if lines != b.N {
		b.Fatalf("client got %d lines, want %d", lines, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}
