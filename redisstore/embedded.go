package redisstore

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// Embedded is a Redis server inside this process (miniredis), for running Nightona on one
// machine with nothing installed. What it holds lives as long as the process.
type Embedded struct {
	m *miniredis.Miniredis
}

// StartEmbedded starts an embedded Redis on a free loopback port.
func StartEmbedded() (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	return &Embedded{m: m}, nil
}

// URL is the embedded server's redis:// URL.
func (e *Embedded) URL() string { return "redis://" + e.m.Addr() + "/0" }

// Close stops the server; its data is gone.
func (e *Embedded) Close() { e.m.Close() }
