package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bwmarrin/discordgo"
)

// DefaultAPIURL is Discord's REST API, version 10.
const DefaultAPIURL = "https://discord.com/api/v10"

// APIError is an answer of Discord's API that is not a success.
type APIError struct {
	Status int
	// Code is Discord's JSON error code (10003 Unknown Channel, 50013 Missing Permissions...).
	Code    int
	Message string
	Route   string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("discord %s: %d %s (code %d)", e.Route, e.Status, e.Message, e.Code)
}

// Discord's JSON error codes the adapter acts on.
const (
	codeUnknownChannel     = 10003
	codeUnknownMessage     = 10008
	codeUnknownInteraction = 10062
	codeMissingAccess      = 50001
	codeMissingPermissions = 50013
	codeThreadArchived     = 50083
	codeThreadExists       = 160004
	codeThreadLocked       = 160005
)

func apiCode(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

// rest calls Discord's REST API within its rate limits. It is safe for concurrent use.
type rest struct {
	base    string
	token   string
	agent   string
	client  *http.Client
	limiter *limiter
	log     *slog.Logger
	metrics *metrics
}

// Attempts at one call: a 429 is waited out and tried again this many times; a 5xx or a
// network failure, a few times.
const (
	maxRateLimited = 25
	maxServerError = 3
)

// do sends one request and decodes the answer into out (nil: ignore it).
func (c *rest) do(ctx context.Context, method, path string, body, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return fmt.Errorf("discord %s %s: encode: %w", method, path, err)
		}
	}
	r := routeOf(method, path)
	limited, failed := 0, 0
	for {
		if err := c.limiter.wait(ctx, r); err != nil {
			return err
		}
		status, header, respBody, err := c.exchange(ctx, method, path, data)
		c.metrics.requests.WithLabelValues(r.method, r.path, strconv.Itoa(status)).Inc()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failed++; failed > maxServerError {
				return fmt.Errorf("discord %s: %w", r, err)
			}
			if err := sleep(ctx, backoff(failed)); err != nil {
				return err
			}
			continue
		}
		c.limiter.observe(ctx, r, header)
		switch {
		case status == http.StatusTooManyRequests:
			wait := c.limiter.limited(ctx, r, header, respBody)
			if limited++; limited > maxRateLimited {
				return &APIError{Status: status, Message: "still rate limited after " + strconv.Itoa(limited) + " tries", Route: r.String()}
			}
			// The hold makes the next wait last it out; waiting here too covers a store that
			// did not take the hold.
			if err := sleep(ctx, wait); err != nil {
				return err
			}
			continue
		case status >= 500:
			if failed++; failed > maxServerError {
				return &APIError{Status: status, Message: http.StatusText(status), Route: r.String()}
			}
			if err := sleep(ctx, backoff(failed)); err != nil {
				return err
			}
			continue
		case status >= 300:
			e := &APIError{Status: status, Route: r.String()}
			var b struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if json.Unmarshal(respBody, &b) == nil {
				e.Code, e.Message = b.Code, b.Message
			}
			if e.Message == "" {
				e.Message = http.StatusText(status)
			}
			return e
		}
		if out != nil && len(respBody) > 0 {
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("discord %s: decode the answer: %w", r, err)
			}
		}
		return nil
	}
}

func (c *rest) exchange(ctx context.Context, method, path string, data []byte) (int, http.Header, []byte, error) {
	var body io.Reader
	if data != nil {
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bot "+c.token)
	req.Header.Set("User-Agent", c.agent)
	if data != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

func backoff(n int) time.Duration {
	d := time.Duration(250<<min(n, 6)) * time.Millisecond
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// message is what the adapter posts or edits: nil fields are left as they are on an edit.
type message struct {
	Content         *string                           `json:"content,omitempty"`
	Embeds          *[]*discordgo.MessageEmbed        `json:"embeds,omitempty"`
	Components      *[]discordgo.MessageComponent     `json:"components,omitempty"`
	AllowedMentions *discordgo.MessageAllowedMentions `json:"allowed_mentions,omitempty"`
	Reference       *discordgo.MessageReference       `json:"message_reference,omitempty"`
	Flags           discordgo.MessageFlags            `json:"flags,omitempty"`
	// Nonce with EnforceNonce makes Discord answer a repeated create with the message the
	// first one made: a post retried after a lost answer is not posted twice.
	Nonce        string `json:"nonce,omitempty"`
	EnforceNonce bool   `json:"enforce_nonce,omitempty"`
}

// noMentions keeps what the bot writes (Claude's words included) from pinging anyone.
var noMentions = &discordgo.MessageAllowedMentions{Parse: []discordgo.AllowedMentionType{}}

type gatewayBot struct {
	URL               string `json:"url"`
	SessionStartLimit struct {
		Remaining  int   `json:"remaining"`
		ResetAfter int64 `json:"reset_after"` // ms
	} `json:"session_start_limit"`
}

func (c *rest) gatewayBot(ctx context.Context) (*gatewayBot, error) {
	var g gatewayBot
	return &g, c.do(ctx, http.MethodGet, "/gateway/bot", nil, &g)
}

func (c *rest) channel(ctx context.Context, id string) (*discordgo.Channel, error) {
	var ch discordgo.Channel
	return &ch, c.do(ctx, http.MethodGet, "/channels/"+id, nil, &ch)
}

func (c *rest) send(ctx context.Context, channelID string, m *message) (*discordgo.Message, error) {
	var out discordgo.Message
	return &out, c.do(ctx, http.MethodPost, "/channels/"+channelID+"/messages", m, &out)
}

func (c *rest) edit(ctx context.Context, channelID, messageID string, m *message) error {
	return c.do(ctx, http.MethodPatch, "/channels/"+channelID+"/messages/"+messageID, m, nil)
}

func (c *rest) delete(ctx context.Context, channelID, messageID string) error {
	return c.do(ctx, http.MethodDelete, "/channels/"+channelID+"/messages/"+messageID, nil, nil)
}

func (c *rest) startThread(ctx context.Context, channelID, messageID, name string) (*discordgo.Channel, error) {
	var ch discordgo.Channel
	body := map[string]any{"name": name, "auto_archive_duration": 1440}
	return &ch, c.do(ctx, http.MethodPost, "/channels/"+channelID+"/messages/"+messageID+"/threads", body, &ch)
}

func (c *rest) typing(ctx context.Context, channelID string) error {
	return c.do(ctx, http.MethodPost, "/channels/"+channelID+"/typing", nil, nil)
}

func (c *rest) callback(ctx context.Context, id, token string, r *discordgo.InteractionResponse) error {
	return c.do(ctx, http.MethodPost, "/interactions/"+id+"/"+url.PathEscape(token)+"/callback", r, nil)
}

func (c *rest) editOriginal(ctx context.Context, appID, token string, m *message) error {
	return c.do(ctx, http.MethodPatch, "/webhooks/"+appID+"/"+url.PathEscape(token)+"/messages/@original", m, nil)
}

func (c *rest) followup(ctx context.Context, appID, token string, m *message) error {
	return c.do(ctx, http.MethodPost, "/webhooks/"+appID+"/"+url.PathEscape(token), m, nil)
}

func (c *rest) overwriteCommands(ctx context.Context, appID string, cmds []*discordgo.ApplicationCommand) error {
	return c.do(ctx, http.MethodPut, "/applications/"+appID+"/commands", cmds, nil)
}
