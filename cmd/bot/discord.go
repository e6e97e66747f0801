package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/adapters/discord"
	"github.com/nightona/nightona/webhook"
)

// discordChat is Discord as a chat platform of the bot: the adapter (the Gateway, the threads)
// and, with a public key, the interactions endpoint.
type discordChat struct {
	*discord.Adapter
	interactions *webhook.Discord // nil without DISCORD_PUBLIC_KEY
}

func (d *discordChat) Name() string { return "Discord" }

func (d *discordChat) Mount(r chi.Router) {
	if d.interactions != nil {
		d.interactions.Mount(r)
	}
}

// newDiscord returns the Discord platform when DISCORD_BOT_TOKEN is set.
func newDiscord(cfg *config, d chatDeps) (chat, error) {
	token := strings.TrimSpace(d.Getenv("DISCORD_BOT_TOKEN"))
	appID := strings.TrimSpace(d.Getenv("DISCORD_APP_ID"))
	publicKey := strings.TrimSpace(d.Getenv("DISCORD_PUBLIC_KEY"))
	apiURL := strings.TrimSpace(d.Getenv("DISCORD_API_URL"))
	if token == "" {
		if appID != "" || publicKey != "" {
			return nil, errors.New("configuration: DISCORD_APP_ID or DISCORD_PUBLIC_KEY is set but DISCORD_BOT_TOKEN is not: Discord needs the bot token (Bot, Reset Token, in the Developer Portal)")
		}
		return nil, nil
	}
	var errs []error
	token = strings.TrimPrefix(token, "Bot ")
	if strings.ContainsAny(token, " \t\n") {
		errs = append(errs, errors.New("DISCORD_BOT_TOKEN has spaces in it: paste the token alone"))
	}
	if appID != "" && !snowflake(appID) {
		errs = append(errs, fmt.Errorf("DISCORD_APP_ID must be the application's id, a number like 1234567890123456789, not %q", appID))
	}
	if apiURL != "" {
		if u, err := url.Parse(apiURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("DISCORD_API_URL must be an http(s) URL like https://discord.com/api/v10, not %q", apiURL))
		}
	}
	var interactions *webhook.Discord
	var key []byte
	if publicKey != "" {
		k, err := webhook.ParseDiscordKey(publicKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("DISCORD_PUBLIC_KEY: %w", err))
		}
		key = k
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	log := d.Log.With("component", "discord")
	a, err := discord.New(d.Manager, d.Store, discord.Config{
		Token: token, AppID: appID, APIURL: apiURL, Logger: log, Registerer: d.Registry,
		CompanionLink: d.Links.Session, DashboardLink: d.Links.DashboardLogin, Version: version,
	})
	if err != nil {
		return nil, err
	}
	if key != nil {
		interactions, err = webhook.NewDiscord(a, d.Store, webhook.DiscordConfig{Logger: log, PublicKey: key})
		if err != nil {
			return nil, err
		}
	}
	return &discordChat{Adapter: a, interactions: interactions}, nil
}

func snowflake(s string) bool {
	if len(s) < 15 || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
