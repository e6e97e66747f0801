package main

import (
	"context"
	"log/slog"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/web"
)

// chat is a chat platform the bot serves (Slack, Discord). It shows the sessions of its own
// threads while this replica drives them (session.Follower), takes its HTTP callbacks on the
// bot's router, and holds its own connections (Socket Mode, the Gateway) in Run.
type chat interface {
	session.Follower
	// Name is the platform's name, for logs and readiness.
	Name() string
	// Mount adds the platform's HTTP callbacks to r.
	Mount(r chi.Router)
	// Run holds the platform's connections until ctx ends. The bot ends ctx only after the
	// sessions have drained, so that the last state of every thread lands.
	Run(ctx context.Context) error
}

// chatDeps is what the bot gives each chat platform.
type chatDeps struct {
	Log      *slog.Logger
	Manager  *session.Manager
	Store    *redisstore.Store
	Registry prometheus.Registerer
	// Links makes the signed companion links threads carry.
	Links *web.Links
	// PublicURL is where the bot's HTTP routes are reached from outside.
	PublicURL string
	Getenv    func(string) string
}

// chats returns the chat platforms the configuration turns on.
func chats(cfg *config, d chatDeps) ([]chat, error) {
	var out []chat
	for _, make := range []func(*config, chatDeps) (chat, error){newSlack, newDiscord} {
		c, err := make(cfg, d)
		if err != nil {
			return nil, err
		}
		if c != nil {
			out = append(out, c)
		}
	}
	return out, nil
}
