package discord

import (
	"context"
	"sync/atomic"
	"time"
)

// typingEvery renews the typing indicator, which Discord shows for ten seconds.
const typingEvery = 8 * time.Second

// keepTyping keeps Discord's typing indicator on in the thread while a turn runs.
func (a *Adapter) keepTyping(ctx context.Context, thread string, running *atomic.Bool) {
	p, ok := parseKey(thread)
	if !ok {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var typed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !running.Load() || time.Since(typed) < typingEvery {
			continue
		}
		typed = time.Now()
		if err := a.api.typing(ctx, p.ChannelID); err != nil {
			a.log.Debug("could not show the typing indicator", "thread", thread, "err", err)
		}
	}
}
