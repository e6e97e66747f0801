package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	slackadapter "github.com/nightona/nightona/adapters/slack"
	"github.com/nightona/nightona/webhook"
)

// slackChat is Slack as a chat platform of the bot: the adapter (Socket Mode, the threads)
// and, with a signing secret, the HTTP callbacks.
type slackChat struct {
	*slackadapter.Adapter
	hooks *webhook.Slack // nil without SLACK_SIGNING_SECRET
}

func (s *slackChat) Name() string { return "Slack" }

func (s *slackChat) Mount(r chi.Router) {
	if s.hooks != nil {
		s.hooks.Mount(r)
	}
}

// Run holds Socket Mode (with an app token) until ctx ends; then the HTTP callbacks stop
// being taken and the work they started finishes.
func (s *slackChat) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.Adapter.Run(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	if s.hooks != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.hooks.Close(cctx)
		cancel()
	}
	if ctx.Err() != nil {
		err = <-done
	}
	return err
}

// newSlack returns the Slack platform when SLACK_BOT_TOKEN is set.
func newSlack(cfg *config, d chatDeps) (chat, error) {
	get := func(k string) string { return strings.TrimSpace(d.Getenv(k)) }
	botToken, appToken, secret, apiURL := get("SLACK_BOT_TOKEN"), get("SLACK_APP_TOKEN"), get("SLACK_SIGNING_SECRET"), get("SLACK_API_URL")
	if botToken == "" {
		if appToken != "" || secret != "" {
			return nil, errors.New("configuration: SLACK_APP_TOKEN or SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN is not: Slack needs the bot token (OAuth & Permissions, Bot User OAuth Token, xoxb-…)")
		}
		return nil, nil
	}
	var errs []error
	if !strings.HasPrefix(botToken, "xoxb-") {
		errs = append(errs, errors.New("SLACK_BOT_TOKEN must be the Bot User OAuth Token, which starts with xoxb-"))
	}
	if appToken != "" && !strings.HasPrefix(appToken, "xapp-") {
		errs = append(errs, errors.New("SLACK_APP_TOKEN must be an app-level token with the connections:write scope, which starts with xapp-"))
	}
	if strings.ContainsAny(secret, " \t\n") {
		errs = append(errs, errors.New("SLACK_SIGNING_SECRET has spaces in it: paste the secret alone"))
	}
	if appToken == "" && secret == "" {
		errs = append(errs, errors.New("SLACK_BOT_TOKEN is set, but Slack has no way to reach the bot: set SLACK_APP_TOKEN for Socket Mode (no public URL needed), or SLACK_SIGNING_SECRET for HTTP callbacks at NIGHTONA_PUBLIC_URL/slack/events"))
	}
	if apiURL != "" {
		if u, err := url.Parse(apiURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("SLACK_API_URL must be an http(s) URL like https://slack.com/api/, not %q", apiURL))
		} else if !strings.HasSuffix(apiURL, "/") {
			apiURL += "/"
		}
	}
	var prompters []string
	for _, u := range strings.Split(get("SLACK_ALLOWED_USERS"), ",") {
		if u = strings.TrimSpace(u); u != "" {
			prompters = append(prompters, u)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	log := d.Log.With("component", "slack")
	acfg := slackadapter.Config{Logger: log, BotToken: botToken, AppToken: appToken, APIURL: apiURL,
		Registry: d.Registry, Prompters: prompters}
	if d.Links != nil {
		acfg.Links = d.Links
	}
	a, err := slackadapter.New(d.Manager, d.Store, acfg)
	if err != nil {
		return nil, err
	}
	c := &slackChat{Adapter: a}
	if secret != "" {
		c.hooks, err = webhook.NewSlack(a, d.Store, webhook.SlackConfig{Logger: log, SigningSecret: secret, EventKey: slackadapter.EventKey})
		if err != nil {
			return nil, err
		}
		if appToken == "" && isLocal(d.PublicURL) {
			log.Warn("Slack sends its HTTP callbacks to NIGHTONA_PUBLIC_URL, which is a local address; set it to an address Slack can reach, or use Socket Mode (SLACK_APP_TOKEN)", "public_url", d.PublicURL)
		}
	}
	mode := "Socket Mode"
	switch {
	case appToken != "" && secret != "":
		mode = "Socket Mode, and HTTP callbacks under /slack/"
	case appToken == "":
		mode = "HTTP callbacks under /slack/"
	}
	log.Info("Slack is on", "transport", mode)
	return c, nil
}

func isLocal(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return true
	}
	h := p.Hostname()
	return h == "localhost" || h == "" || strings.HasPrefix(h, "127.") || h == "::1" || h == "0.0.0.0"
}
