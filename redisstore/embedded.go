package redisstore

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Embedded is a Redis server inside this process (miniredis), for running Nightona on one
// machine with nothing installed. What it holds lives as long as the process.
type Embedded struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

// StartEmbedded starts an embedded Redis on a free loopback port.
func StartEmbedded() (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	e := &Embedded{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go e.clock()
	return e, nil
}

// clock moves the server's time along with the wall clock: miniredis counts keys' time to live
// down only when told to, and leases and retention depend on them.
func (e *Embedded) clock() {
	defer close(e.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.m.FastForward(now.Sub(last))
			last = now
		}
	}
}

// URL is the embedded server's redis:// URL.
func (e *Embedded) URL() string { return "redis://" + e.m.Addr() + "/0" }

// Close stops the server; its data is gone.
func (e *Embedded) Close() {
	close(e.stop)
	<-e.done
	e.m.Close()
}
