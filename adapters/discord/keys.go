package discord

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/nightona/nightona/session"
)

// Thread keys. A session in a guild thread is
//
//	discord:<guild id>:<parent channel id>:<thread id>
//
// so that session.ChannelOf gives discord:<guild id>:<parent channel id>: usage and settings
// are counted and kept per channel, over all its threads. A DM has no threads; the DM channel
// is both the channel and the thread:
//
//	discord:dm:<dm channel id>:<dm channel id>
//
// and its channel is discord:dm:<dm channel id>.
const platform = "discord"

func threadKey(guildID, parentID, threadID string) string {
	return platform + ":" + guildID + ":" + parentID + ":" + threadID
}

func dmKey(channelID string) string {
	return platform + ":dm:" + channelID + ":" + channelID
}

// place is where a thread key's session lives on Discord.
type place struct {
	GuildID  string // "" in a DM
	ParentID string // the text channel a thread belongs to; the DM channel in a DM
	// ChannelID is where the session's messages go: the thread, or the DM channel.
	ChannelID string
}

// parseKey reads a Discord thread key; ok is false for other platforms' keys.
func parseKey(key string) (p place, ok bool) {
	parts := strings.Split(key, ":")
	if len(parts) != 4 || parts[0] != platform || parts[2] == "" || parts[3] == "" {
		return place{}, false
	}
	if parts[1] == "dm" {
		return place{ParentID: parts[2], ChannelID: parts[3]}, true
	}
	return place{GuildID: parts[1], ParentID: parts[2], ChannelID: parts[3]}, true
}

// user is a Discord user as sessions name them.
func user(id string) string { return platform + ":" + id }

// mention writes a "<platform>:<id>" user as Discord shows it: a mention for Discord's users,
// the name itself for others (the web console's).
func mention(u string) string {
	if id, ok := strings.CutPrefix(u, platform+":"); ok && isSnowflake(id) {
		return "<@" + id + ">"
	}
	return u
}

// What the adapter keeps in the store, beside the rate budgets.
const (
	// keyChannel maps a Discord channel (a thread or a DM) to the thread key of the
	// session in it.
	keyChannel = "discord:channel:"
	// keyRender is a session's rendering state (thread.go).
	keyRender = "discord:render:"
	// keySettings is a channel's settings, by the channel part of thread keys.
	keySettings = "discord:settings:"
	// keyMessage and keyInteraction remember handled deliveries: the Gateway sends every
	// replica everything.
	keyMessage     = "discord:message:"
	keyInteraction = "discord:interaction:"
)

// How long the adapter remembers things: a thread's session, and a delivery already handled.
const (
	channelTTL  = 90 * 24 * time.Hour
	renderTTL   = 30 * 24 * time.Hour
	deliveryTTL = time.Hour
)

// Settings are a channel's defaults for the sessions started in it (/nightona config).
type Settings struct {
	PermissionMode string    `json:"permission_mode,omitempty"`
	Model          string    `json:"model,omitempty"`
	By             string    `json:"by,omitempty"`
	At             time.Time `json:"at,omitzero"`
}

func (a *Adapter) settings(ctx context.Context, channel string) (Settings, error) {
	var s Settings
	b, err := a.store.Fetch(ctx, keySettings+channel)
	if err != nil || b == nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func (a *Adapter) saveSettings(ctx context.Context, channel string, s Settings) error {
	b, _ := json.Marshal(s)
	return a.store.Put(ctx, keySettings+channel, b, 0)
}

// threadOf returns the thread key of the session in a Discord channel, "" if it has none.
func (a *Adapter) threadOf(ctx context.Context, channelID string) (string, error) {
	b, err := a.store.Fetch(ctx, keyChannel+channelID)
	return string(b), err
}

func (a *Adapter) remember(ctx context.Context, channelID, thread string) error {
	return a.store.Put(ctx, keyChannel+channelID, []byte(thread), channelTTL)
}

// sessionSettings is what a new session in thread starts with: its channel's settings.
func (a *Adapter) sessionSettings(ctx context.Context, thread string) session.Settings {
	s, err := a.settings(ctx, session.ChannelOf(thread))
	if err != nil {
		a.log.Warn("could not read the channel's settings; using the bot's defaults", "thread", thread, "err", err)
	}
	return session.Settings{PermissionMode: s.PermissionMode, Model: s.Model}
}
