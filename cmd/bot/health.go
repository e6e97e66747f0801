package main

import (
	"context"

	"github.com/nightona/nightona/web"
)

// connectedReporter is what a chat platform may tell the dashboard: whether its connection
// (Socket Mode, the Gateway) is up now, and a word about it. Platforms without it show as
// configured.
type connectedReporter interface {
	Connected() (bool, string)
}

// pinger is a store that says whether it answers.
type pinger interface {
	Ping(ctx context.Context) error
}

// health is the dashboard's health view: the session store, the sandboxes, Claude Code and
// the model, and each chat platform.
func health(db pinger, redis, sandboxes, claudeProblem, model string, platforms []chat) web.Health {
	return web.HealthFunc(func(ctx context.Context) []web.Check {
		store := web.Check{Name: "Redis", Kind: "store", OK: true, Detail: redis}
		if err := db.Ping(ctx); err != nil {
			store.OK, store.Detail = false, err.Error()
		}
		claude := web.Check{Name: "Claude Code", Kind: "model", OK: claudeProblem == "", Detail: model}
		if claudeProblem != "" {
			claude.Detail = claudeProblem
		}
		checks := []web.Check{store, {Name: "Sandboxes", Kind: "sandbox", OK: true, Detail: sandboxes}, claude,
			{Name: "Web console", Kind: "chat", OK: true, Detail: "serving"}}
		for _, p := range platforms {
			c := web.Check{Name: p.Name(), Kind: "chat", OK: true, Detail: "configured"}
			if r, ok := p.(connectedReporter); ok {
				c.OK, c.Detail = r.Connected()
			}
			checks = append(checks, c)
		}
		return checks
	})
}
