package testenv

import (
	"strings"
	"sync"
)

// Buffer collects what is written to it (a component's log, a process's output) for a test to
// read while it is still being written: it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// HasLine reports whether one line of what was written holds every part.
func (b *Buffer) HasLine(parts ...string) bool {
	for _, l := range strings.Split(b.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}
